"""The Python API: `run` and `arun`, the CLI's behaviour for notebooks and programs.

Jobs may be paths to job files, or job records (dicts in the JSONL format or
`Job`s); records are written to a JSONL file inside the output folder first,
so that validation, resume and the report work exactly as from the CLI.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from batchgen.config import RunConfig, Secret, key_from_env
from batchgen.engine.runner import RunResult, arun_files
from batchgen.jobs.codec import job_to_dict
from batchgen.models import Job
from batchgen.output.sink import write_atomic
from batchgen.store.db import STATE_DIR

JobsArg = str | os.PathLike[str] | Iterable[str | os.PathLike[str] | Mapping[str, Any] | Job]


def _job_files(jobs: JobsArg, out: Path) -> list[Path]:
    if isinstance(jobs, str | os.PathLike):
        return [Path(jobs)]
    paths: list[Path] = []
    records: list[str] = []
    for item in jobs:
        if isinstance(item, str | os.PathLike):
            paths.append(Path(item))
        elif isinstance(item, Job):
            records.append(json.dumps(job_to_dict(item), ensure_ascii=False))
        else:
            records.append(json.dumps(dict(item), ensure_ascii=False))
    if records:
        inline = out / STATE_DIR / "inline-jobs.jsonl"
        write_atomic(inline, ("\n".join(records) + "\n").encode())
        paths.append(inline)
    return paths


async def arun(
    jobs: JobsArg,
    *,
    out: str | os.PathLike[str],
    sim: bool = False,
    api_key: str | None = None,
    **options: Any,
) -> RunResult:
    """Run jobs into `out`; options are `RunConfig` fields (concurrency, rpm, budget, …).
    Returns the `RunResult`; `result.report` is the report.json summary."""
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(unknown)}")
    out_path = Path(out)
    key = Secret(api_key) if api_key else key_from_env()
    options.setdefault("progress", False)
    config = RunConfig(out=out_path, api_key=key, **options)
    return await arun_files(_job_files(jobs, out_path), config, sim=sim)


def run(
    jobs: JobsArg,
    *,
    out: str | os.PathLike[str],
    sim: bool = False,
    api_key: str | None = None,
    **options: Any,
) -> RunResult:
    """Blocking `arun`, for scripts and notebooks without a running event loop."""
    return asyncio.run(arun(jobs, out=out, sim=sim, api_key=api_key, **options))
