"""reviews: a person's decisions on the folder's images (the `reviews` table).

In: approve or reject (and a note) on a job, from `batchgen review`; a redo
clearing the decisions it acts on. Out: the decisions that still stand, as
typed `Review`s, for `run --redo rejected` and `export --approved`.

A decision is about one image, not about an id: each row keeps the
fingerprint and end time of the job row it judged. When the job's image is
made again (a changed prompt, a redo), the row no longer matches and the
image is unreviewed; `reviews()` yields only decisions that match.

The reviewer writes beside a run. It opens the store without the folder's
lock (`Store(out, lock=False)`), and each decision is one statement in its
own short `BEGIN IMMEDIATE` transaction: the run's writer waits at most
that long (well inside its busy timeout) and never sees "database is locked".
The reviewer may wait longer (the run's planning pass is one transaction):
then its write fails with `sqlite3.OperationalError` and the caller tries
again, having lost nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from batchgen.store.db import Database


class Decision(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"


class StaleImage(Exception):
    """The image a decision was made on is no longer the job's image."""


@dataclass(frozen=True, slots=True)
class Review:
    """The standing decision on a job's current image."""

    job_id: str
    decision: Decision
    note: str
    #: When it was made (seconds since the epoch).
    at: float
    #: The judged image's job fingerprint and end time (its `version`).
    fingerprint: str
    finished_at: float | None

    @property
    def version(self) -> str:
        return image_version(self.fingerprint, self.finished_at)


def image_version(fingerprint: str, finished_at: float | None) -> str:
    """A job image's identity as a page holds it: a decision sent with an older
    one is refused (`StaleImage`) instead of landing on a newer image."""
    return f"{fingerprint}@{'' if finished_at is None else repr(finished_at)}"


#: Decisions that match their job's current image, with its file order.
_STANDING = """SELECT r.job_id, r.decision, r.note, r.at, r.fingerprint, r.finished_at
    FROM reviews AS r JOIN jobs AS j ON j.id = r.job_id
    WHERE r.fingerprint = j.fingerprint AND r.finished_at IS j.finished_at"""


def _review(row: tuple[str, str, str, float, str, float | None]) -> Review:
    return Review(row[0], Decision(row[1]), row[2], float(row[3]), row[4], row[5])


class ReviewTable(Database):
    def set_review(
        self, job_id: str, decision: Decision | str, note: str = "", *, version: str | None = None
    ) -> Review:
        """Decide on the job's current image. `version`: the image the person
        saw (`image_version`); when the job has a newer one, nothing is written
        and `StaleImage` is raised. An unknown job raises `KeyError`."""
        self._writing()
        decision = Decision(decision)
        row = self.db.execute(
            "SELECT fingerprint, finished_at FROM jobs WHERE id=?", (job_id,)
        ).fetchone()
        if row is None:
            raise KeyError(job_id)
        if version is not None and version != image_version(row[0], row[1]):
            raise StaleImage(job_id)
        review = Review(job_id, decision, note, time.time(), row[0], row[1])
        self.db.execute(
            "INSERT OR REPLACE INTO reviews VALUES (?, ?, ?, ?, ?, ?)",
            (job_id, decision.value, note, review.at, review.fingerprint, review.finished_at),
        )
        return review

    def clear_review(self, job_ids: Iterable[str]) -> int:
        """Forget the decisions on these jobs; how many there were."""
        self._writing()
        cleared = 0
        for job_id in job_ids:
            cleared += self.db.execute("DELETE FROM reviews WHERE job_id=?", (job_id,)).rowcount
        return cleared

    def review(self, job_id: str) -> Review | None:
        """The standing decision on the job's current image, if any."""
        row = self.db.execute(_STANDING + " AND r.job_id = ?", (job_id,)).fetchone()
        return None if row is None else _review(row)

    def reviews(self, decision: Decision | str | None = None) -> Iterator[Review]:
        """The standing decisions (on each job's current image), in file order;
        only `decision`'s when given. Paged by file order, so no cursor stays
        open across the caller's writes (a redo clears as it goes)."""
        where, args = "", tuple[str, ...]()
        if decision is not None:
            where, args = " AND r.decision = ?", (Decision(decision).value,)
        last = -1
        while True:
            rows = self.db.execute(
                _STANDING.replace("SELECT ", "SELECT j.seq, ", 1)
                + where
                + " AND j.seq > ? ORDER BY j.seq LIMIT 500",
                (*args, last),
            ).fetchall()
            if not rows:
                return
            for row in rows:
                last = row[0]
                yield _review(row[1:])
