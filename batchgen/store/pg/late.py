"""late: requests answered after their worker's lease had passed, paid for all the same.

In: a request's attempt that the job's row refused (the worker was frozen past
its lease, and another worker holds the job now). Out: one row of
`late_requests` for it, and the totals of the state (`totals`, `spent`,
`spend`, `mode_spend`) counting it, so the state's cost is what was paid.

A job's row stays its owner's: the late request is on no job's row (the
outcome's fence is unchanged, and a job never counts two workers' requests),
and each request is counted once, on its job's row or here, never both. The
table only grows (it is the record of money spent); a worker checks its lease
before it sends (`queue.PgQueue.holds`), so only the requests it had in
flight when its lease passed can land here.
"""

from __future__ import annotations

import time
from dataclasses import replace

from batchgen.store.jobs import JobsTable
from batchgen.store.pg.database import PgDatabase
from batchgen.store.queries import ModeSpend, ReportQueries, Spend, Totals

_INSERT = "INSERT INTO late_requests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SUMS = """SELECT count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(output_tokens), 0),
    coalesce(sum(cost_usd), 0) FROM late_requests"""


class LateRequests(JobsTable, ReportQueries, PgDatabase):
    #: Kept by `PgQueue`: writes refused because this store's lease had passed.
    refused: int
    worker: str
    #: Late requests this store recorded.
    late = 0

    def record_attempt(
        self,
        job_id: str,
        *,
        cost: float,
        prompt_tokens: int,
        output_tokens: int,
        cost_source: str,
        thoughts_tokens: int = 0,
        model: str | None = None,
        image_size: str | None = None,
        live_cost: float | None = None,
        mode: str | None = None,
    ) -> None:
        """The request on its job's row, or, refused there, in `late_requests`."""
        refused = self.refused
        super().record_attempt(
            job_id,
            cost=cost,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            cost_source=cost_source,
            thoughts_tokens=thoughts_tokens,
            model=model,
            image_size=image_size,
            live_cost=live_cost,
            mode=mode,
        )
        if self.refused == refused:
            return
        self.late += 1
        self.db.execute(
            _INSERT,
            (
                job_id,
                self.run_id,
                self.worker,
                cost,
                cost if live_cost is None else live_cost,
                prompt_tokens,
                output_tokens,
                thoughts_tokens,
                model,
                image_size,
                mode,
                time.time(),
            ),
        )

    def spent(self) -> float:
        return super().spent() + float(
            self.db.execute("SELECT coalesce(sum(cost_usd), 0) FROM late_requests").fetchone()[0]
        )

    def totals(self) -> Totals:
        totals = super().totals()
        n, prompt, output, cost = self.db.execute(_SUMS).fetchone()
        if not n:
            return totals
        return replace(
            totals,
            requests=totals.requests + int(n),
            prompt_tokens=totals.prompt_tokens + int(prompt),
            output_tokens=totals.output_tokens + int(output),
            cost_usd=totals.cost_usd + float(cost),
        )

    def spend(self) -> list[Spend]:
        """Per model and output size: a late request's cost joins its group
        (its job is counted where its row is, not again)."""
        rows = super().spend()
        late = self.db.execute(
            "SELECT model, coalesce(image_size, ''), sum(cost_usd) FROM late_requests "
            "WHERE model IS NOT NULL GROUP BY model, image_size"
        ).fetchall()
        extra = {(str(m), str(size)): float(cost) for m, size, cost in late}
        if not extra:
            return rows
        merged = [replace(s, cost_usd=s.cost_usd + extra.pop((s.model, s.size), 0.0)) for s in rows]
        merged += [Spend(m, size, 0, 0, cost, 0) for (m, size), cost in extra.items()]
        return sorted(merged, key=lambda s: (-s.cost_usd, s.model, s.size))

    def mode_spend(self) -> list[ModeSpend]:
        """Per run mode: a late request's cost (and live cost) joins its mode."""
        rows = super().mode_spend()
        late = self.db.execute(
            "SELECT mode, sum(cost_usd), sum(live_cost_usd) FROM late_requests "
            "WHERE mode IS NOT NULL GROUP BY mode"
        ).fetchall()
        extra = {str(m): (float(c), float(live)) for m, c, live in late}
        if not extra:
            return rows
        merged = []
        for s in rows:
            c, live = extra.pop(s.mode, (0.0, 0.0))
            merged.append(replace(s, cost_usd=s.cost_usd + c, live_cost_usd=s.live_cost_usd + live))
        merged += [ModeSpend(m, 0, c, live) for m, (c, live) in extra.items()]
        return sorted(merged, key=lambda s: s.mode)
