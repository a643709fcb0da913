"""`batchgen check`: a set-up proved in seconds against the simulator, one line per
check, exit 0 when all pass and 3 otherwise, the one paid image announced first."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from batchgen.sim import SimConfig, SimulatorThread
from tests.conftest import KEY, batchgen

LITE = "gemini-3.1-flash-lite-image"


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimConfig(api_key=KEY, small_images=True)) as s:
        yield s


def test_a_good_set_up_passes_with_one_image(sim: SimulatorThread) -> None:
    done = batchgen("check", "--base-url", sim.base_url, "--model", LITE)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [ln.split(":")[0] for ln in lines] == [
        "ok    key",
        "ok    key valid",
        "ok    model",
        "..    image quota",
        "ok    image quota",
    ]
    assert "spending at most one image" in lines[3]
    assert "about $0.034" in lines[3]
    assert sim.stats.total == 2  # GET models/{id}, one generate call
    assert KEY not in done.stdout + done.stderr


def test_no_spend_makes_no_generate_call(sim: SimulatorThread) -> None:
    done = batchgen("check", "--base-url", sim.base_url, "--no-spend")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skipped (--no-spend)" in done.stdout
    assert sim.stats.total == 1


def test_a_bad_key_fails(sim: SimulatorThread) -> None:
    done = batchgen("check", "--base-url", sim.base_url, key="AIza-wrong-key")
    assert done.returncode == 3
    assert done.stdout.startswith("ok    key: present")
    assert "FAIL  key valid: HTTP 400 API_KEY_INVALID" in done.stdout
    assert sim.stats.total == 1


def test_no_key_fails_without_a_request() -> None:
    done = batchgen("check", "--base-url", "http://127.0.0.1:9", key=None)
    assert done.returncode == 3
    assert "FAIL  key: no API key" in done.stdout


def test_a_retired_model_names_its_replacement(sim: SimulatorThread) -> None:
    done = batchgen("check", "--base-url", sim.base_url, "--model", "gemini-3-pro-image-preview")
    assert done.returncode == 3
    assert (
        "FAIL  model: HTTP 404: gemini-3-pro-image-preview was retired on 2026-06-25; "
        "use gemini-3-pro-image" in done.stdout
    )


def test_a_key_without_image_quota() -> None:
    """A free key: it authenticates, and every image call is a 429 with limit 0."""
    with SimulatorThread(SimConfig(api_key=KEY, rpm=0)) as sim:
        done = batchgen("check", "--base-url", sim.base_url)
    assert done.returncode == 3
    assert "ok    model" in done.stdout
    assert "FAIL  image quota: this key has no image quota (429, limit 0)" in done.stdout


def test_the_built_in_simulator() -> None:
    done = batchgen("check", "--sim", "--model", LITE, key=None)
    assert done.returncode == 0, done.stdout + done.stderr
