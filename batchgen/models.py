"""Typed records passed between the pipeline's stages.

Every stage boundary carries a frozen record so that a stage can be tested
with plain data: the reader yields `Job`s, the client returns an `Outcome`,
the store keeps `JobRecord`s. Statuses and outcome kinds are `StrEnum`s
because they are written verbatim into the state file and the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

DEFAULT_MODEL = "gemini-2.5-flash-image"
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"

#: Aspect ratio -> (width, height) the model returns. All cost 1290 output tokens.
ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "3:4": (864, 1184),
    "4:3": (1184, 864),
    "4:5": (896, 1152),
    "5:4": (1152, 896),
    "9:16": (768, 1344),
    "16:9": (1344, 768),
    "21:9": (1536, 672),
}


class Status(StrEnum):
    """A job's state in the store. Only `pending` jobs are (re)sent."""

    PENDING = "pending"
    DONE = "done"
    BLOCKED = "blocked"
    FAILED = "failed"
    SKIPPED = "skipped"


FINAL_STATUSES = frozenset({Status.DONE, Status.BLOCKED, Status.FAILED, Status.SKIPPED})


class OutcomeKind(StrEnum):
    """What one HTTP exchange amounted to; see the design's outcomes table."""

    OK = "ok"
    RATE_LIMITED = "rate_limited"
    QUOTA_EXHAUSTED = "quota_exhausted"
    SERVER_ERROR = "server_error"
    BLOCKED = "blocked"
    NO_IMAGE = "no_image"
    BAD_REQUEST = "bad_request"
    FATAL = "fatal"
    #: No HTTP answer at all: the connection was never made (refused, DNS, TLS,
    #: connect timeout). The network's fault, not the job's (`engine/outage.py`).
    UNREACHABLE = "unreachable"


#: Kinds worth another attempt of the same job.
RETRYABLE_KINDS = frozenset(
    {
        OutcomeKind.RATE_LIMITED,
        OutcomeKind.SERVER_ERROR,
        OutcomeKind.NO_IMAGE,
        OutcomeKind.UNREACHABLE,
    }
)


class StopKind(StrEnum):
    """Why a run stopped before its work was done; every job it did not end stays
    pending, so the same command continues it."""

    INTERRUPTED = "interrupted"
    FATAL = "fatal"
    QUOTA = "quota"
    BUDGET = "budget"
    DISK = "disk"
    ERROR = "error"
    #: The endpoint never answered, or went away for longer than `--max-outage`.
    NETWORK = "network"
    #: Batch Mode with ``--no-wait``: batches were left running (exit 4).
    WAITING = "waiting"


@dataclass(frozen=True, slots=True)
class StopReason:
    """A stop, as the run reports it: what kind, the sentence for people, the exit code."""

    kind: StopKind
    message: str
    exit_code: int


@dataclass(slots=True)
class Counters:
    """Live numbers for the progress display and the end-of-run summary."""

    done: int = 0
    blocked: int = 0
    failed: int = 0
    skipped: int = 0
    retrying: int = 0
    requests: int = 0
    rate_limited: int = 0
    spent: float = 0.0
    in_flight: int = 0
    cache_hits: int = 0

    def count(self, status: Status) -> None:
        if status is Status.DONE:
            self.done += 1
        elif status is Status.BLOCKED:
            self.blocked += 1
        elif status is Status.FAILED:
            self.failed += 1
        elif status is Status.SKIPPED:
            self.skipped += 1


@dataclass(frozen=True, slots=True)
class Job:
    """One image request, validated. `images` are absolute paths, or `@id`
    references to another job's output (chained edits)."""

    id: str
    prompt: str
    images: tuple[str, ...] = ()
    aspect_ratio: str | None = None
    tags: tuple[str, ...] = ()
    priority: int = 0
    model: str | None = None
    #: Distinct-variant number; jobs with different variants are never merged
    #: by the request cache even when their requests are identical.
    variant: int | None = None
    #: Platform size presets (e.g. ``amazon``) resized locally after generation.
    sizes: tuple[str, ...] = ()
    #: The model's output size (``imageConfig.imageSize``: "512", "1K", "2K", "4K");
    #: None: the model's default.
    image_size: str | None = None
    #: On `run --redo rejected`, this text with the reviewer's note in place of
    #: ``{note}`` is added to the prompt (docs/review.md); None: the prompt as is.
    redo_note: str | None = None
    #: Where the job came from, for error messages and `failed.jsonl`.
    source: str = ""
    line: int = 0

    @property
    def chained(self) -> bool:
        """Whether an input is another job's output (the job waits for its parents)."""
        return any(ref.startswith("@") for ref in self.images)


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    mime_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts from `usageMetadata`; cost is computed from these."""

    prompt_tokens: int = 0
    output_tokens: int = 0
    output_image_tokens: int = 0
    total_tokens: int = 0
    #: Thinking (``thoughtsTokenCount``): billed at the text-output rate, and
    #: not part of `output_tokens` (``candidatesTokenCount``).
    thoughts_tokens: int = 0
    #: ``candidatesTokensDetails`` TEXT, and ``promptTokensDetails`` by modality.
    output_text_tokens: int = 0
    prompt_text_tokens: int = 0
    prompt_image_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    """The classified result of one request. Failures are data, not exceptions."""

    kind: OutcomeKind
    images: tuple[GeneratedImage, ...] = ()
    text: str = ""
    usage: Usage | None = None
    http_status: int | None = None
    message: str = ""
    #: Seconds the server asked us to wait (RetryInfo / Retry-After), if any.
    retry_after: float | None = None
    quota_id: str | None = None
    reason: str | None = None


@dataclass(slots=True)
class ErrorInfo:
    kind: str
    http_status: int | None
    message: str


@dataclass(slots=True)
class JobRecord:
    """A row of the store: the job's last known state across all runs."""

    id: str
    fingerprint: str
    status: Status
    attempts: int = 0
    requests: int = 0
    files: list[str] = field(default_factory=list)
    #: Size-preset files that had to be enlarged beyond the model's output.
    upscaled: list[str] = field(default_factory=list)
    #: The first image's preview as it landed (the image itself when small); None: unknown.
    preview: str | None = None
    error: ErrorInfo | None = None
    #: Answers the job was sent again after, by outcome kind ({"rate_limited": 2}).
    retried: dict[str, int] = field(default_factory=dict)
    text: str = ""
    prompt_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cost_source: str = ""
    tags: list[str] = field(default_factory=list)
    prompt: str = ""
    source: str = ""
    line: int = 0
    #: The job's reference images as given (absolute paths, `@id` for a chained job's).
    images: list[str] = field(default_factory=list)
    started_at: float | None = None
    finished_at: float | None = None
    #: The model and output size of the last request; thinking tokens.
    model: str | None = None
    image_size: str | None = None
    thoughts_tokens: int = 0
    #: The first image's pixel size and the catalogue's for the request ("WxH").
    pixels: str | None = None
    expected_pixels: str | None = None
    #: The run mode of the last request (live, flex) and what its requests
    #: would have cost live (`cost_usd` itself in a live run).
    mode: str | None = None
    live_cost_usd: float = 0.0

    @property
    def size_mismatch(self) -> bool:
        return bool(self.pixels and self.expected_pixels and self.pixels != self.expected_pixels)
