"""Reading a generateContent request body the way the API does.

The API is lenient about spelling (camelCase or snake_case field names, as
protobuf JSON allows) and about base64 (the standard or the URL-safe alphabet,
padded or not, which is why the official SDK can send URL-safe bytes), and
strict about structure: no JSON, no ``contents``, a field the message does not
have, undecodable bytes, an unknown aspect ratio or image size are all 400
INVALID_ARGUMENT. What depends on the model (its ratios, sizes, reference
limit) is checked by `batchgen.sim.served`.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from batchgen.catalogue import IMAGE_SIZES, load_catalogue

_URLSAFE = str.maketrans("-_", "+/")


class BadRequest(ValueError):
    """The body is not a valid request; the message is the API's wording.
    `field` (snake_case path) goes into a ``google.rpc.BadRequest`` detail."""

    def __init__(self, message: str, field: str | None = None, *, violation: bool = False) -> None:
        super().__init__(message)
        self.field = field
        #: Send the ``fieldViolations`` detail (unknown fields do; most errors don't).
        self.violation = violation or field is not None


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    #: All text parts joined with newlines, markers included.
    prompt: str
    #: Input images as (mime type, bytes), in request order.
    images: tuple[tuple[str, bytes], ...]
    aspect_ratio: str | None
    modalities: tuple[str, ...]
    #: ``imageConfig.imageSize`` as sent (one of `IMAGE_SIZES`), or None.
    image_size: str | None = None
    #: 1-based (content, part) of a model-turn image without a thoughtSignature.
    unsigned_image: tuple[int, int] | None = None
    #: ``serviceTier`` in lower case (``flex``, ``standard``, ...), or None.
    service_tier: str | None = None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def _names(snake: str) -> frozenset[str]:
    """Both spellings protobuf JSON accepts for each (space-separated) field."""
    return frozenset(n for s in snake.split() for n in (s, _camel(s)))


_REQUEST = _names(
    "model contents system_instruction tools tool_config safety_settings generation_config "
    "cached_content service_tier store labels continuation_token"
)
_GENERATION = _names(
    "stop_sequences response_mime_type response_schema response_json_schema candidate_count "
    "max_output_tokens temperature top_p top_k seed presence_penalty frequency_penalty "
    "response_logprobs logprobs enable_enhanced_civic_answers response_modalities speech_config "
    "thinking_config image_config media_resolution audio_transcription_config"
) | {"_responseJsonSchema"}
_IMAGE_CONFIG = _names("aspect_ratio image_size")
_THINKING = _names("include_thoughts thinking_budget thinking_level")
_CONTENT = _names("parts role")
_PART = _names(
    "text inline_data file_data function_call function_response executable_code "
    "code_execution_result thought thought_signature video_metadata part_metadata "
    "media_resolution tool_call tool_response"
)
_BLOB = _names("mime_type data")
_COUNT = _names("contents generate_content_request")


@lru_cache(maxsize=1)
def known_ratios() -> frozenset[str]:
    """Every aspect ratio some built-in model takes: others are refused outright."""
    return frozenset(r for m in load_catalogue().served() for r in m.ratios)


def _check_names(obj: dict[str, Any], known: frozenset[str], where: str) -> None:
    """Refuse a field the message does not have, as protobuf JSON parsing does."""
    if known.issuperset(obj):
        return
    name = next(k for k in obj if k not in known)
    at = f" at '{where}'" if where else ""
    raise BadRequest(
        f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.',
        where or None,
        violation=True,
    )


def decode_base64(text: str) -> bytes:
    """Decode either base64 alphabet, with or without padding."""
    cleaned = text.strip().translate(_URLSAFE)
    cleaned += "=" * (-len(cleaned) % 4)
    return base64.b64decode(cleaned, validate=True)


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    return obj[camel] if camel in obj else obj.get(snake)


def _load(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest(
            "Invalid JSON payload received. Unexpected token.\n"
            f"{body[:40].decode('utf-8', 'replace')}"
        ) from None
    if not isinstance(doc, dict):
        raise BadRequest("Invalid JSON payload received. Expected an object.")
    return doc


def parse_request(body: bytes, ratios: frozenset[str] | None = None) -> ParsedRequest:
    """Parse and validate a request body, or raise `BadRequest`. An aspect
    ratio outside `ratios` (default: every one a built-in model takes) is refused."""
    return _parse_doc(_load(body), ratios or known_ratios())


def parse_count(body: bytes, ratios: frozenset[str] | None = None) -> ParsedRequest:
    """A ``countTokens`` body: ``contents``, or a whole ``generateContentRequest``."""
    doc = _load(body)
    _check_names(doc, _COUNT, "")
    inner = _get(doc, "generateContentRequest", "generate_content_request")
    if isinstance(inner, dict):
        return _parse_doc(inner, ratios or known_ratios())
    return _parse_doc({"contents": doc.get("contents")}, ratios or known_ratios())


def _parse_doc(doc: dict[str, Any], ratios: frozenset[str]) -> ParsedRequest:
    _check_names(doc, _REQUEST, "")
    config = _get(doc, "generationConfig", "generation_config") or {}
    if not isinstance(config, dict):
        raise BadRequest("Invalid value at 'generation_config'")
    _check_names(config, _GENERATION, "generation_config")
    thinking = _get(config, "thinkingConfig", "thinking_config")
    if isinstance(thinking, dict):
        _check_names(thinking, _THINKING, "generation_config.thinking_config")
    image_config = _get(config, "imageConfig", "image_config") or {}
    if isinstance(image_config, dict):
        _check_names(image_config, _IMAGE_CONFIG, "generation_config.image_config")
    else:
        image_config = {}
    texts: list[str] = []
    images: list[tuple[str, bytes]] = []
    unsigned = _read_contents(doc.get("contents"), texts, images)
    modalities = _get(config, "responseModalities", "response_modalities") or ("TEXT", "IMAGE")
    tier = _get(doc, "serviceTier", "service_tier")
    if not isinstance(modalities, list | tuple):
        raise BadRequest("Invalid value at 'generation_config.response_modalities'")
    return ParsedRequest(
        prompt="\n".join(texts),
        images=tuple(images),
        aspect_ratio=_ratio(_get(image_config, "aspectRatio", "aspect_ratio"), ratios),
        modalities=tuple(str(m).upper() for m in modalities),
        image_size=_size(_get(image_config, "imageSize", "image_size")),
        unsigned_image=unsigned,
        service_tier=None if tier is None else _tier(tier),
    )


#: The values of the ``ServiceTier`` enum (case does not matter, as the SDK's).
_TIERS = frozenset({"unspecified", "standard", "flex", "priority"})


def _tier(tier: Any) -> str:
    if isinstance(tier, str) and tier.lower() in _TIERS:
        return tier.lower()
    raise BadRequest(
        f"Invalid value at 'service_tier' (type.googleapis.com/google.ai.generativelanguage."
        f"v1beta.ServiceTier), {json.dumps(tier)}",
        "service_tier",
    )


def _ratio(ratio: Any, known: frozenset[str]) -> str | None:
    if ratio is None:
        return None
    if not isinstance(ratio, str) or ratio not in known:
        supported = ", ".join(sorted(known, key=_ratio_order))
        raise BadRequest(
            f"* GenerateContentRequest.generation_config.image_config.aspect_ratio: "
            f"unsupported aspect ratio {ratio!r}; supported: {supported}\n"
        )
    return ratio


def _ratio_order(ratio: str) -> tuple[int, int]:
    width, _, height = ratio.partition(":")
    return int(width), int(height)


def _size(size: Any) -> str | None:
    """Exactly "512", "1K", "2K" or "4K": "2k", "2048" and "9K" are refused."""
    if size is None or (isinstance(size, str) and size in IMAGE_SIZES):
        return size
    raise BadRequest(
        "* GenerateContentRequest.generation_config.image_config.image_size: "
        f"unsupported image size {size!r}; supported: {', '.join(IMAGE_SIZES)}\n"
    )


def _read_contents(
    contents: Any, texts: list[str], images: list[tuple[str, bytes]]
) -> tuple[int, int] | None:
    """Collect text and images; return where a model turn's image lacks its signature."""
    if isinstance(contents, dict):
        contents = [contents]
    if not contents or not isinstance(contents, list):
        raise BadRequest("* GenerateContentRequest.contents: contents is not specified\n")
    unsigned: tuple[int, int] | None = None
    for ci, content in enumerate(contents):
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list) or not parts:
            raise BadRequest(
                f"* GenerateContentRequest.contents[{ci}].parts: "
                "contents.parts must not be empty.\n"
            )
        _check_names(content, _CONTENT, f"contents[{ci}]")
        model_turn = content.get("role") == "model"
        for pi, part in enumerate(parts):
            if not isinstance(part, dict):
                raise BadRequest(f"Invalid value at 'contents[{ci}].parts[{pi}]'")
            _check_names(part, _PART, f"contents[{ci}].parts[{pi}]")
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
                continue
            inline = _get(part, "inlineData", "inline_data")
            if isinstance(inline, dict):
                images.append(_blob(inline, f"contents[{ci}].parts[{pi}].inline_data"))
                # A model turn's output images (not its thoughts) need their signature.
                signed = _get(part, "thoughtSignature", "thought_signature")
                if model_turn and not signed and not part.get("thought") and unsigned is None:
                    unsigned = (ci + 1, pi + 1)
    return unsigned


def _blob(inline: dict[str, Any], where: str) -> tuple[str, bytes]:
    _check_names(inline, _BLOB, where)
    mime = _get(inline, "mimeType", "mime_type")
    data = inline.get("data")
    if not isinstance(mime, str) or not mime:
        raise BadRequest(f"* GenerateContentRequest.{where}.mime_type: required")
    if not isinstance(data, str):
        raise BadRequest(f"* GenerateContentRequest.{where}.data: required")
    try:
        return mime, decode_base64(data)
    except (binascii.Error, ValueError):
        raise BadRequest(
            f"Invalid value at '{where}.data' (TYPE_BYTES), Base64 decoding failed"
        ) from None
