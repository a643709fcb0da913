"""policy: one answer's outcome in, what becomes of its job out.

`decide` is the design's outcomes table as one pure function: no clock, no
store, no pacer, no randomness of its own (the backoff and the jitter are
passed in), so it is tested with plain data. The pool carries the decision
out, and drives the pacer from it.

====================  ==========================================================
outcome               decision
====================  ==========================================================
ok                    End(done)
rate limited          Retry(delay); 429s do not use the job's attempts, up to
                      `MAX_RATE_LIMITED` of them, then End(failed); a server
                      delay over `max_retry_delay` is Stop(quota)
quota exhausted       Stop(quota): nothing is marked failed
server error          Retry(backoff(attempts)) until `max_attempts`, then End(failed)
blocked               End(blocked), never retried
no image              like a server error, capped at `max_no_image_attempts`
bad request           End(failed), never retried
fatal                 Stop(fatal): nothing is marked failed
unreachable           not the job's outcome: the pool waits for the endpoint
                      (`outage`) and uses no attempt; decided, a server error
====================  ==========================================================

The delay after a 429 is the server's (``RetryInfo`` / ``Retry-After``), else
``backoff(n)`` for the n-th 429, times ``1 + 0.1 * jitter()`` with jitter in
[0, 1): ten per cent of spread so that the jobs refused together do not come
back together. Other retries wait ``backoff(attempts)`` (see
`limiter.backoff` for the formula).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from batchgen.config import RunConfig
from batchgen.errors import EXIT_ABORTED, AbortError
from batchgen.models import (
    RETRYABLE_KINDS,
    ErrorInfo,
    Outcome,
    OutcomeKind,
    Status,
    StopKind,
    StopReason,
)
from batchgen.output.sink import is_disk_full

log = logging.getLogger(__name__)

#: 429s do not use up a job's attempts (the quota is not the job's fault), up to this.
MAX_RATE_LIMITED = 100


@dataclass(frozen=True, slots=True)
class Limits:
    """The caps a run was given (`RunConfig`), as the policy reads them."""

    max_attempts: int
    max_no_image_attempts: int
    max_retry_delay: float
    max_rate_limited: int = MAX_RATE_LIMITED

    @classmethod
    def of(cls, config: RunConfig) -> Limits:
        return cls(config.max_attempts, config.max_no_image_attempts, config.max_retry_delay)


@dataclass(frozen=True, slots=True)
class Tries:
    """A job's answers so far in this run: the attempts they used, and the 429s
    (counted apart, because a 429 is the quota's fault, not the job's)."""

    attempts: int = 0
    rate_limited: int = 0

    def after(self, kind: OutcomeKind) -> Tries:
        """These tries and one more answer of `kind`."""
        if kind is OutcomeKind.RATE_LIMITED:
            return Tries(self.attempts, self.rate_limited + 1)
        if kind is OutcomeKind.UNREACHABLE:
            return self
        return Tries(self.attempts + 1, self.rate_limited)


#: A job not sent yet in this run.
FIRST_TRY = Tries()


@dataclass(frozen=True, slots=True)
class Retry:
    """Send the job again after `delay` seconds."""

    delay: float


@dataclass(frozen=True, slots=True)
class End:
    """The job ends with `status` (and `error`, unless it is done)."""

    status: Status
    error: ErrorInfo | None = None


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the whole run; the job (and every job not ended) stays pending."""

    kind: StopKind
    message: str


Decision = Retry | End | Stop

#: What a refusal of the job (not retryable) ends it as.
_FINAL = {OutcomeKind.BLOCKED: Status.BLOCKED, OutcomeKind.BAD_REQUEST: Status.FAILED}
_DONE = End(Status.DONE)


def decide(
    outcome: Outcome,
    tries: Tries,
    limits: Limits,
    *,
    backoff: Callable[[int], float],
    jitter: Callable[[], float],
) -> Decision:
    """What to do with a job after `outcome`; `tries` already counts it."""
    kind = outcome.kind
    if kind is OutcomeKind.OK:
        return _DONE
    if kind is OutcomeKind.FATAL:
        return Stop(
            StopKind.FATAL,
            f"the API refused the run (HTTP {outcome.http_status}, "
            f"{outcome.reason or 'error'}): {outcome.message}",
        )
    if kind is OutcomeKind.QUOTA_EXHAUSTED:
        return Stop(
            StopKind.QUOTA,
            f"daily quota exhausted ({outcome.quota_id}); it resets at midnight "
            "Pacific time; run the same command again then",
        )
    error = ErrorInfo(kind.value, outcome.http_status, outcome.message)
    if kind not in RETRYABLE_KINDS:
        return End(_FINAL[kind], error)
    if kind is OutcomeKind.RATE_LIMITED:
        return _after_rate_limit(outcome, tries, limits, error, backoff, jitter)
    cap = limits.max_attempts
    if kind is OutcomeKind.NO_IMAGE:
        cap = min(cap, limits.max_no_image_attempts)
    if tries.attempts >= cap:
        return End(Status.FAILED, error)
    return Retry(backoff(tries.attempts))


def _after_rate_limit(
    outcome: Outcome,
    tries: Tries,
    limits: Limits,
    error: ErrorInfo,
    backoff: Callable[[int], float],
    jitter: Callable[[], float],
) -> Decision:
    wait = outcome.retry_after
    if wait is not None and wait > limits.max_retry_delay:
        return Stop(
            StopKind.QUOTA,
            f"the server asked to wait {wait:.0f}s (more than "
            f"{limits.max_retry_delay:.0f}s): treating it as a quota stop; "
            "run the same command again later",
        )
    if tries.rate_limited >= limits.max_rate_limited:
        return End(Status.FAILED, error)
    return Retry((wait or backoff(tries.rate_limited)) * (1 + 0.1 * jitter()))


def stop_for(exc: Exception, what: str) -> StopReason:
    """The stop for an error no outcome covers: an `AbortError` says its kind
    itself; a full disk; anything else, `what` saying where it happened (only
    then is the traceback logged: nobody foresaw it)."""
    if isinstance(exc, AbortError):
        return StopReason(exc.kind, str(exc), exc.exit_code)
    if isinstance(exc, OSError) and is_disk_full(exc):
        where = exc.filename or "the output folder"
        return StopReason(
            StopKind.DISK,
            f"disk full while writing {where}; free some space and run the same command "
            "again (finished images are kept)",
            EXIT_ABORTED,
        )
    log.error("%s: %s", what, type(exc).__name__, exc_info=exc)
    return StopReason(
        StopKind.ERROR,
        f"stopped: {what} ({type(exc).__name__}: {exc}); fix it and run the same command again",
        EXIT_ABORTED,
    )
