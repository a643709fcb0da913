"""The retry-or-stop policy, with plain data: one row per row of the outcomes
table in the design (plus the edges each row names), then properties."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchgen.config import RunConfig
from batchgen.engine.policy import (
    MAX_RATE_LIMITED,
    Decision,
    End,
    Limits,
    Retry,
    Stop,
    Tries,
    decide,
)
from batchgen.models import (
    RETRYABLE_KINDS,
    ErrorInfo,
    Outcome,
    OutcomeKind,
    Status,
    StopKind,
)

LIMITS = Limits(max_attempts=5, max_no_image_attempts=3, max_retry_delay=900.0)
K = OutcomeKind


def backoff(n: int) -> float:
    """A recognisable stand-in for the real formula: 10 s times the retry number."""
    return 10.0 * n


def jitter() -> float:
    return 0.5


def err(kind: OutcomeKind, status: int | None, message: str) -> ErrorInfo:
    return ErrorInfo(kind.value, status, message)


# (row of the outcomes table, outcome, tries counting it, expected decision)
TABLE: list[tuple[str, Outcome, Tries, Decision]] = [
    ("ok", Outcome(K.OK, http_status=200), Tries(1, 0), End(Status.DONE)),
    (
        "unreachable: the pool waits for the endpoint; decided, a server error",
        Outcome(K.UNREACHABLE, message="cannot connect: refused"),
        Tries(1, 0),
        Retry(10.0),
    ),
    (
        "rate limited: the server's delay, +10 % jitter at most",
        Outcome(K.RATE_LIMITED, http_status=429, message="slow down", retry_after=3.0),
        Tries(0, 1),
        Retry(3.0 * 1.05),
    ),
    (
        "rate limited without a delay: backoff by the number of 429s",
        Outcome(K.RATE_LIMITED, http_status=429, message="slow down"),
        Tries(4, 2),
        Retry(20.0 * 1.05),
    ),
    (
        "rate limited: 429s do not use attempts, even past max_attempts",
        Outcome(K.RATE_LIMITED, http_status=429, message="slow down", retry_after=1.0),
        Tries(5, 1),
        Retry(1.05),
    ),
    (
        "rate limited: MAX_RATE_LIMITED of them fail the job",
        Outcome(K.RATE_LIMITED, http_status=429, message="slow down", retry_after=1.0),
        Tries(0, MAX_RATE_LIMITED),
        End(Status.FAILED, err(K.RATE_LIMITED, 429, "slow down")),
    ),
    (
        "rate limited: a delay over max_retry_delay is a quota stop",
        Outcome(K.RATE_LIMITED, http_status=429, message="come back", retry_after=3600.0),
        Tries(0, 1),
        Stop(
            StopKind.QUOTA,
            "the server asked to wait 3600s (more than 900s): treating it as a quota "
            "stop; run the same command again later",
        ),
    ),
    (
        "quota exhausted for the day: stop, nothing failed",
        Outcome(
            K.QUOTA_EXHAUSTED,
            http_status=429,
            message="quota",
            quota_id="GenerateRequestsPerDayPerProjectPerModel",
        ),
        Tries(1, 0),
        Stop(
            StopKind.QUOTA,
            "daily quota exhausted (GenerateRequestsPerDayPerProjectPerModel); it resets "
            "at midnight Pacific time; run the same command again then",
        ),
    ),
    (
        "server error: retried with backoff by attempts",
        Outcome(K.SERVER_ERROR, http_status=503, message="overloaded"),
        Tries(2, 0),
        Retry(20.0),
    ),
    (
        "server error: max_attempts fail the job",
        Outcome(K.SERVER_ERROR, http_status=500, message="internal"),
        Tries(5, 7),
        End(Status.FAILED, err(K.SERVER_ERROR, 500, "internal")),
    ),
    (
        "blocked by policy: never retried",
        Outcome(K.BLOCKED, http_status=200, message="SAFETY"),
        Tries(1, 0),
        End(Status.BLOCKED, err(K.BLOCKED, 200, "SAFETY")),
    ),
    (
        "no image: retried a few times",
        Outcome(K.NO_IMAGE, http_status=200, message="text only"),
        Tries(2, 0),
        Retry(20.0),
    ),
    (
        "no image: its own cap, below max_attempts, fails the job",
        Outcome(K.NO_IMAGE, http_status=200, message="text only"),
        Tries(3, 0),
        End(Status.FAILED, err(K.NO_IMAGE, 200, "text only")),
    ),
    (
        "bad request: never retried, the server's message kept",
        Outcome(K.BAD_REQUEST, http_status=400, message="prompt too long"),
        Tries(1, 0),
        End(Status.FAILED, err(K.BAD_REQUEST, 400, "prompt too long")),
    ),
    (
        "fatal: stop the run at once, nothing failed",
        Outcome(K.FATAL, http_status=400, message="API key not valid", reason="API_KEY_INVALID"),
        Tries(1, 0),
        Stop(
            StopKind.FATAL,
            "the API refused the run (HTTP 400, API_KEY_INVALID): API key not valid",
        ),
    ),
]


@pytest.mark.parametrize(
    ("outcome", "tries", "expected"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_the_outcomes_table(outcome: Outcome, tries: Tries, expected: Decision) -> None:
    decision = decide(outcome, tries, LIMITS, backoff=backoff, jitter=jitter)
    if isinstance(expected, Retry):
        assert isinstance(decision, Retry)
        assert decision.delay == pytest.approx(expected.delay)
    else:
        assert decision == expected


def test_every_outcome_kind_has_a_row() -> None:
    assert {row[1].kind for row in TABLE} == set(OutcomeKind)


def test_a_429_counts_apart_from_the_attempts() -> None:
    tries = Tries()
    for kind in (K.SERVER_ERROR, K.RATE_LIMITED, K.RATE_LIMITED, K.NO_IMAGE, K.OK):
        tries = tries.after(kind)
    assert tries == Tries(attempts=3, rate_limited=2)


def test_limits_come_from_the_run_config() -> None:
    config = RunConfig(
        out=Path("out"), max_attempts=7, max_no_image_attempts=2, max_retry_delay=60.0
    )
    assert Limits.of(config) == Limits(7, 2, 60.0, MAX_RATE_LIMITED)


@given(
    kind=st.sampled_from(list(OutcomeKind)),
    attempts=st.integers(0, 10),
    rate_limited=st.integers(0, 2 * MAX_RATE_LIMITED),
    retry_after=st.none() | st.floats(0.0, 2000.0),
    spread=st.floats(0.0, 1.0, exclude_max=True),
)
def test_only_retryable_kinds_retry_and_delays_stay_within_bounds(
    kind: OutcomeKind, attempts: int, rate_limited: int, retry_after: float | None, spread: float
) -> None:
    outcome = Outcome(kind, http_status=500, message="m", retry_after=retry_after)
    tries = Tries(attempts, rate_limited)
    decision = decide(outcome, tries, LIMITS, backoff=backoff, jitter=lambda: spread)
    if not isinstance(decision, Retry):
        return
    assert kind in RETRYABLE_KINDS
    if kind is K.RATE_LIMITED:
        base = retry_after or backoff(rate_limited)
        assert base <= decision.delay <= 1.1 * base
        assert retry_after is None or retry_after <= LIMITS.max_retry_delay
        assert rate_limited < MAX_RATE_LIMITED
    else:
        assert decision.delay == backoff(attempts)
        assert attempts < LIMITS.max_attempts
