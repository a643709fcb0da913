"""Run configuration, built once by the CLI (or `batchgen.run`) and validated.

The API key lives only inside `Secret`, whose `repr` and `str` are redacted,
so that a config object printed in a traceback, a log line or a report can
never leak it.

`RunConfig` (and the simulator's `SimConfig`) are the only place a default is
written: command lines declare `Flag`s naming a field, `add_flags` reads the
default from the dataclass (and shows it in ``--help``), `flag_values` hands
the parsed values back by field name.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from batchgen.catalogue import IMAGE_SIZES, Tier, load_catalogue
from batchgen.errors import UsageError
from batchgen.models import DEFAULT_BASE_URL

#: The model a run uses when neither ``--model`` nor a job names one: the
#: catalogue's recommended GA model (``batchgen models`` marks it).
RECOMMENDED_MODEL = load_catalogue().recommended().id

AuthMode = Literal["header", "bearer"]


class RunMode(StrEnum):
    """How a run's requests are served and billed (``--mode``)."""

    LIVE = "live"
    FLEX = "flex"
    BATCH = "batch"


@dataclass(frozen=True, slots=True)
class ModeSpec:
    """What a run mode changes: the catalogue tier it is billed at, the body's
    ``serviceTier`` (None: none sent), and the request timeout when ``--timeout``
    is not given (flex answers after minutes, not seconds)."""

    tier: Tier
    service_tier: str | None
    timeout: float


#: The modes ``--mode`` offers, by name. Batch Mode sends no ``serviceTier``:
#: its requests go in an uploaded file (`engine/batchmode.py`), and its timeout
#: is each call's to the Files and Batches APIs.
MODES: Mapping[str, ModeSpec] = {
    RunMode.LIVE: ModeSpec(Tier.STANDARD, None, 180.0),
    RunMode.FLEX: ModeSpec(Tier.FLEX, "flex", 20 * 60.0),
    RunMode.BATCH: ModeSpec(Tier.BATCH, None, 300.0),
}

#: Jobs per batch (``--batch-size``): the per-model enqueued-token caps (image
#: models on Tier 1: 1-3 M tokens) hold ~1,000-2,500 images in the queue at once.
DEFAULT_BATCH_SIZE = 1000


#: The engines ``--engine`` offers: this process, or worker actors on a Ray cluster.
ENGINES = ("inline", "ray")


class Secret:
    """A string that refuses to be printed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        """Remove the secret from text that may have echoed it (server messages)."""
        if self._value and self._value in text:
            return text.replace(self._value, "***")
        return text

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


#: Query parameters of a URL whose values are secrets (libpq's, and the usual ones).
_SECRET_PARAMS = ("password", "sslpassword", "secret", "token", "key")


def redact_url(url: str, text: str | None = None) -> str:
    """`url` (or `text`, a message that may quote it) with the URL's password
    and secret query values replaced by ``***``. A state or bucket URL may carry
    a password; like `Secret`, it must never reach a message, a log or a
    report. Both the URL's own spelling and the decoded value are removed:
    a driver's error may quote either."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***" if text is None else text.replace(url, "***")
    secrets = [v for k, v in parse_qsl(parts.query) if k.lower() in _SECRET_PARAMS and v]
    userinfo, at, host = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        user, _, password = userinfo.partition(":")
        secrets += [password, unquote(password)]
        userinfo = f"{user}:***"
    query = "&".join(
        f"{k}=***" if k.lower() in _SECRET_PARAMS else f"{k}={v}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    safe = urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host}", query=query))
    if text is None:
        return safe
    text = text.replace(url, safe)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def key_from_env(environ: dict[str, str] | None = None) -> Secret | None:
    env = os.environ if environ is None else environ
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        value = env.get(name, "").strip()
        if value:
            return Secret(value)
    return None


