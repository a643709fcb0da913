"""requests: what this folder remembers about requests and their inputs.

Two tables that save work rather than record it. `request_cache` maps a
request's key (`engine.cache.request_key`) to the files, text and cost of the
job that first got an answer, so an identical request is not paid for twice.
`image_hashes` keeps each reference image's digest with the size and mtime it
had, so a resumed run of a million jobs does not read every photo again to
fingerprint it. Losing either costs time or money, never correctness.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from batchgen.store.db import Database

_REMEMBER = (
    "INSERT INTO request_cache VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
    "job_id = excluded.job_id, files = excluded.files, text = excluded.text, "
    "cost_usd = excluded.cost_usd"
)


class RequestTables(Database):
    # -- request cache (this folder) ------------------------------------------
    def cached_request(self, key: str) -> tuple[list[str], str, float] | None:
        """Files (relative to OUT), text and original cost of a finished identical
        request. Asked once a job: the rows held for the commit are looked through
        here (the newest first), so the lookup does not write them early."""
        for held in reversed(self._held_rows(_REMEMBER)):
            if held[0] == key:
                return json.loads(held[2]), held[3], float(held[4])
        row = self._read_past_held(
            "SELECT files, text, cost_usd FROM request_cache WHERE key=?", (key,)
        ).fetchone()
        return None if row is None else (json.loads(row[0]), row[1], float(row[2]))

    def remember_request(
        self, key: str, job_id: str, files: list[str], text: str, cost: float
    ) -> None:
        self._writing()
        self._write_row(_REMEMBER, (key, job_id, json.dumps(files), text, cost))

    # -- image hashes --------------------------------------------------------
    def cached_hash(self, path: str, size: int, mtime_ns: int) -> str | None:
        row = self.db.execute(
            "SELECT sha256 FROM image_hashes WHERE path=? AND size=? AND mtime_ns=?",
            (path, size, mtime_ns),
        ).fetchone()
        return None if row is None else str(row[0])

    def hashed_files(self) -> Iterator[tuple[str, int, int]]:
        """Every reference file hashed so far, with the size and mtime it had."""
        yield from self.db.execute("SELECT path, size, mtime_ns FROM image_hashes")

    def remember_hash(self, path: str, size: int, mtime_ns: int, digest: str) -> None:
        if self.readonly:
            return
        self._writing()
        self.db.execute(
            "INSERT INTO image_hashes VALUES (?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET "
            "size = excluded.size, mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256",
            (path, size, mtime_ns, digest),
        )
