"""Platform size presets: resize a generated image locally, never a new request.

Consumes the bytes the model returned and `SizeSpec`s; produces new encoded
bytes. The sink calls `resize_all` on a writer thread (Pillow releases the GIL
while it resamples and encodes, so the writer threads use every core) and
writes each result to ``OUT/sizes/<spec.name>/<id>.<ext>``. The source is
decoded once for all of a job's sizes.

Spec syntax (what job files carry in ``sizes``)::

    amazon            preset, fit (the default)        -> folder "amazon"
    amazon:fill       preset, fill                     -> folder "amazon-fill"
    amazon:png        preset, fit, PNG asked for       -> folder "amazon"
    800x600           custom width x height, fit       -> folder "800x600"
    800x600:fill:jpeg custom, fill, JPEG               -> folder "800x600-fill"

- **fit** (contain): scale the whole image to fit inside the box, then pad
  with white to the exact size. Nothing is cut off.
- **fill** (cover): scale until the box is covered, then crop the centre.
- **format**: each platform preset is written the way its platform asks for
  product photos (`PRESET_FORMATS`: JPEG at the quality below); PNG only when
  the spec asks for it (``:png``) or the image has transparency (JPEG has
  none). A custom size keeps the source's format (PNG, JPEG or WebP) unless
  the spec names one. Resampling is Lanczos whatever the format.

``upscaled`` is true when the image had to be enlarged (the model's square
output is 1024 px, so every built-in preset but Instagram's enlarges it).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageOps

#: Preset name -> (width, height) in pixels.
PRESETS: dict[str, tuple[int, int]] = {
    "amazon": (1500, 1500),
    "shopify": (2048, 2048),
    "instagram": (1080, 1080),
}

#: Preset name -> (format, JPEG quality), from each platform's own guidance:
#: Amazon Seller Central recommends JPEG saved "at the highest possible quality
#: level"; Shopify takes JPEG for product photos (PNG for transparency) and makes
#: its own WebP copies; Instagram takes JPEG and recompresses every upload.
PRESET_FORMATS: dict[str, tuple[str, int]] = {
    "amazon": ("JPEG", 95),
    "shopify": ("JPEG", 90),
    "instagram": ("JPEG", 90),
}

MIN_SIDE = 10
MAX_SIDE = 10_000
MODES = ("fit", "fill")
#: Formats a spec may ask for, as typed -> Pillow's name.
FORMATS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
JPEG_QUALITY = 92
#: PNG is lossless at every level; level 1 encodes a 2048-px photo ~7x faster
#: than the default 6 for a file ~15 % larger.
PNG_COMPRESS_LEVEL = 1

_CUSTOM = re.compile(r"^(\d{1,5})x(\d{1,5})$")
_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class SizeSpec:
    """One output size. `name` is the folder under ``OUT/sizes/``."""

    name: str
    width: int
    height: int
    mode: Literal["fit", "fill"]
    #: Pillow's format name when the spec asks for one; None: the default.
    format: str | None = None

    @property
    def spec(self) -> str:
        """The canonical spec string; ``parse_size(s.spec) == s``."""
        base = self.name.removesuffix("-fill") if self.mode == "fill" else self.name
        text = base if self.mode == "fit" else f"{base}:fill"
        return text if self.format is None else f"{text}:{self.format.lower()}"

    @property
    def preset(self) -> str | None:
        base = self.name.removesuffix("-fill") if self.mode == "fill" else self.name
        return base if base in PRESETS else None


def parse_size(spec: str) -> SizeSpec:
    """Parse ``preset``, ``WxH``, optionally followed by ``:fit`` or ``:fill``.

    Raises `ValueError` with a message that lists the known presets.
    """
    base, *options = spec.strip().lower().split(":")
    mode, fmt = "fit", None
    for option in options:
        if option in MODES:
            mode = option
        elif option in FORMATS:
            fmt = FORMATS[option]
        else:
            raise ValueError(
                f"size {spec!r}: unknown mode {option!r} (use 'fit' or 'fill'; "
                "a format: 'jpeg', 'png' or 'webp')"
            )
    if base in PRESETS:
        width, height = PRESETS[base]
    else:
        match = _CUSTOM.match(base)
        if match is None:
            known = ", ".join(sorted(PRESETS))
            raise ValueError(
                f"unknown size {spec!r}: use a preset ({known}) or WIDTHxHEIGHT such as 800x600,"
                " optionally followed by ':fit' or ':fill' and ':jpeg', ':png' or ':webp'"
            )
        width, height = int(match[1]), int(match[2])
        if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
            raise ValueError(
                f"size {spec!r}: each side must be between {MIN_SIDE} and {MAX_SIDE} pixels"
            )
        base = f"{width}x{height}"
    name = base if mode == "fit" else f"{base}-fill"
    return SizeSpec(
        name=name, width=width, height=height, mode="fit" if mode == "fit" else "fill", format=fmt
    )


def resize(data: bytes, spec: SizeSpec) -> tuple[bytes, str, bool]:
    """Resize encoded image bytes to `spec`: returns (bytes, mime type, upscaled?)."""
    return resize_all(data, [spec])[0]


def resize_all(data: bytes, specs: list[SizeSpec]) -> list[tuple[bytes, str, bool]]:
    """Each of `specs` from one decode of `data`: (bytes, mime type, upscaled?).

    Pure and CPU-bound: call it in a thread.
    """
    with Image.open(io.BytesIO(data)) as opened:
        source_format = (opened.format or "").upper()
        image = ImageOps.exif_transpose(opened)
        image.load()
    transparent = _has_alpha(image)
    return [_one(image, source_format, transparent, spec) for spec in specs]


def _one(
    image: Image.Image, source_format: str, transparent: bool, spec: SizeSpec
) -> tuple[bytes, str, bool]:
    fmt, quality = _output_format(source_format, transparent, spec)
    image = _normalise_mode(image, fmt)
    width, height = image.size
    box_w, box_h = spec.width, spec.height

    if spec.mode == "fit":
        scale = min(box_w / width, box_h / height)
        new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        scaled = image.resize(new_size, Image.Resampling.LANCZOS)
        canvas = Image.new(image.mode, (box_w, box_h), _white_for(image.mode))
        canvas.paste(scaled, ((box_w - new_size[0]) // 2, (box_h - new_size[1]) // 2))
        result = canvas
    else:
        scale = max(box_w / width, box_h / height)
        # ImageOps.fit scales to cover and crops the centre in one step.
        result = ImageOps.fit(image, (box_w, box_h), Image.Resampling.LANCZOS, centering=(0.5, 0.5))

    out = io.BytesIO()
    if fmt == "JPEG":
        result.save(out, format="JPEG", quality=quality)
        mime = "image/jpeg"
    elif fmt == "WEBP":
        result.save(out, format="WEBP", quality=quality)
        mime = "image/webp"
    else:
        result.save(out, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        mime = "image/png"
    return out.getvalue(), mime, scale > 1.0


def _output_format(source_format: str, transparent: bool, spec: SizeSpec) -> tuple[str, int]:
    """The format and quality to write: asked for, else the platform's, else the
    source's; transparency is never flattened into a JPEG that was not asked for."""
    if spec.format is not None:
        return spec.format, JPEG_QUALITY
    if transparent:
        return ("WEBP" if source_format == "WEBP" else "PNG"), JPEG_QUALITY
    if spec.preset is not None:
        return PRESET_FORMATS[spec.preset]
    fmt = source_format if source_format in ("PNG", "JPEG", "WEBP") else "PNG"
    return fmt, JPEG_QUALITY


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )


def _normalise_mode(image: Image.Image, fmt: str) -> Image.Image:
    """RGB, or RGBA when the source has transparency and the format keeps it."""
    if _has_alpha(image) and fmt != "JPEG":
        return image if image.mode == "RGBA" else image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")


def _white_for(mode: str) -> tuple[int, ...]:
    return (255, 255, 255, 255) if mode == "RGBA" else _WHITE
