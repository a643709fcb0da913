"""Retried answers are reported by kind, beside the final errors.

A rehearsal whose every job ends done still met 429s, 503s and resets on the
way: the report counts each answer a job was sent again after, by outcome
kind, at the top of report.json, per job, per run (in the store) and in the
gallery. The counts are checked against the simulator's own request log.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

import batchgen
from batchgen.engine.runner import arun_files
from batchgen.jobs.codec import job_to_json
from batchgen.models import Job
from batchgen.report import gallery
from batchgen.sim import SimConfig, Simulator
from batchgen.store import Store
from batchgen.store.db import MIGRATIONS
from tests.conftest import KEY, make_config, write_jobs

CHROMIUM = Path("/usr/bin/chromium")


#: A fixed rate far above what the test sends: the pool's adaptive rate would
#: learn a quota from the 429s below and pace the rest of the test for minutes.
RPM = 60_000


def rehearsal_rows() -> list[dict[str, Any]]:
    """30 × 429, 10 × 503, 5 × 500 and a reset, spread over 26 jobs; every job
    recovers. A clean job after each (so no long run of server errors opens the
    pool's circuit breaker and pauses the test)."""
    faulty: list[dict[str, Any]] = []
    faulty += [{"id": f"quota-{n}", "prompt": f"mug {n} [[sim:429x3]]"} for n in range(10)]
    faulty += [{"id": f"busy-{n}", "prompt": f"lamp {n} [[sim:503x1]]"} for n in range(10)]
    faulty += [{"id": f"oops-{n}", "prompt": f"watch {n} [[sim:500x1]]"} for n in range(5)]
    faulty += [{"id": "cut", "prompt": "a chair [[sim:resetx1]]"}]
    rows: list[dict[str, Any]] = []
    for n, row in enumerate(faulty):
        rows += [row, {"id": f"calm-{n}", "prompt": f"a plain vase {n}"}]
    return rows


def report_of(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "report.json").read_text())
    return data


async def test_retried_answers_are_counted_by_kind_against_the_simulator_log(
    tmp_path: Path, sim: Simulator
) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", rehearsal_rows())
    out = tmp_path / "out"
    result = await arun_files([jobs], make_config(out, sim.base_url, concurrency=4, rpm=RPM))
    assert result.exit_code == 0
    seen = sim.stats.by_status
    assert (seen[429], seen[503], seen[500], seen[None], seen[200]) == (30, 10, 5, 1, 52)
    report = report_of(out)
    assert report["errors"] == {}
    assert report["retried"] == {"rate_limited": seen[429], "server_error": 10 + 5 + 1}
    assert report["retries"] == sum(report["retried"].values()) == 46
    rows = {row["id"]: row for row in report["jobs"]}
    assert rows["quota-0"]["retried"] == {"rate_limited": 3}
    assert rows["busy-3"]["retried"] == {"server_error": 1}
    assert rows["cut"]["retried"] == {"server_error": 1}
    with Store(out, readonly=True) as store:
        assert store.run_retried(1) == report["retried"]
    # The gallery: the summary table, each card's data, the filter's choices.
    page = (out / gallery.PAGE_NAME).read_text()
    shown = dict(re.findall(r'data-testid="retried-([a-z_]+)">(\d+)<', page))
    assert shown == {"rate_limited": "30", "server_error": "16"}
    text = (out / gallery.DATA_NAME).read_text()
    data = json.loads(text.removeprefix("window.BATCHGEN_DATA = ").rstrip().removesuffix(";"))
    assert data["retried"] == [["rate_limited", 30], ["server_error", 16]]
    cards = [dict(zip(data["fields"], row, strict=True)) for row in data["rows"]]
    assert sum(c["retried"].get("rate_limited", 0) for c in cards) == 30


