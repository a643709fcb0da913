#!/usr/bin/env python3
"""BASELINE, not batchgen: the naive batch script that `scripts/bench.py` compares against.

This is how most people write "call an image API for every row of a file",
written carefully so that the comparison is fair:

* pandas reads the whole job file into a DataFrame;
* one asyncio task per row, all passed to `asyncio.gather`, a semaphore of
  `--concurrency` bounding the requests in flight (the same concurrency
  batchgen gets);
* tenacity retries any exception (HTTP errors included) with exponential
  backoff and jitter, up to 8 attempts;
* no shared rate limiter, no checkpoint: images are written straight to
  `OUT/<id>.png` and the results become a CSV at the end.

It prints one JSON line on stdout: jobs, ok, failed, requests, rate_limited.
Usage: baseline_naive.py JOBS.jsonl --out DIR --base-url URL [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pandas as pd
from tenacity import retry, stop_after_attempt, wait_random_exponential

MODEL = "gemini-2.5-flash-image"


class Stats:
    requests = 0
    rate_limited = 0


def extract_image(answer: dict[str, Any]) -> bytes:
    for part in answer["candidates"][0]["content"]["parts"]:
        if "inlineData" in part:
            return base64.b64decode(part["inlineData"]["data"])
    raise ValueError("no image in the answer")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("jobs", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    if args.jobs.suffix == ".csv":
        df = pd.read_csv(args.jobs)
    else:
        df = pd.read_json(args.jobs, lines=True)
    args.out.mkdir(parents=True, exist_ok=True)
    url = f"{args.base_url}/v1beta/models/{MODEL}:generateContent"
    headers = {"x-goog-api-key": os.environ.get("GEMINI_API_KEY", "")}
    sem = asyncio.Semaphore(args.concurrency)

    @retry(stop=stop_after_attempt(8), wait=wait_random_exponential(multiplier=0.5, max=30))
    async def generate(session: aiohttp.ClientSession, prompt: str) -> bytes:
        Stats.requests += 1
        body = {
            "contents": [{"role": "user", "parts": [{"text": prompt}]}],
            "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]},
        }
        async with session.post(url, json=body, headers=headers) as resp:
            if resp.status == 429:
                Stats.rate_limited += 1
            resp.raise_for_status()
            answer = await resp.json()
        return extract_image(answer)

    async def one(session: aiohttp.ClientSession, job_id: str, prompt: str) -> str:
        async with sem:
            try:
                data = await generate(session, prompt)
            except Exception as exc:  # the job failed after every retry
                return f"failed: {type(exc).__name__}"
        (args.out / f"{job_id}.png").write_bytes(data)
        return "ok"

    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(
            *(one(session, str(row.id), str(row.prompt)) for row in df.itertuples())
        )
    df["result"] = results
    df.to_csv(args.out / "results.csv", index=False)
    ok = int((df["result"] == "ok").sum())
    summary = {
        "jobs": len(df),
        "ok": ok,
        "failed": len(df) - ok,
        "requests": Stats.requests,
        "rate_limited": Stats.rate_limited,
    }
    print(json.dumps(summary))
    return 0 if ok == len(df) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
