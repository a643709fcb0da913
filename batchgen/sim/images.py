"""Fake but valid images, made fast enough for thousands of answers a second.

An output is an indexed-colour PNG of three horizontal bands. Because the
pixel data of an indexed PNG holds only palette indices, the compressed IDAT
for a given size is the same for every answer and is built once; a request
only costs a 9-byte palette and a few CRCs. Colours come from a hash of the
request, so one request always yields the same picture, and the middle band
takes the average colour of the first reference image so that an edit's
output visibly depends on its input.

With ``noise`` the bands are filled with random shades instead (stored, not
compressed), so files weigh about 1 byte per pixel — 1 to 1.5 MB at the
model's sizes, like the real thing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import random
import struct
import zlib
from functools import lru_cache

from PIL import Image

from batchgen.models import ASPECT_RATIOS

Colour = tuple[int, int, int]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_BANDS = 3
_SHADES = 85  # palette entries per band when noisy: 3 * 85 = 255 <= 256
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _band_of_row(row: int, height: int) -> int:
    return min(_BANDS - 1, row * _BANDS // height)


@lru_cache(maxsize=64)
def _header_and_flat_idat(width: int, height: int) -> tuple[bytes, bytes]:
    """Signature + IHDR, and the IDAT of a flat three-band picture."""
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0))
    rows = [b"\x00" + bytes([band]) * width for band in range(_BANDS)]
    raw = b"".join(rows[_band_of_row(r, height)] for r in range(height))
    return _SIGNATURE + ihdr, _chunk(b"IDAT", zlib.compress(raw, 6))


_BAND_TABLES = [bytes(band * _SHADES + b % _SHADES for b in range(256)) for band in range(_BANDS)]


def _noisy_idat(width: int, height: int, seed: int) -> bytes:
    noise = random.Random(seed).randbytes(width * height)
    rows = []
    for r in range(height):
        table = _BAND_TABLES[_band_of_row(r, height)]
        rows.append(b"\x00" + noise[r * width : (r + 1) * width].translate(table))
    return _chunk(b"IDAT", zlib.compress(b"".join(rows), 0))


def _palette(colours: tuple[Colour, ...], noisy_seed: int | None) -> bytes:
    if noisy_seed is None:  # the flat IDAT uses indices 0, 1, 2
        return _chunk(b"PLTE", b"".join(bytes(c) for c in colours))
    rng = random.Random(noisy_seed ^ 0x5EED)
    out = bytearray()
    for colour in colours:
        for _ in range(_SHADES):
            out.extend(max(0, min(255, c + rng.randint(-24, 24))) for c in colour)
    return _chunk(b"PLTE", bytes(out))


def make_png(
    width: int, height: int, colours: tuple[Colour, Colour, Colour], noise_seed: int | None = None
) -> bytes:
    """A three-band PNG; `noise_seed` makes a realistic-weight noisy one."""
    head, flat_idat = _header_and_flat_idat(width, height)
    idat = flat_idat if noise_seed is None else _noisy_idat(width, height, noise_seed)
    return head + _palette(colours, noise_seed) + idat + _IEND


@lru_cache(maxsize=2048)
def png_base64(
    width: int, height: int, colours: tuple[Colour, Colour, Colour], noise_seed: int | None = None
) -> str:
    """`make_png` as standard base64, cached: repeated requests cost a lookup."""
    return base64.b64encode(make_png(width, height, colours, noise_seed)).decode("ascii")


def make_rgb_png(width: int, height: int, seed: int) -> bytes:
    """An RGB PNG of random pixels, stored: 3 bytes a pixel, incompressible."""
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    noise = random.Random(seed).randbytes(3 * width * height)
    row = 3 * width
    raw = b"".join(b"\x00" + noise[r * row : (r + 1) * row] for r in range(height))
    return _SIGNATURE + ihdr + _chunk(b"IDAT", zlib.compress(raw, 0)) + _IEND


@lru_cache(maxsize=8)
def pooled_base64(width: int, height: int, rgb: bool, index: int) -> bytes:
    """The `index`-th pre-built noisy image of a size, as base64 (ASCII bytes,
    sent as they are): heavy answers cost the simulator a lookup, not the
    making of 12-50 MB of noise."""
    if rgb:
        png = make_rgb_png(width, height, index)
    else:
        colours = ((200, 60, 60), (60, 200, 60), (60, 60, 200))
        png = make_png(width, height, colours, index)
    return base64.b64encode(png)


@lru_cache(maxsize=256)
def jpeg_base64(width: int, height: int, colour: Colour) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, "JPEG", quality=80)
    return base64.b64encode(buf.getvalue()).decode("ascii")


@lru_cache(maxsize=2)
def huge_base64(size: int) -> str:
    """Base64 text of about `size` characters behind a PNG signature, for
    testing a client's response-size cap (not meant to decode)."""
    raw = _SIGNATURE + random.Random(size).randbytes(max(0, size * 3 // 4 - len(_SIGNATURE)))
    return base64.b64encode(raw).decode("ascii")


def colours_from(digest: bytes) -> tuple[Colour, Colour, Colour]:
    return (
        (digest[0], digest[1], digest[2]),
        (digest[3], digest[4], digest[5]),
        (digest[6], digest[7], digest[8]),
    )


_REFERENCES: dict[bytes, tuple[Colour, tuple[int, int]] | None] = {}
_REFERENCES_MAX = 1024


def _inspect(data: bytes) -> tuple[Colour, tuple[int, int]] | None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            size = img.size
            img.draft("RGB", (64, 64))  # JPEG: decode at reduced scale, cheaply
            small = img.convert("RGB").resize((1, 1), Image.Resampling.BOX)
            pixel = small.getpixel((0, 0))
    except Exception:  # any undecodable input: fall back to hash colours
        return None
    assert isinstance(pixel, tuple)
    return (int(pixel[0]), int(pixel[1]), int(pixel[2])), size


def inspect_reference(data: bytes) -> tuple[Colour, tuple[int, int]] | None:
    """Average colour and pixel size of an input image, or None if Pillow
    cannot read it. Cached by a digest of the bytes (not the bytes, which
    would pin megabytes per entry) because batch runs reuse references."""
    key = hashlib.blake2b(data, digest_size=16).digest()
    if key in _REFERENCES:
        return _REFERENCES[key]
    found = _inspect(data)
    if len(_REFERENCES) >= _REFERENCES_MAX:
        del _REFERENCES[next(iter(_REFERENCES))]  # oldest first
    _REFERENCES[key] = found
    return found


def closest_ratio(width: int, height: int) -> str:
    """The supported aspect ratio nearest the input's shape, as the model
    does when the request names none."""
    target = math.log(width / height)
    return min(ASPECT_RATIOS, key=lambda r: abs(math.log(_ratio_value(r)) - target))


def _ratio_value(ratio: str) -> float:
    w, h = ASPECT_RATIOS[ratio]
    return w / h


def scaled_size(ratio: str, scale: float) -> tuple[int, int]:
    width, height = ASPECT_RATIOS[ratio]
    return max(1, round(width * scale)), max(1, round(height * scale))


NOT_AN_IMAGE = base64.b64encode(b"this is not an image, only bytes pretending to be one\n" * 4)
