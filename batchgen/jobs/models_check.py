"""models_check: a valid `Job` in, what its model would refuse out, before anything is sent.

The reader calls `ModelRules.problems` on every job that parsed: the model the
job will be sent to (its own, else the run's ``--model``) is looked up in the
catalogue, and what that model would answer 400 or 404 to is reported with
the file, line and field, like the reader's other problems: a retired id
(naming its replacement), an ``image_size`` it does not take, an aspect ratio
it does not offer, more reference images than it accepts. A deprecated id is
warned about once. A model missing from the catalogue passes (the API
decides; it has no price, see `engine/pricing.py`), except in the Flex tier
(``--mode flex``): only a model whose entry says ``flex = true`` is sent
there, since the API answers any other 400 (for every job of the run), and an
unknown one is refused rather than guessed at.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from batchgen.catalogue import Catalogue, ModelInfo, ModelStatus, Tier
from batchgen.errors import InputProblem, UsageError
from batchgen.models import Job

log = logging.getLogger(__name__)


def retired_message(catalogue: Catalogue, model: str) -> str | None:
    """ "X was retired on DATE; use Y" for an id the API no longer serves, or None."""
    info = catalogue.get(model)
    if info is None or info.status is not ModelStatus.RETIRED:
        return None
    return gone_message(catalogue, info.id, info)


def gone_message(catalogue: Catalogue, model: str, info: ModelInfo | None = None) -> str:
    """Why `model` is not served, naming where to move when the catalogue knows."""
    info = info or catalogue.get(model)
    when = f" on {info.retires}" if info is not None and info.retires else ""
    text = f"{model} was retired{when}" if info is not None else f"{model} is not served"
    successor = catalogue.successor(model)
    return text + (f"; use {successor.id}" if successor is not None else "")


@dataclass
class ModelRules:
    """The run's catalogue and defaults, and the models its jobs use (for pricing)."""

    catalogue: Catalogue
    default_model: str
    default_size: str | None = None
    #: The tier the run's requests are served in (`config.MODES`).
    tier: Tier = Tier.STANDARD
    #: Every model a job will be sent to, as the pass meets them.
    used: set[str] = field(default_factory=set)
    _warned: set[str] = field(default_factory=set)

    def check_defaults(self) -> None:
        """A retired ``--model`` is one mistake, not one per row."""
        message = retired_message(self.catalogue, self.default_model)
        if message is not None:
            raise UsageError(f"--model: {message}")

    def problems(self, job: Job, name: str, line: int) -> list[InputProblem]:
        model = (job.model or self.default_model).removeprefix("models/")
        self.used.add(model)
        info = self.catalogue.get(model)
        flex = self.tier is Tier.FLEX and (info is None or not info.flex)
        if info is None:
            return [InputProblem(name, line, "model", self._no_flex(model, None))] if flex else []
        field_ = "model" if job.model else ""
        if info.status is ModelStatus.RETIRED:
            return [InputProblem(name, line, field_, gone_message(self.catalogue, model, info))]
        if flex:
            return [InputProblem(name, line, "model", self._no_flex(model, info))]
        if info.status is ModelStatus.DEPRECATED and model not in self._warned:
            self._warned.add(model)
            successor = self.catalogue.successor(model)
            use = f"; use {successor.id}" if successor is not None else ""
            shuts = f", shuts down {info.retires}" if info.retires else ""
            log.warning("%s is deprecated%s%s (first used at %s:%d)", model, shuts, use, name, line)
        return self._outputs(job, info, name, line)

    def _no_flex(self, model: str, info: ModelInfo | None) -> str:
        """Why `model` cannot go in a flex run, and which models can."""
        offer = ", ".join(m.id for m in self.catalogue if m.flex and m.served) or "none"
        why = "does not offer the Flex tier" if info else "is not in the model catalogue"
        return f"{model} {why} (--mode flex); models that do: {offer}"

    def _outputs(self, job: Job, info: ModelInfo, name: str, line: int) -> list[InputProblem]:
        found: list[InputProblem] = []
        size = job.image_size or self.default_size
        if size is not None and not info.takes_size(size):
            takes = f"takes {', '.join(info.sizes)}" if info.sizes else "takes no image_size"
            found.append(InputProblem(name, line, "image_size", f"{info.id} {takes}, not {size!r}"))
        if job.aspect_ratio is not None and job.aspect_ratio not in info.ratios:
            found.append(
                InputProblem(
                    name,
                    line,
                    "aspect_ratio",
                    f"{info.id} does not offer {job.aspect_ratio}; it offers "
                    + ", ".join(info.ratios),
                )
            )
        limit = info.max_references
        if limit is not None and len(job.images) > limit:
            found.append(
                InputProblem(
                    name,
                    line,
                    "images",
                    f"{len(job.images)} reference images; {info.id} takes at most {limit}",
                )
            )
        return found
