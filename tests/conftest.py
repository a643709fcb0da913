"""Shared fixtures: a real simulator on loopback, job files in tmp_path."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from batchgen.config import RunConfig, Secret
from batchgen.sim import SimConfig, Simulator, SimulatorThread

#: A recognisable fake key: tests assert it never appears anywhere.
KEY = "AIzaFAKE-test-key-7c1d0e5b9a"
#: The model the tests' runs use unless they name one: their prices, token
#: counts and pixel sizes are 2.5 Flash Image's ($0.039, 1290, 1024x1024),
#: pinned here since the run's own default became the catalogue's recommended model.
TEST_MODEL = "gemini-2.5-flash-image"
ROOT = Path(__file__).resolve().parent.parent


def batchgen(*args: str | Path, key: str | None = KEY) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, in its own process, with only `key` (or none)
    in the environment's key variables."""
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    if key is not None:
        env["GEMINI_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "batchgen", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


@pytest.fixture
def sim_thread() -> Iterator[SimulatorThread]:
    """A simulator on its own thread, for CLI subprocesses to call."""
    with SimulatorThread(SimConfig(small_images=True, api_key=KEY)) as sim:
        yield sim


def write_jobs(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(dict(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def make_config(out: Path, base_url: str, **options: Any) -> RunConfig:
    options.setdefault("progress", False)
    options.setdefault("model", TEST_MODEL)
    options.setdefault("seed", 1)
    options.setdefault("backoff_base", 0.01)
    options.setdefault("backoff_cap", 0.05)
    return RunConfig(out=out, api_key=Secret(KEY), base_url=base_url, **options)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(small_images=True, api_key=KEY, retry_delay_s=0.05)) as s:
        yield s


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """One real PostgreSQL server for the session (`tests/pgserver.py`)."""
    from tests.pgserver import PgServer

    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: Any) -> str:
    """The URL of a new, empty database on the session's server."""
    url: str = pg_server.fresh_db()
    return url


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    """moto's S3 on 127.0.0.1 for the module (`tests/s3server.py`), reached through
    the standard AWS environment, which processes started afterwards inherit (the
    CLI, a Ray started later in the module); yields the server and a bucket."""
    import s3fs

    from tests.s3server import S3, CountingMotoServer, new_bucket, s3_environment

    requests_log = logging.getLogger("werkzeug")  # a line per request: 100,000s at full size
    level = requests_log.level
    requests_log.setLevel(logging.WARNING)
    server = CountingMotoServer()
    server.start()
    try:
        with s3_environment(server):
            yield S3(server, new_bucket())
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()
        requests_log.setLevel(level)


@pytest.fixture(scope="module")
def moto(s3: Any) -> str:
    """A bucket on the module's moto server."""
    bucket: str = s3.bucket
    return bucket
