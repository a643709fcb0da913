"""pricing: `usageMetadata` (or a job) in, cost in USD and budget reservations out.

The rates are the model catalogue's (`batchgen/catalogue.toml`, extended by
``--models FILE``), with a ``--prices FILE`` of negotiated rates laid over
them model by model. A model neither knows has **no price**: its cost is
recorded as unknown (``cost_source`` = ``unknown``), the dry run says so and
``--budget`` refuses to start, rather than pricing it silently as another model.

A priced answer is billed from its usage per modality: image output tokens at
the image-output rate; text output and thinking (``thoughtsTokenCount``,
which ``candidatesTokenCount`` leaves out) at the text-output rate; every
prompt token (text and input images) at the input rate. Only when usage is
missing does the table's figure for one image at the request's size serve
(``cost_source`` = ``table``).

A table is for one tier (`Tier`: the run's mode, `config.MODES`): every
figure it gives — cost, budget reservation, estimate — is the standard one
times the catalogue's factor for that tier (``[tiers]``: flex and batch 0.5),
so a flex run's ledger and budget are at the flex price; `live` turns a cost
back into what the standard tier would have charged, for the report. Prices
file::

    {"MODEL": {"input_per_m": 0.30, "output_per_m": 30.0,
               "text_output_per_m": 2.5 (optional), "image_tokens": 1290 (optional)}}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from batchgen.catalogue import Catalogue, ModelInfo, Tier, load_catalogue
from batchgen.errors import UsageError
from batchgen.models import Usage

#: Output image tokens of one image where neither the catalogue nor the prices
#: file says (gemini-2.5-flash-image's figure, any aspect ratio).
TOKENS_PER_IMAGE = 1290
#: Upper bound of input tokens one reference image costs.
MAX_TOKENS_PER_INPUT_IMAGE = 1100
#: Text-output rate where a price names none (2.5 Flash Image lists none).
DEFAULT_TEXT_OUTPUT_PER_M = 2.50
#: Thinking tokens reserved per request of a thinking model (seen: ~200-250).
THINKING_RESERVE = 1000
#: `cost_source` of an answer from a model that has no price.
UNKNOWN = "unknown"

_NO_TOKENS: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens for one model. `output_per_m` is the image-output
    rate; text and thinking are billed at `text_output_per_m`. `image_tokens`
    holds one image's output tokens per size ("1K", "2K", ...)."""

    input_per_m: float
    output_per_m: float
    text_output_per_m: float = DEFAULT_TEXT_OUTPUT_PER_M
    image_tokens: Mapping[str, int] = field(default_factory=lambda: _NO_TOKENS)
    default_size: str | None = None
    input_image_tokens: int | None = None
    thinking: bool = False

    def tokens(self, size: str | None = None) -> int:
        """Output tokens of one image at `size` (None: the model's default)."""
        tier = size or self.default_size
        found = self.image_tokens.get(tier) if tier else None
        if found is None and self.image_tokens:
            found = max(self.image_tokens.values()) if size else None
        return found or TOKENS_PER_IMAGE

    def per_image(self, size: str | None = None) -> float:
        return self.tokens(size) * self.output_per_m / 1e6

    @classmethod
    def of(cls, info: ModelInfo) -> Price | None:
        """The catalogue's standard rates for `info`, or None when it has none."""
        p = info.prices
        if p is None:
            return None
        return cls(
            input_per_m=p.input,
            output_per_m=p.image_output,
            text_output_per_m=DEFAULT_TEXT_OUTPUT_PER_M if p.text_output is None else p.text_output,
            image_tokens=p.image_tokens,
            default_size=info.default_size,
            input_image_tokens=p.image_input_tokens,
            thinking=info.thinking,
        )


