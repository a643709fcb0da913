"""The Flex tier as a run mode (`--mode flex`), end to end through the CLI against
simulators on loopback whose scaled clock makes flex's minutes take milliseconds:
what is sent, what it costs, what is refused before sending, shedding, timeouts
and resuming a live folder in flex. The request body and the prices are also
checked as plain data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchgen.catalogue import Tier, load_catalogue
from batchgen.cli.main import _config, build_parser
from batchgen.config import MODES, RunConfig, RunMode
from batchgen.engine.pricing import PriceTable, TierCosts
from batchgen.errors import UsageError
from batchgen.models import Job, Usage
from batchgen.output.client import build_request
from batchgen.sim import SimConfig, SimulatorThread
from tests.conftest import KEY, batchgen, write_jobs

PRO = "gemini-3-pro-image"
#: In the catalogue, served, without flex.
NO_FLEX = "gemini-3.1-flash-lite-image"
#: Simulated seconds per real second: flex's 3 minutes are 10 ms.
SCALE = 18_000.0


def flex_sim(**options: Any) -> SimulatorThread:
    options.setdefault("flex_shed_rate", 0.0)
    options.setdefault("time_scale", SCALE)
    config = SimConfig(
        small_images=True, api_key=KEY, text_part=False, seed=3,
        models=("acme-image-2",), **options,
    )  # fmt: skip
    return SimulatorThread(config)


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with flex_sim() as s:
        yield s


def run(jobs: Path, out: Path, sim: SimulatorThread, *args: str) -> Any:
    return batchgen(
        "run", jobs, "--out", out, "--base-url", sim.base_url, "--no-progress", "--model", PRO,
        "--backoff-base", "0.01", "--backoff-cap", "0.05", *args,
    )  # fmt: skip


def rows(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": f"j{i}", "prompt": f"a lamp, variant {i}", **extra} for i in range(n)]


def report(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / "report.json").read_text())
    return doc


def flex_requests(sim: SimulatorThread) -> list[float]:
    """How long each request took, in real seconds: flex ones take flex's latency."""
    return [r.elapsed_s for r in sim.stats.recent if r.path.endswith(":generateContent")]


# --- plain data --------------------------------------------------------------------------


def test_the_request_builder_adds_the_tier_at_the_top_level_only_when_asked() -> None:
    job = Job(id="a", prompt="a fox", aspect_ratio="1:1")
    live = build_request(job, [])
    assert "serviceTier" not in live
    flex = build_request(job, [], service_tier="flex")
    assert flex["serviceTier"] == "flex"
    assert {k: v for k, v in flex.items() if k != "serviceTier"} == live
    assert "serviceTier" not in flex["generationConfig"]


def test_the_modes_are_a_table_and_the_config_defaults_to_live() -> None:
    assert RunConfig.mode is RunMode.LIVE
    # Issue 15 (client side) added Batch Mode as the third row.
    assert list(MODES) == ["live", "flex", "batch"]
    assert MODES[RunMode.FLEX].tier is Tier.FLEX
    assert MODES[RunMode.FLEX].service_tier == "flex"
    assert MODES[RunMode.LIVE].service_tier is None
    assert RunConfig(out=Path("o"), mode="flex").mode is RunMode.FLEX  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="--mode"):
        RunConfig(out=Path("o"), mode="overnight")  # type: ignore[arg-type]


def test_flex_prices_at_half_and_says_what_live_would_have_cost() -> None:
    catalogue = load_catalogue()
    live, flex = PriceTable(catalogue=catalogue), PriceTable(catalogue=catalogue, tier=Tier.FLEX)
    usage = Usage(prompt_tokens=100, output_tokens=1120, thoughts_tokens=200)
    live_usd, source = live.cost(PRO, usage, 1, "1K")
    flex_usd, flex_source = flex.cost(PRO, usage, 1, "1K")
    assert (source, flex_source) == ("usage", "usage")
    assert flex_usd == pytest.approx(live_usd / 2)
    assert flex.live(PRO, flex_usd) == pytest.approx(live_usd)
    assert live.live(PRO, live_usd) == live_usd
    # Without usage, the catalogue's figure for one image, at the tier.
    info = catalogue.get(PRO)
    assert info is not None
    assert flex.cost(PRO, None, 1, "2K")[0] == pytest.approx(info.image_price("2K", Tier.FLEX))
    # The budget's reservation and the estimate are at the tier too.
    assert flex.worst_case(PRO, "p", 0, "1K") == pytest.approx(
        live.worst_case(PRO, "p", 0, "1K") / 2
    )
    assert flex.expected(PRO, "p", 0) == pytest.approx(live.expected(PRO, "p", 0) / 2)  # type: ignore[operator]
    assert flex.factor(NO_FLEX) is None
    assert flex.factor("acme-image-2") is None
    assert live.factor(NO_FLEX) == 1.0


