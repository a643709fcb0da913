"""catalogue: the Gemini image models batchgen knows, as data.

The facts (sizes, ratios, pixel sizes, limits, dates, prices) live in
``catalogue.toml`` next to this module rather than in code, because Google
changes them more often than batchgen is released: a user's own file
(``--models FILE``) is merged over the built-in one by model id, and a bad
entry is refused with the file and key that hold it. Everything here is pure
and cheap to import (``tomllib`` only), so the CLI can list models at once.

Consumers: validation and pricing ask `ModelInfo` (`takes_size`,
`pixels`, `image_price`), the simulator builds its answers from it, and
``batchgen models`` prints it.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from batchgen.errors import UsageError

#: Every value `imageConfig.imageSize` can take (uppercase K: "2k" is refused).
IMAGE_SIZES = ("512", "1K", "2K", "4K")
BUILTIN_NAME = "catalogue.toml"


class CatalogueError(UsageError):
    """A catalogue file that cannot be used; the message names file and key."""


class ModelStatus(StrEnum):
    PREVIEW = "preview"
    GA = "ga"
    DEPRECATED = "deprecated"
    #: Shut down: the API answers 404 NOT_FOUND.
    RETIRED = "retired"


class Tier(StrEnum):
    """How a request is billed: Batch Mode and Flex cost a fraction of standard."""

    STANDARD = "standard"
    BATCH = "batch"
    FLEX = "flex"


Pixels = Mapping[str, Mapping[str, tuple[int, int]]]
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Prices:
    """USD per million tokens; one image costs its tokens at `image_output`."""

    input: float
    image_output: float
    #: Text and thinking output; None where Google lists no price.
    text_output: float | None = None
    #: Output tokens of one image, per output tier.
    image_tokens: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    #: Tokens one input image costs, where known.
    image_input_tokens: int | None = None
    #: Tier -> fraction of the standard price.
    tier_factors: Mapping[str, float] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model id and what it takes, answers and costs."""

    id: str
    nickname: str
    status: ModelStatus
    ga: dt.date | None = None
    deprecated: dt.date | None = None
    #: The shutdown date: past for retired ids, planned for deprecated ones.
    retires: dt.date | None = None
    replacement: str | None = None
    #: Values `imageConfig.imageSize` takes; empty: the model takes none.
    sizes: tuple[str, ...] = ()
    #: The output tier when a request names no size.
    default_size: str | None = None
    ratios: tuple[str, ...] = ()
    #: Output tier -> aspect ratio -> (width, height).
    pixel_table: Pixels = field(default_factory=lambda: _EMPTY)
    max_references: int | None = None
    best_references: int | None = None
    thinking: bool = False
    flex: bool = False
    recommended: bool = False
    #: Answers JPEG bytes under an ``image/png`` label (seen on 3 Pro).
    jpeg_as_png: bool = False
    input_token_limit: int | None = None
    output_token_limit: int | None = None
    prices: Prices | None = None
    notes: str = ""

    @property
    def served(self) -> bool:
        return self.status is not ModelStatus.RETIRED

    @property
    def tiers(self) -> tuple[str, ...]:
        """The output tiers it has pixel sizes and prices for."""
        if self.sizes:
            return self.sizes
        return (self.default_size,) if self.default_size else ()

    def takes_size(self, size: str) -> bool:
        """Whether `size` is a valid ``imageSize`` for this model (exact spelling)."""
        return size in self.sizes

    def resolve_size(self, size: str | None) -> str | None:
        """The output tier of a request asking for `size` (None: the default),
        or None when the model does not take that size."""
        if size is None:
            return self.default_size
        return size if size in self.sizes else None

    def pixels(self, ratio: str, size: str | None = None) -> tuple[int, int] | None:
        """(width, height) of an answer at `ratio` and `size`, or None when
        the model takes neither."""
        tier = self.resolve_size(size)
        if tier is None or ratio not in self.ratios:
            return None
        return self.pixel_table.get(tier, _EMPTY).get(ratio)

    def image_tokens(self, size: str | None = None) -> int | None:
        tier = self.resolve_size(size)
        if tier is None or self.prices is None:
            return None
        return self.prices.image_tokens.get(tier)

    def image_price(self, size: str | None = None, tier: str = Tier.STANDARD) -> float | None:
        """USD for one output image: its tokens at the image-output rate, times
        the tier's factor. None for a size or tier the model does not offer."""
        tokens = self.image_tokens(size)
        if tokens is None or self.prices is None or (tier == Tier.FLEX and not self.flex):
            return None
        factor = self.prices.tier_factors.get(str(tier))
        if factor is None:
            return None
        return tokens * self.prices.image_output / 1e6 * factor


