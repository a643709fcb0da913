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

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from batchgen.store.db import Database
from batchgen.store.dialect import POSTGRES, SQLITE, Dialect
from batchgen.store.jobs import status_counts


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


#: A decision (`r`) made on its job's (`j`) current image, in each dialect.
_MATCH = {d.name: f"r.fingerprint = j.fingerprint AND r.finished_at {d.same} j.finished_at"
          for d in (SQLITE, POSTGRES)}  # fmt: skip
#: Decisions that match their job's current image.
_STANDING = {
    name: f"""SELECT r.job_id, r.decision, r.note, r.at, r.fingerprint, r.finished_at
    FROM reviews AS r JOIN jobs AS j ON j.id = r.job_id WHERE {match}"""
    for name, match in _MATCH.items()
}


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
        if row[1] is None:
            raise ValueError(f"{job_id} has not ended: there is no image to judge yet")
        if version is not None and version != image_version(row[0], row[1]):
            raise StaleImage(job_id)
        review = Review(job_id, decision, note, time.time(), row[0], row[1])
        self.db.execute(
            "INSERT INTO reviews VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET "
            "decision = excluded.decision, note = excluded.note, at = excluded.at, "
            "fingerprint = excluded.fingerprint, finished_at = excluded.finished_at",
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
        row = self.db.execute(_STANDING[self.sql.name] + " AND r.job_id = ?", (job_id,)).fetchone()
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
                _STANDING[self.sql.name].replace("SELECT ", "SELECT j.seq, ", 1)
                + where
                + " AND j.seq > ? ORDER BY j.seq LIMIT 500",
                (*args, last),
            ).fetchall()
            if not rows:
                return
            for row in rows:
                last = row[0]
                yield _review(row[1:])

    # -- redo (`run --redo rejected`) ------------------------------------------
    def redo_notes(self, *, all_rejected: bool) -> dict[str, str]:
        """Rejected jobs a run makes again, with the reviewer's notes: every
        standing rejection (`--redo rejected`), or only the redos a stopped run
        left pending (so a resumed redo keeps its note)."""
        sql = _STANDING[self.sql.name] + " AND r.decision = 'rejected'"
        if not all_rejected:
            sql += " AND j.status = 'pending'"
        return {row[0]: row[2] for row in self.db.execute(sql).fetchall()}

    def plan_redo(self, job_id: str, files: Iterable[str]) -> None:
        """A rejected job just planned again (`plan(reset=True)`): its earlier
        files are to be moved to their history names before anything is sent,
        and its rejection stands on the reset job until a new image ends it."""
        self._writing()
        kept = [f.split("#", 1)[0] for f in files]
        if kept:
            self.db.execute(
                "INSERT INTO redo_moves VALUES (?, ?) ON CONFLICT (job_id) DO UPDATE SET "
                "files = excluded.files",
                (job_id, json.dumps(kept)),
            )
        self.db.execute(
            "UPDATE reviews SET finished_at = (SELECT finished_at FROM jobs WHERE id = ?) "
            "WHERE job_id = ?",
            (job_id, job_id),
        )

    def redo_moves(self) -> list[tuple[str, list[str]]]:
        """Files still to move to history, per job (few: the rejected ones)."""
        rows = self.db.execute("SELECT job_id, files FROM redo_moves ORDER BY job_id").fetchall()
        return [(str(job_id), list(json.loads(files))) for job_id, files in rows]

    def moved(self, job_id: str) -> None:
        """The job's earlier files are in history (a move found done is not redone)."""
        self._writing()
        self.db.execute("DELETE FROM redo_moves WHERE job_id=?", (job_id,))

    def drop_stale_reviews(self) -> int:
        """Forget decisions on images that a newer one has replaced (the end of a
        redo clears its rejection); a job not ended yet keeps its own."""
        self._writing()
        return int(
            self.db.execute(
                "DELETE FROM reviews WHERE job_id IN (SELECT r.job_id FROM reviews AS r "
                "JOIN jobs AS j ON j.id = r.job_id WHERE j.finished_at IS NOT NULL "
                f"AND NOT ({_MATCH[self.sql.name]}))"
            ).rowcount
        )


# -- the review app's reads -------------------------------------------------------


#: The review app's views of the jobs, by their standing decision.
VIEWS = ("", "unreviewed", "approved", "rejected")


@dataclass(frozen=True, slots=True)
class ReviewFilter:
    """Which jobs a page of the review app shows ("" leaves a filter out)."""

    #: One of `VIEWS`: all jobs, those without a standing decision, or those with one.
    view: str = ""
    status: str = ""
    tag: str = ""
    model: str = ""


