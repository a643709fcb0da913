"""The price table, in one place, and the cost of one answer.

Costs come from the `usageMetadata` the server returned; only when it is
missing do we fall back to the table's per-image figure, and the record says
which (`cost_source` = ``usage`` or ``table``). Users with negotiated prices
pass a JSON file with the same shape as `DEFAULT_PRICES`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from batchgen.errors import UsageError
from batchgen.models import Usage

#: Output image tokens for one image up to 1024 px (any aspect ratio).
TOKENS_PER_IMAGE = 1290
#: Upper bound of input tokens one reference image costs.
MAX_TOKENS_PER_INPUT_IMAGE = 1100


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. `output_per_m` is for image tokens; output text
    tokens (the optional caption) are billed at the model's text rate."""

    input_per_m: float
    output_per_m: float
    text_output_per_m: float = 2.50

    @property
    def per_image(self) -> float:
        return TOKENS_PER_IMAGE * self.output_per_m / 1e6


DEFAULT_PRICES: dict[str, Price] = {
    "gemini-2.5-flash-image": Price(input_per_m=0.30, output_per_m=30.0),
    "gemini-2.5-flash-image-preview": Price(input_per_m=0.30, output_per_m=30.0),
}
_FALLBACK = DEFAULT_PRICES["gemini-2.5-flash-image"]


class PriceTable:
    def __init__(self, prices: dict[str, Price] | None = None) -> None:
        self._prices = dict(DEFAULT_PRICES if prices is None else prices)

    @classmethod
    def load(cls, path: Path | None) -> PriceTable:
        """Default prices, overridden model by model by a JSON file
        ``{"model": {"input_per_m": .., "output_per_m": ..}}``."""
        prices = dict(DEFAULT_PRICES)
        if path is None:
            return cls(prices)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            for model, entry in raw.items():
                prices[model] = Price(
                    float(entry["input_per_m"]),
                    float(entry["output_per_m"]),
                    float(entry.get("text_output_per_m", 2.50)),
                )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UsageError(f"{path}: cannot read prices ({exc})") from exc
        return cls(prices)

    def price(self, model: str) -> Price:
        return self._prices.get(model, _FALLBACK)

    def cost(self, model: str, usage: Usage | None, images: int) -> tuple[float, str]:
        """Cost of one answer and where the figure came from."""
        price = self.price(model)
        if usage is None or (usage.prompt_tokens == 0 and usage.output_tokens == 0):
            return images * price.per_image, "table"
        # Without a per-modality split every output token is billed as image.
        image_tokens = usage.output_image_tokens or usage.output_tokens
        text_tokens = max(0, usage.output_tokens - image_tokens)
        usd = (
            usage.prompt_tokens * price.input_per_m
            + image_tokens * price.output_per_m
            + text_tokens * price.text_output_per_m
        ) / 1e6
        return usd, "usage"

    def worst_case(self, model: str, prompt: str, n_images: int) -> float:
        """An upper bound for one request, reserved against the budget before sending.
        Two output images: one answer may carry more than one."""
        price = self.price(model)
        input_tokens = len(prompt) + n_images * MAX_TOKENS_PER_INPUT_IMAGE + 64
        return (input_tokens * price.input_per_m + 2 * TOKENS_PER_IMAGE * price.output_per_m) / 1e6

    def expected(self, model: str, prompt: str, n_images: int) -> float:
        price = self.price(model)
        input_tokens = len(prompt) // 4 + n_images * 560 + 8
        return (input_tokens * price.input_per_m + TOKENS_PER_IMAGE * price.output_per_m) / 1e6
