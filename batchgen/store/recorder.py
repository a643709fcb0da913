"""recorder: a unit of work's job rows and small images in, committed by a second process.

Why a process: at zero latency the event loop is the run's bottleneck, and the
state's per-job rows and the small images' atomic writes were a third of its
time (measured in place: `scripts/profile_overhead.py`). A thread cannot take
them: most of that time is Python (building the rows) or holds the GIL, and
one hand-over per job cost more than the work. A second process can, on the
core the API's answers leave idle. It owns a second SQLite connection to the
same file (WAL: the run's own connection keeps reading), and takes a whole
unit of work at a time: the ledger's rows of the unit (`_Connection.hold`)
and the images written on the loop (`Writer.save`'s inline path).

The guarantees do not move:

- a unit's images are written (atomically, as by the sink) before its rows,
  and its rows in one transaction;
- the unit's request slots are freed only once this process answers that the
  unit is committed (`after_commit`), so a `kill -9` of the run loses at most
  the answers of `--concurrency` slots, as before; a unit this process had
  read whole is committed even then (the answers were paid for);
- a failure here (a full disk, a damaged page) comes back as the run's stop,
  with the same message as on the loop;
- the request-cache lookup looks through the rows of units sent and not yet
  answered (`held`), as it looks through the unit's own held rows.

Used for a local folder with SQLite state, in the inline engine, when the run
has at least `MIN_JOBS` jobs to send (`wanted`): starting a process costs ~0.1
s, far more than a short run's writes. `BATCHGEN_RECORDER=1` (or `0`) forces
it on (or off), for tests and measurements.

The wire: frames of a 4-byte length and a pickle, run -> recorder on its
stdin, recorder -> run on its stdout, which the loop reads (`add_reader`)
without ever blocking on a partial frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from batchgen.errors import AbortError, StateError
from batchgen.models import StopKind

#: Runs with fewer jobs to send write their rows on the loop, as before.
MIN_JOBS = 2_000
ENV = "BATCHGEN_RECORDER"

_LEN = struct.Struct(">I")
#: A unit's rows by statement, in order (`db._Connection.held`).
Rows = dict[str, list[Sequence[Any]]]
#: Images to write before the rows: (path relative to OUT, bytes).
Files = list[tuple[str, bytes]]


def wanted(jobs: int) -> bool:
    """Whether a run with `jobs` to send should write through a recorder."""
    forced = os.environ.get(ENV)
    if forced in ("0", "1"):
        return forced == "1"
    return jobs >= MIN_JOBS


def _frame(obj: object) -> bytes:
    data = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(data)) + data


class Recorder:
    """The run's side: sends units, hears which are committed, and stops the process."""

    def __init__(self, db_path: Path, out: Path, *, on_error: Callable[[Exception], None]) -> None:
        """`on_error` hears of a unit that could not be committed, or of the
        process ending early: the run must stop (its slots are freed anyway, so
        that the pool can drain)."""
        self._on_error = on_error
        # It never calls the API: the key stays out of its environment.
        env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
        # The child imports this package from wherever the run imported it.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "batchgen.store.recorder", str(db_path), str(out)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=False,
        )
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._to: IO[bytes] = self._proc.stdin
        self._from = self._proc.stdout.fileno()
        self._buffer = b""
        self._next = 0
        #: Units sent and not yet answered: their rows, and what runs once committed.
        self._rows: dict[int, Rows] = {}
        self._after: dict[int, list[Callable[[], None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gone = False

    def held(self, sql: str) -> list[Sequence[Any]]:
        """Rows of `sql` sent and not yet committed, oldest first."""
        return [row for rows in self._rows.values() for row in rows.get(sql, ())]

    def send(self, rows: Rows, files: Files, after: list[Callable[[], None]]) -> None:
        """Commit `files` then `rows` over there; call `after` once they are."""
        if self._gone:
            # The run is stopping (`_ended` said why): these rows are not
            # committed, their jobs stay pending; the slots go, so it drains.
            for fn in after:
                fn()
            return
        unit = self._next
        self._next += 1
        self._rows[unit], self._after[unit] = rows, after
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            os.set_blocking(self._from, False)
            self._loop.add_reader(self._from, self._receive)
        try:
            self._to.write(_frame((unit, files, rows)))
            self._to.flush()
        except OSError:
            self._ended()

    def _receive(self) -> None:
        """One read of what the recorder said (the loop's reader, and `wait`'s
        blocking loop): whole answers are taken, an end of file means it is gone."""
        try:
            chunk = os.read(self._from, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._ended()
            return
        self._buffer += chunk
        self._take_answers()

    def _take_answers(self) -> None:
        buffer = self._buffer
        while len(buffer) >= 4:
            (size,) = _LEN.unpack_from(buffer)
            if len(buffer) < 4 + size:
                break
            answer = pickle.loads(buffer[4 : 4 + size])
            buffer = buffer[4 + size :]
            self._answered(answer)
        self._buffer = buffer

    def _answered(self, answer: tuple[Any, ...]) -> None:
        unit = answer[0]
        self._rows.pop(unit, None)
        after = self._after.pop(unit, [])
        if len(answer) > 1:
            self._on_error(_error(*answer[1:]))
        for fn in after:
            fn()

    def _ended(self) -> None:
        """The process is gone: every unit not answered is lost (its jobs stay
        pending, their slots are freed so that the pool can drain)."""
        if self._gone:
            return
        self._gone = True
        if self._loop is not None:
            self._loop.remove_reader(self._from)
        waiting = list(self._after.values())
        self._rows.clear()
        self._after.clear()
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        self._on_error(
            AbortError(
                "the process writing the state stopped unexpectedly "
                f"(exit code {code}); answers not yet recorded will be sent again: "
                "run the same command again to go on"
            )
        )
        for after in waiting:
            for fn in after:
                fn()

    def wait(self) -> None:
        """Block until every unit sent is answered (a statement on the run's own
        connection must see them, and the run's end waits for them)."""
        if not self._after or self._gone:
            return
        os.set_blocking(self._from, True)
        try:
            while self._after and not self._gone:
                self._receive()
        finally:
            if not self._gone:
                os.set_blocking(self._from, False)

    def close(self) -> None:
        """Wait for what is pending, then end the process."""
        self.wait()
        if self._loop is not None and not self._gone:
            self._loop.remove_reader(self._from)
        self._gone = True
        with contextlib.suppress(OSError):
            self._to.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        with contextlib.suppress(OSError):
            self._proc.stdout.close()  # type: ignore[union-attr]


def _error(kind: str, message: str) -> Exception:
    if kind == "state":
        return StateError(message)
    return AbortError(message, kind=StopKind(kind))


# -- the recorder process ------------------------------------------------------
def _serve(db_path: Path, out: Path) -> None:
    """Units in on stdin until it closes; each answered on stdout: (unit,) once
    committed, (unit, kind, message) when it could not be."""
    from batchgen.output.storage import LocalOutput
    from batchgen.store.db import Database

    # Ctrl-C and SIGTERM are for the run: it drains, then closes our stdin.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    state = Database(out, lock=False, path=db_path)
    state.open()
    images = LocalOutput(out)
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    try:
        while True:
            head = source.read(4)
            if len(head) < 4:
                return
            (size,) = _LEN.unpack(head)
            body = source.read(size)
            if len(body) < size:
                return  # the run died mid-frame: that unit was never whole
            unit, files, rows = pickle.loads(body)
            try:
                for rel, data in files:
                    images.write_bytes(rel, data)
                with state.transaction():
                    for sql, params in rows.items():
                        state.db.executemany(sql, params)
            except AbortError as exc:
                answer: tuple[Any, ...] = (unit, exc.kind.value, str(exc))
            except StateError as exc:
                answer = (unit, "state", str(exc))
            except Exception as exc:  # said to the run, which stops
                what = f"writing the state: {type(exc).__name__}: {exc}"
                answer = (unit, StopKind.ERROR.value, what)
            else:
                answer = (unit,)
            sink.write(_frame(answer))
            sink.flush()
    finally:
        state.close()


if __name__ == "__main__":
    _serve(Path(sys.argv[1]), Path(sys.argv[2]))
