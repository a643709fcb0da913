"""redo: `run --redo rejected`, the parts around the plan.

In: the folder's standing rejections (`store/reviews.py`). Out: the planner's
redo map (id -> the reviewer's note) and, once the plan is committed and
before anything is sent, each rejected job's earlier files moved to their
history names (`output/history.py`). Each job's move is recorded done in the
store right after its files move; a run stopped in between finds the files
already moved and moves nothing twice, and a new image can only land after
every move of its run is done.
"""

from __future__ import annotations

import logging

from batchgen.config import RunConfig
from batchgen.output.history import move_to_history
from batchgen.output.storage import Output
from batchgen.store import Store

log = logging.getLogger(__name__)


def redo_map(store: Store, config: RunConfig) -> dict[str, str]:
    """The rejected jobs this run makes again: all of them with `--redo rejected`,
    else only those a stopped redo left pending (their notes stay in the prompt)."""
    return store.redo_notes(all_rejected=config.redo == "rejected")


def move_history(store: Store, output: Output | None = None) -> int:
    """Move every planned redo's earlier files to history; how many files moved.
    `output`: where the folder's files are, when not the store's folder."""
    moved = 0
    for job_id, files in store.redo_moves():
        for path in files:
            target = move_to_history(output or store.out, path)
            if target is not None:
                moved += 1
                log.info("redo job=%s kept %s as %s", job_id, path, target)
        with store.transaction():
            store.moved(job_id)
    return moved
