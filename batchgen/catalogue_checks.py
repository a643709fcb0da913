"""catalogue_checks: one catalogue file's raw TOML values in, checked records out.

Apart from `catalogue` so that the records and their lookups stay short to
read. Every refusal is a `CatalogueError` naming the file the bad value came
from (the built-in one or the user's) and its key, e.g.
``my-models.toml: models."gemini-x".image_sizes: '2k' is not a size``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from batchgen.catalogue import (
    IMAGE_SIZES,
    CatalogueError,
    ModelInfo,
    ModelStatus,
    Origins,
    Pixels,
    Prices,
)

_RATIO_RE = re.compile(r"^[1-9][0-9]*:[1-9][0-9]*$")
_PIXELS_RE = re.compile(r"^([1-9][0-9]*)x([1-9][0-9]*)$")
_MODEL_KEYS = frozenset(
    {"nickname", "status", "ga", "deprecated", "retires", "replacement", "image_sizes",
     "default_size", "aspect_ratios", "pixels", "max_reference_images", "best_reference_images",
     "thinking", "flex", "recommended", "jpeg_as_png", "input_token_limit", "output_token_limit",
     "prices", "image_tokens", "notes"}
)  # fmt: skip
_PRICE_KEYS = frozenset({"input", "text_output", "image_output", "image_input_tokens"})
_NUMBER = (int, float)


def check_tiers(raw: Any, origins: Origins) -> Mapping[str, float]:
    factors = {"standard": 1.0, "batch": 0.5, "flex": 0.5}
    for name, value in raw.items():
        where = origins.of("tiers", name)
        if name not in factors:
            raise CatalogueError(f"{where}: tiers.{name}: unknown tier (standard, batch, flex)")
        if isinstance(value, bool) or not isinstance(value, _NUMBER) or value < 0:
            raise CatalogueError(f"{where}: tiers.{name}: must be a number >= 0")
        factors[name] = float(value)
    return MappingProxyType(factors)


def check_pixels(
    name: str, table: Any, origins: Origins, path: tuple[str, ...] | None = None
) -> Pixels:
    """A pixel table: tier -> ratio -> ``"WIDTHxHEIGHT"``; `name` is its key
    under ``[pixels]``, or `path` where it sits inline in a model."""
    path = path or ("pixels", name)
    label = ".".join(f'"{p}"' if "." in p else p for p in path)
    if not isinstance(table, dict):
        raise CatalogueError(f"{origins.of(*path)}: {label}: must be a table")
    out: dict[str, Mapping[str, tuple[int, int]]] = {}
    for tier, ratios in table.items():
        where = f"{origins.of(*path, tier)}: {label}.{tier}"
        if tier not in IMAGE_SIZES:
            raise CatalogueError(f"{where}: {tier!r} is not a size ({', '.join(IMAGE_SIZES)})")
        if not isinstance(ratios, dict):
            raise CatalogueError(f'{where}: must be a table of RATIO = "WIDTHxHEIGHT"')
        sizes: dict[str, tuple[int, int]] = {}
        for ratio, text in ratios.items():
            match = _PIXELS_RE.match(text) if isinstance(text, str) else None
            if not _RATIO_RE.match(ratio) or match is None:
                raise CatalogueError(f'{where}: "{ratio}" = {text!r} is not RATIO = "WxH"')
            sizes[ratio] = (int(match[1]), int(match[2]))
        out[tier] = MappingProxyType(sizes)
    return MappingProxyType(out)


@dataclass(frozen=True, slots=True)
class Entry:
    """One model's raw table while it is checked."""

    id: str
    raw: Any
    origins: Origins

    def fail(self, key: str, problem: str, *causes: str) -> CatalogueError:
        """The error at `key`, naming the file that set it (or set one of the
        `causes`, keys whose values together make the problem)."""
        files = [self.origins.of("models", self.id, *k.split(".")[:2]) for k in (key, *causes)]
        where = next((f for f in files if f != self.origins.builtin), files[0])
        return CatalogueError(f'{where}: models."{self.id}".{key}: {problem}')

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        value = self.raw.get(key, default)
        if value is None or (isinstance(value, bool) == (kind is bool) and isinstance(value, kind)):
            return value
        names = kind.__name__ if isinstance(kind, type) else "a number"
        raise self.fail(key, f"must be {names}, not {value!r}")

    def count(self, key: str, value: Any = None) -> int | None:
        """A whole number >= 1 (the entry's own `key` unless `value` is given)."""
        value = self.raw.get(key) if value is None else value
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(key, f"must be a whole number >= 1, not {value!r}")
        return value

    def date(self, key: str) -> dt.date | None:
        value = self.raw.get(key)
        if value is None or (isinstance(value, dt.date) and not isinstance(value, dt.datetime)):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        raise self.fail(key, f"must be a date (YYYY-MM-DD), not {value!r}")

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.get(key, list, [])
        if not all(isinstance(v, str) for v in value):
            raise self.fail(key, "must be a list of strings")
        return tuple(value)


