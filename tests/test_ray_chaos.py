"""`--engine ray` under SIGKILL: worker actors and the driver killed at random
moments against a faulty simulator, the same command run again until it ends.

The driver is the CLI in a subprocess joining this module's local Ray
(`--ray-address`); the workers are found by their process title and killed
only when their raylet is this module's. Ray restarts a killed worker; the
jobs it held are free once their lease (5 s here) ends; a killed driver takes
its actors with it and the next run voids its leases.

Sizes (tests/sizes.py): CI kills 4 workers and the driver once in 300 jobs;
``BATCHGEN_TEST_SIZE=full`` runs the scale-out table's chaos test: 1,000 jobs,
10 worker SIGKILLs and 3 of the driver.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchgen.models import FINAL_STATUSES
from batchgen.sim import SimConfig, SimulatorThread
from batchgen.store.pg import PgStore
from tests.conftest import KEY, TEST_MODEL
from tests.sizes import sized
from tests.test_chaos import image_ok, temporaries, write_chaos_jobs

#: About 5 % of requests fail (seeded): every retryable kind that answers.
FAULTS = {"429": 0.015, "500": 0.015, "503": 0.01, "reset": 0.01}
CONCURRENCY = 8
WORKERS = 4
#: The chaos test's jobs, worker kills and driver kills (the table's: 1,000, 10, 3).
CHAOS_SIZE = sized((300, 4, 1), (1_000, 10, 3))


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    import ray

    temp = tmp_path_factory.mktemp("ray")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEMINI_API_KEY", KEY)
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(temp), log_to_driver=False)
        try:
            yield ray.get_runtime_context().gcs_address, temp
        finally:
            ray.shutdown()


def our_workers(temp: Path) -> list[int]:
    """Pids of this module's worker actors (their raylet runs in `temp`)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes()
            parent = (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
            raylet = Path(f"/proc/{parent}/cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"ray::WorkerHost") and str(temp).encode() in raylet:
            found.append(int(proc.name))
    return found


def busiest_worker(url: str, pids: list[int]) -> int | None:
    """Of `pids`, the worker holding the most live leases on unfinished jobs: one
    frozen while it holds none has nothing to write late, and proves nothing."""
    import psycopg

    with psycopg.connect(url) as db:
        rows = db.execute(
            "SELECT lease_owner, count(*) FROM jobs WHERE lease_owner IS NOT NULL"
            " AND lease_until > clock_timestamp() AND status = 'pending'"
            " GROUP BY lease_owner ORDER BY count(*) DESC"
        ).fetchall()
    for owner, _ in rows:
        pid = int(str(owner).rsplit(":", 1)[1])
        if pid in pids:
            return pid
    return None


def settled(out: Path, url: str) -> int:
    try:
        with PgStore(out, url, readonly=True) as store:
            counts = store.counts()
    except Exception:
        return 0
    return sum(counts[s.value] for s in FINAL_STATUSES)


def command(jobs: Path, out: Path, url: str, base_url: str, address: str) -> list[str]:
    return [
        sys.executable, "-m", "batchgen", "run", str(jobs), "--out", str(out), "--state", url,
        "--engine", "ray", "--workers", str(WORKERS), "--concurrency", str(CONCURRENCY),
        "--ray-address", address, "--base-url", base_url, "--model", TEST_MODEL,
        "--no-progress", "--backoff-base", "0.02", "--backoff-cap", "0.2", "--rpm", "1000000",
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(sized(120, 1800))
def test_worker_and_driver_kills_leave_every_job_in_one_state(
    tmp_path: Path, ray_address: tuple[str, Path], pg_url: str
) -> None:
    address, temp = ray_address
    n, worker_kills, driver_kills = CHAOS_SIZE
    jobs = tmp_path / "jobs.jsonl"
    ids = set(write_chaos_jobs(jobs, n))
    out = tmp_path / "out"
    env = {**os.environ, "GEMINI_API_KEY": KEY, "BATCHGEN_LEASE_SECONDS": "5"}
    rng = random.Random(7)
    sim_config = SimConfig(small_images=True, api_key=KEY, faults=FAULTS, retry_delay_s=0.05)
    with SimulatorThread(sim_config) as sim:
        argv = command(jobs, out, pg_url, sim.base_url, address)
        kills = {"worker": 0, "driver": 0}
        for _ in range(20):
            driver = subprocess.Popen(
                argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            next_at = settled(out, pg_url) + rng.randint(10, 30)
            while driver.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    driver.wait(timeout=0.2)  # a look at the state five times a second
                if settled(out, pg_url) < next_at:
                    continue
                next_at += rng.randint(10, 30)
                if kills["worker"] < worker_kills and (pids := our_workers(temp)):
                    os.kill(rng.choice(pids), signal.SIGKILL)
                    kills["worker"] += 1
                elif kills["driver"] < driver_kills:
                    driver.kill()
                    kills["driver"] += 1
            output = driver.communicate()[0].decode()
            if driver.returncode in (0, 1):
                break
            assert driver.returncode == -signal.SIGKILL, output
        else:
            pytest.fail("the run never finished")
        total = sim.stats.total
    assert kills == {"worker": worker_kills, "driver": driver_kills}
    with PgStore(out, pg_url, readonly=True) as store:
        records = list(store.records())
    assert {r.id for r in records} == ids
    assert Counter(r.status in FINAL_STATUSES for r in records) == Counter({True: n})
    for record in records:
        if record.status.value == "done":
            assert image_ok(out / record.files[0]), record.id
    assert temporaries(out) == set()
    # Only requests in flight at a kill are paid twice: a worker holds C, a driver W x C.
    in_flight = worker_kills * CONCURRENCY + driver_kills * WORKERS * CONCURRENCY
    resent = total - sum(r.requests for r in records)
    print(f"\nray chaos: {n} jobs, kills {kills}, resent {resent} (bound {in_flight})")
    assert 0 <= total - sum(r.requests for r in records) <= in_flight


@pytest.mark.slow
def test_a_worker_frozen_past_its_lease_cannot_overwrite_others(
    tmp_path: Path, ray_address: tuple[str, Path], pg_url: str
) -> None:
    address, temp = ray_address
    n = 240
    jobs = tmp_path / "jobs.jsonl"
    ids = set(write_chaos_jobs(jobs, n))
    out = tmp_path / "out"
    env = {**os.environ, "GEMINI_API_KEY": KEY, "BATCHGEN_LEASE_SECONDS": "2"}
    with SimulatorThread(SimConfig(small_images=True, api_key=KEY, latency=0.3)) as sim:
        argv = [*command(jobs, out, pg_url, sim.base_url, address)[:-1], "1200"]  # 20/s
        driver = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        frozen: int | None = None
        while driver.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                driver.wait(timeout=0.2)
            if (
                frozen is None
                and settled(out, pg_url) >= 40
                and (pids := our_workers(temp))
                and (busy := busiest_worker(pg_url, pids)) is not None
            ):
                frozen = busy
                os.kill(frozen, signal.SIGSTOP)
                # Frozen past its lease: the others take its jobs over meanwhile.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    driver.wait(timeout=6)
                os.kill(frozen, signal.SIGCONT)
        output = driver.communicate()[0].decode()
        total = sim.stats.total
    assert driver.returncode == 0, output
    assert frozen is not None
    assert "late writes refused" in output
    with PgStore(out, pg_url, readonly=True) as store:
        records = list(store.records())
    assert {r.id for r in records} == ids
    assert all(r.status.value == "done" for r in records)
    # No job's row counts two workers' requests: the zombie's were refused. What it
    # sent for jobs taken over (its requests in flight and its queue, at most 2 x C)
    # is all that was paid beyond one request a job; the new owner often found that
    # answer in the request cache rather than paying for it again.
    assert all(r.requests <= 1 for r in records)
    assert n <= total <= n + 2 * CONCURRENCY
    # Woken, it checked its leases before sending: the jobs taken over were dropped
    # unsent, so only its requests in flight at the freeze were paid twice (not its
    # queue), and those are on record: the state's requests and cost are the
    # simulator's, request for request.
    assert "jobs not sent by a worker whose lease on them had ended" in output
    assert total <= n + CONCURRENCY
    with PgStore(out, pg_url, readonly=True) as store:
        totals = store.totals()
    prompts = {r.id: f"chaos product {int(r.id[4:])}" for r in records}
    served = {r.id: sim.stats.by_prompt[prompts[r.id]] for r in records}
    assert totals.requests == sum(served.values()) == total
    # A request's price depends only on its prompt's length (the simulator's usage).
    price = {len(prompts[r.id]): r.cost_usd for r in records if r.requests == 1}
    paid = sum(price[len(prompts[r.id])] * served[r.id] for r in records)
    assert totals.cost_usd == pytest.approx(paid)


def test_ctrl_c_drains_the_workers_and_the_same_command_continues(
    tmp_path: Path, ray_address: tuple[str, Path], pg_url: str
) -> None:
    address, _temp = ray_address
    jobs = tmp_path / "jobs.jsonl"
    ids = set(write_chaos_jobs(jobs, 200))
    out = tmp_path / "out"
    env = {**os.environ, "GEMINI_API_KEY": KEY}
    with SimulatorThread(SimConfig(small_images=True, api_key=KEY, latency=0.2)) as sim:
        argv = [*command(jobs, out, pg_url, sim.base_url, address)[:-1], "1200"]  # 20/s
        driver = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        while driver.poll() is None and settled(out, pg_url) < 30:
            with contextlib.suppress(subprocess.TimeoutExpired):
                driver.wait(timeout=0.2)
        driver.send_signal(signal.SIGINT)
        output = driver.communicate(timeout=60)[0].decode()
        assert driver.returncode == 130, output
        with PgStore(out, pg_url, readonly=True) as store:
            first = store.counts()
        assert 30 <= first["done"] < 200
        assert first["pending"] == 200 - first["done"]
        again = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        assert again.returncode == 0, again.stdout + again.stderr
        total = sim.stats.total
    with PgStore(out, pg_url, readonly=True) as store:
        records = list(store.records())
    assert {r.id for r in records} == ids
    assert all(r.status.value == "done" for r in records)
    assert total == 200  # drained: nothing in flight was cut off, nothing paid twice
