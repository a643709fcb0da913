"""`--engine ray`: worker actors on a real local Ray cluster, a real PostgreSQL state,
moto's S3 and the simulator on loopback. One Ray per module (2 CPUs, its own temp
dir), started with the key and the S3 endpoint in its environment: the workers
read them there, by name.

Sizes (tests/sizes.py): CI runs the equivalence on 200 jobs and the quotas on
scaled windows; ``BATCHGEN_TEST_SIZE=full`` runs the scale-out table's sizes:
1,000 jobs for the equivalence, 1,200 jobs against 120 requests per 10 s for
the quotas (with the table's bars: ≥ 95 % and ≥ 90 % of the quota), a budget
of 100 worst-case images, 200 jobs of 50 distinct requests."""

from __future__ import annotations

import io
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from batchgen.engine.limiter import WINDOW_ENV
from batchgen.engine.runner import arun_files
from batchgen.errors import UsageError
from batchgen.models import Status
from batchgen.output.storage import open_output
from batchgen.sim import SimConfig, Simulator, SimulatorThread
from batchgen.store.pg import PgStore
from tests.conftest import KEY, make_config, write_jobs
from tests.s3server import objects_in
from tests.sizes import sized

#: Scale-out test 1: the jobs of the equivalence (the table's size: 1,000).
EQUIVALENCE_JOBS = sized(200, 1_000)


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory: pytest.TempPathFactory, moto: str) -> Iterator[Path]:
    """A local Ray for the module; its session files under tmp (the secrets test reads
    them). Started after moto (`moto`): its workers inherit the S3 endpoint."""
    import ray

    temp = tmp_path_factory.mktemp("ray")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEMINI_API_KEY", KEY)  # before init: every worker inherits it
        mp.setenv("BATCHGEN_LEASE_SECONDS", "5")
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(temp), log_to_driver=False)
        try:
            yield temp
        finally:
            ray.shutdown()


@pytest.fixture
async def sim2() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(small_images=True, api_key=KEY, retry_delay_s=0.05)) as s:
        yield s


def marked_jobs(n: int) -> list[dict[str, Any]]:
    """`n` jobs with every outcome the pool handles, chains of 3 and duplicate prompts."""
    markers = ["[[sim:503x2]]", "[[sim:429x1]]", "[[sim:block]]", "[[sim:text]]", "[[sim:400]]"]
    rows: list[dict[str, Any]] = []
    for i in range(n):
        row: dict[str, Any] = {"id": f"j{i:04d}", "prompt": f"picture {i}"}
        if i % 10 < len(markers):
            row["prompt"] += " " + markers[i % 10]
        if i % 10 == 7:  # a chain of three: j..7 <- j..8 <- j..9
            row["prompt"] = f"base {i}"
        elif i % 10 in (8, 9):
            row = {"id": f"j{i:04d}", "prompt": f"edit {i}", "images": [f"@j{i - 1:04d}"]}
        elif i % 10 == 6:
            row["prompt"] = f"same {i // 20}"  # pairs of identical requests
        rows.append(row)
    return rows


def outcomes(out: Path, state: str | None) -> dict[str, tuple[Any, ...]]:
    from batchgen.store.open import open_state

    with open_state(out, state, readonly=True) as store:
        return {
            r.id: (r.status, r.error.kind if r.error else None, r.attempts, r.requests)
            for r in store.records()
        }


def report_without_times(data: bytes) -> dict[str, Any]:
    report = json.loads(data)
    drop = {
        "started_at",
        "finished_at",
        "elapsed_s",
        "runs",
        "generated_at",
        "images_per_minute",
        "out",
    }
    return {k: v for k, v in report.items() if k not in drop and not isinstance(v, list)}


