"""Draw the small product photos used by sample_jobs/products.csv.

One-off helper: ``python scripts/make_sample_photos.py`` rewrites
``sample_jobs/photos/*.jpg`` (simple drawn objects, a few KB each).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 320
OUT = Path(__file__).resolve().parent.parent / "sample_jobs" / "photos"
Draw = ImageDraw.ImageDraw


def mug(d: Draw) -> None:
    d.rounded_rectangle((95, 100, 205, 240), 12, fill=(46, 110, 168))
    d.ellipse((190, 135, 250, 205), outline=(46, 110, 168), width=14)
    d.ellipse((95, 88, 205, 112), fill=(30, 80, 125))


def watch(d: Draw) -> None:
    d.rectangle((135, 40, 185, 280), fill=(90, 60, 40))
    d.ellipse((100, 100, 220, 220), fill=(200, 200, 205), outline=(60, 60, 60), width=6)
    d.line((160, 160, 160, 120), fill=(20, 20, 20), width=4)
    d.line((160, 160, 190, 170), fill=(20, 20, 20), width=3)


def sneaker(d: Draw) -> None:
    d.polygon([(60, 230), (80, 150), (150, 140), (200, 190), (265, 205), (270, 235)],
              fill=(220, 60, 60))  # fmt: skip
    d.rectangle((55, 232, 275, 252), fill=(245, 245, 245), outline=(120, 120, 120))
    for x in (105, 125, 145):
        d.line((x, 150, x + 15, 180), fill=(255, 255, 255), width=4)


def backpack(d: Draw) -> None:
    d.rounded_rectangle((90, 70, 230, 270), 30, fill=(70, 110, 60))
    d.rounded_rectangle((110, 170, 210, 250), 14, fill=(90, 135, 75))
    d.arc((125, 40, 195, 100), 180, 360, fill=(50, 80, 45), width=10)


def lamp(d: Draw) -> None:
    d.polygon([(110, 60), (210, 60), (240, 140), (80, 140)], fill=(240, 200, 90))
    d.rectangle((155, 140, 165, 250), fill=(80, 80, 80))
    d.ellipse((110, 240, 210, 270), fill=(60, 60, 60))


def bottle(d: Draw) -> None:
    d.rectangle((145, 40, 175, 80), fill=(40, 40, 40))
    d.rounded_rectangle((115, 80, 205, 280), 25, fill=(120, 190, 200))
    d.rectangle((115, 150, 205, 200), fill=(250, 250, 250))


def headphones(d: Draw) -> None:
    d.arc((80, 50, 240, 230), 180, 360, fill=(30, 30, 30), width=16)
    d.rounded_rectangle((62, 140, 112, 230), 18, fill=(30, 30, 30))
    d.rounded_rectangle((208, 140, 258, 230), 18, fill=(30, 30, 30))


def sunglasses(d: Draw) -> None:
    d.ellipse((50, 130, 150, 200), fill=(20, 20, 30))
    d.ellipse((170, 130, 270, 200), fill=(20, 20, 30))
    d.line((148, 150, 172, 150), fill=(120, 90, 40), width=6)


def plant(d: Draw) -> None:
    for box in ((120, 60, 170, 160), (150, 70, 210, 170), (100, 90, 150, 180)):
        d.ellipse(box, fill=(60, 150, 70))
    d.polygon([(105, 170), (215, 170), (195, 270), (125, 270)], fill=(190, 100, 60))


def candle(d: Draw) -> None:
    d.rectangle((120, 110, 200, 270), fill=(245, 235, 215), outline=(200, 190, 170))
    d.line((160, 110, 160, 90), fill=(40, 40, 40), width=3)
    d.ellipse((150, 55, 170, 92), fill=(255, 170, 40))


def notebook(d: Draw) -> None:
    d.rectangle((90, 60, 240, 270), fill=(150, 40, 60))
    d.rectangle((90, 60, 110, 270), fill=(110, 25, 45))
    d.rectangle((130, 100, 220, 130), fill=(240, 230, 210))


def teapot(d: Draw) -> None:
    d.ellipse((90, 110, 230, 250), fill=(235, 235, 235), outline=(150, 150, 150), width=3)
    d.polygon([(225, 160), (285, 120), (290, 130), (232, 195)], fill=(235, 235, 235))
    d.arc((50, 140, 110, 210), 90, 270, fill=(150, 150, 150), width=10)
    d.ellipse((145, 90, 175, 115), fill=(150, 150, 150))


PRODUCTS: dict[str, Callable[[Draw], None]] = {
    "mug": mug, "watch": watch, "sneaker": sneaker, "backpack": backpack, "lamp": lamp,
    "bottle": bottle, "headphones": headphones, "sunglasses": sunglasses, "plant": plant,
    "candle": candle, "notebook": notebook, "teapot": teapot,
}  # fmt: skip


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, draw in PRODUCTS.items():
        image = Image.new("RGB", (SIZE, SIZE), (236, 232, 226))
        d = ImageDraw.Draw(image)
        d.ellipse((70, 262, 250, 290), fill=(215, 210, 204))  # a floor shadow
        draw(d)
        image.save(OUT / f"{name}.jpg", format="JPEG", quality=85)


if __name__ == "__main__":
    main()
