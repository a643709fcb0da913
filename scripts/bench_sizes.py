"""Platform sizes: CPU-seconds for the three presets of one photo-like image.

``python scripts/bench_sizes.py [--px 1024] [--repeat 5]`` draws a noisy,
photo-like image (smooth gradients, shapes and sensor-like noise: PNG cannot
compress it away), then times, in the same run:

- batchgen: `resize_all` with the three presets (one decode, Lanczos, each
  platform's format), and
- the old way: one decode per preset, Lanczos, PNG at Pillow's default level 6
  (what batchgen did before the platform formats),

and prints CPU-seconds per image, the limit (0.3 s) and the ratios. CPU time is
the process's (all threads), so it does not depend on how busy the machine is.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image, ImageDraw, ImageFilter

from batchgen.output.sizes import PRESETS, parse_size, resize_all

LIMIT_S = 0.3


def photo(px: int) -> bytes:
    """A photo-like PNG: gradient background, soft shapes, per-pixel noise."""
    base = Image.linear_gradient("L").resize((px, px)).convert("RGB")
    draw = ImageDraw.Draw(base)
    for i in range(12):
        x, y = (i * 97) % px, (i * 61) % px
        draw.ellipse((x, y, x + px // 4, y + px // 5), fill=(40 + 15 * i, 90, 200 - 10 * i))
    base = base.filter(ImageFilter.GaussianBlur(px / 200))
    noise = Image.effect_noise((px, px), 24).convert("RGB")
    image = Image.blend(base, noise, 0.12)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def old_way(data: bytes) -> None:
    for name in PRESETS:
        with Image.open(io.BytesIO(data)) as src:
            src.load()
            box = PRESETS[name]
            scale = min(box[0] / src.width, box[1] / src.height)
            scaled = src.resize(
                (round(src.width * scale), round(src.height * scale)), Image.Resampling.LANCZOS
            )
            scaled.save(io.BytesIO(), format="PNG")


def cpu(fn: object, repeat: int) -> float:
    assert callable(fn)
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/bench_sizes.py")
    parser.add_argument("--px", type=int, default=1024, help="side of the source image")
    parser.add_argument("--repeat", type=int, default=5, help="best of N")
    args = parser.parse_args(argv)
    data = photo(args.px)
    specs = [parse_size(name) for name in PRESETS]
    ours = cpu(lambda: resize_all(data, specs), args.repeat)
    theirs = cpu(lambda: old_way(data), args.repeat)
    print(f"source: {args.px} px photo-like PNG, {len(data) / 1e6:.1f} MB; presets: "
          + ", ".join(f"{s.name} {s.width}x{s.height}" for s in specs))  # fmt: skip
    print("| measure | CPU-s per image | limit | ratio |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| batchgen, three presets | {ours:.3f} | {LIMIT_S} | {ours / LIMIT_S:.2f} |")
    print(f"| old way (a decode each, PNG level 6) | {theirs:.3f} | | |")
    print(f"| batchgen / old way | | | {ours / theirs:.2f} |")
    return 0 if ours <= LIMIT_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
