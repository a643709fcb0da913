"""Shared fixtures: a real simulator on loopback, job files in tmp_path."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from batchgen.config import RunConfig, Secret
from batchgen.sim import SimConfig, Simulator

#: A recognisable fake key: tests assert it never appears anywhere.
KEY = "AIzaFAKE-test-key-7c1d0e5b9a"
#: The model the tests' runs use unless they name one: their prices, token
#: counts and pixel sizes are 2.5 Flash Image's ($0.039, 1290, 1024x1024),
#: pinned here since the run's own default became the catalogue's recommended model.
TEST_MODEL = "gemini-2.5-flash-image"


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
