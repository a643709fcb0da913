"""Today's models end to end, against the simulator: the default, the checks made
before anything is sent, the sizes asked for and got, and what each answer costs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from batchgen.config import RunConfig
from batchgen.sim import SimConfig, SimulatorThread
from tests.conftest import KEY, batchgen, write_jobs

PRO = "gemini-3-pro-image"


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    config = SimConfig(api_key=KEY, text_part=False, models=("acme-image-2",))
    with SimulatorThread(config) as s:
        yield s


def report(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / "report.json").read_text())
    return doc


def run(tmp_path: Path, sim: SimulatorThread, rows: list[dict[str, Any]], *args: str) -> Any:
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    return batchgen(
        "run", jobs, "--out", tmp_path / "out", "--base-url", sim.base_url, "--no-progress",
        *args,
    )  # fmt: skip


def test_the_default_is_the_catalogues_recommended_model() -> None:
    assert RunConfig.model == "gemini-nano-banana-2.1"
    help_text = batchgen("run", "--help").stdout
    assert "gemini-nano-banana-2.1" in help_text
    assert "--image-size" in help_text


def test_pro_at_2k_saves_one_final_image_at_2048_and_costs_usage(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    """The done-when figure: $0.134 for the image plus thinking at $12/1M, from usage."""
    done = run(tmp_path, sim, [{"id": "hero", "prompt": "a watch", "model": PRO,
                                "image_size": "2K", "aspect_ratio": "1:1"}])  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    row = report(out)["jobs"][0]
    # One image: the final one (3 Pro sends JPEG labelled PNG), never a thought draft.
    assert row["files"] == ["images/hero.jpg"]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["hero.jpg"]
    with Image.open(out / "images" / "hero.jpg") as im:
        assert im.size == (2048, 2048)
    assert row["pixels"] == [2048, 2048]
    assert row["expected_pixels"] == [2048, 2048]
    assert row["size_mismatch"] is False
    assert (row["model"], row["image_size"], row["cost_source"]) == (PRO, "2K", "usage")
    tokens = row["tokens"]
    assert tokens["output"] == 1120
    assert 200 <= tokens["thoughts"] <= 250
    image = 1120 * 120.0 / 1e6
    assert image == pytest.approx(0.1344)
    expected = image + tokens["thoughts"] * 12.0 / 1e6 + tokens["prompt"] * 2.0 / 1e6
    assert row["cost_usd"] == pytest.approx(expected, abs=1e-6)
    spend = report(out)["spend"]
    assert spend["by_model_size"] == [
        {"model": PRO, "size": "2K", "jobs": 1, "done": 1, "cost_usd": row["cost_usd"],
         "unpriced": 0}
    ]  # fmt: skip
    assert spend["by_model"][PRO]["cost_usd"] == row["cost_usd"]


def test_the_image_size_flag_is_sent_and_recorded(tmp_path: Path, sim: SimulatorThread) -> None:
    rows = [{"id": "a", "prompt": "a cup", "aspect_ratio": "16:9"}]
    done = run(tmp_path, sim, rows, "--model", "gemini-3.1-flash-lite-image", "--image-size", "1K")
    assert done.returncode == 0, done.stderr
    row = report(tmp_path / "out")["jobs"][0]
    assert (row["image_size"], row["pixels"]) == ("1K", [1376, 768])


def test_a_size_the_service_ignored_is_flagged(tmp_path: Path) -> None:
    config = SimConfig(api_key=KEY, size_scale=0.5)
    with SimulatorThread(config) as sim:
        done = run(tmp_path, sim, [{"id": "a", "prompt": "a cup", "model": PRO,
                                    "image_size": "2K"}])  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    doc = report(out)
    assert doc["size_mismatches"] == 1
    row = doc["jobs"][0]
    assert (row["pixels"], row["expected_pixels"], row["size_mismatch"]) == (
        [1024, 1024],
        [2048, 2048],
        True,
    )
    page = (out / "report.html").read_text()
    assert 'data-testid="size-mismatches"' in page
    assert "1024x1024" in (out / "report-data.js").read_text()


def validate(tmp_path: Path, rows: list[dict[str, Any]], *args: str) -> Any:
    return batchgen("validate", write_jobs(tmp_path / "jobs.jsonl", rows), *args)


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({"model": "gemini-3-pro-image-preview"}, "model",
         "gemini-3-pro-image-preview was retired on 2026-06-25; use gemini-3-pro-image"),
        ({"model": PRO, "image_size": "512"}, "image_size", "takes 1K, 2K, 4K, not '512'"),
        ({"model": "gemini-3.1-flash-lite-image", "image_size": "2K"}, "image_size", "takes 1K,"),
        ({"model": "gemini-2.5-flash-image", "image_size": "1K"}, "image_size",
         "takes no image_size"),
        ({"model": PRO, "aspect_ratio": "1:4"}, "aspect_ratio", "does not offer 1:4"),
        ({"image_size": "2k"}, "image_size", "is not one of 512, 1K, 2K, 4K"),
    ],
)  # fmt: skip
def test_what_the_model_would_refuse_fails_before_anything_is_sent(
    tmp_path: Path, row: dict[str, Any], field: str, message: str
) -> None:
    checked = validate(tmp_path, [{"id": "ok", "prompt": "p"}, {"id": "a", "prompt": "p", **row}])
    assert checked.returncode == 2
    assert f"jobs.jsonl:2: [{field}]" in checked.stderr
    assert message in checked.stderr


def test_wide_ratios_and_512_where_offered(tmp_path: Path) -> None:
    flash = "gemini-3.1-flash-image"
    rows = [
        {"id": "a", "prompt": "p", "model": flash, "aspect_ratio": "1:8", "image_size": "512"},
        {"id": "b", "prompt": "p", "model": flash, "aspect_ratio": "4:1"},
    ]
    checked = validate(tmp_path, rows)
    assert checked.returncode == 0, checked.stderr
    # Deprecated: one warning, however many jobs use it.
    assert checked.stderr.count("gemini-3.1-flash-image is deprecated") == 1
    assert "use gemini-nano-banana-2.1" in checked.stderr


def test_more_references_than_the_model_takes(tmp_path: Path) -> None:
    photo = tmp_path / "ref.png"
    Image.new("RGB", (8, 8), "red").save(photo)
    refs = [str(photo)] * 15
    checked = validate(tmp_path, [{"id": "a", "prompt": "p", "model": PRO, "images": refs}])
    assert checked.returncode == 2
    assert "15 reference images; gemini-3-pro-image takes at most 14" in checked.stderr


def test_a_retired_model_flag_fails_at_once_and_is_never_priced(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "j.jsonl", [{"id": "a", "prompt": "p"}])
    dry = batchgen("run", jobs, "-o", tmp_path / "o", "--dry-run",
                   "--model", "gemini-3-pro-image-preview", key=None)  # fmt: skip
    assert dry.returncode == 2
    assert "retired on 2026-06-25; use gemini-3-pro-image" in dry.stderr
    assert "$0.04" not in dry.stdout + dry.stderr


def test_the_dry_run_says_an_unknown_model_has_no_price(tmp_path: Path) -> None:
    jobs = write_jobs(
        tmp_path / "j.jsonl", [{"id": "a", "prompt": "p"}, {"id": "b", "prompt": "p"}]
    )
    dry = batchgen("run", jobs, "-o", tmp_path / "o", "--dry-run", "--model", "acme-image-2",
                   key=None)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "estimated cost $0.00" in dry.stdout
    assert "no price for acme-image-2 (2 jobs" in dry.stdout


def test_budget_refuses_a_model_without_a_price(tmp_path: Path, sim: SimulatorThread) -> None:
    rows = [{"id": "a", "prompt": "p"}]
    refused = run(tmp_path, sim, rows, "--model", "acme-image-2", "--budget", "5")
    assert refused.returncode == 2
    assert "no price for acme-image-2" in refused.stderr
    assert sim.stats.total == 0
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"acme-image-2": {"input_per_m": 0, "output_per_m": 30}}))
    ran = run(tmp_path, sim, rows, "--model", "acme-image-2", "--budget", "5", "--prices", prices)
    assert ran.returncode == 0, ran.stderr


def test_an_unknown_models_cost_is_marked_unknown(tmp_path: Path, sim: SimulatorThread) -> None:
    done = run(tmp_path, sim, [{"id": "a", "prompt": "p"}], "--model", "acme-image-2")
    assert done.returncode == 0, done.stderr
    doc = report(tmp_path / "out")
    assert (doc["jobs"][0]["cost_source"], doc["jobs"][0]["cost_usd"]) == ("unknown", 0.0)
    assert doc["cost_sources"] == {"unknown": 1}
    assert doc["spend"]["by_model"]["acme-image-2"]["unpriced"] == 1


def test_a_404_stops_the_run_after_one_request(tmp_path: Path, sim: SimulatorThread) -> None:
    rows = [{"id": f"j{i}", "prompt": f"p {i}"} for i in range(12)]
    stopped = run(tmp_path, sim, rows, "--model", "acme-gone", "--concurrency", "8")
    assert stopped.returncode == 3
    assert "does not serve acme-gone (HTTP 404)" in stopped.stderr
    assert sim.stats.total == 1
    assert report(tmp_path / "out")["pending"] == 12