def check_model(
    entry: Entry, tables: Mapping[str, Pixels], factors: Mapping[str, float]
) -> ModelInfo:
    if not isinstance(entry.raw, dict):
        where = entry.origins.of("models", entry.id)
        raise CatalogueError(f'{where}: models."{entry.id}": must be a table')
    unknown = sorted(set(entry.raw) - _MODEL_KEYS)
    if unknown:
        raise entry.fail(unknown[0], "unknown key")
    try:
        status = ModelStatus(entry.get("status", str, "ga"))
    except ValueError:
        raise entry.fail("status", f"must be one of {', '.join(ModelStatus)}") from None
    info = ModelInfo(
        id=entry.id,
        nickname=entry.get("nickname", str, entry.id),
        status=status,
        ga=entry.date("ga"),
        deprecated=entry.date("deprecated"),
        retires=entry.date("retires"),
        replacement=entry.get("replacement", str),
        max_references=entry.count("max_reference_images"),
        best_references=entry.count("best_reference_images"),
        thinking=entry.get("thinking", bool, False),
        flex=entry.get("flex", bool, False),
        recommended=entry.get("recommended", bool, False),
        jpeg_as_png=entry.get("jpeg_as_png", bool, False),
        input_token_limit=entry.count("input_token_limit"),
        output_token_limit=entry.count("output_token_limit"),
        notes=entry.get("notes", str, ""),
    )
    if status is ModelStatus.RETIRED:
        return info
    return _with_outputs(info, entry, tables, factors)


def _with_outputs(
    info: ModelInfo, entry: Entry, tables: Mapping[str, Pixels], factors: Mapping[str, float]
) -> ModelInfo:
    """Sizes, ratios, pixels and prices: what a served model must have."""
    sizes = entry.strings("image_sizes")
    for size in sizes:
        if size not in IMAGE_SIZES:
            raise entry.fail("image_sizes", f"{size!r} is not a size ({', '.join(IMAGE_SIZES)})")
    default = entry.get("default_size", str, sizes[0] if sizes else None)
    if default is None or (sizes and default not in sizes):
        problem = f"must be one of the image_sizes, not {default!r}"
        raise entry.fail("default_size", problem, "image_sizes")
    table = _pixel_table(entry, tables)
    tiers = sizes or (default,)
    ratios = entry.strings("aspect_ratios")
    if not ratios:
        raise entry.fail("aspect_ratios", "must list at least one ratio")
    for tier in tiers:
        missing = [r for r in ratios if r not in table.get(tier, {})]
        if missing:
            problem = f"has no {tier} size for {', '.join(missing)}"
            raise entry.fail("pixels", problem, "image_sizes", "default_size", "aspect_ratios")
    prices = _prices(entry, tiers, factors)
    return replace(
        info, sizes=sizes, default_size=default, ratios=ratios, pixel_table=table, prices=prices
    )


def _pixel_table(entry: Entry, tables: Mapping[str, Pixels]) -> Pixels:
    name = entry.raw.get("pixels")
    if isinstance(name, str):
        if name not in tables:
            raise entry.fail("pixels", f"no pixel table named {name!r}")
        return tables[name]
    if isinstance(name, dict):
        return check_pixels("", name, entry.origins, ("models", entry.id, "pixels"))
    raise entry.fail("pixels", "must name a table of [pixels] or be one")


def _prices(entry: Entry, tiers: tuple[str, ...], factors: Mapping[str, float]) -> Prices:
    raw = entry.get("prices", dict)
    if raw is None:
        raise entry.fail("prices", "missing (input, image_output per 1M tokens)")
    unknown = sorted(set(raw) - _PRICE_KEYS)
    if unknown:
        raise entry.fail(f"prices.{unknown[0]}", "unknown key")
    rates: dict[str, float | None] = {}
    for key in ("input", "image_output", "text_output"):
        value = raw.get(key)
        if value is None and key != "text_output":
            raise entry.fail(f"prices.{key}", "missing (USD per 1M tokens)")
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, _NUMBER) or value < 0
        ):
            raise entry.fail(f"prices.{key}", f"must be a number >= 0, not {value!r}")
        rates[key] = None if value is None else float(value)
    tokens = entry.get("image_tokens", dict, {})
    for tier in tiers:
        if tokens.get(tier) is None:
            problem = f"missing the output tokens of a {tier} image"
            raise entry.fail("image_tokens", problem, "image_sizes", "default_size")
    checked = {t: entry.count(f"image_tokens.{t}", n) or 0 for t, n in tokens.items()}
    return Prices(
        input=rates["input"] or 0.0,
        image_output=rates["image_output"] or 0.0,
        text_output=rates["text_output"],
        image_tokens=MappingProxyType(checked),
        image_input_tokens=entry.count("prices.image_input_tokens", raw.get("image_input_tokens")),
        tier_factors=factors,
    )
