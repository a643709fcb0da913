"""Reading a generateContent request body the way the API does.

The API is lenient about spelling (camelCase or snake_case field names, as
protobuf JSON allows) and about base64 (the standard or the URL-safe alphabet,
padded or not, which is why the official SDK can send URL-safe bytes), and
strict about structure: no JSON, no ``contents``, undecodable bytes or an
unsupported aspect ratio are all 400 INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from batchgen.models import ASPECT_RATIOS

_URLSAFE = str.maketrans("-_", "+/")


class BadRequest(ValueError):
    """The body is not a valid request; the message is the API's wording."""


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    #: All text parts joined with newlines, markers included.
    prompt: str
    #: Input images as (mime type, bytes), in request order.
    images: tuple[tuple[str, bytes], ...]
    aspect_ratio: str | None
    modalities: tuple[str, ...]


def decode_base64(text: str) -> bytes:
    """Decode either base64 alphabet, with or without padding."""
    cleaned = text.strip().translate(_URLSAFE)
    cleaned += "=" * (-len(cleaned) % 4)
    return base64.b64decode(cleaned, validate=True)


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    return obj[camel] if camel in obj else obj.get(snake)


def parse_request(body: bytes) -> ParsedRequest:
    """Parse and validate a request body, or raise `BadRequest`."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest(
            "Invalid JSON payload received. Unexpected token.\n"
            f"{body[:40].decode('utf-8', 'replace')}"
        ) from None
    if not isinstance(doc, dict):
        raise BadRequest("Invalid JSON payload received. Expected an object.")
    contents = doc.get("contents")
    if isinstance(contents, dict):
        contents = [contents]
    if not contents or not isinstance(contents, list):
        raise BadRequest("* GenerateContentRequest.contents: contents is not specified\n")
    texts: list[str] = []
    images: list[tuple[str, bytes]] = []
    for ci, content in enumerate(contents):
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list) or not parts:
            raise BadRequest(
                f"* GenerateContentRequest.contents[{ci}].parts: "
                "contents.parts must not be empty.\n"
            )
        for pi, part in enumerate(parts):
            if not isinstance(part, dict):
                raise BadRequest(f"Invalid value at 'contents[{ci}].parts[{pi}]'")
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
                continue
            inline = _get(part, "inlineData", "inline_data")
            if isinstance(inline, dict):
                mime = _get(inline, "mimeType", "mime_type")
                data = inline.get("data")
                where = f"contents[{ci}].parts[{pi}].inline_data"
                if not isinstance(mime, str) or not mime:
                    raise BadRequest(f"* GenerateContentRequest.{where}.mime_type: required")
                if not isinstance(data, str):
                    raise BadRequest(f"* GenerateContentRequest.{where}.data: required")
                try:
                    images.append((mime, decode_base64(data)))
                except (binascii.Error, ValueError):
                    raise BadRequest(
                        f"Invalid value at '{where}.data' (TYPE_BYTES), Base64 decoding failed"
                    ) from None
    config = _get(doc, "generationConfig", "generation_config") or {}
    if not isinstance(config, dict):
        raise BadRequest("Invalid value at 'generation_config'")
    image_config = _get(config, "imageConfig", "image_config") or {}
    ratio = (
        _get(image_config, "aspectRatio", "aspect_ratio")
        if isinstance(image_config, dict)
        else None
    )
    if ratio is not None and (not isinstance(ratio, str) or ratio not in ASPECT_RATIOS):
        raise BadRequest(
            f"* GenerateContentRequest.generation_config.image_config.aspect_ratio: "
            f"unsupported aspect ratio {ratio!r}; supported: {', '.join(ASPECT_RATIOS)}\n"
        )
    modalities = _get(config, "responseModalities", "response_modalities") or ("TEXT", "IMAGE")
    if not isinstance(modalities, list | tuple):
        raise BadRequest("Invalid value at 'generation_config.response_modalities'")
    return ParsedRequest(
        prompt="\n".join(texts),
        images=tuple(images),
        aspect_ratio=ratio,
        modalities=tuple(str(m).upper() for m in modalities),
    )