@dataclass(frozen=True, slots=True)
class Catalogue:
    """All models by id, built-in and user-supplied alike."""

    models: Mapping[str, ModelInfo]
    #: The files it was read from, built-in first.
    sources: tuple[str, ...] = ()

    def get(self, model_id: str) -> ModelInfo | None:
        """The model, also when written ``models/ID`` as the API does."""
        return self.models.get(model_id.removeprefix("models/"))

    def recommended(self) -> ModelInfo:
        """The default a new user should get (exactly one; checked at load)."""
        return next(m for m in self.models.values() if m.recommended)

    def successor(self, model_id: str) -> ModelInfo | None:
        """Where to move from `model_id`: its replacement, followed through
        replacements that are themselves deprecated or retired, to one in good
        standing; None when there is none (or the model is in good standing)."""
        info, seen = self.get(model_id), set()
        while info is not None and info.replacement is not None and info.id not in seen:
            seen.add(info.id)
            info = self.get(info.replacement)
            if info is not None and info.served and info.status is not ModelStatus.DEPRECATED:
                return info
        return None

    def expected_pixels(
        self, model_id: str, ratio: str | None, size: str | None, *, edit: bool = False
    ) -> tuple[int, int] | None:
        """The (width, height) a request should answer, or None when it cannot be
        known: an unknown model, or an edit without a ratio (its output follows
        the input's shape). A text-to-image request without a ratio is 1:1."""
        info = self.get(model_id)
        if info is None or (ratio is None and edit):
            return None
        return info.pixels(ratio or "1:1", size)

    def served(self) -> tuple[ModelInfo, ...]:
        """Models the API still answers for, in catalogue order."""
        return tuple(m for m in self.models.values() if m.served)

    def __iter__(self) -> Iterator[ModelInfo]:
        return iter(self.models.values())

    def __len__(self) -> int:
        return len(self.models)

    def __contains__(self, model_id: object) -> bool:
        return isinstance(model_id, str) and self.get(model_id) is not None


def load_catalogue(extra: Path | None = None) -> Catalogue:
    """The built-in catalogue, with `extra` merged over it by model id."""
    if extra is None:
        return _builtin()
    base_name, base = _builtin_raw()
    user = _read(extra)
    merged = _merge(base, user)
    _one_recommendation(merged, user)
    return _build(merged, Origins(base_name, str(extra), user, base))


@lru_cache(maxsize=1)
def _builtin_raw() -> tuple[str, dict[str, Any]]:
    ref = resources.files("batchgen").joinpath(BUILTIN_NAME)
    name = f"batchgen/{BUILTIN_NAME}"
    return name, _parse(ref.read_text(encoding="utf-8"), name)


@lru_cache(maxsize=1)
def _builtin() -> Catalogue:
    name, raw = _builtin_raw()
    return _build(raw, Origins(name, None, {}, raw))


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogueError(f"{path}: cannot read the models file ({exc})") from None
    return _parse(text, str(path))


def _parse(text: str, name: str) -> dict[str, Any]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"{name}: not valid TOML ({exc})") from None
    unknown = set(doc) - {"format", "tiers", "pixels", "models"}
    if unknown:
        raise CatalogueError(f"{name}: unknown top-level key {sorted(unknown)[0]!r}")
    if doc.get("format", 1) != 1:
        raise CatalogueError(f"{name}: format {doc['format']!r} is not supported (1 is)")
    for key in ("tiers", "pixels", "models"):
        if not isinstance(doc.get(key, {}), dict):
            raise CatalogueError(f"{name}: {key} must be a table")
    return doc


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merge key by key, recursively; any other value replaces."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            out[key] = _merge(old, value)
        else:
            out[key] = value
    return out


def _one_recommendation(merged: dict[str, Any], user: Mapping[str, Any]) -> None:
    """A user file that recommends a model takes the built-in recommendation away."""
    ours = {
        mid
        for mid, entry in user.get("models", {}).items()
        if isinstance(entry, dict) and entry.get("recommended") is True
    }
    if not ours:
        return
    for mid, entry in merged.get("models", {}).items():
        if mid not in ours and isinstance(entry, dict) and "recommended" in entry:
            user_entry = user.get("models", {}).get(mid, {})
            if "recommended" not in user_entry:
                merged["models"][mid] = {**entry, "recommended": False}


@dataclass(frozen=True, slots=True)
class Origins:
    """Which file a value came from, so an error names the right one."""

    builtin: str
    user: str | None
    user_doc: Mapping[str, Any]
    builtin_doc: Mapping[str, Any]

    def of(self, *path: str) -> str:
        """The file holding more of `path` (the user's on a tie): a key
        missing from both belongs to whoever wrote its table."""
        if self.user and _depth(self.user_doc, path) >= max(1, _depth(self.builtin_doc, path)):
            return self.user
        return self.builtin


def _depth(doc: Mapping[str, Any], path: tuple[str, ...]) -> int:
    node: Any = doc
    for depth, key in enumerate(path):
        if not isinstance(node, dict) or key not in node:
            return depth
        node = node[key]
    return len(path)


def _build(raw: Mapping[str, Any], origins: Origins) -> Catalogue:
    # The checks import this module's records, hence the late import.
    from batchgen.catalogue_checks import Entry, check_model, check_pixels, check_tiers

    factors = check_tiers(raw.get("tiers", {}), origins)
    tables = {
        name: check_pixels(name, table, origins) for name, table in raw.get("pixels", {}).items()
    }
    models: dict[str, ModelInfo] = {}
    for mid, entry in raw.get("models", {}).items():
        models[mid] = check_model(Entry(mid, entry, origins), tables, factors)
    for info in models.values():
        if info.replacement is not None and info.replacement not in models:
            where = origins.of("models", info.id, "replacement")
            raise CatalogueError(
                f'{where}: models."{info.id}".replacement: unknown model {info.replacement!r}'
            )
    recommended = [m.id for m in models.values() if m.recommended]
    if len(recommended) != 1:
        where = origins.user or origins.builtin
        raise CatalogueError(
            f"{where}: exactly one model must be recommended, not {len(recommended)}"
            + (f" ({', '.join(recommended)})" if recommended else "")
        )
    if not models[recommended[0]].served:
        raise CatalogueError(
            f'{origins.of("models", recommended[0])}: models."{recommended[0]}": '
            "a retired model cannot be recommended"
        )
    sources = (origins.builtin,) + ((origins.user,) if origins.user else ())
    return Catalogue(MappingProxyType(models), sources)
