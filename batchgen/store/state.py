"""state: the `Store`, the one object callers hold for an output folder's state.

In: an output folder. Out: every read and write of its state, through the
methods of the parts it combines (each module names what it keeps):

    Database        db.py        connection, lock, identity, migrations, unit of work
    └ RunsTable     runs.py      runs and meta
      └ JobsTable   jobs.py      jobs: plan, lookup, pending, attempts, ends, counts
    RequestTables   requests.py  request cache, reference image hashes
    BatchesTable    batches.py   Batch Mode: batches, their jobs, uploaded references
    ReportQueries   queries.py   typed totals, tag roll-up, records, failed jobs
    ReviewTable     reviews.py   a person's decisions on the images (`batchgen review`)
    ReviewQueries   reviews.py   the review app's pages of jobs and its filters' values

Combined as mixins, not by delegation, because:

- callers (the planner, the pool, the runner, the CLI, the report) keep
  calling `store.plan(...)`, `store.finish(...)` with the names and signatures
  they always had, without 30 forwarding methods that repeat each signature
  and drift from it;
- the pool calls `record_attempt` and `finish` once per request and per job:
  a forwarding layer would add a Python call to each on the tuned hot path;
- the parts share one connection, one unit of work and the run's counters,
  which they get from their common base instead of each holding references
  to the others.

The cost of mixins, parts reaching into each other, is held off by typing:
each part derives only from `Database` (jobs also from runs, whose run id
marks its rows), so mypy refuses a call from one part into another.
"""

from __future__ import annotations

from batchgen.store.batches import BatchesTable
from batchgen.store.jobs import JobsTable
from batchgen.store.queries import ReportQueries
from batchgen.store.requests import RequestTables
from batchgen.store.reviews import ReviewQueries, ReviewTable


class Store(JobsTable, RequestTables, ReportQueries, BatchesTable, ReviewTable, ReviewQueries):
    """One output folder's state. Use as a context manager; a writable store holds
    the folder's exclusive lock until closed (`lock=False`: a reviewer beside a
    run, which writes only decisions; see `reviews.py`)."""