def test_an_estimate_is_given_at_every_tier() -> None:
    table = PriceTable(tier=Tier.FLEX)
    tiers = TierCosts(table)
    tiers.add(PRO, 0.05)
    assert tiers.usd[Tier.FLEX] == pytest.approx(0.05)
    assert tiers.usd[Tier.STANDARD] == pytest.approx(0.10)
    assert tiers.usd[Tier.BATCH] == pytest.approx(0.05)
    tiers.add(NO_FLEX, 0.02)
    assert tiers.missing == {Tier.FLEX: {NO_FLEX}}


def test_flex_defaults_to_a_20_minute_timeout_unless_given() -> None:
    def config(*args: str) -> RunConfig:
        return _config(build_parser().parse_args(["run", "j.jsonl", "-o", "out", *args]))

    assert config().request_timeout == 180.0
    assert config("--mode", "flex").request_timeout == 20 * 60.0
    assert config("--mode", "flex", "--timeout", "30").request_timeout == 30.0
    assert config("--timeout", "30").request_timeout == 30.0
    assert "1200 in --mode flex" in batchgen("run", "--help").stdout


# --- end to end --------------------------------------------------------------------------


def test_a_flex_run_sends_the_tier_and_reports_half_price(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows(3))
    # Three simulated minutes per flex answer; a standard one here takes none.
    with flex_sim(flex_latency=180.0) as sim:
        done = run(jobs, tmp_path / "out", sim, "--mode", "flex")
        assert done.returncode == 0, done.stderr
        # The simulator held every request for flex's minutes: the tier was sent.
        times = flex_requests(sim)
    assert len(times) == 3
    assert min(times) >= 180.0 / SCALE
    doc = report(tmp_path / "out")
    assert doc["done"] == 3
    for row in doc["jobs"]:
        assert row["mode"] == "flex"
        assert row["cost_usd"] > 0
        assert row["live_cost_usd"] == pytest.approx(2 * row["cost_usd"], abs=2e-6)
    flex = doc["by_mode"]["flex"]
    assert flex["jobs"] == 3
    assert flex["cost_usd"] == pytest.approx(doc["cost_usd"])
    assert flex["live_cost_usd"] == pytest.approx(2 * doc["cost_usd"], abs=1e-5)
    assert "by-mode" in (tmp_path / "out" / "report.html").read_text()


def test_a_live_run_sends_no_tier(tmp_path: Path) -> None:
    # Every flex request would be shed: a live run is never.
    with flex_sim(flex_shed_rate=1.0) as sim:
        jobs = write_jobs(tmp_path / "jobs.jsonl", rows(3))
        done = run(jobs, tmp_path / "out", sim)
        assert done.returncode == 0, done.stderr
        assert not sim.stats.injected
    doc = report(tmp_path / "out")
    assert [r["mode"] for r in doc["jobs"]] == ["live"] * 3
    assert doc["by_mode"] == {
        "live": {"jobs": 3, "cost_usd": doc["cost_usd"], "live_cost_usd": doc["cost_usd"]}
    }


