"""The PNG check without Pillow (`output/pngcheck.py`) accepts only what Pillow's
`open` + `verify` accept, with the same size, and leaves everything else to Pillow."""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from PIL import Image

from batchgen.output.client import image_size
from batchgen.output.pngcheck import plain_png_size

LIMIT = Image.MAX_IMAGE_PIXELS


def pillow_size(data: bytes) -> tuple[int, int] | None:
    """What batchgen's check was before: Pillow alone."""
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            size = im.size
            im.verify()
    except (OSError, SyntaxError, ValueError, EOFError, struct.error):
        return None
    return size


def png(mode: str, size: tuple[int, int], **options: object) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG", **options)
    return buf.getvalue()


def chunk(kind: bytes, payload: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + payload))
    return struct.pack(">I", len(payload)) + kind + payload + crc


SAMPLES = [
    png("RGB", (16, 16)),
    png("RGBA", (7, 3)),
    png("L", (1, 1)),
    png("P", (33, 20)),
    png("1", (9, 9)),
    png("I;16", (4, 4)),
    png("RGB", (40, 40), optimize=True),
]


@pytest.mark.parametrize("data", SAMPLES, ids=lambda d: f"{len(d)}B")
def test_plain_pngs_are_measured_as_pillow_measures_them(data: bytes) -> None:
    assert plain_png_size(data, LIMIT) == pillow_size(data)
    assert image_size(data, "image/png") == pillow_size(data)


def test_damaged_pngs_are_never_accepted_when_pillow_refuses_them() -> None:
    """Random damage (a byte changed, inserted, cut off, appended): the fast check
    says nothing, or what Pillow says; `image_size` agrees with Pillow throughout."""
    rng = random.Random(18)
    for base in SAMPLES:
        for _ in range(400):
            data = bytearray(base)
            damage = rng.randrange(4)
            at = rng.randrange(len(data))
            if damage == 0:
                data[at] ^= 1 + rng.randrange(255)
            elif damage == 1:
                del data[at:]
            elif damage == 2:
                data += bytes(1 + rng.randrange(8))
            else:
                data[at:at] = bytes([rng.randrange(256)])
            fast = plain_png_size(bytes(data), LIMIT)
            assert fast is None or fast == pillow_size(bytes(data))
            assert image_size(bytes(data), "image/png") == pillow_size(bytes(data))


def test_what_it_leaves_to_pillow() -> None:
    good = SAMPLES[0]
    ihdr_end = 8 + 8 + 13 + 4
    text = chunk(b"tEXt", b"Comment\x00made by a model")
    with_text = good[:ihdr_end] + text + good[ihdr_end:]
    assert plain_png_size(with_text, LIMIT) is None  # another chunk: Pillow's call
    assert image_size(with_text, "image/png") == (16, 16)
    trailing = good + b"\x00"
    assert plain_png_size(trailing, LIMIT) is None
    assert image_size(trailing, "image/png") == pillow_size(trailing)
    assert plain_png_size(good, 16 * 16 - 1) is None  # above the pixel limit: Pillow warns
    no_idat = good[:ihdr_end] + chunk(b"IEND", b"")
    assert plain_png_size(no_idat, LIMIT) is None
    assert plain_png_size(b"GIF89a" + good[6:], LIMIT) is None


def test_a_real_size_answer_is_checked_over_every_byte() -> None:
    """A noisy 1536-px image in one 7 MB IDAT chunk, as the service's (and the
    simulator's) big answers come, where the CRC's speed matters: measured as
    Pillow measures it, and refused with one bit changed near the start, the
    middle or the end of its pixels' data."""
    side = 1536
    rng = random.Random(7)
    rows = b"".join(b"\x00" + rng.randbytes(side * 3) for _ in range(side))
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    data = b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", ihdr),
            chunk(b"IDAT", zlib.compress(rows, 1)),
            chunk(b"IEND", b""),
        ]
    )
    assert len(data) > 7_000_000
    assert plain_png_size(data, LIMIT) == (side, side) == pillow_size(data)
    idat = data.index(b"IDAT") + 4
    for at in (idat + 1, len(data) // 2, len(data) - 13):
        damaged = bytearray(data)
        damaged[at] ^= 0x10
        assert plain_png_size(bytes(damaged), LIMIT) is None
