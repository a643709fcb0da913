"""models_cli: ``batchgen models [--json] [--models FILE]``, the catalogue on screen.

A table for people (one row per output size, the price of one image at the
standard and the Batch rate) or JSON for scripts. Imports only the catalogue
(``tomllib``), so it answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchgen.errors import EXIT_OK

if TYPE_CHECKING:
    from batchgen.catalogue import Catalogue, ModelInfo


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``models`` to the main CLI."""
    p = subparsers.add_parser(
        "models",
        help="list the Gemini image models: sizes, ratios, limits, prices",
        description="The model catalogue: what each Gemini image model takes and what one "
        "image costs at each size, standard and Batch (Flex, where offered, is the Batch price).",
    )
    p.add_argument("--json", action="store_true", help="the whole catalogue as JSON")
    p.add_argument(
        "--models",
        type=Path,
        default=None,
        metavar="FILE",
        help="a catalogue file (TOML) merged over the built-in one by model id",
    )
    p.set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    from batchgen.catalogue import load_catalogue

    catalogue = load_catalogue(args.models)
    if args.json:
        sys.stdout.write(json.dumps(as_json(catalogue), indent=2) + "\n")
    else:
        sys.stdout.write(render_table(catalogue))
    return EXIT_OK


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}".rstrip("0").rstrip(".")


def _status(info: ModelInfo) -> str:
    if info.retires is not None:
        return f"{info.status} (shuts down {info.retires})"
    return str(info.status)


def _rows(info: ModelInfo, ratio_names: dict[tuple[str, ...], str]) -> list[list[str]]:
    refs = str(info.max_references or "-")
    if info.max_references is None and info.best_references:
        refs = f"best <={info.best_references}"
    head = [
        info.id + (" *" if info.recommended else ""),
        _status(info),
        " ".join(info.sizes) or "(none)",
        ratio_names[info.ratios],
        refs,
    ]
    sizes: tuple[str | None, ...] = info.sizes or (None,)
    rows = []
    for i, size in enumerate(sizes):
        price = [size or "-", _money(info.image_price(size))]
        price.append(_money(info.image_price(size, "batch")))
        rows.append((head if i == 0 else [""] * len(head)) + price)
    return rows


def render_table(catalogue: Catalogue) -> str:
    """The served models, one row per output size, then the retired ids."""
    served = catalogue.served()
    ratio_sets = sorted({m.ratios for m in served}, key=len)
    ratio_names = {ratios: f"{len(ratios)} ({chr(65 + i)})" for i, ratios in enumerate(ratio_sets)}
    header = ["MODEL", "STATUS", "IMAGE SIZES", "RATIOS", "REFERENCES", "SIZE", "$/IMAGE", "BATCH"]
    rows = [header] + [row for m in served for row in _rows(m, ratio_names)]
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    flex = ", ".join(m.id for m in served if m.flex) or "none"
    lines += ["", f"* recommended default. Flex costs the Batch price; offered by {flex}."]
    for ratios, name in ratio_names.items():
        lines.append(f"ratios {name}: {' '.join(ratios)}")
    for m in served:
        successor = catalogue.successor(m.id)
        if successor is not None:
            lines.append(f"{m.id} is {m.status}: use {successor.id}")
    retired = [m for m in catalogue if not m.served]
    if retired:
        lines.append("retired (404 NOT_FOUND):")
        for m in retired:
            when = f" since {m.retires}" if m.retires else ""
            successor = catalogue.successor(m.id)
            use = f"; use {successor.id}" if successor else ""
            lines.append(f"  {m.id}{when}{use}")
    return "\n".join(lines) + "\n"


def _model_json(info: ModelInfo) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": info.id,
        "nickname": info.nickname,
        "status": str(info.status),
        "ga": info.ga and info.ga.isoformat(),
        "deprecated": info.deprecated and info.deprecated.isoformat(),
        "retires": info.retires and info.retires.isoformat(),
        "replacement": info.replacement,
        "recommended": info.recommended,
    }
    if not info.served:
        return doc
    prices = info.prices
    doc |= {
        "image_sizes": list(info.sizes),
        "default_size": info.default_size,
        "aspect_ratios": list(info.ratios),
        "max_reference_images": info.max_references,
        "best_reference_images": info.best_references,
        "thinking": info.thinking,
        "flex": info.flex,
        "jpeg_as_png": info.jpeg_as_png,
        "input_token_limit": info.input_token_limit,
        "output_token_limit": info.output_token_limit,
        "notes": info.notes,
        "prices_per_million": prices
        and {
            "input": prices.input,
            "text_output": prices.text_output,
            "image_output": prices.image_output,
            "image_input_tokens": prices.image_input_tokens,
        },
        "per_image": {
            size or "default": {
                "tokens": info.image_tokens(size),
                **{tier: info.image_price(size, tier) for tier in ("standard", "batch", "flex")},
            }
            for size in (info.sizes or (None,))
        },
        "pixels": {
            tier: {r: list(info.pixel_table[tier][r]) for r in info.ratios} for tier in info.tiers
        },
    }
    return doc


def as_json(catalogue: Catalogue) -> dict[str, Any]:
    return {
        "sources": list(catalogue.sources),
        "recommended": catalogue.recommended().id,
        "models": [
            _model_json(m) | {"successor": getattr(catalogue.successor(m.id), "id", None)}
            for m in catalogue
        ],
    }