@pytest.mark.parametrize(
    ("model", "says"),
    [(NO_FLEX, "does not offer the Flex tier"), ("acme-image-2", "is not in the model catalogue")],
)
def test_a_model_without_flex_is_refused_before_anything_is_sent(
    tmp_path: Path, sim: SimulatorThread, model: str, says: str
) -> None:
    jobs = write_jobs(
        tmp_path / "jobs.jsonl", [*rows(1), {"id": "x", "prompt": "p", "model": model}]
    )
    done = run(jobs, tmp_path / "out", sim, "--mode", "flex")
    assert done.returncode == 2, done.stderr
    assert "jobs.jsonl:2" in done.stderr
    assert "model" in done.stderr
    assert says in done.stderr
    assert PRO in done.stderr  # which models do offer it
    assert sim.stats.total == 0
    # The same file runs live.
    live = run(jobs, tmp_path / "out", sim)
    assert live.returncode == 0, live.stderr


def test_shedding_at_30_percent_still_ends_with_every_job_done(tmp_path: Path) -> None:
    with flex_sim(flex_shed_rate=0.3) as sim:
        jobs = write_jobs(tmp_path / "jobs.jsonl", rows(20))
        done = run(jobs, tmp_path / "out", sim, "--mode", "flex")
        assert done.returncode == 0, done.stderr
        injected = sim.stats.injected
        assert injected["flex-429"] + injected["flex-503"] > 0
    doc = report(tmp_path / "out")
    assert doc["done"] == 20
    assert doc["retried"]


def test_timeout_overrides_the_flex_default(tmp_path: Path) -> None:
    # Ten simulated minutes are half a real second here: under the 20-minute
    # default the answer comes; under --timeout 0.1 it never does.
    with flex_sim(flex_latency=600.0, time_scale=1200.0) as sim:
        jobs = write_jobs(tmp_path / "jobs.jsonl", rows(1))
        done = run(jobs, tmp_path / "a", sim, "--mode", "flex")
        assert done.returncode == 0, done.stderr
        assert report(tmp_path / "a")["done"] == 1
        short = run(jobs, tmp_path / "b", sim, "--mode", "flex", "--timeout", "0.1",
                    "--max-attempts", "1")  # fmt: skip
        assert short.returncode != 0
        (row,) = report(tmp_path / "b")["jobs"]
        assert row["status"] == "failed"
        assert "no complete answer within 0.1s" in row["error"]["message"]


def test_a_live_folder_resumes_in_flex_and_sends_only_what_is_left(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows(4))
    out = tmp_path / "out"
    first = run(jobs, out, sim, "--limit", "1")
    assert first.returncode == 0, first.stderr
    assert sim.stats.total == 1
    second = run(jobs, out, sim, "--mode", "flex")
    assert second.returncode == 0, second.stderr
    assert sim.stats.total == 4
    doc = report(out)
    assert doc["done"] == 4
    assert [r["mode"] for r in doc["jobs"]] == ["live", "flex", "flex", "flex"]
    assert doc["by_mode"]["live"]["jobs"] == 1
    assert doc["by_mode"]["flex"]["jobs"] == 3
    # Done jobs are done in any mode: a flex re-run sends nothing.
    again = run(jobs, out, sim, "--mode", "flex")
    assert again.returncode == 0, again.stderr
    assert sim.stats.total == 4


def test_a_dry_run_prices_every_tier(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows(10, model=PRO))
    live = batchgen("run", jobs, "--out", tmp_path / "out", "--dry-run")
    assert live.returncode == 0, live.stderr
    line = next(ln for ln in live.stdout.splitlines() if ln.startswith("by mode:"))
    assert "live: $" in line
    assert "flex (--mode flex: half price, minutes of latency): $" in line
    assert "Batch Mode: $" in line
    figures = [float(part.rsplit("$", 1)[1]) for part in line.split("; ")]
    assert figures[1] == pytest.approx(figures[0] / 2, abs=0.01)
    flex = batchgen("run", jobs, "--out", tmp_path / "out", "--dry-run", "--mode", "flex")
    assert flex.returncode == 0, flex.stderr
    assert line in flex.stdout
    # The run's own estimate is at its tier.
    assert f"estimated cost ${figures[1]:.2f}" in flex.stdout
    mixed = write_jobs(tmp_path / "mixed.jsonl", [*rows(1, model=PRO), {"id": "n", "prompt": "p"}])
    text = batchgen("run", mixed, "--out", tmp_path / "out", "--dry-run").stdout
    assert "flex (--mode flex: half price, minutes of latency): not offered by " in text