@dataclass(frozen=True, slots=True)
class ReviewItem:
    """One job as the review app shows it."""

    seq: int
    id: str
    status: str
    prompt: str
    model: str | None
    tags: tuple[str, ...]
    #: The job's reference images, as its file gave them (paths, `@parent`).
    references: tuple[str, ...]
    #: Its output files relative to OUT (the first is the image under review).
    files: tuple[str, ...]
    error: str | None
    #: The image's `image_version`, sent back with a decision.
    version: str
    decision: Decision | None
    note: str


@dataclass(frozen=True, slots=True)
class ReviewFacets:
    """What the review app's filters offer, and how far the review has got."""

    statuses: dict[str, int]
    approved: int
    rejected: int
    tags: tuple[str, ...]
    models: tuple[str, ...]


def _page(sql: Dialect) -> str:
    return f"""SELECT j.seq, j.id, j.status, j.job, {sql.model}, j.files, j.error_message,
    j.fingerprint, j.finished_at, r.decision, r.note
    FROM jobs AS j LEFT JOIN reviews AS r ON r.job_id = j.id AND {_MATCH[sql.name]}
    WHERE j.seq > ?"""


def _page_filter(f: ReviewFilter, dialect: Dialect) -> tuple[str, list[str]]:
    """The WHERE clauses and arguments of a filter (values are bound, never spliced)."""
    sql, args = "", []
    if f.view == "unreviewed":
        sql += " AND r.decision IS NULL"
    elif f.view in ("approved", "rejected"):
        sql += " AND r.decision = ?"
        args.append(f.view)
    elif f.view:
        raise ValueError(f"unknown view {f.view!r}")
    if f.status:
        sql += " AND j.status = ?"
        args.append(f.status)
    if f.tag:
        sql += f" AND {dialect.has_tag}"
        args.append(f.tag)
    if f.model:
        sql += f" AND {dialect.model} = ?"
        args.append(f.model)
    return sql, args


class ReviewQueries(Database):
    """The review app's reads: pages of jobs in file order, and the filters' values."""

    def review_page(self, f: ReviewFilter, after: int = 0, limit: int = 60) -> list[ReviewItem]:
        """Up to `limit` jobs matching `f` after sequence number `after` (keyset
        paging: the next page starts after the last item's `seq`)."""
        where, args = _page_filter(f, self.sql)
        rows = self.db.execute(
            _page(self.sql) + where + " ORDER BY j.seq LIMIT ?", (after, *args, limit)
        ).fetchall()
        items = []
        for seq, job_id, status, text, model, files, error, fp, fin, decision, note in rows:
            job = json.loads(text)
            items.append(
                ReviewItem(
                    seq=seq,
                    id=job_id,
                    status=status,
                    prompt=job["prompt"],
                    model=model,
                    tags=tuple(job.get("tags", ())),
                    references=tuple(job.get("images", ())),
                    files=tuple(f.split("#", 1)[0] for f in json.loads(files)),
                    error=error,
                    version=image_version(fp, fin),
                    decision=None if decision is None else Decision(decision),
                    note=note or "",
                )
            )
        return items

    def review_facets(self) -> ReviewFacets:
        decided = dict.fromkeys(("approved", "rejected"), 0)
        for decision, n in self.db.execute(
            "SELECT r.decision, count(*) FROM reviews AS r JOIN jobs AS j ON j.id = r.job_id "
            f"WHERE {_MATCH[self.sql.name]} GROUP BY r.decision"
        ).fetchall():
            decided[decision] = int(n)
        tags = self.db.execute(self.sql.all_tags).fetchall()
        models = self.db.execute(
            f"SELECT DISTINCT m FROM (SELECT {self.sql.model} AS m FROM jobs AS j) AS s "
            "WHERE m IS NOT NULL ORDER BY 1"
        ).fetchall()
        return ReviewFacets(
            statuses=status_counts(self.db),
            approved=decided["approved"],
            rejected=decided["rejected"],
            tags=tuple(str(t[0]) for t in tags),
            models=tuple(str(m[0]) for m in models),
        )

    def parent_files(self, job_id: str) -> tuple[str, ...]:
        """A job's output files (a chained job's `@parent` reference shows the first)."""
        row = self.db.execute("SELECT files FROM jobs WHERE id=?", (job_id,)).fetchone()
        return () if row is None else tuple(f.split("#", 1)[0] for f in json.loads(row[0]))
