"""outage: answers and connection failures in, wait for the endpoint or stop the run out.

A request that never reached a server (connection refused, DNS failure, TLS
handshake, no TCP connection in time: the client's `unreachable` outcome) is
the network's fault, not the job's: it uses none of the job's attempts and
ends no job. The pool hands such a job here and waits:

* an endpoint that has not answered once in this run (a wrong ``--base-url``,
  no network) stops the run after `never_answered_s` (`NEVER_ANSWERED_S`, one
  minute), exit 3, every job not finished still pending;
* an endpoint that answered and then went away (a network blip at 3 a.m.) is
  waited for up to `max_outage_s` (``--max-outage``, 900 s by default), with a
  warning when the outage begins and when it ends, then the run stops the same way.

While it waits, one request at a time probes the endpoint, after
``probe_base * 2**n`` seconds for the n-th failed probe (at most `PROBE_CAP_S`);
the other jobs wait for its answer instead of each knocking. Any HTTP answer
ends the outage, a 5xx too: bursts of those are the pacer's circuit breaker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from batchgen.errors import EXIT_ABORTED
from batchgen.models import StopKind, StopReason

log = logging.getLogger(__name__)

#: How long an endpoint that never answered in this run is tried before the run stops.
NEVER_ANSWERED_S = 60.0
#: The longest wait between two probes of an endpoint that is away.
PROBE_CAP_S = 30.0


def host_of(base_url: str) -> str:
    """``host[:port]`` of the endpoint, for messages (the URL never holds the key)."""
    parts = urlsplit(base_url)
    host = parts.hostname or base_url
    return f"{host}:{parts.port}" if parts.port else host


def _duration(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f} min"


class Outage:
    """Whether the endpoint answers, shared by every worker of a run."""

    def __init__(
        self,
        host: str,
        *,
        on_stop: Callable[[StopReason], None],
        max_outage_s: float,
        never_answered_s: float = NEVER_ANSWERED_S,
        probe_base: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.max_outage_s = max_outage_s
        self.never_answered_s = never_answered_s
        #: Any HTTP answer in this run: from then on, failures are an outage.
        self.answered = False
        #: When the current outage began (None: the endpoint answers).
        self.since: float | None = None
        self.last_error = ""
        self._on_stop = on_stop
        self._probe_base = probe_base
        self._clock = clock
        self._failed_probes = 0
        self._probing = False
        self._next_probe = 0.0
        self._halted = False
        self._changed = asyncio.Event()

    def answered_now(self) -> None:
        """An HTTP answer came back: the endpoint is there (again)."""
        self.answered = True
        if self.since is not None:
            log.warning(
                "%s answers again after %s; carrying on",
                self.host,
                _duration(self._clock() - self.since),
            )
            self.since = None
            self._wake()

    def halt(self) -> None:
        """The run is stopping: every waiting job gives up its turn."""
        self._halted = True
        self._wake()

    def note(self) -> str:
        """A few words for the progress display while the endpoint is away."""
        if self.since is None:
            return ""
        waited = _duration(self._clock() - self.since)
        return f"waiting for {self.host} ({waited}; last error: {self.last_error})"

    async def wait(self, error: str) -> bool:
        """After a request that did not connect: True when the job may be sent
        again (the endpoint is back, or it is this job's turn to probe); False
        when the run stops (this outage lasted too long, or another stop)."""
        self._failed(error)
        while not self._halted:
            if self.since is None:
                return True
            now = self._clock()
            limit = self.max_outage_s if self.answered else self.never_answered_s
            if now - self.since >= limit:
                self._give_up(now)
                return False
            if not self._probing and now >= self._next_probe:
                self._probing = True
                return True
            wake_at = self.since + limit
            if not self._probing:
                wake_at = min(wake_at, self._next_probe)
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), max(0.0, wake_at - now))
        return False

    def _failed(self, error: str) -> None:
        now = self._clock()
        self.last_error = error
        if self.since is None:
            self.since = now
            self._failed_probes = 0
            self._probing = False
            self._next_probe = now + self._probe_base
            if self.answered:
                log.warning(
                    "%s stopped answering (%s); waiting for it up to %s (--max-outage), "
                    "no job is marked failed meanwhile",
                    self.host,
                    error,
                    _duration(self.max_outage_s),
                )
            else:
                log.warning(
                    "cannot reach %s (%s); trying for up to %s",
                    self.host,
                    error,
                    _duration(self.never_answered_s),
                )
            return
        if self._probing:
            # The probe (or a request sent before the outage began) failed too.
            self._probing = False
            self._failed_probes += 1
            delay = self._probe_base * 2 ** min(self._failed_probes, 16)
            self._next_probe = now + min(PROBE_CAP_S, delay)
            self._wake()

    def _give_up(self, now: float) -> None:
        assert self.since is not None
        if self.answered:
            message = (
                f"{self.host} stopped answering {_duration(now - self.since)} ago and did not "
                f"come back within --max-outage {self.max_outage_s:g}s (last error: "
                f"{self.last_error}); unfinished jobs stay pending: run the same command "
                "again once the network is back"
            )
        else:
            message = (
                f"cannot reach {self.host}: no answer in {_duration(now - self.since)} "
                f"({self.last_error}); check --base-url and the network, then run the same "
                "command again (every job not finished is still pending)"
            )
        self._on_stop(StopReason(StopKind.NETWORK, message, EXIT_ABORTED))
        self.halt()

    def _wake(self) -> None:
        """Wake every waiter; later waiters wait on a fresh event."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


__all__ = ["NEVER_ANSWERED_S", "Outage", "host_of"]