class PriceTable:
    """Rates by model: the catalogue's, then a prices file's over them."""

    def __init__(
        self,
        prices: Mapping[str, Price] | None = None,
        *,
        catalogue: Catalogue | None = None,
        tier: Tier = Tier.STANDARD,
    ) -> None:
        self._catalogue = catalogue if catalogue is not None else load_catalogue()
        #: The tier every figure is at (the run's mode); `tier` is an output size.
        self.billing = tier
        self._prices: dict[str, Price] = {}
        #: This tier's factor per model, for the hot path (`cost`, `worst_case`).
        self._factors: dict[str, float] = {}
        for info in self._catalogue:
            price = Price.of(info)
            if price is not None:
                self._prices[info.id] = price
            self._factors[info.id] = self.factor(info.id) or 1.0
        self._prices.update(prices or {})

    @classmethod
    def load(
        cls, path: Path | None, catalogue: Catalogue | None = None, tier: Tier = Tier.STANDARD
    ) -> PriceTable:
        """The catalogue's rates, overridden model by model by the JSON file at `path`."""
        table = cls(catalogue=catalogue, tier=tier)
        if path is None:
            return table
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            for model, entry in raw.items():
                table._prices[model] = table._override(model, entry)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UsageError(f"{path}: cannot read prices ({exc})") from exc
        return table

    def _override(self, model: str, entry: Mapping[str, object]) -> Price:
        base = self._prices.get(model)
        tokens = entry.get("image_tokens")
        per_size: Mapping[str, int] = base.image_tokens if base else _NO_TOKENS
        if isinstance(tokens, int):
            per_size = {size: tokens for size in (per_size or {"1K": tokens})}
        return Price(
            float(entry["input_per_m"]),  # type: ignore[arg-type]
            float(entry["output_per_m"]),  # type: ignore[arg-type]
            float(entry.get("text_output_per_m", DEFAULT_TEXT_OUTPUT_PER_M)),  # type: ignore[arg-type]
            image_tokens=per_size,
            default_size=base.default_size if base else ("1K" if per_size else None),
            input_image_tokens=base.input_image_tokens if base else None,
            thinking=base.thinking if base else False,
        )

    def price(self, model: str) -> Price | None:
        """`model`'s rates, or None: it has no price (never another model's)."""
        return self._prices.get(model.removeprefix("models/"))

    @property
    def catalogue(self) -> Catalogue:
        return self._catalogue

    def factor(self, model: str, tier: Tier | None = None) -> float | None:
        """The fraction of the standard price `model` costs at `tier` (None: this
        table's), or None when the model does not offer it: flex only where its
        catalogue entry says so, and nothing for a model the catalogue lacks."""
        tier = self.billing if tier is None else tier
        if tier is Tier.STANDARD:
            return 1.0
        info = self._catalogue.get(model.removeprefix("models/"))
        if info is None or info.prices is None or (tier is Tier.FLEX and not info.flex):
            return None
        return info.prices.tier_factors.get(str(tier))

    def live(self, model: str, usd: float) -> float:
        """What `usd` at this table's tier would have cost at the standard one."""
        return usd / self._factors.get(model.removeprefix("models/"), 1.0)

    def tier(self, model: str, size: str | None) -> str | None:
        """The output size a request of `model` asking for `size` gets (its default
        when it asks for none), for spend per size; None when unknown."""
        if size is not None:
            return size
        info = self._catalogue.get(model)
        if info is not None and info.default_size:
            return info.default_size
        price = self.price(model)
        return price.default_size if price is not None else None

    def unpriced(self, models: set[str]) -> list[str]:
        return sorted(m for m in models if self.price(m) is None)

    def cost(
        self, model: str, usage: Usage | None, images: int, size: str | None = None
    ) -> tuple[float, str]:
        """Cost of one answer and where the figure came from."""
        price = self.price(model)
        if price is None:
            return 0.0, UNKNOWN
        factor = self._factors.get(model.removeprefix("models/"), 1.0)
        if usage is None or (usage.prompt_tokens == 0 and usage.output_tokens == 0):
            return images * price.per_image(size) * factor, "table"
        # Without a per-modality split every output token is billed as image.
        image_tokens = usage.output_image_tokens or usage.output_tokens
        text_tokens = max(0, usage.output_tokens - image_tokens) + usage.thoughts_tokens
        usd = (
            usage.prompt_tokens * price.input_per_m
            + image_tokens * price.output_per_m
            + text_tokens * price.text_output_per_m
        ) * factor
        return usd / 1e6, "usage"

    def worst_case(self, model: str, prompt: str, n_images: int, size: str | None = None) -> float:
        """An upper bound for one request, reserved against the budget before sending:
        two output images at the request's size (one answer may carry more than
        one), and thinking for a thinking model. 0 for a model without a price
        (``--budget`` refuses to start on one)."""
        price = self.price(model)
        if price is None:
            return 0.0
        input_tokens = len(prompt) + n_images * MAX_TOKENS_PER_INPUT_IMAGE + 64
        output = 2 * price.tokens(size) * price.output_per_m
        thinking = THINKING_RESERVE * price.text_output_per_m if price.thinking else 0.0
        usd = (input_tokens * price.input_per_m + output + thinking) / 1e6
        return usd * self._factors.get(model.removeprefix("models/"), 1.0)

    def expected(
        self, model: str, prompt: str, n_images: int, size: str | None = None
    ) -> float | None:
        """The likely cost of one request at the catalogue's tokens for its size;
        None for a model without a price."""
        price = self.price(model)
        if price is None:
            return None
        per_input = price.input_image_tokens or 560
        input_tokens = len(prompt) // 4 + n_images * per_input + 8
        thinking = 250 * price.text_output_per_m if price.thinking else 0.0
        usd = input_tokens * price.input_per_m + price.tokens(size) * price.output_per_m + thinking
        return usd / 1e6 * self._factors.get(model.removeprefix("models/"), 1.0)


@dataclass
class TierCosts:
    """A dry run's estimate at every tier, so that one look shows what flex (or
    Batch Mode, later) would save: each job's estimate, turned back into the
    standard price, times each tier's factor. A tier some job's model does not
    offer has no total; `missing` names those models."""

    prices: PriceTable
    usd: dict[Tier, float] = field(default_factory=lambda: dict.fromkeys(Tier, 0.0))
    missing: dict[Tier, set[str]] = field(default_factory=dict)

    def add(self, model: str, usd: float) -> None:
        """One job of `model` estimated at `usd` in the table's own tier."""
        standard = self.prices.live(model, usd)
        for tier in Tier:
            factor = self.prices.factor(model, tier)
            if factor is None:
                self.missing.setdefault(tier, set()).add(model.removeprefix("models/"))
            else:
                self.usd[tier] += standard * factor
