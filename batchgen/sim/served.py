"""Which model ids the simulator answers for, and each model's own rules.

The catalogue decides, the same one ``batchgen models`` prints: its served
models answer, retired and unknown ids are 404 NOT_FOUND. An id that only
`SimConfig.models` names answers as ``gemini-2.5-flash-image`` always did, so
a test can serve any id it likes. Per model: the aspect ratios and image sizes
it takes, its reference-image limit, and (thinking models) the
thoughtSignature a replayed model turn must carry; the ``models`` resources
of ``GET /v1beta/models`` come from the same facts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

from batchgen.catalogue import ModelInfo, ModelStatus, load_catalogue
from batchgen.sim import wire
from batchgen.sim.parse import BadRequest, ParsedRequest

#: How an id the catalogue does not know answers.
LEGACY_MODEL = "gemini-2.5-flash-image"
SIGNATURE_HELP = "https://ai.google.dev/gemini-api/docs/thought-signatures#model-behavior"
#: Token limits where the catalogue has none.
DEFAULT_LIMITS = (32768, 32768)


class ModelBook:
    """The served models by id, with the shapes used to pick a ratio for an edit."""

    def __init__(self, extra_ids: Iterable[str] = (), models_file: Path | None = None) -> None:
        catalogue = load_catalogue(models_file)
        self.models: dict[str, ModelInfo] = {m.id: m for m in catalogue.served()}
        legacy = catalogue.get(LEGACY_MODEL)
        assert legacy is not None, "the built-in catalogue always has the legacy model"
        for model_id in extra_ids:
            if model_id not in self.models:
                self.models[model_id] = replace(
                    legacy, id=model_id, nickname=model_id, status=ModelStatus.GA
                )
        #: Every ratio some served model takes: a request naming another is refused.
        self.ratios = frozenset(r for m in self.models.values() for r in m.ratios)
        self._shapes = {
            mid: {r: math.log(w / h) for r in m.ratios for w, h in [m.pixels(r) or (1, 1)]}
            for mid, m in self.models.items()
        }

    def get(self, model_id: str) -> ModelInfo | None:
        return self.models.get(model_id)

    def closest_ratio(self, info: ModelInfo, width: int, height: int) -> str:
        """The model's ratio nearest an input's shape, as the model does for an
        edit that names none (ties go to the first in catalogue order)."""
        shapes = self._shapes[info.id]
        target = math.log(width / height)
        return min(shapes, key=lambda r: abs(shapes[r] - target))


def check(parsed: ParsedRequest, info: ModelInfo) -> None:
    """What a valid request may still get wrong for this model: a 400."""
    field = "* GenerateContentRequest.generation_config.image_config"
    if parsed.aspect_ratio is not None and parsed.aspect_ratio not in info.ratios:
        raise BadRequest(
            f"{field}.aspect_ratio: unsupported aspect ratio {parsed.aspect_ratio!r}; "
            f"supported: {', '.join(info.ratios)}\n"
        )
    if parsed.image_size is not None and not info.takes_size(parsed.image_size):
        supported = ", ".join(info.sizes) or "none (the model has one size)"
        raise BadRequest(
            f"{field}.image_size: {info.id} does not support image size "
            f"{parsed.image_size!r}; supported: {supported}\n"
        )
    if parsed.service_tier == "flex" and not info.flex:
        raise BadRequest(f"The flex service tier is not supported for model {info.id}.")
    limit = info.max_references
    if limit is not None and len(parsed.images) > limit:
        raise BadRequest(
            f"* GenerateContentRequest.contents: {info.id} takes at most {limit} input "
            f"images; the request has {len(parsed.images)}\n"
        )
    if info.thinking and parsed.unsigned_image is not None:
        content, part = parsed.unsigned_image
        raise BadRequest(
            f"Image part is missing a thought_signature in content position {content}, "
            f"part position {part}. Please refer to {SIGNATURE_HELP} for more details."
        )


def model_resource(info: ModelInfo) -> wire.Json:
    """One ``models/{id}`` resource as ``GET /v1beta/models`` lists it."""
    limits = (
        info.input_token_limit or DEFAULT_LIMITS[0],
        info.output_token_limit or DEFAULT_LIMITS[1],
    )
    doc: wire.Json = {
        "name": f"models/{info.id}",
        "version": "001",
        "displayName": info.nickname,
        "description": f"{info.nickname}: Gemini image generation and editing",
        "inputTokenLimit": limits[0],
        "outputTokenLimit": limits[1],
        "supportedGenerationMethods": ["generateContent", "countTokens", "batchGenerateContent"],
        "temperature": 1,
        "topP": 0.95,
        "maxTemperature": 2,
    }
    if info.thinking:
        doc["thinking"] = True
    return doc


def models_page(
    models: Mapping[str, ModelInfo], page_size: str | None, page_token: str | None
) -> wire.Json:
    """``GET /v1beta/models``: a page of resources and, if more follow, a token."""
    try:
        size = min(1000, int(page_size)) if page_size else 50
        start = int(page_token, 16) if page_token else 0
    except ValueError:
        raise BadRequest("Invalid page token or page size.") from None
    if start < 0:
        raise BadRequest("Invalid page token or page size.")
    if size <= 0:
        size = 50
    infos = list(models.values())
    doc: wire.Json = {"models": [model_resource(m) for m in infos[start : start + size]]}
    if start + size < len(infos):
        doc["nextPageToken"] = f"{start + size:x}"
    return doc
