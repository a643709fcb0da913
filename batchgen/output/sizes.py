"""Platform size presets: resize a generated image locally, never a new request.

Consumes the bytes the model returned and a `SizeSpec`; produces new encoded
bytes in the same format. The sink calls `resize` in a worker thread and writes
the result to ``OUT/sizes/<spec.name>/<id>.<ext>``.

Spec syntax (what job files carry in ``sizes``)::

    amazon            preset, fit (the default)        -> folder "amazon"
    amazon:fill       preset, fill                     -> folder "amazon-fill"
    800x600           custom width x height, fit       -> folder "800x600"
    800x600:fill      custom, fill                     -> folder "800x600-fill"

- **fit** (contain): scale the whole image to fit inside the box, then pad
  with white to the exact size. Nothing is cut off.
- **fill** (cover): scale until the box is covered, then crop the centre.

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

MIN_SIDE = 10
MAX_SIDE = 10_000
MODES = ("fit", "fill")
JPEG_QUALITY = 92

_CUSTOM = re.compile(r"^(\d{1,5})x(\d{1,5})$")
_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class SizeSpec:
    """One output size. `name` is the folder under ``OUT/sizes/``."""

    name: str
    width: int
    height: int
    mode: Literal["fit", "fill"]

    @property
    def spec(self) -> str:
        """The canonical spec string; ``parse_size(s.spec) == s``."""
        base = self.name.removesuffix("-fill") if self.mode == "fill" else self.name
        return base if self.mode == "fit" else f"{base}:fill"


def parse_size(spec: str) -> SizeSpec:
    """Parse ``preset``, ``WxH``, optionally followed by ``:fit`` or ``:fill``.

    Raises `ValueError` with a message that lists the known presets.
    """
    text = spec.strip().lower()
    base, sep, mode = text.partition(":")
    if not sep:
        mode = "fit"
    if mode not in MODES:
        raise ValueError(f"size {spec!r}: unknown mode {mode!r} (use 'fit' or 'fill')")
    if base in PRESETS:
        width, height = PRESETS[base]
    else:
        match = _CUSTOM.match(base)
        if match is None:
            known = ", ".join(sorted(PRESETS))
            raise ValueError(
                f"unknown size {spec!r}: use a preset ({known}) or WIDTHxHEIGHT such as 800x600,"
                " optionally followed by ':fit' or ':fill'"
            )
        width, height = int(match[1]), int(match[2])
        if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
            raise ValueError(
                f"size {spec!r}: each side must be between {MIN_SIDE} and {MAX_SIDE} pixels"
            )
        base = f"{width}x{height}"
    name = base if mode == "fit" else f"{base}-fill"
    return SizeSpec(name=name, width=width, height=height, mode="fit" if mode == "fit" else "fill")


def resize(data: bytes, spec: SizeSpec) -> tuple[bytes, str, bool]:
    """Resize encoded image bytes to `spec`: returns (bytes, mime type, upscaled?).

    PNG stays PNG, JPEG stays JPEG (quality 92), WebP stays WebP; anything else
    becomes PNG. Pure and CPU-bound: call it in a thread.
    """
    with Image.open(io.BytesIO(data)) as opened:
        source_format = (opened.format or "").upper()
        image = ImageOps.exif_transpose(opened)
        image.load()
    fmt = source_format if source_format in ("PNG", "JPEG", "WEBP") else "PNG"
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
        result.save(out, format="JPEG", quality=JPEG_QUALITY)
        mime = "image/jpeg"
    elif fmt == "WEBP":
        result.save(out, format="WEBP", quality=JPEG_QUALITY)
        mime = "image/webp"
    else:
        result.save(out, format="PNG", optimize=False)
        mime = "image/png"
    return out.getvalue(), mime, scale > 1.0


def _normalise_mode(image: Image.Image, fmt: str) -> Image.Image:
    """RGB, or RGBA when the source has transparency and the format keeps it."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha and fmt != "JPEG":
        return image if image.mode == "RGBA" else image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")


def _white_for(mode: str) -> tuple[int, ...]:
    return (255, 255, 255, 255) if mode == "RGBA" else _WHITE
