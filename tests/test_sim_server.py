"""The simulator as a server: quotas, faults, latency, overload, stats, log,
shutdown, the thread runner and the ``serve`` command."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from batchgen.sim import SimConfig, Simulator, SimulatorThread, SpecError

MODEL = "gemini-2.5-flash-image"
PATH = f"/v1beta/models/{MODEL}:generateContent"
ROOT = Path(__file__).resolve().parents[1]


def body(prompt: str) -> dict[str, Any]:
    return {"contents": [{"parts": [{"text": prompt}]}]}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def send(
    session: aiohttp.ClientSession, sim: Simulator, prompt: str = "a cat", key: str = "k"
) -> tuple[int, dict[str, Any]]:
    async with session.post(
        sim.base_url + PATH, json=body(prompt), headers={"x-goog-api-key": key}
    ) as resp:
        return resp.status, await resp.json()


def quota_id(doc: dict[str, Any]) -> str:
    for detail in doc["error"]["details"]:
        if detail["@type"].endswith("QuotaFailure"):
            return str(detail["violations"][0]["quotaId"])
    raise AssertionError("no QuotaFailure")


def retry_delay(doc: dict[str, Any]) -> float:
    for detail in doc["error"]["details"]:
        if detail["@type"].endswith("RetryInfo"):
            return float(detail["retryDelay"].removesuffix("s"))
    raise AssertionError("no RetryInfo")


# -- quotas ----------------------------------------------------------------


async def test_twice_the_rpm_gets_per_minute_429s(session: aiohttp.ClientSession) -> None:
    # A 60 s window cannot roll over during the test: the counts are exact.
    async with Simulator(SimConfig(small_images=True, rpm=10)) as sim:
        results = await asyncio.gather(*(send(session, sim, f"p{i}") for i in range(20)))
    statuses = [status for status, _ in results]
    assert statuses.count(200) == 10
    assert statuses.count(429) == 10
    for status, doc in results:
        if status == 429:
            assert doc["error"]["status"] == "RESOURCE_EXHAUSTED"
            assert quota_id(doc) == "GenerateRequestsPerMinutePerProjectPerModel"
            assert 0 < retry_delay(doc) <= 60
    assert sim.stats.by_outcome["rpm"] == 10


async def test_short_window_frees_a_slot_after_retry_delay(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimConfig(small_images=True, rpm=2, quota_window_s=1.0)) as sim:
        assert [(await send(session, sim))[0] for _ in range(3)] == [200, 200, 429]
        status, doc = await send(session, sim)
        if status == 429:  # the server says how long; trusting it must work
            await asyncio.sleep(retry_delay(doc) + 0.01)
            status, _ = await send(session, sim)
        assert status == 200


async def test_rpd_gives_per_day_429s(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimConfig(small_images=True, rpd=3, rpm=100)) as sim:
        results = [await send(session, sim) for _ in range(5)]
    assert [s for s, _ in results] == [200, 200, 200, 429, 429]
    assert quota_id(results[-1][1]) == "GenerateRequestsPerDayPerProjectPerModel"
    assert retry_delay(results[-1][1]) > 3600


async def test_quota_per_key_or_per_project(session: aiohttp.ClientSession) -> None:
    for scope, expected in (("project", [200, 200, 429, 429]), ("key", [200, 200, 200, 200])):
        async with Simulator(SimConfig(small_images=True, rpm=2, quota_scope=scope)) as sim:
            statuses = [(await send(session, sim, key=k))[0] for k in ("a", "b", "a", "b")]
        assert statuses == expected, scope


# -- faults ----------------------------------------------------------------


async def _fault_run(session: aiohttp.ClientSession, seed: int, concurrent: bool) -> list[int]:
    config = SimConfig(small_images=True, seed=seed, faults={"500": 0.2, "503": 0.1, "text": 0.1})
    async with Simulator(config) as sim:
        prompts = [f"job {i % 40}" for i in range(120)]
        if concurrent:
            results = await asyncio.gather(*(send(session, sim, p) for p in prompts))
        else:
            results = [await send(session, sim, p) for p in prompts]
        assert sum(sim.stats.injected.values()) == sum(
            1 for s, d in results if s != 200 or "inlineData" not in str(d)
        )
    return [s if "inlineData" in str(d) or s != 200 else -1 for s, d in results]


async def test_seeded_faults_are_reproducible(session: aiohttp.ClientSession) -> None:
    first = await _fault_run(session, seed=5, concurrent=False)
    assert await _fault_run(session, seed=5, concurrent=False) == first
    assert await _fault_run(session, seed=6, concurrent=False) != first
    # Concurrent arrival changes the order, not which request fails.
    assert sorted(await _fault_run(session, seed=5, concurrent=True)) == sorted(first)
    assert 15 <= first.count(500) <= 40
    assert first.count(-1) > 0  # text answers


# -- latency and overload ----------------------------------------------------


async def test_latency_is_applied(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimConfig(small_images=True, latency="uniform:0.2:0.3")) as sim:
        started = time.monotonic()
        await asyncio.gather(*(send(session, sim, f"p{i}") for i in range(5)))
        elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 1.5  # concurrent, so about one latency in total


async def test_max_concurrent_answers_503(session: aiohttp.ClientSession) -> None:
    config = SimConfig(small_images=True, latency=1.0, max_concurrent=2)
    async with Simulator(config) as sim:
        results = await asyncio.gather(*(send(session, sim, f"p{i}") for i in range(5)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 200, 503, 503, 503]
    overloaded = [doc for status, doc in results if status == 503]
    assert overloaded[0]["error"]["status"] == "UNAVAILABLE"
    assert overloaded[0]["error"]["message"] == "The model is overloaded. Please try again later."
    assert sim.stats.max_in_flight == 2
    assert sim.stats.by_outcome["overloaded"] == 3


# -- stats and log -----------------------------------------------------------


async def test_stats_are_exact(session: aiohttp.ClientSession, tmp_path: Path) -> None:
    log = tmp_path / "sim.jsonl"
    config = SimConfig(small_images=True, api_key="secret-key", log_path=log)
    async with Simulator(config) as sim:
        await send(session, sim, "a", key="secret-key")
        await send(session, sim, "a", key="secret-key")
        await send(session, sim, "b [[sim:500x1]]", key="secret-key")
        await send(session, sim, "b [[sim:500x1]]", key="secret-key")
        await send(session, sim, "c", key="wrong")
        stats = sim.stats
        assert stats.total == 5
        assert stats.by_status == {200: 3, 500: 1, 400: 1}
        assert stats.by_outcome == {"ok": 3, "500": 1, "badkey": 1}
        assert stats.by_key == {"secret-key": 4, "wrong": 1}
        assert stats.by_prompt == {"a": 2, "b [[sim:500x1]]": 2}
        assert stats.forced == {"500": 1}
        assert stats.ok == 3
        assert stats.in_flight == 0
        assert stats.max_in_flight == 1
        assert len(stats.timestamps) == 5
        assert stats.max_in_window(60.0) == 5
        assert [r.outcome for r in stats.recent] == ["ok", "ok", "500", "ok", "badkey"]
        stats.reset()
        assert sim.stats.total == 0
    text = log.read_text()
    assert "secret-key" not in text
    assert "wrong" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 5
    assert lines[2]["status"] == 500
    assert lines[2]["prompt"] == "b [[sim:500x1]]"
    assert lines[0]["key_source"] == "header"
    assert lines[0]["key_id"]
    assert lines[0]["key_id"] != lines[4]["key_id"]
    assert {"t", "path", "model", "outcome", "elapsed_s", "api_version"} <= set(lines[0])


def test_max_in_window_is_a_sliding_count() -> None:
    from batchgen.sim import SimStats

    stats = SimStats()
    stats.timestamps.extend([0.0, 0.5, 1.0, 1.2, 3.0, 3.1, 3.2, 3.3])
    assert stats.max_in_window(1.0) == 4
    assert stats.max_in_window(0.25) == 3


def test_bad_config_fails_early() -> None:
    with pytest.raises(SpecError):
        SimConfig(faults={"nope": 0.1})
    with pytest.raises(SpecError):
        SimConfig(latency="sometimes")
    with pytest.raises(SpecError):
        SimConfig(quota_scope="planet")


# -- shutdown and runners -----------------------------------------------------


async def test_stop_is_prompt_despite_hanging_requests(session: aiohttp.ClientSession) -> None:
    sim = Simulator(SimConfig(small_images=True, shutdown_timeout_s=5.0))
    await sim.start()
    hanging = asyncio.create_task(send(session, sim, "x [[sim:hang]]"))
    # The simulator offers no arrival event; poll its counter (bounded by the test timeout).
    while sim.stats.in_flight == 0:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await sim.stop()
    assert time.monotonic() - started < 1.0
    with pytest.raises(aiohttp.ClientConnectionError):
        await hanging
    assert sim.stats.by_outcome["hang"] == 1


def test_simulator_thread_serves_synchronous_code() -> None:
    with SimulatorThread(SimConfig(small_images=True)) as sim:
        request = urllib.request.Request(
            sim.base_url + PATH,
            data=json.dumps(body("a cat")).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200
            assert "inlineData" in json.loads(resp.read())["candidates"][0]["content"]["parts"][1]
        assert sim.stats.ok == 1
        copy = sim.snapshot()
        assert copy.ok == 1
        assert copy is not sim.stats


def test_simulator_thread_reports_bind_errors() -> None:
    with SimulatorThread(SimConfig()) as first:
        port = int(first.base_url.rsplit(":", 1)[1])
        with pytest.raises(OSError, match="in use"):
            SimulatorThread(SimConfig(port=port)).start()


def _serve(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("BATCHGEN_SIM_KEY", None)
    return subprocess.Popen(
        [sys.executable, "-m", "batchgen.sim", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_command_prints_url_and_stops_cleanly(signum: int, tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    proc = _serve("--port", "0", "--small-images", "--api-key", "k", "--log", str(log))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("batchgen simulator serving at http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1].strip()
        request = urllib.request.Request(
            url + PATH,
            data=json.dumps(body("a cat")).encode(),
            headers={"Content-Type": "application/json", "x-goog-api-key": "k"},
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200
        bad = urllib.request.Request(url + PATH, data=json.dumps(body("a")).encode())
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(bad, timeout=5)
        assert caught.value.code == 400
        caught.value.close()
        proc.send_signal(signum)
        assert proc.wait(timeout=10) == 0
        assert proc.stdout.read() == ""  # exactly one line on stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.communicate()
    assert len(log.read_text().splitlines()) == 2


def test_serve_command_rejects_bad_options() -> None:
    proc = _serve("--faults", "500=2")
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 2
    assert "fault" in err
    assert "Traceback" not in err


async def test_transport_faults_at_full_rate(session: aiohttp.ClientSession) -> None:
    quick = aiohttp.ClientTimeout(total=0.3)
    for kind in ("reset", "hang", "truncate"):
        async with Simulator(SimConfig(small_images=True, faults={kind: 1.0})) as sim:
            with pytest.raises((aiohttp.ClientError, TimeoutError)):
                async with session.post(sim.base_url + PATH, json=body("a"), timeout=quick) as r:
                    await r.read()
            assert sim.stats.injected == {kind: 1}


async def test_default_body_limit_is_20_mb(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimConfig(small_images=True)) as sim:
        big = b'{"contents": [{"parts": [{"text": "' + b"a" * (20 * 1024 * 1024) + b'"}]}]}'
        async with session.post(sim.base_url + PATH, data=io.BytesIO(big)) as resp:
            assert resp.status == 413
            assert "text/html" in resp.headers["Content-Type"]
        status, _ = await send(session, sim)
        assert status == 200


def test_cli_options_build_the_config() -> None:
    import argparse

    from batchgen.sim.cli import config_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(
        ["sim", "serve", "--latency", "lognormal:8:0.5", "--rpm", "10", "--rpd", "500",
         "--max-concurrent", "4", "--fault-rate", "0.1", "--faults", "hang=0.005,500=0.02",
         "--seed", "3", "--noise", "--model", "gemini-3-pro-image-preview", "--api-key", "k"]
    )  # fmt: skip
    config = config_from_args(args)
    assert config.latency_model.kind == "lognormal"
    assert (config.rpm, config.rpd, config.max_concurrent, config.seed) == (10, 500, 4, 3)
    assert config.faults["hang"] == 0.005
    assert config.faults["500"] == 0.02  # the explicit rate wins over the spread
    assert sum(config.faults.values()) == pytest.approx(0.1 - 0.015 + 0.02 + 0.005)
    assert config.noise
    assert config.models == ("gemini-2.5-flash-image", "gemini-3-pro-image-preview")
    assert config.api_key == "k"
    assert args.func is not None


async def test_x_server_timeout_turns_long_latency_into_504(session: aiohttp.ClientSession) -> None:
    async with (
        Simulator(SimConfig(small_images=True, latency=30)) as sim,
        session.post(
            sim.base_url + PATH, json=body("slow model"), headers={"X-Server-Timeout": "0.1"}
        ) as resp,
    ):
        assert resp.status == 504
        doc = await resp.json()
    assert doc["error"]["status"] == "DEADLINE_EXCEEDED"
    assert sim.stats.by_outcome["deadline"] == 1


def test_cli_script_file(tmp_path: Path) -> None:
    import argparse

    from batchgen.sim.cli import config_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"fox": ["503", "text"]}))
    config = config_from_args(parser.parse_args(["sim", "serve", "--script", str(script)]))
    assert config.script == {"fox": ["503", "text"]}
    script.write_text(json.dumps({"fox": ["teapot"]}))
    with pytest.raises(SpecError, match="teapot"):
        config_from_args(parser.parse_args(["sim", "serve", "--script", str(script)]))
    script.write_text("[1, 2]")
    with pytest.raises(SpecError, match="must map"):
        config_from_args(parser.parse_args(["sim", "serve", "--script", str(script)]))


@pytest.mark.parametrize("client", ["aiohttp", "raw"])
def test_loadtest_measures_a_subprocess_simulator(
    client: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "loadtest.py"
    spec = importlib.util.spec_from_file_location("loadtest", path)
    assert spec is not None
    assert spec.loader is not None
    loadtest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loadtest)
    main = loadtest.main

    assert main(["--requests", "300", "--concurrency", "8", "--client", client]) == 0
    out = capsys.readouterr().out
    assert f"300 requests, concurrency 8, {client} client:" in out
    assert "(200: 300)" in out
    assert "req/s per server core" in out


def test_cli_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from batchgen.sim.cli import config_from_args, register

    monkeypatch.setenv("BATCHGEN_SIM_KEY", "from-env")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    assert config_from_args(parser.parse_args(["sim", "serve"])).api_key == "from-env"
    args = parser.parse_args(["sim", "serve", "--api-key", "flag"])
    assert config_from_args(args).api_key == "flag"


async def test_reset_while_requests_are_in_flight(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimConfig(small_images=True, latency=0.3, max_concurrent=1)) as sim:
        first = asyncio.create_task(send(session, sim, "a"))
        while sim.stats.in_flight == 0:  # noqa: ASYNC110 - no arrival event to wait on
            await asyncio.sleep(0.01)
        sim.stats.reset()
        assert (await send(session, sim, "b"))[0] == 503  # still one in flight
        assert (await first)[0] == 200
        assert sim.stats.in_flight == 0
        assert sim.stats.by_outcome == {"overloaded": 1, "ok": 1}
