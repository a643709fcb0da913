"""The API key never leaves the request header: not in a file, an output, a log.

A full batch runs with a recognisable fake key through every kind of answer,
a fatal auth error, `--debug`, a SIGKILL (so the SQLite WAL is left on disk)
and the report/status commands; then every byte under the output folder,
every captured stdout/stderr and the simulator's own request log are scanned
for the key. A hostile server that echoes the key back (in an error message,
a plain-text 500, a model's text part) is redacted too.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image

from batchgen.config import RunConfig, Secret, key_from_env
from batchgen.engine.runner import arun_files
from batchgen.errors import BatchgenError
from batchgen.sim import SimConfig, SimulatorThread
from tests.conftest import KEY, make_config
from tests.test_chaos import cli, cli_env, wait_for

NEEDLES = (KEY.encode(), KEY.encode("utf-16-le"), base64.b64encode(KEY.encode()))


def leaks(data: bytes) -> bool:
    return any(needle in data for needle in NEEDLES)


def scan_tree(root: Path) -> tuple[int, list[str]]:
    """(files scanned, files holding the key) for every file under `root`."""
    scanned, bad = 0, []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            scanned += 1
            if leaks(path.read_bytes()):
                bad.append(str(path.relative_to(root)))
    return scanned, bad


def _rows() -> list[dict[str, Any]]:
    kinds = ["500x2", "400", "413", "block", "text", "resetx1", "429x1", "hangx1", "truncatex1"]
    rows = [{"id": f"ok{i}", "prompt": f"fine picture {i}"} for i in range(12)]
    rows += [{"id": f"k{i}", "prompt": f"picture [[sim:{k}]]"} for i, k in enumerate(kinds)]
    return rows


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_the_key_appears_nowhere(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sim_log = tmp_path / "sim.jsonl"
    rows = _rows()
    jobs = _write(tmp_path / "jobs.jsonl", rows)
    outputs: list[str] = []
    codes: list[int] = []
    config = SimConfig(small_images=True, api_key=KEY, retry_delay_s=0.05, log_path=sim_log)

    def run(*args: str, debug: bool = True, files: Path = jobs) -> None:
        cmd = cli(files, out, sim.base_url, "--timeout", "1", *args)
        if debug:
            cmd.insert(3, "--debug")
        done = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=120)
        outputs.extend([done.stdout, done.stderr])
        codes.append(done.returncode)

    with SimulatorThread(config) as sim:
        # 1. Every per-job outcome, with --debug logs and bearer auth for half of it.
        run()
        assert codes[-1] == 1, outputs[-1]
        run("--auth", "bearer", "--retry-failed", "--retry-blocked", debug=False)
        # 2. A fatal auth error stops the run (nothing marked failed).
        fatal = _write(tmp_path / "fatal.jsonl", [*rows, {"id": "bad", "prompt": "[[sim:badkey]]"}])
        run("--concurrency", "1", files=fatal)
        assert codes[-1] == 3, outputs[-1]
        assert "API" in outputs[-1]
        # 3. Killed mid-run: the WAL and shared-memory files stay on disk.
        hang = _write(tmp_path / "hang.jsonl", [{"id": "h", "prompt": "stuck [[sim:hang]]"}])
        proc = subprocess.Popen(
            cli(hang, out, sim.base_url, "--timeout", "60"),
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert wait_for(lambda: sim.stats.in_flight == 1, proc, time.monotonic() + 60)
        finally:
            proc.send_signal(signal.SIGKILL)
            stdout, stderr = proc.communicate()
        outputs.extend([stdout.decode(), stderr.decode()])
        wal = out / ".batchgen" / "state.sqlite-wal"
        assert wal.exists()
        assert wal.stat().st_size > 0
        assert not scan_tree(out)[1], "the key is in the output folder after a SIGKILL"
        # 4. The commands that read the folder.
        for command in (
            ["report", str(out)],
            ["status", str(out)],
            ["--debug", "status", str(out)],
        ):
            done = subprocess.run(
                [sys.executable, "-m", "batchgen", *command],
                env=cli_env(),
                capture_output=True,
                text=True,
                timeout=60,
            )
            outputs.extend([done.stdout, done.stderr])
        stats = sim.stats
        assert stats.key_in_url == 0
        assert stats.by_key[KEY] == stats.total  # the key was really sent, every time
    scanned, bad = scan_tree(out)
    assert scanned >= 5
    assert not bad, f"the key leaked into {bad}"
    assert not leaks(sim_log.read_bytes())
    for text in outputs:
        assert KEY not in text


# -- a server that echoes the key back ------------------------------------------------


def _png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


async def _echo(request: web.Request) -> web.Response:
    key = request.headers.get("x-goog-api-key", "")
    prompt = (await request.json())["contents"][0]["parts"][0]["text"]
    if "error" in prompt:
        doc = {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": f"key {key} bad"}}
        return web.json_response(doc, status=400)
    if "plain" in prompt:
        return web.Response(status=500, text=f"proxy error for key={key}")
    if "header" in prompt:
        return web.Response(status=302, headers={"Location": f"https://x.example/?key={key}"})
    parts = [
        {"text": f"made with key {key}"},
        {"inlineData": {"mimeType": "image/png", "data": _png()}},
    ]
    return web.json_response(
        {"candidates": [{"content": {"parts": parts}, "finishReason": "STOP"}]}
    )


@pytest.fixture
async def echo_server() -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_post("/{tail:.*}", _echo)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def test_a_key_echoed_by_the_server_is_redacted(
    tmp_path: Path, echo_server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rows = [
        {"id": "e", "prompt": "error"},
        {"id": "p", "prompt": "plain"},
        {"id": "h", "prompt": "header"},
        {"id": "t", "prompt": "text"},
    ]
    jobs = _write(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    base = str(echo_server.make_url("")).rstrip("/")
    result = await arun_files([jobs], make_config(out, base, max_attempts=2))
    report = json.loads((out / "report.json").read_text())
    statuses = {row["id"]: row["status"] for row in report["jobs"]}
    assert statuses == {"e": "failed", "p": "failed", "h": "failed", "t": "done"}
    assert not scan_tree(out)[1]
    assert KEY not in caplog.text
    assert KEY not in repr(result)
    assert "***" in json.dumps(report)


# -- objects ---------------------------------------------------------------------------


def test_config_objects_and_errors_redact_the_key(tmp_path: Path) -> None:
    secret = key_from_env({"GEMINI_API_KEY": f"  {KEY}\n"})
    assert secret is not None
    assert secret.reveal() == KEY
    config = RunConfig(out=tmp_path, api_key=secret, base_url="http://127.0.0.1:9")
    renderings = [
        repr(config),
        str(config),
        f"{config}",
        f"{secret!r} {secret!s} {secret}",
        json.dumps(dataclasses.asdict(config), default=str),
        repr(dataclasses.replace(config, concurrency=3)),
        secret.redact(f"the server said {KEY}"),
    ]
    for error in (BatchgenError(config), ValueError(secret), RuntimeError(repr(config))):
        renderings += [str(error), repr(error)]
    for text in renderings:
        assert KEY not in text
    assert Secret(KEY) == secret
    assert config.auth_headers() == {"x-goog-api-key": KEY}  # only the header holds it
