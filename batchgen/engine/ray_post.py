"""ray_post: a job's platform sizes and preview as a Ray task, on any core of any node.

In: a job's first image (its bytes, its path in OUT, its pixel size), the
job's size specs, and the run's `Output`. Out: the sizes and the preview
written through that `Output` (a folder: temporary file and rename; an object
store: one PUT each), what the job's row records of them, and the node the
task ran on.

Sizes are the run's heaviest CPU work (about 2 s of it per image for the three
platform presets, against about 1 ms of request overhead), so with
``--engine ray`` they leave the worker actor (which asks for no CPU) and run as
tasks of one CPU each, wherever the cluster has one free. The work itself is
the writer's `make_extras`, the inline engine's: one home for what sizes and
previews are.

- The worker awaits each task before the job's end is committed, so a job
  marked done has every size and its preview, as inline (`output/writer.py`).
- A task lost with its node (or its process) is run again by Ray, up to
  `RETRIES` times; past them the worker makes them itself, on its writer
  threads (`ExtrasUnavailable`). An error of the work (a full disk, a store
  that refuses) is raised as it would be inline: the job stays pending.
- `RayExtras.nodes` counts the tasks per node they ran on: the driver sums
  them into the run's summary, so where the work ran is seen.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from batchgen.output.storage import Output
from batchgen.output.writer import Extras, ExtrasUnavailable, make_extras

log = logging.getLogger(__name__)

#: Times Ray runs a task again after its worker process or node was lost.
RETRIES = 3


def extras_task(
    output: Output,
    job_id: str,
    sizes: tuple[str, ...],
    image_rel: str,
    data: bytes,
    first: tuple[int, int],
    thumbnails: bool,
) -> tuple[Extras, str]:
    """The body of the Ray task: the sizes and preview, and this node's id."""
    import ray

    extras = make_extras(output, job_id, sizes, image_rel, data, first, thumbnails=thumbnails)
    return extras, ray.get_runtime_context().get_node_id()


class RayExtras:
    """A worker's `ExtrasMaker`: each job's sizes and preview as one Ray task."""

    def __init__(self, output: Output) -> None:
        import ray

        self._ray: Any = ray
        self._output = output
        self._task = ray.remote(extras_task).options(
            num_cpus=1, max_retries=RETRIES, retry_exceptions=False
        )
        #: Tasks that ended, by the id of the node each ran on.
        self.nodes: Counter[str] = Counter()

    async def __call__(
        self,
        job_id: str,
        sizes: tuple[str, ...],
        image_rel: str,
        data: bytes,
        first: tuple[int, int],
        thumbnails: bool,
    ) -> Extras:
        errors = self._ray.exceptions
        try:
            extras, node = await self._task.remote(
                self._output, job_id, sizes, image_rel, data, first, thumbnails
            )
        except errors.RayTaskError as exc:
            # The work failed, not Ray: the same error the inline engine would see.
            cause = exc.cause
            if isinstance(cause, Exception):
                raise cause from None
            raise
        except errors.RayError as exc:
            log.warning("sizes of %s: the task was lost (%s); made here instead", job_id, exc)
            raise ExtrasUnavailable(str(exc)) from exc
        self.nodes[node] += 1
        sized, shown = extras
        return list(sized), shown
