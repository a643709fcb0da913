"""Bodies the simulator sends, shaped exactly like the Gemini API's.

Pure functions from a few facts (status, message, tokens, images) to the JSON
documents described in ``gemini-protocol.md``, plus the HTML pages Google's
front end sends when the API itself never sees a request. Kept apart from the
handlers so that the wire shapes can be read and tested in one place.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from batchgen.sim.faults import format_delay
from batchgen.sim.quota import PER_DAY_ID, PER_DAY_METRIC, PER_MINUTE_ID, PER_MINUTE_METRIC

Json = dict[str, Any]

RPC = "type.googleapis.com/google.rpc."
_SEP = (",", ":")
TOKENS_PER_IMAGE_OUT = 1290
TOKENS_PER_IMAGE_IN = 258

KEY_INVALID_MESSAGE = "API key not valid. Please pass a valid API key."
OVERLOADED_MESSAGE = "The model is overloaded. Please try again later."
INVALID_ARGUMENT_MESSAGE = "Request contains an invalid argument."
TEXT_ANSWER = "I can't create images of that, but here's a description..."
IMAGE_SAFETY_MESSAGE = (
    "Unable to show the generated image. The image was filtered out because it violated "
    "Google's Generative AI Prohibited Use policy. You will not be charged for blocked "
    "images. Try rephrasing the prompt. If you think this was an error, send feedback."
)


def error(code: int, status: str, message: str, details: list[Json] | None = None) -> Json:
    body: Json = {"code": code, "message": message, "status": status}
    if details:
        body["details"] = details
    return {"error": body}


def invalid_argument(message: str, field: str | None = None, *, violation: bool = False) -> Json:
    """A 400; with `violation`, the ``google.rpc.BadRequest`` detail that names
    the field (protobuf JSON parsing errors, such as an unknown field, carry one)."""
    if not violation:
        return error(400, "INVALID_ARGUMENT", message)
    found: Json = {"field": field, "description": message} if field else {"description": message}
    return error(
        400,
        "INVALID_ARGUMENT",
        message,
        [{"@type": RPC + "BadRequest", "fieldViolations": [found]}],
    )


def key_invalid() -> Json:
    return error(
        400,
        "INVALID_ARGUMENT",
        KEY_INVALID_MESSAGE,
        [
            {
                "@type": RPC + "ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {"@type": RPC + "LocalizedMessage", "locale": "en-US", "message": KEY_INVALID_MESSAGE},
        ],
    )


def model_not_found(model: str, version: str) -> Json:
    return error(
        404,
        "NOT_FOUND",
        f"models/{model} is not found for API version {version}, "
        "or is not supported for generateContent.",
    )


def quota_exceeded(
    model: str, *, daily: bool, limit: int | None, retry_delay: float | None
) -> Json:
    """A 429 with QuotaFailure, a Help link and (unless None) RetryInfo."""
    quota_id = PER_DAY_ID if daily else PER_MINUTE_ID
    metric = PER_DAY_METRIC if daily else PER_MINUTE_METRIC
    message = (
        "You exceeded your current quota, please check your plan and billing details. "
        "For more information on this error, head to: "
        "https://ai.google.dev/gemini-api/docs/rate-limits. "
        "To monitor your current usage, head to: https://ai.dev/usage?tab=rate-limit. \n"
        f"* Quota exceeded for metric: {metric}, limit: {limit if limit is not None else 0}, "
        f"model: {model}"
    )
    if retry_delay is not None:
        message += f"\nPlease retry in {retry_delay:.2f}s."
    violation: Json = {
        "quotaMetric": metric,
        "quotaId": quota_id,
        "quotaDimensions": {"location": "global", "model": model},
    }
    if limit is not None:
        violation["quotaValue"] = str(limit)
    details: list[Json] = [
        {"@type": RPC + "QuotaFailure", "violations": [violation]},
        {
            "@type": RPC + "Help",
            "links": [
                {
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                }
            ],
        },
    ]
    if retry_delay is not None:
        details.append({"@type": RPC + "RetryInfo", "retryDelay": format_delay(retry_delay)})
    return error(429, "RESOURCE_EXHAUSTED", message, details)


#: Plain JSON errors a marker can force: kind -> (HTTP code, status, message).
SIMPLE_ERRORS: dict[str, tuple[int, str, str]] = {
    "400": (400, "INVALID_ARGUMENT", INVALID_ARGUMENT_MESSAGE),
    "401": (
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential.",
    ),
    "403": (403, "PERMISSION_DENIED", "The caller does not have permission"),
    "500": (
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    "503": (503, "UNAVAILABLE", OVERLOADED_MESSAGE),
    "504": (504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


def gfe_page(code: int, title: str, text: str) -> str:
    """An error page of Google's front end (HTML, not the JSON envelope)."""
    return (
        "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n"
        f"  <title>Error {code} ({title})!!1</title>\n"
        f"  <p><b>{code}.</b> <ins>That\u2019s an error.</ins>\n"
        f"  <p>{text}  <ins>That\u2019s all we know.</ins>\n"
    )


TOO_LARGE_PAGE = gfe_page(
    413, "Request Entity Too Large", "Your client issued a request that was too large."
)
BAD_GATEWAY_PAGE = gfe_page(
    502,
    "Server Error",
    "The server encountered a temporary error and could not complete "
    "your request.<p>Please try again in 30 seconds.",
)
NOT_FOUND_PAGE = gfe_page(404, "Not Found", "The requested URL was not found on this server.")
NONJSON_PAGE = "<html>Bad gateway</html>"


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def usage(prompt: str, images_in: int, images_out: int, text_out: str = "") -> Json:
    """usageMetadata: ~4 characters a token, 258 per input image, 1290 per
    output image (the figure the price per image is computed from)."""
    return usage_counts(text_tokens(prompt), images_in, images_out, text_tokens(text_out))


