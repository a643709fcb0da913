"""`--engine ray` losing a node: two raylets on this machine (Ray's own
`ray.cluster_utils.Cluster`, as Ray's tests do), one CPU each, the second
removed mid-run. Its workers die with it; Ray starts them again on the node
left, and the jobs they held are taken over once their lease ends. The jobs'
platform sizes are Ray tasks: they run on both nodes, and a task lost with its
node is run again, so every done job has its size.

Size (tests/sizes.py): 300 jobs in CI, 1,000 (the equivalence's) under
``BATCHGEN_TEST_SIZE=full``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from batchgen.engine.limiter import WINDOW_ENV
from batchgen.engine.ray_engine import LEASE_ENV
from batchgen.engine.runner import arun_files
from batchgen.sim import SimConfig, Simulator
from batchgen.store.pg import PgStore
from tests.conftest import KEY, make_config, write_jobs
from tests.sizes import sized


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    import ray
    from ray.cluster_utils import Cluster

    temp = str(tmp_path_factory.mktemp("ray"))
    (Path(temp) / "ray").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEMINI_API_KEY", KEY)
        mp.setenv("RAY_TMPDIR", temp)  # where the cluster's address file goes, not /tmp/ray
        # A lost node is noticed in about a second (Ray's default is tens of seconds).
        fast = {"health_check_period_ms": 300, "health_check_failure_threshold": 3}
        head = {"num_cpus": 1, "include_dashboard": False, "temp_dir": temp, "_system_config": fast}
        cluster = Cluster(initialize_head=True, head_node_args=head)
        second = cluster.add_node(num_cpus=1, temp_dir=temp)
        ray.init(address=cluster.address, log_to_driver=False)
        try:
            yield cluster, second
        finally:
            ray.shutdown()
            cluster.shutdown()


def ended(out: Path, url: str) -> int:
    try:
        with PgStore(out, url, readonly=True) as store:
            counts = store.counts()
    except Exception:
        return 0
    return counts["done"] + counts["failed"]


#: Jobs of the node-loss run (the table: the totals of test 1, 1,000 jobs).
NODE_LOSS_JOBS = sized(300, 1_000)


@pytest.mark.slow
@pytest.mark.timeout(sized(120, 600))
async def test_a_run_survives_losing_a_node(
    tmp_path: Path, two_nodes: tuple[Any, Any], pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, second = two_nodes
    monkeypatch.setenv(LEASE_ENV, "2")
    # A pacer actor restarted under --rpm pauses one window: a 2 s one here.
    monkeypatch.setenv(WINDOW_ENV, "2")
    n, workers, concurrency = NODE_LOSS_JOBS, 4, 8
    rows = [{"id": f"n{i}", "prompt": f"node {i}", "sizes": ["instagram"]} for i in range(n)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    async with Simulator(SimConfig(small_images=True, api_key=KEY, latency=0.2)) as sim:
        config = make_config(
            out, sim.base_url, state=pg_url, engine="ray", workers=workers,
            concurrency=concurrency, rpm=40,  # 20/s: a run of about 15 s
        )  # fmt: skip
        run = asyncio.ensure_future(arun_files([jobs], config))
        while not run.done() and await asyncio.to_thread(ended, out, pg_url) < 60:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(run), 0.2)
        assert not run.done()
        await asyncio.to_thread(cluster.remove_node, second)
        result = await run
        total = sim.stats.total
    assert result.exit_code == 0, result.stop
    assert result.report["done"] == n
    # What the lost node's workers had in flight is all that was sent twice.
    assert n <= total <= n + workers * concurrency
    # The sizes ran as tasks on both nodes, and every done job has its size.
    (tasks,) = [note for note in result.notes if note.startswith("sizes and previews:")]
    assert " on 2 nodes " in tasks, tasks
    assert cluster.head_node.node_id[:8] in tasks
    assert second.node_id[:8] in tasks
    with PgStore(out, pg_url, readonly=True) as store:
        records = list(store.records())
    assert sorted(r.files[1] for r in records) == sorted(
        f"sizes/instagram/n{i}.jpg" for i in range(n)
    )
    for record in records:
        with Image.open(out / record.files[1]) as im:
            assert im.size == (1080, 1080)
