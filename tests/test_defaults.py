"""`RunConfig` and `SimConfig` are the single source of defaults: the parsers read them,
show them in --help, and build the configs without copying fields by hand. Every flag
keeps its name; exit codes are spelled by name."""

from __future__ import annotations

import argparse
import ast
import dataclasses
from pathlib import Path
from typing import Any

import pytest

import batchgen
from batchgen.cli.main import RUN_FLAGS, _config, build_parser
from batchgen.config import Flag, RunConfig, add_flags
from batchgen.models import DEFAULT_BASE_URL
from batchgen.sim.cli import SIM_FLAGS, config_from_args
from batchgen.sim.config import SimConfig

#: The flags of `batchgen run` and `batchgen sim serve` before the defaults moved.
RUN_FLAG_NAMES = {
    "--out", "-o", "--sim", "--base-url", "--auth", "--allow-insecure-http", "--model",
    "--concurrency", "--rpm", "--max-attempts", "--timeout", "--limit", "--retry-failed",
    "--retry-blocked", "--dry-run", "--budget", "--prices", "--max-retry-delay", "--cache",
    "--seed", "--backoff-base", "--backoff-cap", "--no-progress", "--image-size", "--models",
    # Issue 13 added the job-file options (`run` and `validate`).
    "--delimiter", "--sheet", "--ignore-columns",
    "--max-outage", "--report-every", "--unreachable-after",
    # Issue 15 added the run mode.
    "--mode",
    # Issue 17 added the redo of rejected images and the CI results.
    "--redo",
    "--junit", "--fail-under",
    # Issue 15's Batch Mode.
    "--poll-interval", "--no-wait", "--batch-size",
    # Issue 16 added where the state is (a SQLite file, a PostgreSQL URL).
    "--state",
    # Issue 16 step 3 added the Ray engine.
    "--engine", "--workers", "--ray-address",
}  # fmt: skip
SIM_FLAG_NAMES = {
    "--host", "--port", "--api-key", "--model", "--latency", "--rpm", "--rpd", "--quota-window",
    "--quota-scope", "--max-concurrent", "--fault-rate", "--faults", "--seed", "--noise",
    "--small-images", "--hang-seconds", "--script", "--log",
    # Issue 18 added heavy answers.
    "--rgb-noise", "--noise-pool", "--size-scale",
}  # fmt: skip