@pytest.mark.timeout(sized(120, 900))
async def test_ray_matches_the_inline_engine(
    tmp_path: Path, ray_session: Path, moto: str, pg_url: str, sim: Simulator, sim2: Simulator
) -> None:
    n = EQUIVALENCE_JOBS
    jobs = write_jobs(tmp_path / "jobs.jsonl", marked_jobs(n))
    # A fixed high rate: one early 429 would teach the adaptive pacer a tiny quota.
    inline = await arun_files([jobs], make_config(tmp_path / "inline", sim.base_url, rpm=1e6))
    ray_out, url = tmp_path / "ray", f"s3://{moto}/equivalence-{uuid.uuid4().hex[:6]}"
    config = make_config(
        ray_out, sim2.base_url, out_url=url, state=pg_url, engine="ray", workers=4, rpm=1e6
    )
    distributed = await arun_files([jobs], config)
    bucket = open_output(url)

    assert distributed.exit_code == inline.exit_code == 1
    want, got = outcomes(tmp_path / "inline", None), outcomes(ray_out, pg_url)
    same = [f"j{i:04d}" for i in range(n) if i % 10 == 6]
    for job_id in same:  # which of two identical requests is sent depends on timing
        want_i, got_i = want.pop(job_id), got.pop(job_id)
        assert want_i[:2] == got_i[:2]
    assert got == want
    assert sum(r[3] for r in outcomes(ray_out, pg_url).values()) == sim2.stats.total
    assert sim2.stats.total == sim.stats.total
    assert report_without_times(bucket.read_bytes("report.json")) == report_without_times(
        (tmp_path / "inline" / "report.json").read_bytes()
    )
    failed = set(bucket.read_bytes("failed.jsonl").decode().splitlines())
    assert failed == set((tmp_path / "inline" / "failed.jsonl").read_text().splitlines())
    with PgStore(ray_out, pg_url, readonly=True) as store:
        done = [r for r in store.records() if r.status is Status.DONE]
    assert (
        len(done)
        == Counter(v[0] for v in outcomes(tmp_path / "inline", None).values())[Status.DONE]
    )
    for record in done:
        with Image.open(io.BytesIO(bucket.read_bytes(record.files[0]))) as image:
            image.verify()
    print(f"\nequivalence: {n} jobs, {len(done)} done, {sim.stats.total} requests in each engine")


async def test_ray_needs_a_shared_state(tmp_path: Path, sim: Simulator) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", marked_jobs(3))
    config = make_config(tmp_path / "out", sim.base_url, engine="ray")
    with pytest.raises(UsageError, match="needs --state postgresql"):
        await arun_files([jobs], config)
    assert not (tmp_path / "out").exists()


@dataclass
class QuotaFigures:
    """One quota run's figures (scaleout §5, tests 2 and 3; `scripts/bench_ray.py`)."""

    jobs: int
    seconds: float
    requests: int
    rate_limited: int
    #: Accepted requests per second over the run, as a share of the quota's rate.
    of_quota: float
    #: The most requests the server saw in any one of its windows.
    most_in_window: int

    @property
    def share_429(self) -> float:
        return self.rate_limited / max(1, self.requests)


async def quota_run(
    out: Path,
    state: str,
    *,
    jobs: int,
    workers: int,
    concurrency: int,
    quota: int,
    window: float,
    rpm: float | None,
    latency: float = 0.05,
    engine: str = "ray",
) -> QuotaFigures:
    """`jobs` plain jobs through `--engine ray` against a simulator allowing `quota`
    requests per `window` seconds (the pacer's window scaled to match)."""
    rows = [{"id": f"q{i:05d}", "prompt": f"quota {i}"} for i in range(jobs)]
    path = write_jobs(out.parent / f"{out.name}.jsonl", rows)
    sim_config = SimConfig(
        small_images=True, api_key=KEY, rpm=quota, quota_window_s=window, latency=latency
    )
    previous = os.environ.get(WINDOW_ENV)
    os.environ[WINDOW_ENV] = str(window)
    try:
        # The simulator on its own thread: on the test's loop, a moment the driver
        # holds the loop would stamp the requests queued meanwhile as one burst, and
        # its windows would count what the workers never sent together.
        with SimulatorThread(sim_config) as sim:
            start = time.monotonic()
            config = make_config(
                out, sim.base_url, state=state, engine=engine, workers=workers,
                concurrency=concurrency, rpm=rpm, backoff_base=0.2, backoff_cap=1.0,
            )  # fmt: skip
            result = await arun_files([path], config)
            seconds = time.monotonic() - start
            stats = sim.snapshot()
            assert result.exit_code == 0, result.stop
            times = list(stats.timestamps)
            accepted_rate = jobs / max(1e-9, times[-1] - times[0])
            return QuotaFigures(
                jobs=jobs,
                seconds=seconds,
                requests=stats.total,
                rate_limited=stats.by_status[429],
                of_quota=accepted_rate / (quota / window),
                most_in_window=stats.max_in_window(window),
            )
    finally:
        if previous is None:
            os.environ.pop(WINDOW_ENV, None)
        else:
            os.environ[WINDOW_ENV] = previous


