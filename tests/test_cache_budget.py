"""The request cache (within a folder and shared across folders) and the budget cap."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from batchgen.engine.cache import request_key
from batchgen.engine.runner import arun_files
from batchgen.models import Job
from batchgen.sim import SimConfig, Simulator
from tests.conftest import KEY, make_config, write_jobs


def report(out: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((out / "report.json").read_text())  # type: ignore[no-any-return]


def test_request_key_normalises_only_whitespace() -> None:
    base = request_key(Job(id="a", prompt="Summer  Sale\n poster"), "m", [])
    assert request_key(Job(id="b", prompt=" Summer Sale poster "), "m", []) == base
    assert request_key(Job(id="c", prompt="summer sale poster"), "m", []) != base
    assert request_key(Job(id="d", prompt="Summer Sale poster!"), "m", []) != base
    assert request_key(Job(id="e", prompt="Summer Sale poster", variant=2), "m", []) != base
    assert request_key(Job(id="f", prompt="Summer Sale poster"), "m", [b"img"]) != base


async def test_identical_requests_in_a_run_are_sent_once(tmp_path: Path, sim: Simulator) -> None:
    rows = [
        {"id": f"same{i}", "prompt": "a  red cube" if i % 2 else "a red cube"} for i in range(6)
    ]
    rows += [{"id": "case", "prompt": "A red cube"}]
    rows += [{"id": f"v{n}", "prompt": "a red cube", "variant": n} for n in (1, 2, 3)]
    out = tmp_path / "out"
    result = await arun_files(
        [write_jobs(tmp_path / "j.jsonl", rows)], make_config(out, sim.base_url, concurrency=8)
    )
    assert result.exit_code == 0
    # one for the six identical jobs, one for the different case, three distinct variants
    assert sim.stats.total == 5
    r = report(out)
    assert r["done"] == 10
    assert r["cache"]["hits"] == 5
    one = next(j for j in r["jobs"] if j["id"] == "same0")
    assert r["cache"]["saved_usd"] > 0
    hit_rows = [j for j in r["jobs"] if j["cost_source"] == "cache"]
    assert len(hit_rows) == 5
    assert all(
        (out / j["files"][0]).read_bytes() == (out / one["files"][0]).read_bytes() for j in hit_rows
    )


async def test_shared_cache_pays_once_across_folders(tmp_path: Path, sim: Simulator) -> None:
    rows = [{"id": f"p{i}", "prompt": f"product {i}"} for i in range(5)]
    jobs = write_jobs(tmp_path / "j.jsonl", rows)
    cache = tmp_path / "cache"
    await arun_files([jobs], make_config(tmp_path / "a", sim.base_url, cache_dir=cache))
    assert sim.stats.total == 5
    second = await arun_files([jobs], make_config(tmp_path / "b", sim.base_url, cache_dir=cache))
    assert (second.exit_code, sim.stats.total) == (0, 5)
    assert report(tmp_path / "b")["cache"]["hits"] == 5
    assert report(tmp_path / "b")["cost_usd"] == 0
    for i in range(5):
        a = (tmp_path / "a" / "images" / f"p{i}.png").read_bytes()
        assert (tmp_path / "b" / "images" / f"p{i}.png").read_bytes() == a


async def test_shared_cache_is_safe_under_two_concurrent_runs(
    tmp_path: Path, sim: Simulator
) -> None:
    rows = [{"id": f"p{i}", "prompt": f"product {i}"} for i in range(30)]
    jobs = write_jobs(tmp_path / "j.jsonl", rows)
    cache = tmp_path / "cache"
    results = await asyncio.gather(
        arun_files([jobs], make_config(tmp_path / "a", sim.base_url, cache_dir=cache)),
        arun_files([jobs], make_config(tmp_path / "b", sim.base_url, cache_dir=cache)),
    )
    assert [r.exit_code for r in results] == [0, 0]
    sent = sim.stats.total
    assert 30 <= sent <= 60
    third = await arun_files([jobs], make_config(tmp_path / "c", sim.base_url, cache_dir=cache))
    assert (third.exit_code, sim.stats.total) == (0, sent)


async def test_budget_cap_holds_with_high_concurrency(tmp_path: Path, sim: Simulator) -> None:
    rows = [{"id": f"p{i}", "prompt": f"product {i}"} for i in range(40)]
    out = tmp_path / "out"
    result = await arun_files(
        [write_jobs(tmp_path / "j.jsonl", rows)],
        make_config(out, sim.base_url, concurrency=32, budget=0.5),
    )
    r = report(out)
    assert result.exit_code == 3
    assert result.stop is not None
    assert "budget" in result.stop.message
    assert r["cost_usd"] <= 0.5
    assert r["done"] >= 6  # it did use the budget, not stop at once
    assert r["pending"] == 40 - r["done"]


async def test_budget_counts_retries_and_earlier_runs(tmp_path: Path) -> None:
    # Text-only answers are billed (the model spent tokens) and retried: the
    # budget must count those attempts too.
    config = SimConfig(small_images=True, api_key=KEY)
    async with Simulator(config) as sim:
        rows = [{"id": f"p{i}", "prompt": f"product {i} [[sim:textx1]]"} for i in range(30)]
        jobs = write_jobs(tmp_path / "j.jsonl", rows)
        out = tmp_path / "out"
        await arun_files([jobs], make_config(out, sim.base_url, concurrency=16, budget=0.3))
        first = report(out)["cost_usd"]
        assert first <= 0.3
        await arun_files([jobs], make_config(out, sim.base_url, concurrency=16, budget=0.45))
        r = report(out)
        assert first < r["cost_usd"] <= 0.45
        assert r["retries"] > 0
