"""Hostile or broken servers: every bad answer is one job's clear error, the run goes on.

Covered: a gigabyte body (declared, and streamed without a length) under a
bounded memory, base64 that does not decode, "images" that are not images, a
wrong mime type, a slowloris trickle, redirects (never followed, the key never
sent to another host), plain http:// to a remote host, and absurd
Retry-After / retryDelay values. Servers are real loopback aiohttp apps: the
simulator where it has the behaviour, small apps written here where it does not.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from batchgen.engine.runner import arun_files
from batchgen.errors import UsageError
from batchgen.output import writer
from batchgen.sim import SimConfig, Simulator
from tests.conftest import KEY, make_config
from tests.test_chaos import cli, cli_env, image_ok

GIB = 1 << 30
MIB = 1 << 20


def png_bytes(colour: tuple[int, int, int] = (10, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, "PNG")
    return buf.getvalue()


def answer(mime: str, data: bytes) -> dict[str, Any]:
    part = {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode()}}
    return {"candidates": [{"content": {"parts": [part]}, "finishReason": "STOP"}]}


class Hostile:
    """A server whose answer depends on a word in the prompt; it remembers what it saw."""

    def __init__(self, elsewhere: str = "") -> None:
        self.elsewhere = elsewhere
        self.seen: Counter[str] = Counter()
        self.keys_seen = 0
        self.streamed = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("x-goog-api-key") or request.headers.get("Authorization"):
            self.keys_seen += 1
        if request.method != "POST":
            self.seen["GET " + request.path] += 1
            return web.json_response(answer("image/png", png_bytes()))
        prompt = (await request.json())["contents"][0]["parts"][0]["text"]
        word = prompt.split()[0]
        self.seen[word] += 1
        if word in ("huge-declared", "huge-streamed"):
            return await self._gigabyte(request, declared=word == "huge-declared")
        if word == "wrong-mime":
            return web.json_response(answer("image/jpeg", png_bytes()))
        if word == "no-mime":
            return web.json_response(answer("", png_bytes()))
        if word == "html-as-png":
            return web.json_response(answer("image/png", b"<html><body>hello</body></html>"))
        if word == "png-garbage":
            return web.json_response(answer("image/png", png_bytes()[:8] + os.urandom(4096)))
        if word == "png-truncated":
            return web.json_response(answer("image/png", png_bytes()[:40]))
        if word.startswith("redirect-"):
            status = int(word.split("-")[1])
            return web.Response(status=status, headers={"Location": self.elsewhere + "/stolen"})
        if word == "retry-after-header":
            return web.json_response(
                {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "slow down"}},
                status=429,
                headers={"Retry-After": "86400"},
            )
        if word == "retry-after-inf":
            return web.json_response(
                {"error": {"code": 429}}, status=429, headers={"Retry-After": "inf"}
            )
        return web.json_response(answer("image/png", png_bytes()))

    async def _gigabyte(self, request: web.Request, *, declared: bool) -> web.StreamResponse:
        """A 1 GiB JSON answer made lazily, one MiB at a time, until the client hangs up."""
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        if declared:
            response.content_length = GIB
        await response.prepare(request)
        head = b'{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"'
        chunk = b"A" * MIB
        try:
            await response.write(head)
            for _ in range(GIB // MIB):
                await response.write(chunk)
                self.streamed += len(chunk)
        except (ConnectionError, asyncio.CancelledError):
            pass
        return response


class ServerThread:
    """An aiohttp app on a loopback port, served from a thread (for CLI subprocess tests)."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)
        self.url = ""

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner = web.AppRunner(self._app, handler_cancellation=True, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture
async def hostile() -> AsyncIterator[tuple[Hostile, str, Hostile, str]]:
    """The hostile server and a second one on another port that redirects point to."""
    catcher = Hostile()
    catcher_runner = web.AppRunner(catcher.app())
    await catcher_runner.setup()
    await web.TCPSite(catcher_runner, "127.0.0.1", 0).start()
    catcher_url = f"http://127.0.0.1:{catcher_runner.addresses[0][1]}"
    server = Hostile(elsewhere=catcher_url)
    runner = web.AppRunner(server.app(), handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield server, f"http://127.0.0.1:{runner.addresses[0][1]}", catcher, catcher_url
    finally:
        await runner.cleanup()
        await catcher_runner.cleanup()


def write_prompts(path: Path, words: list[str]) -> Path:
    rows = [{"id": f"{w}-{i}", "prompt": f"{w} please"} for i, w in enumerate(words)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def rows_by_word(out: Path) -> dict[str, dict[str, Any]]:
    report = json.loads((out / "report.json").read_text())
    return {row["id"].rsplit("-", 1)[0]: row for row in report["jobs"]}


# -- bodies ------------------------------------------------------------------------


@pytest.mark.parametrize("busy", [2.0, -1.0], ids=["writer-thread", "on-the-loop"])
async def test_broken_bodies_are_per_job_errors_and_the_run_goes_on(
    tmp_path: Path,
    hostile: tuple[Hostile, str, Hostile, str],
    monkeypatch: pytest.MonkeyPatch,
    busy: float,
) -> None:
    """Small answers are checked on a writer thread or on the loop (`scheduler._save`)."""
    monkeypatch.setattr(writer, "BUSY_LOOP", busy)
    server, url, _, _ = hostile
    words = [
        "fine",
        "huge-declared",
        "huge-streamed",
        "wrong-mime",
        "no-mime",
        "html-as-png",
        "png-garbage",
        "png-truncated",
        "fine",
    ]
    jobs = write_prompts(tmp_path / "jobs.jsonl", words)
    out = tmp_path / "out"
    config = make_config(out, url, max_response_bytes=4 * MIB, max_attempts=2, concurrency=4)
    result = await arun_files([jobs], config)
    rows = rows_by_word(out)
    assert result.exit_code == 1
    assert rows["fine"]["status"] == "done"
    # A mime type that lies is ignored: the bytes decide, and the file is whole.
    for word in ("wrong-mime", "no-mime"):
        assert rows[word]["status"] == "done", rows[word]
        assert rows[word]["files"][0].endswith(".png")
        assert image_ok(out / rows[word]["files"][0])
    for word in ("huge-declared", "huge-streamed"):
        assert rows[word]["status"] == "failed"
        assert rows[word]["error"]["kind"] == "server_error"
        assert f"{4 * MIB} byte cap" in rows[word]["error"]["message"]
    # Never more than the cap (plus socket buffers) was read of the streamed gigabyte.
    assert server.streamed < 64 * MIB
    for word in ("html-as-png", "png-garbage", "png-truncated"):
        assert rows[word]["status"] == "failed", rows[word]
        assert rows[word]["error"]["kind"] == "no_image"
        message = rows[word]["error"]["message"]
        assert "is not an image" in message or "cut off or corrupt" in message
    # No file of a failed job, and every file is a whole image.
    for path in (out / "images").iterdir():
        assert image_ok(path), path


async def test_simulator_bad_bodies(tmp_path: Path) -> None:
    config = SimConfig(small_images=True, api_key=KEY, huge_size=8 * MIB)
    async with Simulator(config) as sim:
        rows = [
            {"id": kind, "prompt": f"x [[sim:{kind}]]"}
            for kind in ("huge", "badb64", "notimage", "jpeg", "truncate")
        ]
        jobs = tmp_path / "jobs.jsonl"
        jobs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        out = tmp_path / "out"
        await arun_files([jobs], make_config(out, sim.base_url, max_response_bytes=2 * MIB))
    report = {r["id"]: r for r in json.loads((out / "report.json").read_text())["jobs"]}
    assert report["huge"]["status"] == "failed"
    assert "cap" in report["huge"]["error"]["message"]
    assert report["badb64"]["error"]["message"] == "image data is not valid base64"
    assert report["notimage"]["status"] == "failed"
    assert report["jpeg"]["files"] == ["images/jpeg.jpg"]
    assert report["truncate"]["status"] == "failed"


def test_a_gigabyte_answer_keeps_the_process_memory_bounded(tmp_path: Path) -> None:
    """The CLI with its default 64 MB cap against two 1 GiB answers: the child's
    peak RSS (from wait4) stays far below the body size."""
    server = Hostile()
    jobs = write_prompts(tmp_path / "jobs.jsonl", ["huge-streamed", "huge-declared", "fine"])
    out = tmp_path / "out"
    with ServerThread(server.app()) as thread:
        proc = subprocess.Popen(
            cli(jobs, out, thread.url, "--max-attempts", "1", "--timeout", "60"),
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 1
    rows = rows_by_word(out)
    assert rows["huge-streamed"]["error"]["kind"] == "server_error"
    assert rows["fine"]["status"] == "done"
    peak = usage.ru_maxrss * 1024  # kilobytes on Linux
    assert server.streamed >= 32 * MIB  # the client did read up to about its cap
    assert peak < 400 * MIB, f"peak RSS {peak / MIB:.0f} MiB"
    print(f"1 GiB answers: peak RSS {peak / MIB:.0f} MiB, {server.streamed / MIB:.0f} MiB streamed")


async def test_slowloris_is_cut_by_the_timeout(tmp_path: Path) -> None:
    config = SimConfig(small_images=True, api_key=KEY, slow_interval_s=0.2)
    async with Simulator(config) as sim:
        rows = [{"id": "slow", "prompt": "x [[sim:slow]]"}, {"id": "ok", "prompt": "fine"}]
        jobs = tmp_path / "jobs.jsonl"
        jobs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        out = tmp_path / "out"
        started = time.monotonic()
        cfg = make_config(out, sim.base_url, timeout=0.5, max_attempts=2)
        result = await arun_files([jobs], cfg)
        elapsed = time.monotonic() - started
    report = {r["id"]: r for r in json.loads((out / "report.json").read_text())["jobs"]}
    assert result.exit_code == 1
    assert report["ok"]["status"] == "done"
    assert report["slow"]["status"] == "failed"
    assert report["slow"]["error"]["message"] == "no complete answer within 0.5s"
    assert report["slow"]["attempts"] == 2
    assert elapsed < 10


# -- redirects ---------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["header", "bearer"])
async def test_redirects_are_not_followed_and_never_carry_the_key(
    tmp_path: Path, hostile: tuple[Hostile, str, Hostile, str], auth: str
) -> None:
    server, url, catcher, catcher_url = hostile
    words = ["redirect-301", "redirect-302", "redirect-303", "redirect-307", "redirect-308", "fine"]
    jobs = write_prompts(tmp_path / "jobs.jsonl", words)
    out = tmp_path / "out"
    result = await arun_files([jobs], make_config(out, url, auth=auth))
    rows = rows_by_word(out)
    assert result.exit_code == 1
    assert catcher.seen == Counter()
    assert catcher.keys_seen == 0
    assert server.keys_seen == len(words)
    for word in words[:-1]:
        assert rows[word]["status"] == "failed"
        assert rows[word]["error"]["kind"] == "bad_request"
        assert catcher_url in rows[word]["error"]["message"]
        assert "not followed" in rows[word]["error"]["message"]
        assert rows[word]["attempts"] == 1


async def test_simulator_redirect_marker(tmp_path: Path) -> None:
    catcher = Hostile()
    runner = web.AppRunner(catcher.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        elsewhere = f"http://127.0.0.1:{runner.addresses[0][1]}/x"
        config = SimConfig(small_images=True, api_key=KEY, redirect_url=elsewhere)
        async with Simulator(config) as sim:
            rows = [{"id": "r", "prompt": "x [[sim:redirect]]"}]
            jobs = tmp_path / "jobs.jsonl"
            jobs.write_text(json.dumps(rows[0]) + "\n", encoding="utf-8")
            await arun_files([jobs], make_config(tmp_path / "out", sim.base_url))
            assert sim.stats.total == 1
    finally:
        await runner.cleanup()
    assert catcher.seen == Counter()
    assert catcher.keys_seen == 0


# -- insecure base URLs --------------------------------------------------------------


INSECURE = [
    "http://example.com",
    "http://10.0.0.7:8080",
    "http://127.0.0.1.example.com",
    "http://localhost.example.com",
    "http://127.0.0.1@example.com",
    "http://[2001:db8::1]",
]
LOOPBACK = ["http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9", "http://127.8.9.10:9"]


def _dry_run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"id": "a", "prompt": "p"}\n', encoding="utf-8")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "batchgen",
            "run",
            str(jobs),
            "--out",
            str(tmp_path / "o"),
            "--dry-run",
            "--no-progress",
            *args,
        ],
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("url", INSECURE)
def test_plain_http_to_a_remote_host_is_refused(tmp_path: Path, url: str) -> None:
    done = _dry_run(tmp_path, "--base-url", url)
    assert done.returncode == 2, done.stderr
    assert "--base-url" in done.stderr or "http://" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists()


def test_plain_http_refused_from_the_environment_too(tmp_path: Path) -> None:
    done = _dry_run(tmp_path, env=cli_env(GEMINI_BASE_URL="http://example.com"))
    assert done.returncode == 2
    assert "--allow-insecure-http" in done.stderr


def test_plain_http_allowed_with_the_explicit_flag(tmp_path: Path) -> None:
    done = _dry_run(tmp_path, "--base-url", "http://example.com", "--allow-insecure-http")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("url", [*LOOPBACK, "https://example.com", "https://10.0.0.7"])
def test_loopback_and_https_are_accepted(url: str) -> None:
    from batchgen.config import check_base_url

    assert check_base_url(url, allow_insecure=False) == url


@pytest.mark.parametrize("url", [*INSECURE, "ftp://example.com", "http://", "https://x/?key=1"])
def test_check_base_url_refuses(url: str) -> None:
    from batchgen.config import check_base_url

    with pytest.raises(UsageError):
        check_base_url(url, allow_insecure=False)


# -- absurd retry delays ---------------------------------------------------------------


@pytest.mark.parametrize("word", ["retry-after-header", "retry-after-inf"])
async def test_absurd_retry_after_is_a_quota_stop(
    tmp_path: Path, hostile: tuple[Hostile, str, Hostile, str], word: str
) -> None:
    server, url, _, _ = hostile
    jobs = write_prompts(tmp_path / "jobs.jsonl", [word, *["fine"] * 5])
    out = tmp_path / "out"
    started = time.monotonic()
    result = await arun_files([jobs], make_config(out, url, concurrency=1))
    assert time.monotonic() - started < 10
    assert result.exit_code == 3
    assert result.stop is not None
    assert result.stop.kind == "quota"
    assert "treating it as a quota stop" in result.stop.message
    report = json.loads((out / "report.json").read_text())
    assert (report["pending"], report["failed"]) == (6, 0)
    assert server.seen[word] == 1


@pytest.mark.parametrize("delay", ["7200", "86400.5"])
async def test_absurd_retry_delay_from_the_simulator(tmp_path: Path, delay: str) -> None:
    async with Simulator(SimConfig(small_images=True, api_key=KEY)) as sim:
        rows = [{"id": f"j{i}", "prompt": f"p{i} [[sim:429-delay={delay}]]"} for i in range(5)]
        jobs = tmp_path / "jobs.jsonl"
        jobs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        started = time.monotonic()
        cfg = make_config(tmp_path / "out", sim.base_url, concurrency=1, max_retry_delay=900)
        result = await arun_files([jobs], cfg)
        assert time.monotonic() - started < 10
        assert sim.stats.total == 1
    assert result.exit_code == 3
    assert result.stop is not None
    assert f"{float(delay):.0f}s" in result.stop.message