def subparser(*path: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = build_parser()
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def option_names(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings if s not in ("-h", "--help")}


def test_every_flag_keeps_its_name() -> None:
    assert option_names(subparser("run")) == RUN_FLAG_NAMES
    assert option_names(subparser("sim", "serve")) == SIM_FLAG_NAMES


def test_no_flags_give_the_dataclass_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GEMINI_BASE_URL", "BATCHGEN_SIM_KEY"):
        monkeypatch.delenv(name, raising=False)
    args = build_parser().parse_args(["run", "jobs.jsonl", "--out", str(tmp_path)])
    assert _config(args) == RunConfig(out=tmp_path)
    sim = build_parser().parse_args(["sim", "serve"])
    assert config_from_args(sim) == SimConfig()


#: A value unlike the default for each field a flag sets: (text on the command line, value).
RUN_VALUES: dict[str, tuple[str | None, Any]] = {
    "auth": ("bearer", "bearer"),
    "model": ("gemini-3-pro-image-preview", "gemini-3-pro-image-preview"),
    "image_size": ("2K", "2K"),
    "models_file": ("models.toml", Path("models.toml")),
    "concurrency": ("7", 7),
    "rpm": ("42.5", 42.5),
    "max_attempts": ("2", 2),
    "timeout": ("9.5", 9.5),
    "limit": ("3", 3),
    "retry_failed": (None, True),
    "retry_blocked": (None, True),
    "dry_run": (None, True),
    "budget": ("1.25", 1.25),
    "prices_file": ("prices.json", Path("prices.json")),
    "max_retry_delay": ("30", 30.0),
    "cache_dir": ("cache", Path("cache")),
    "seed": ("11", 11),
    "backoff_base": ("0.01", 0.01),
    "backoff_cap": ("0.1", 0.1),
    "progress": (None, False),
    "max_outage": ("30", 30.0),
    "report_every": ("60", 60.0),
    "unreachable_after": ("2", 2.0),
    "mode": ("flex", "flex"),
    "redo": ("rejected", "rejected"),
    "junit": ("results.xml", Path("results.xml")),
    "fail_under": ("0.9", 0.9),
    "poll_interval": ("2.5", 2.5),
    "no_wait": (None, True),
    "batch_size": ("250", 250),
    "state": ("state.sqlite", "state.sqlite"),
    "engine": ("ray", "ray"),
    "workers": ("3", 3),
    "ray_address": ("auto", "auto"),
}
SIM_VALUES: dict[str, tuple[str | None, Any]] = {
    "host": ("127.0.0.2", "127.0.0.2"),
    "port": ("8123", 8123),
    "latency": ("uniform:0.1:0.2", "uniform:0.1:0.2"),
    "rpm": ("60", 60),
    "rpd": ("600", 600),
    "quota_window_s": ("2.5", 2.5),
    "quota_scope": ("key", "key"),
    "max_concurrent": ("4", 4),
    "seed": ("5", 5),
    "noise": (None, True),
    "rgb_noise": (None, True),
    "noise_pool": ("3", 3),
    "size_scale": ("2", 2.0),
    "small_images": (None, True),
    "hang_seconds": ("1.5", 1.5),
    "log_path": ("requests.jsonl", "requests.jsonl"),
}


def argv_for(flags: tuple[Flag, ...], values: dict[str, tuple[str | None, Any]]) -> list[str]:
    argv: list[str] = []
    for flag in flags:
        text, _value = values[flag.field]
        argv += [flag.name] if text is None else [flag.name, text]
    return argv


def test_every_flag_reaches_its_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_BASE_URL", raising=False)
    assert {f.field for f in RUN_FLAGS} == set(RUN_VALUES)
    assert {f.field for f in SIM_FLAGS} == set(SIM_VALUES)
    run = ["run", "j.jsonl", "-o", str(tmp_path), *argv_for(RUN_FLAGS, RUN_VALUES)]
    config = _config(build_parser().parse_args(run))
    for name, (_text, value) in RUN_VALUES.items():
        assert getattr(config, name) == value, name
        assert value != getattr(RunConfig, name), f"{name}: pick a value unlike the default"
    assert config.base_url == DEFAULT_BASE_URL
    sim = config_from_args(
        build_parser().parse_args(["sim", "serve", *argv_for(SIM_FLAGS, SIM_VALUES)])
    )
    for name, (_text, value) in SIM_VALUES.items():
        assert getattr(sim, name) == value, name
        assert value != getattr(SimConfig, name), f"{name}: pick a value unlike the default"


def wide(prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog, max_help_position=100, width=300)


@pytest.mark.parametrize(
    ("path", "config", "flags"),
    [(("run",), RunConfig, RUN_FLAGS), (("sim", "serve"), SimConfig, SIM_FLAGS)],
    ids=["run", "sim-serve"],
)
def test_help_shows_the_dataclass_defaults(
    path: tuple[str, ...],
    config: type[Any],
    flags: tuple[Flag, ...],
) -> None:
    parser = subparser(*path)
    parser.formatter_class = wide  # one line per option
    text = parser.format_help()
    shown = 0
    for flag in flags:
        default = getattr(config, flag.field)
        line = next((ln for ln in text.splitlines() if ln.strip().startswith(flag.name)), None)
        if flag.hidden:
            assert line is None
        elif default is None or isinstance(default, bool):
            assert line is not None
            assert "(default:" not in line
        else:
            assert line is not None
            assert line.endswith(f"(default: {default})"), line
            shown += 1
    assert shown >= 5


def test_a_flag_needs_a_plain_default() -> None:
    parser = argparse.ArgumentParser()
    with pytest.raises(TypeError, match="extra_headers"):
        add_flags(parser, RunConfig, [Flag("--header", "extra_headers", "")])


def test_fields_and_flags_agree_on_types() -> None:
    """A flag converts its text to the field's declared type (`int` never feeds a float)."""
    declared = {f.name: str(f.type) for f in dataclasses.fields(RunConfig)}
    for flag in RUN_FLAGS:
        if flag.type is not None:
            assert flag.type.__name__ in declared[flag.field], flag.name


def _int(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int


def test_exit_codes_are_spelled_by_name() -> None:
    """Exit codes live in `batchgen.errors`; a bare `return 2` in a command, a literal
    130 beside EXIT_INTERRUPTED or an exit code in a `StopReason` would drift from them."""
    package = Path(batchgen.__file__).parent
    commands = {"cli", "__main__.py", "sim/cli.py", "sim/__main__.py"}
    offenders = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        if rel == "errors.py":
            continue
        command = rel in commands or rel.split("/")[0] in commands
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            bad = (
                (isinstance(node, ast.Constant) and type(node.value) is int and node.value == 130)
                or (command and isinstance(node, ast.Return) and _int(node.value))
                or (
                    isinstance(node, ast.Call)
                    and ast.unparse(node.func).split(".")[-1] in ("StopReason", "exit")
                    and any(_int(arg) for arg in node.args)
                )
            )
            if bad:
                offenders.append(f"{rel}:{getattr(node, 'lineno', 0)}")
    assert offenders == []