async def test_random_faults_add_up_to_the_simulator_stats(tmp_path: Path) -> None:
    """Seeded random faults: every 429 and every server error the simulator sent is
    either retried or a final error, and each is counted once, in its kind."""
    faults = {"429": 0.15, "503": 0.1, "500": 0.05, "reset": 0.03}
    config = SimConfig(small_images=True, api_key=KEY, retry_delay_s=0.01, faults=faults, seed=7)
    rows = [{"id": f"j{n}", "prompt": f"product {n}"} for n in range(60)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    async with Simulator(config) as sim:
        await arun_files([jobs], make_config(out, sim.base_url, max_attempts=3, rpm=RPM))
        seen = sim.stats.by_status
    report = report_of(out)
    final = report["errors"]
    server = seen[503] + seen[500] + seen[None]
    assert server > 0
    assert seen[429] > 0
    assert report["retried"].get("rate_limited", 0) + final.get("rate_limited", 0) == seen[429]
    assert report["retried"].get("server_error", 0) + final.get("server_error", 0) == server
    per_job = [row["retried"] for row in report["jobs"]]
    assert sum(r.get("server_error", 0) for r in per_job) == report["retried"]["server_error"]


async def test_a_retried_job_planned_afresh_starts_with_no_retries(
    tmp_path: Path, sim: Simulator
) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"id": "a", "prompt": "a [[sim:503x1]]"}])
    out = tmp_path / "out"
    await arun_files([jobs], make_config(out, sim.base_url))
    assert report_of(out)["jobs"][0]["retried"] == {"server_error": 1}
    write_jobs(jobs, [{"id": "a", "prompt": "a, in blue"}])
    await arun_files([jobs], make_config(out, sim.base_url))
    report = report_of(out)
    assert report["jobs"][0]["retried"] == {}
    assert report["retried"] == {}
    with Store(out, readonly=True) as store:
        assert (store.run_retried(1), store.run_retried(2)) == ({"server_error": 1}, {})


def test_a_folder_of_the_previous_schema_is_upgraded(tmp_path: Path) -> None:
    class OldStore(Store):
        migrations = MIGRATIONS[:-1]

    out = tmp_path / "out"
    with OldStore(out) as old, old.transaction():
        # The row as the previous schema holds it (today's `plan` names the new column).
        old.db.execute(
            "INSERT INTO jobs (id, seq, fingerprint, status, job) VALUES (?, 1, 'fp', 'done', ?)",
            ("a", job_to_json(Job(id="a", prompt="p"))),
        )
    with Store(out) as store:
        with store.transaction():
            store.record_retry("a", "rate_limited")
            store.record_retry("a", "rate_limited")
        (record,) = store.records()
        assert record.retried == {"rate_limited": 2}
        assert [(t.name, t.jobs) for t in store.totals().retried] == [("rate_limited", 2)]


def test_the_gallery_filters_cards_by_retried_kind(tmp_path: Path) -> None:
    """In a real browser (Playwright's sync API: no event loop may run around it)."""
    rows = [
        {"id": "calm", "prompt": "a vase"},
        {"id": "quota", "prompt": "a cup [[sim:429x2]]"},
        {"id": "busy", "prompt": "a bowl [[sim:503x1]]"},
    ]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    batchgen.run([jobs], out=out, sim=True, rpm=RPM, backoff_base=0.01, backoff_cap=0.05)
    assert CHROMIUM.exists(), "run scripts/install-browser (the gallery needs a real browser)"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless=new", "--no-sandbox"]
        )
        page = browser.new_page()
        page.goto((out / gallery.PAGE_NAME).as_uri())
        page.wait_for_selector("body[data-ready='1']")

        def cards() -> list[str]:
            ids: list[str] = page.eval_on_selector_all(
                "[data-testid=card]", "cs => cs.map(c => c.dataset.id)"
            )
            return ids

        assert cards() == ["calm", "quota", "busy"]
        badge = page.locator("[data-id=quota] [data-testid=retried]").inner_text()
        assert badge == "retried: 2× rate_limited"
        page.get_by_test_id("filter-retried").select_option("*")
        assert cards() == ["quota", "busy"]
        page.get_by_test_id("filter-retried").select_option("server_error")
        assert cards() == ["busy"]
        page.get_by_test_id("filter-retried").select_option("")
        page.locator("[data-set-retried=rate_limited]").click()
        assert cards() == ["quota"]
        browser.close()
