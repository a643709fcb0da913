"""Measure the simulator's throughput: ``python scripts/loadtest.py``.

Starts ``batchgen sim serve --small-images`` in a subprocess (so the server
and the load generator each get a core), hammers it with aiohttp from this
process and prints requests per second. The figure is a floor: on a small
machine the aiohttp client costs as much CPU as the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp

from batchgen.models import DEFAULT_MODEL

BANNER = "batchgen simulator serving at "


def start_server(extra: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start the simulator process and return it with its base URL."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchgen.sim", "serve", "--port", "0", "--small-images", *extra],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(BANNER):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"simulator did not start: {line!r}")
    return proc, line[len(BANNER) :].strip()


async def hammer(
    base_url: str, requests: int, concurrency: int, unique: bool
) -> tuple[float, Counter[int]]:
    """Send `requests` requests from `concurrency` workers; (seconds, statuses)."""
    url = f"{base_url}/v1beta/models/{DEFAULT_MODEL}:generateContent"
    statuses: Counter[int] = Counter()
    counter = iter(range(requests))

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in counter:
            prompt = f"load test image {i if unique else i % 64}"
            body = {"contents": [{"parts": [{"text": prompt}]}]}
            async with session.post(url, json=body, headers={"x-goog-api-key": "load"}) as resp:
                await resp.read()
                statuses[resp.status] += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker(session))
        return time.perf_counter() - started, statuses


class _RawConnection(asyncio.Protocol):
    """A minimal keep-alive HTTP/1.1 client: one request at a time, responses
    framed by Content-Length. It costs a fraction of aiohttp's CPU, so the
    figure it gives is closer to the server's own capacity."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer.extend(data)
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buffer[:end]).lower()
        start = head.find(b"content-length:")
        length = int(head[start + 15 : head.find(b"\r\n", start)]) if start >= 0 else 0
        if len(self.buffer) >= end + 4 + length:
            status = int(head[9:12])
            del self.buffer[: end + 4 + length]
            self.waiter.set_result(status)
            self.waiter = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    async def request(self, data: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


async def hammer_raw(
    base_url: str, requests: int, concurrency: int, unique: bool
) -> tuple[float, Counter[int]]:
    """`hammer` with `_RawConnection`s instead of aiohttp."""
    host, _, port = base_url.removeprefix("http://").rpartition(":")
    path = f"/v1beta/models/{DEFAULT_MODEL}:generateContent"
    statuses: Counter[int] = Counter()
    counter = iter(range(requests))
    loop = asyncio.get_running_loop()

    def encode(i: int) -> bytes:
        prompt = f"load test image {i if unique else i % 64}"
        body = json.dumps({"contents": [{"parts": [{"text": prompt}]}]}).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nx-goog-api-key: load\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def worker() -> None:
        transport, conn = await loop.create_connection(_RawConnection, host, int(port))
        try:
            for i in counter:
                statuses[await conn.request(encode(i))] += 1
        finally:
            transport.close()

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return time.perf_counter() - started, statuses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/loadtest.py")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--unique", action="store_true", help="a distinct prompt per request")
    parser.add_argument("--url", help="hammer this running simulator instead of starting one")
    parser.add_argument(
        "--client",
        choices=("aiohttp", "raw"),
        default="aiohttp",
        help="load generator: aiohttp (realistic) or a lean raw HTTP/1.1 client",
    )
    args, server_args = parser.parse_known_args(argv)
    proc = None
    url = args.url
    if url is None:
        proc, url = start_server(server_args)
    cpu_before = cpu_seconds(proc.pid) if proc is not None else None
    cpu_after = None
    try:
        run = hammer_raw if args.client == "raw" else hammer
        seconds, statuses = asyncio.run(run(url, args.requests, args.concurrency, args.unique))
        cpu_after = cpu_seconds(proc.pid) if proc is not None else None
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=10)
    rate = args.requests / seconds
    detail = ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items()))
    print(
        f"{args.requests} requests, concurrency {args.concurrency}, {args.client} client: "
        f"{seconds:.2f} s, {rate:.0f} req/s ({detail})"
    )
    if cpu_before is not None and cpu_after is not None and cpu_after > cpu_before:
        per_request = (cpu_after - cpu_before) / args.requests
        print(
            f"server CPU {per_request * 1e6:.0f} us/request: "
            f"{1 / per_request:.0f} req/s per server core"
        )
    return 0


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux only; None elsewhere).

    On a shared machine the wall-clock rate mostly measures the neighbours;
    the server's own CPU per request is the steadier figure."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    sys.exit(main())
