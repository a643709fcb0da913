"""pngcheck: a plain PNG's bytes in, its pixel size out, or "ask Pillow".

Every answer's image is checked before its job is done (`client.image_size`):
Pillow's `open` and `verify` read each chunk and check its CRC. For the small,
plain PNGs of a fast run that cost ~50 µs a job on the event loop, most of it
Pillow's Python around the checks (a file object, a chunk stream, a method
call per chunk), about a tenth of all the loop's work at zero latency.

This walks the same chunks with zlib-ng's CRC-32 over a memoryview, and accepts
only what Pillow certainly accepts: the signature, IHDR first (13 bytes, a
colour type and bit depth Pillow knows, no unknown filter method, a size within
Pillow's pixel limit), then only PLTE and IDAT chunks (at least one IDAT), each
with its right CRC, and an empty IEND with its right CRC as the last bytes.
Anything else (another chunk type, bytes after IEND, a broken chunk) gets no
verdict here: Pillow decides as before, so no image is accepted that Pillow
would refuse, and every refusal is still Pillow's.

The CRC is zlib-ng's, not the standard library's: the system zlib that Python
links computed it at ~4.5 GB/s, 3.7 ms of every 4096-px answer's 16.8 MB,
where zlib-ng's folding CRC takes 0.66 ms (and small chunks are faster too).
"""

from __future__ import annotations

import struct

from zlib_ng.zlib_ng import crc32

__all__ = ["plain_png_size"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: (bit depth, colour type) pairs Pillow reads (`PngImagePlugin._MODES`).
_MODES = frozenset(
    {
        (1, 0), (2, 0), (4, 0), (8, 0), (16, 0),
        (8, 2), (16, 2),
        (1, 3), (2, 3), (4, 3), (8, 3),
        (8, 4), (16, 4),
        (8, 6), (16, 6),
    }
)  # fmt: skip

#: Chunks after IHDR whose Pillow handlers cannot fail once their CRC is right.
_PLAIN = frozenset({b"PLTE", b"IDAT"})

_LENGTH_AND_TYPE = struct.Struct(">I4s")
_U32 = struct.Struct(">I")
_IHDR = struct.Struct(">IIBBBBB")


def plain_png_size(data: bytes, max_pixels: int | None) -> tuple[int, int] | None:
    """(width, height) of a whole, plain PNG; None: not one, let Pillow decide.

    `max_pixels` is Pillow's `Image.MAX_IMAGE_PIXELS` (None: no limit): larger
    images are left to Pillow, which warns or refuses them."""
    if not data.startswith(_SIGNATURE):
        return None
    view = memoryview(data)
    end = len(data)
    pos = 8
    size: tuple[int, int] | None = None
    idat = False
    while pos + 12 <= end:
        length, kind = _LENGTH_AND_TYPE.unpack_from(data, pos)
        stop = pos + 8 + length
        if stop + 4 > end:
            return None
        if crc32(view[pos + 4 : stop]) != _U32.unpack_from(data, stop)[0]:
            return None
        if kind == b"IEND":
            return size if idat and length == 0 and stop + 4 == end else None
        if pos == 8:
            if kind != b"IHDR" or length != 13:
                return None
            size = _header_size(data, max_pixels)
            if size is None:
                return None
        elif kind == b"IDAT":
            idat = True
        elif kind not in _PLAIN:
            return None
        pos = stop + 4
    return None


def _header_size(data: bytes, max_pixels: int | None) -> tuple[int, int] | None:
    """The size IHDR (at offset 16) gives, if Pillow would open it without a word."""
    width, height, depth, colour, _compression, filtering, _interlace = _IHDR.unpack_from(data, 16)
    if width <= 0 or height <= 0 or (depth, colour) not in _MODES or filtering:
        return None
    if max_pixels is not None and width * height > max_pixels:
        return None
    return width, height