@pytest.mark.timeout(sized(120, 600))
async def test_rpm_is_one_hard_window_over_every_worker(
    tmp_path: Path, ray_session: Path, pg_url: str
) -> None:
    # The table: 1,200 jobs, 4 workers x C 16 on 120 per 10 s, >= 95 % of it.
    jobs, concurrency, quota, window, bar = sized(
        (160, 8, 40, 2.0, 0.9), (1_200, 16, 120, 10.0, 0.95)
    )
    figures = await quota_run(
        tmp_path / "out", pg_url, jobs=jobs, workers=4, concurrency=concurrency, quota=quota,
        window=window, rpm=quota,
    )  # fmt: skip
    assert figures.rate_limited == 0
    assert figures.most_in_window <= quota
    assert figures.of_quota >= bar, figures


@pytest.mark.timeout(sized(120, 600))
async def test_an_unknown_quota_is_learned_once_for_the_cluster(
    tmp_path: Path, ray_session: Path, pg_url: str
) -> None:
    # The table: >= 1,200 jobs, 5 workers x C 8 on 120 per 10 s, >= 90 % of it.
    jobs, quota, window, bar = sized((1200, 240, 4.0, 0.8), (1200, 120, 10.0, 0.9))
    figures = await quota_run(
        tmp_path / "out", pg_url, jobs=jobs, workers=5, concurrency=8, quota=quota,
        window=window, rpm=None,
    )  # fmt: skip
    assert figures.of_quota >= bar, figures
    assert figures.share_429 <= 0.05, figures
    with PgStore(tmp_path / "out", pg_url, readonly=True) as store:
        assert store.learned_rate(next(iter(learned_scopes(store)))) is not None


def learned_scopes(store: PgStore) -> list[str]:
    return [str(r[0]) for r in store.db.execute("SELECT scope FROM limiter").fetchall()]


async def test_the_budget_holds_across_workers(
    tmp_path: Path, ray_session: Path, pg_url: str, sim: Simulator
) -> None:
    n, images = sized((120, 25), (400, 100))  # the table: a cap of 100 worst-case images
    rows = [{"id": f"b{i:03d}", "prompt": f"budget {i}"} for i in range(n)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    cap = 0.039 * 2 * images  # the worst case (two images) of `images` requests
    config = make_config(out, sim.base_url, state=pg_url, engine="ray", workers=4, budget=cap)
    first = await arun_files([jobs], config)
    assert first.exit_code == 3
    assert first.stop is not None
    assert "budget" in first.stop.message
    with PgStore(out, pg_url, readonly=True) as store:
        assert store.spent() <= cap + 1e-9
        assert 0 < store.counts()["done"] < n
    raised = make_config(out, sim.base_url, state=pg_url, engine="ray", workers=4, budget=10 * cap)
    again = await arun_files([jobs], raised)  # the same command, the cap raised
    assert again.exit_code == 0
    assert again.report["done"] == n


async def test_identical_requests_are_sent_once_across_workers(
    tmp_path: Path, ray_session: Path, pg_url: str, sim: Simulator
) -> None:
    n, distinct = sized((100, 25), (200, 50))
    rows = [{"id": f"d{i:03d}", "prompt": f"the same {i % distinct}"} for i in range(n)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    config = make_config(tmp_path / "out", sim.base_url, state=pg_url, engine="ray", workers=4)
    result = await arun_files([jobs], config)
    assert result.exit_code == 0
    assert result.report["done"] == n
    assert sim.stats.total == distinct


async def test_the_key_never_reaches_rays_files_the_state_or_the_output(
    tmp_path: Path, ray_session: Path, moto: str, pg_server: Any, pg_url: str, sim: Simulator
) -> None:
    """Runs last in the module: every run above left its logs and GCS files in Ray's
    folder, and the equivalence its objects in the bucket."""
    jobs = write_jobs(tmp_path / "jobs.jsonl", marked_jobs(30))
    out = tmp_path / "out"
    config = make_config(out, sim.base_url, state=pg_url, engine="ray", workers=2, rpm=1e6)
    assert (await arun_files([jobs], config)).exit_code == 1
    assert KEY not in pg_server.dump(pg_url)
    assert holding(ray_session, KEY) == []
    assert holding(out, KEY) == []
    stored = objects_in(moto)
    assert stored
    assert [k for k, data in stored.items() if KEY.encode() in data] == []


def holding(folder: Path, text: str) -> list[Path]:
    """Every file under `folder` whose bytes contain `text` (logs, GCS tables, images)."""
    needle = text.encode()
    found = []
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_socket() and needle in path.read_bytes():
                found.append(path)
        except OSError:
            continue  # a socket, or a file Ray removed meanwhile
    return found
