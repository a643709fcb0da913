"""Prices come from the catalogue, per modality and per size, with `--prices` on top;
a model the catalogue does not know has no price, never another model's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchgen.engine.pricing import UNKNOWN, PriceTable
from batchgen.models import OutcomeKind, Usage
from batchgen.output.client import classify


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load(None)


@pytest.mark.parametrize(
    ("model", "size", "per_image"),
    [
        ("gemini-2.5-flash-image", None, 0.0387),
        ("gemini-3-pro-image", "1K", 0.1344),
        ("gemini-3-pro-image", "2K", 0.1344),
        ("gemini-3-pro-image", "4K", 0.24),
        ("gemini-3.1-flash-image", "512", 0.04482),
        ("gemini-nano-banana-2.1", "2K", 0.0504),
        ("gemini-3.1-flash-lite-image", None, 0.0336),
    ],
)
def test_the_table_figure_per_size_when_usage_is_missing(
    table: PriceTable, model: str, size: str | None, per_image: float
) -> None:
    assert table.cost(model, None, 1, size) == (pytest.approx(per_image), "table")


def test_usage_is_billed_per_modality(table: PriceTable) -> None:
    usage = Usage(
        prompt_tokens=700,  # text and an input image alike, at the input rate
        output_tokens=1130,
        output_image_tokens=1120,
        output_text_tokens=10,
        thoughts_tokens=230,
        prompt_image_tokens=560,
    )
    usd, source = table.cost("gemini-3-pro-image", usage, 1, "2K")
    assert source == "usage"
    assert usd == pytest.approx((700 * 2.0 + 1120 * 120.0 + (10 + 230) * 12.0) / 1e6)


def test_a_model_missing_from_the_catalogue_has_no_price(table: PriceTable) -> None:
    assert table.price("acme-image-9") is None
    assert table.cost("acme-image-9", Usage(prompt_tokens=5, output_tokens=1290), 1) == (
        0.0,
        UNKNOWN,
    )
    assert table.expected("acme-image-9", "p", 0) is None
    assert table.unpriced({"acme-image-9", "gemini-3-pro-image"}) == ["acme-image-9"]
    # The retired preview id is not priced as 2.5 Flash (or anything else) either.
    assert table.expected("gemini-3-pro-image-preview", "p", 0) is None


def test_worst_case_reserves_per_size(table: PriceTable) -> None:
    small = table.worst_case("gemini-3-pro-image", "p", 0, "1K")
    large = table.worst_case("gemini-3-pro-image", "p", 0, "4K")
    assert large > small > 2 * 0.1344
    assert large - small == pytest.approx(2 * (2000 - 1120) * 120.0 / 1e6)
    assert table.worst_case("acme-image-9", "p", 0) == 0.0


def test_the_dry_run_estimate_uses_the_tokens_of_the_size(table: PriceTable) -> None:
    one_k = table.expected("gemini-3.1-flash-image", "", 0, "1K")
    four_k = table.expected("gemini-3.1-flash-image", "", 0, "4K")
    assert one_k is not None
    assert four_k is not None
    assert four_k - one_k == pytest.approx((2520 - 1120) * 60.0 / 1e6)


def test_a_prices_file_overrides_on_top_of_the_catalogue(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "gemini-3-pro-image": {"input_per_m": 1.0, "output_per_m": 100.0},
                "acme-image-9": {"input_per_m": 0.0, "output_per_m": 10.0},
            }
        )
    )
    table = PriceTable.load(path)
    # Negotiated rate, the catalogue's tokens per size.
    assert table.cost("gemini-3-pro-image", None, 1, "4K")[0] == pytest.approx(0.2)
    assert table.cost("acme-image-9", None, 1)[0] == pytest.approx(1290 * 10.0 / 1e6)
    assert table.cost("gemini-2.5-flash-image", None, 1)[0] == pytest.approx(0.0387)


def test_a_spend_based_429_is_a_rate_limit_that_names_its_limit() -> None:
    body = {
        "error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "message": "You exceeded your current spend limit. Please retry in 30s.",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"quotaId": "GenerateContentSpendPer10MinutesPerProject"}],
                }
            ],
        }
    }
    outcome = classify(429, {}, json.dumps(body).encode())
    assert outcome.kind is OutcomeKind.RATE_LIMITED
    assert outcome.quota_id == "GenerateContentSpendPer10MinutesPerProject"
    assert outcome.retry_after == 30.0