def is_loopback_host(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(url: str, *, allow_insecure: bool) -> str:
    """Refuse URLs that would send the key in clear to another machine."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--base-url must be an http(s) URL with a host, got {url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise UsageError("--base-url must not carry a query, fragment or credentials")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname) and not allow_insecure:
        raise UsageError(
            f"refusing plain http:// to {parts.hostname}: the API key would travel in clear; "
            "use https, or pass --allow-insecure-http if this network is trusted"
        )
    return url.rstrip("/")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs besides the job files. Frozen: stages only read it."""

    out: Path
    api_key: Secret | None = None
    base_url: str = DEFAULT_BASE_URL
    auth: AuthMode = "header"
    model: str = RECOMMENDED_MODEL
    #: ``imageConfig.imageSize`` for jobs that name none; None: each model's default.
    image_size: str | None = None
    #: A catalogue file merged over the built-in one (models, sizes, prices).
    models_file: Path | None = None
    concurrency: int = 16
    rpm: float | None = None
    max_attempts: int = 5
    #: Attempts for answers without an image (often random, but rarely worth 5).
    max_no_image_attempts: int = 3
    #: How requests are served and billed (`MODES`); the answers are the same.
    mode: RunMode = RunMode.LIVE
    #: Seconds per request; None: the mode's (`request_timeout`).
    timeout: float | None = None
    limit: int | None = None
    retry_failed: bool = False
    retry_blocked: bool = False
    #: "rejected": make the images a reviewer rejected again (`batchgen review`).
    redo: str | None = None
    dry_run: bool = False
    budget: float | None = None
    prices_file: Path | None = None
    #: A server asking us to wait longer than this is treated as a quota stop.
    max_retry_delay: float = 900.0
    #: Responses larger than this are cut off and count as a server error.
    max_response_bytes: int = 64 * 1024 * 1024
    #: How long in-flight requests get to finish after the first Ctrl-C.
    grace_seconds: float = 10.0
    #: Seconds to wait for an endpoint that answered and went away (`engine/outage.py`).
    max_outage: float = 900.0
    #: Seconds to try an endpoint that has not answered once in this run (tests shrink it).
    unreachable_after: float = 60.0
    #: Seconds between refreshes of the report files during a run (0: only at the end).
    report_every: float = 300.0
    #: Retry delay formula `backoff`: base and cap in seconds (tests shrink them).
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    progress: bool = True
    #: Make each image's gallery preview as it lands (off the event loop).
    thumbnails: bool = True
    cache_dir: Path | None = None
    #: Where the folder's state lives: None is `OUT/.batchgen/state.sqlite`; a
    #: path is a SQLite file there; a ``postgresql://`` URL a shared database.
    state: str | None = None
    #: OUT on an object store (``s3://…``, ``gs://…``, any fsspec URL): images,
    #: previews and reports go there (`output/storage.py`), and `out` is a local
    #: folder for what stays on this machine. None: OUT is the folder `out`.
    out_url: str | None = None
    #: fsspec options for `out_url` (a profile, a region); credentials come from
    #: the store's own chain, never from here.
    storage_options: dict[str, Any] = field(default_factory=dict)
    #: "inline" (this process) or "ray" (worker actors on a Ray cluster, extra
    #: ``batchgen[ray]``); `workers` and `ray_address` are the Ray engine's.
    engine: str = "inline"
    workers: int = 4
    #: A Ray cluster to join (``auto``, ``ray://host:10001``); None: a local one.
    ray_address: str | None = None
    seed: int | None = None
    #: Batch Mode: seconds between polls of the batches (jittered).
    poll_interval: float = 60.0
    #: Batch Mode: submit and collect what has finished, then exit (0 on the run that
    #: submits, 4 from later runs while batches run).
    no_wait: bool = False
    #: Batch Mode: jobs per batch.
    batch_size: int = DEFAULT_BATCH_SIZE
    extra_headers: dict[str, str] = field(default_factory=dict)
    #: A JUnit XML file of every job, written at the end of the run (`report/junit.py`).
    junit: Path | None = None
    #: Exit 0 when at least this share of the ended jobs is done (0..1); None: every job.
    fail_under: float | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        if self.rpm is not None and self.rpm <= 0:
            raise UsageError("--rpm must be positive")
        if self.engine not in ENGINES:
            raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.workers < 1:
            raise UsageError("--workers must be at least 1")
        if self.max_attempts < 1:
            raise UsageError("--max-attempts must be at least 1")
        if self.mode not in MODES:
            raise UsageError(f"--mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        # A caller of `batchgen.run` may pass the plain string.
        object.__setattr__(self, "mode", RunMode(self.mode))
        if self.state is not None:  # a path from Python, or the CLI's string
            object.__setattr__(self, "state", os.fspath(self.state))
        if self.timeout is not None and self.timeout <= 0:
            raise UsageError("--timeout must be positive")
        if self.limit is not None and self.limit < 0:
            raise UsageError("--limit must not be negative")
        if self.budget is not None and self.budget < 0:
            raise UsageError("--budget must not be negative")
        if self.max_outage < 0 or self.unreachable_after < 0 or self.report_every < 0:
            raise UsageError("--max-outage and --report-every must not be negative")
        if self.fail_under is not None and not 0 <= self.fail_under <= 1:
            raise UsageError(
                f"--fail-under is a share from 0 to 1 (0.95 for 95 %), not {self.fail_under}"
            )
        if self.poll_interval <= 0 or self.batch_size < 1:
            raise UsageError("--poll-interval must be positive and --batch-size at least 1")
        if self.image_size is not None and self.image_size not in IMAGE_SIZES:
            raise UsageError(
                f"--image-size must be one of {', '.join(IMAGE_SIZES)}, not {self.image_size!r}"
            )

    @property
    def mode_spec(self) -> ModeSpec:
        return MODES[self.mode]

    @property
    def request_timeout(self) -> float:
        """``--timeout`` when given, else the mode's: minutes for flex."""
        return self.mode_spec.timeout if self.timeout is None else self.timeout

    def auth_headers(self) -> dict[str, str]:
        if self.api_key is None:
            return {}
        if self.auth == "bearer":
            return {"Authorization": f"Bearer {self.api_key.reveal()}"}
        return {"x-goog-api-key": self.api_key.reveal()}

    def endpoint(self, model: str) -> str:
        return f"{self.base_url}/v1beta/models/{model}:generateContent"


@dataclass(frozen=True)
class Flag:
    """A command-line flag that sets the config field `field`; its default is the
    field's. `action` makes a switch (``store_false`` for a ``--no-...`` flag);
    `hidden` keeps an advanced flag out of ``--help``."""

    name: str
    field: str
    help: str
    type: Callable[[str], Any] | None = None
    action: Literal["store_true", "store_false"] | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    hidden: bool = False


def add_flags(parser: argparse.ArgumentParser, config: type[Any], flags: Sequence[Flag]) -> None:
    """Add `flags` to `parser`, each defaulting to its field's default in the
    dataclass `config`; ``--help`` shows every default that is a value."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    for flag in flags:
        default = defaults[flag.field]
        if default is dataclasses.MISSING:
            raise TypeError(f"{config.__name__}.{flag.field} has no plain default for {flag.name}")
        options: dict[str, Any] = {"dest": flag.field, "default": default}
        if flag.action is not None:
            options["action"] = flag.action
        else:
            options.update(type=flag.type, choices=flag.choices, metavar=flag.metavar)
            if flag.metavar is None and flag.choices is None:
                # Named after the flag, not the field: `--prices PRICES`, not PRICES_FILE.
                options["metavar"] = flag.name.lstrip("-").replace("-", "_").upper()
        shown = default is not None and not isinstance(default, bool)
        text = f"{flag.help} (default: %(default)s)" if shown else flag.help
        options["help"] = argparse.SUPPRESS if flag.hidden else text
        parser.add_argument(flag.name, **options)


def flag_values(args: argparse.Namespace, flags: Sequence[Flag]) -> dict[str, Any]:
    """The parsed value of every flag, by field name: keyword arguments for the config."""
    return {flag.field: getattr(args, flag.field) for flag in flags}