def usage_counts(
    prompt_text: int,
    images_in: int,
    images_out: int,
    text_out: int,
    *,
    per_image_in: int = TOKENS_PER_IMAGE_IN,
    per_image_out: int = TOKENS_PER_IMAGE_OUT,
    thoughts: int = 0,
) -> Json:
    """usageMetadata from token counts; thinking models add `thoughts`, which
    ``candidatesTokenCount`` leaves out and ``totalTokenCount`` includes."""
    prompt_details: list[Json] = [{"modality": "TEXT", "tokenCount": prompt_text}]
    if images_in:
        prompt_details.append({"modality": "IMAGE", "tokenCount": per_image_in * images_in})
    prompt_total = prompt_text + per_image_in * images_in
    meta: Json = {"promptTokenCount": prompt_total}
    out_details: list[Json] = []
    if text_out:
        out_details.append({"modality": "TEXT", "tokenCount": text_out})
    if images_out:
        out_details.append({"modality": "IMAGE", "tokenCount": per_image_out * images_out})
    out_total = sum(int(d["tokenCount"]) for d in out_details)
    if out_details:
        meta["candidatesTokenCount"] = out_total
    if thoughts:
        meta["thoughtsTokenCount"] = thoughts
    meta["totalTokenCount"] = prompt_total + out_total + thoughts
    meta["promptTokensDetails"] = prompt_details
    if out_details:
        meta["candidatesTokensDetails"] = out_details
    return meta


@lru_cache(maxsize=4096)
def usage_json(
    prompt_text: int,
    images_in: int,
    images_out: int,
    text_out: int,
    per_image_in: int = TOKENS_PER_IMAGE_IN,
    per_image_out: int = TOKENS_PER_IMAGE_OUT,
) -> str:
    """`usage_counts` serialised, cached: the hot path's usage costs a lookup."""
    meta = usage_counts(
        prompt_text,
        images_in,
        images_out,
        text_out,
        per_image_in=per_image_in,
        per_image_out=per_image_out,
    )
    return json.dumps(meta, separators=_SEP)


def answer_pieces(
    text: str | None,
    images: Sequence[tuple[str, str | bytes]],
    *,
    model: str,
    response_id: str,
    usage: str,
) -> list[bytes]:
    """The bytes of ``answer(...)`` for a successful answer, as pieces to send
    one after another. Built by string joins rather than `json.dumps` of a
    nested dict, which was the largest cost of the simulator's own code per
    request: `images` are (mime type, base64) pairs, both plain ASCII without
    quotes, so they need no escaping. Each image's base64 is a piece of its own
    (the very object given, when bytes), so a 4K answer is sent without ever
    joining 22 MB into a new buffer. A test keeps the joined pieces identical
    to `answer`."""
    pieces: list[bytes] = []
    head = '{"candidates":[{"content":{"parts":['
    sep = ""
    if text is not None:
        head += f'{{"text":{json.dumps(text)}}}'
        sep = ","
    for mime, data in images:
        pieces.append(f'{head}{sep}{{"inlineData":{{"mimeType":"{mime}","data":"'.encode())
        pieces.append(data if isinstance(data, bytes) else data.encode())
        head, sep = '"}}', ","
    pieces.append(
        (
            f'{head}],"role":"model"}},"finishReason":"STOP","index":0}}],'
            f'"usageMetadata":{usage},"modelVersion":{json.dumps(model)},'
            f'"responseId":{json.dumps(response_id)}}}'
        ).encode()
    )
    return pieces


def image_part(mime_type: str, data: str) -> Json:
    return {"inlineData": {"mimeType": mime_type, "data": data}}


def answer(
    parts: list[Json] | None,
    *,
    model: str,
    response_id: str,
    usage_meta: Json,
    finish_reason: str = "STOP",
    finish_message: str | None = None,
) -> Json:
    """A 200 body with one candidate; `parts=None` gives content without parts."""
    content: Json = {"role": "model"}
    if parts is not None:
        content = {"parts": parts, "role": "model"}
    candidate: Json = {"content": content, "finishReason": finish_reason, "index": 0}
    if finish_message is not None:
        candidate["finishMessage"] = finish_message
    return {
        "candidates": [candidate],
        "usageMetadata": usage_meta,
        "modelVersion": model,
        "responseId": response_id,
    }


def blocked(reason: str, *, model: str, response_id: str, usage_meta: Json) -> Json:
    return {
        "promptFeedback": {"blockReason": reason},
        "usageMetadata": usage_meta,
        "modelVersion": model,
        "responseId": response_id,
    }


def no_candidates(*, model: str, response_id: str, usage_meta: Json) -> Json:
    return {
        "candidates": [],
        "usageMetadata": usage_meta,
        "modelVersion": model,
        "responseId": response_id,
    }


def imageless_answer(kind: str, *, model: str, response_id: str, usage_meta: Json) -> Json | None:
    """The 200 bodies that carry no picture, by forced kind; None for others."""
    common: dict[str, Any] = {"model": model, "response_id": response_id, "usage_meta": usage_meta}
    if kind == "text":
        return answer([{"text": TEXT_ANSWER}], **common)
    if kind == "empty":
        return no_candidates(**common)
    if kind == "noimage":
        return answer(None, finish_reason="NO_IMAGE", **common)
    if kind == "block":
        return blocked("SAFETY", **common)
    if kind == "block-prohibited":
        return blocked("PROHIBITED_CONTENT", **common)
    if kind == "imagesafety":
        return answer(
            None, finish_reason="IMAGE_SAFETY", finish_message=IMAGE_SAFETY_MESSAGE, **common
        )
    return None
