"""client: a `Job` and its reference bytes in, one classified `Outcome` out.

`build_request`, `parse_response` and `classify` are pure and tested with
plain data. `send` is the only function that does I/O; it maps every aiohttp
and network exception to an `Outcome` here, at the boundary, so nothing above
this module knows aiohttp's exception types.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, overload

import aiohttp
import pybase64

from batchgen.models import GeneratedImage, Job, Outcome, OutcomeKind, Usage
from batchgen.output import spool
from batchgen.output.mime import sniff_mime
from batchgen.output.pngcheck import plain_png_size
from batchgen.output.spool import Spooled

#: finishReason / blockReason values that mean a policy decision: never retried.
BLOCK_REASONS = frozenset(
    {
        "SAFETY",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "RECITATION",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
_FATAL_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "CONSUMER_SUSPENDED"})
_MAX_MESSAGE = 500
#: Seconds to open a TCP connection (within the request's own timeout): a host
#: that drops packets is known as unreachable in this time, not after `--timeout`.
CONNECT_TIMEOUT_S = 30.0


def build_request(
    job: Job,
    references: Sequence[tuple[str, bytes]],
    *,
    image_only: bool = False,
    service_tier: str | None = None,
) -> dict[str, Any]:
    """The REST `generateContent` body: the prompt, then each reference image
    inline in the order given (order matters to prompts that say "the first image").
    `service_tier` ("flex") goes at the top level, where the API reads it; None
    sends none, so a live body stays what it always was.

    A reference is labelled from its bytes, the given label serving only when
    they are no known image: JPEG bytes labelled PNG are a 400 on 3.1 Flash."""
    parts: list[dict[str, Any]] = [{"text": job.prompt}]
    for mime, data in references:
        label = sniff_mime(data[:16]) or mime
        parts.append({"inlineData": {"mimeType": label, "data": base64.b64encode(data).decode()}})
    config: dict[str, Any] = {"responseModalities": ["IMAGE"] if image_only else ["TEXT", "IMAGE"]}
    image_config: dict[str, str] = {}
    if job.aspect_ratio:
        image_config["aspectRatio"] = job.aspect_ratio
    if job.image_size:
        image_config["imageSize"] = job.image_size
    if image_config:
        config["imageConfig"] = image_config
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": parts}]}
    body["generationConfig"] = config
    if service_tier is not None:
        body["serviceTier"] = service_tier
    return body


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _by_modality(details: Any) -> dict[str, int]:
    """``[{modality, tokenCount}, ...]`` summed per modality (TEXT, IMAGE, ...)."""
    out: dict[str, int] = {}
    if isinstance(details, list):
        for d in details:
            if isinstance(d, dict) and isinstance(d.get("modality"), str):
                out[d["modality"]] = out.get(d["modality"], 0) + _int(d.get("tokenCount"))
    return out


def parse_usage(meta: Any) -> Usage | None:
    """`usageMetadata` as a `Usage`. Thinking models add ``thoughtsTokenCount``,
    which ``candidatesTokenCount`` does not include and the text-output rate bills."""
    if not isinstance(meta, dict):
        return None
    out = _by_modality(meta.get("candidatesTokensDetails"))
    prompt = _by_modality(meta.get("promptTokensDetails"))
    return Usage(
        prompt_tokens=_int(meta.get("promptTokenCount")),
        output_tokens=_int(meta.get("candidatesTokenCount")),
        output_image_tokens=out.get("IMAGE", 0),
        total_tokens=_int(meta.get("totalTokenCount")),
        thoughts_tokens=_int(meta.get("thoughtsTokenCount")),
        output_text_tokens=out.get("TEXT", 0),
        prompt_text_tokens=prompt.get("TEXT", 0),
        prompt_image_tokens=prompt.get("IMAGE", 0),
    )


def _decode_b64(data: str) -> bytes:
    """Both alphabets, with or without padding: proxies re-encode."""
    cleaned = data.strip()
    if "-" in cleaned or "_" in cleaned:
        cleaned = cleaned.replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    return pybase64.b64decode(cleaned, validate=True)  # 15x the standard library's speed


#: Pillow's format for each type `sniff_mime` finds: `open` then tries that one only.
_PIL_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}


def image_size(data: bytes, mime_type: str | None = None) -> tuple[int, int] | None:
    """The pixel size of a whole image, or None when its structure does not parse
    (headers and, for PNG, every chunk and its checksum; no pixels are decoded): a
    right signature before garbage or a cut-off body must not be saved as a
    finished image. The size decides whether the image needs a preview.
    A plain PNG is checked without Pillow (`pngcheck`), the same chunks and CRCs."""
    from PIL import Image

    known = _PIL_FORMATS.get(mime_type or "")
    if known == "PNG":
        size = plain_png_size(data, Image.MAX_IMAGE_PIXELS)
        if size is not None:
            return size
    try:
        with Image.open(io.BytesIO(data), formats=[known] if known else None) as im:
            size = im.size
            im.verify()
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError):
        return None
    return size


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def parse_success(
    body: Mapping[str, Any], *, decode: Callable[[str], bytes] = _decode_b64
) -> Outcome:
    """Classify a 200 answer that parsed as JSON (`decode`: an image's base64 text
    to bytes; a spooled answer's stands in for text left in its file)."""
    usage = parse_usage(body.get("usageMetadata"))
    feedback = body.get("promptFeedback")
    candidates = body.get("candidates")
    if isinstance(feedback, dict) and feedback.get("blockReason") and not candidates:
        reason = str(feedback["blockReason"])
        message = str(feedback.get("blockReasonMessage") or f"prompt blocked: {reason}")
        return Outcome(
            OutcomeKind.BLOCKED,
            usage=usage,
            http_status=200,
            message=_short(message),
            reason=reason,
        )
    if not isinstance(candidates, list) or not candidates:
        return Outcome(
            OutcomeKind.NO_IMAGE, usage=usage, http_status=200, message="answer had no candidates"
        )
    images: list[GeneratedImage] = []
    texts: list[str] = []
    invalid: list[str] = []
    finish = ""
    finish_message = ""
    for cand in candidates:
        if not isinstance(cand, dict):
            continue
        finish = finish or str(cand.get("finishReason") or "")
        finish_message = finish_message or str(cand.get("finishMessage") or "")
        content = cand.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list):
            continue
        for part in parts:
            # Thinking models show interim thought text and images: free, never outputs.
            if not isinstance(part, dict) or part.get("thought") is True:
                continue
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            inline = part.get("inlineData") or part.get("inline_data")
            if isinstance(inline, dict):
                data = inline.get("data")
                declared = str(inline.get("mimeType") or inline.get("mime_type") or "")
                try:
                    raw = decode(data) if isinstance(data, str) else b""
                except (binascii.Error, ValueError):
                    invalid.append("image data is not valid base64")
                    continue
                sniffed = sniff_mime(raw[:16])
                if sniffed is None:
                    invalid.append(f"inline data declared {declared or 'no type'} is not an image")
                    continue
                images.append(GeneratedImage(sniffed, raw))
    text = "\n".join(texts).strip()
    if images:
        return Outcome(
            OutcomeKind.OK,
            images=tuple(images),
            text=text,
            usage=usage,
            http_status=200,
            reason=finish or None,
        )
    if finish in BLOCK_REASONS:
        message = finish_message or f"image blocked: {finish}"
        return Outcome(
            OutcomeKind.BLOCKED,
            text=text,
            usage=usage,
            http_status=200,
            message=_short(message),
            reason=finish,
        )
    if invalid:
        message = "; ".join(invalid)
    elif text:
        message = "the model answered with text only"
    else:
        message = f"no image in the answer (finishReason {finish or 'missing'})"
    return Outcome(
        OutcomeKind.NO_IMAGE,
        text=text,
        usage=usage,
        http_status=200,
        message=_short(message),
        reason=finish or None,
    )


_DELAY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
_RETRY_IN_RE = re.compile(r"retry in (\d+(?:\.\d+)?)\s*(ms|s)\b", re.IGNORECASE)


def parse_delay(value: Any) -> float | None:
    """`RetryInfo.retryDelay` ("47s", "45.8s") or a `Retry-After` header in seconds."""
    if not isinstance(value, str):
        return None
    m = _DELAY_RE.match(value)
    if m:
        return float(m.group(1))
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def classify(status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    """Turn any HTTP answer into one outcome kind (the design's table)."""
    if status == 200:
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            hint = "truncated" if body[:1] in (b"{", b"[") else "not JSON"
            return Outcome(
                OutcomeKind.SERVER_ERROR,
                http_status=200,
                message=f"answer body is {hint} ({len(body)} bytes)",
            )
        if not isinstance(parsed, dict):
            return Outcome(
                OutcomeKind.SERVER_ERROR,
                http_status=200,
                message="answer body is not a JSON object",
            )
        return parse_success(parsed)
    error: dict[str, Any] = {}
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            error = parsed["error"]
    except (ValueError, UnicodeDecodeError):
        pass
    message = str(error.get("message") or body[:200].decode("utf-8", "replace") or f"HTTP {status}")
    grpc_status = str(error.get("status") or "")
    retry_after: float | None = None
    quota_id: str | None = None
    reason: str | None = grpc_status or None
    details = error.get("details")
    for d in details if isinstance(details, list) else []:
        if not isinstance(d, dict):
            continue
        kind = str(d.get("@type", ""))
        if kind.endswith("RetryInfo"):
            retry_after = parse_delay(d.get("retryDelay"))
        elif kind.endswith("QuotaFailure"):
            for v in d.get("violations") or []:
                if isinstance(v, dict) and v.get("quotaId"):
                    quota_id = quota_id or str(v["quotaId"])
                    if "PerDay" in str(v["quotaId"]):
                        quota_id = str(v["quotaId"])
        elif kind.endswith("ErrorInfo") and d.get("reason"):
            reason = str(d["reason"])
    if retry_after is None:
        header = {k.lower(): v for k, v in headers.items()}.get("retry-after")
        retry_after = parse_delay(header)
    if retry_after is None and status == 429:
        m = _RETRY_IN_RE.search(message)
        if m:
            retry_after = float(m.group(1)) / (1000 if m.group(2).lower() == "ms" else 1)
    message = _short(message)

    def out(kind: OutcomeKind) -> Outcome:
        return Outcome(
            kind,
            http_status=status,
            message=message,
            retry_after=retry_after,
            quota_id=quota_id,
            reason=reason,
        )

    if status == 429:
        if quota_id and "PerDay" in quota_id:
            return out(OutcomeKind.QUOTA_EXHAUSTED)
        return out(OutcomeKind.RATE_LIMITED)
    if status in (401, 403, 404):
        return out(OutcomeKind.FATAL)
    if status == 400:
        if reason in _FATAL_REASONS or grpc_status == "FAILED_PRECONDITION":
            return out(OutcomeKind.FATAL)
        return out(OutcomeKind.BAD_REQUEST)
    if status == 408 or status >= 500:
        return out(OutcomeKind.SERVER_ERROR)
    if 300 <= status < 400:
        location = {k.lower(): v for k, v in headers.items()}.get("location", "?")
        return Outcome(
            OutcomeKind.BAD_REQUEST,
            http_status=status,
            message=f"server redirected to {_short(location)}; redirects are not "
            "followed (point --base-url at the final address)",
        )
    return out(OutcomeKind.BAD_REQUEST)


def parse_spooled(answer: Spooled) -> Outcome:
    """Classify a 200 answer spooled to a file (see `spool`), then remove the file.
    Blocking: run it on a thread. A file that cannot be read is `SpoolError`."""
    try:
        with spool.mapped(answer.path) as mm:
            found = spool.envelope(mm)
            if found is None or not isinstance(found.doc, dict):
                return classify(200, {}, mm[:])  # cut off, or not the usual shape

            def decode(data: str) -> bytes:
                if data.startswith(spool.MARKER):
                    return spool.decode_span(mm, *found.spans[int(data[len(spool.MARKER) :])])
                return _decode_b64(data)

            try:
                return parse_success(found.doc, decode=decode)
            except spool.Escaped:
                return classify(200, {}, mm[:])
    finally:
        answer.path.unlink(missing_ok=True)


@overload
async def send(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout_s: float,
    max_bytes: int,
    spool_to: None = None,
) -> Outcome: ...


@overload
async def send(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout_s: float,
    max_bytes: int,
    spool_to: Path,
) -> Outcome | Spooled: ...


async def send(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout_s: float,
    max_bytes: int,
    spool_to: Path | None = None,
) -> Outcome | Spooled:
    """POST one request and classify the answer. Never raises for network trouble;
    redirects are not followed, so the key never travels to another host. With
    `spool_to`, a large 200 answer comes back `Spooled` for `parse_spooled`.

    No connection at all (refused, DNS, TLS handshake, no TCP connection within
    `CONNECT_TIMEOUT_S`) is `UNREACHABLE`: nothing reached a server. Trouble
    once the request was on its way (a timeout, a dropped connection, a cut-off
    answer) is a `SERVER_ERROR`, as a 5xx is."""
    try:
        async with session.post(
            url,
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(
                total=timeout_s, sock_connect=min(timeout_s, CONNECT_TIMEOUT_S)
            ),
        ) as resp:
            data = await spool.receive(resp, cap=max_bytes, folder=spool_to)
            if data is None:
                return Outcome(
                    OutcomeKind.SERVER_ERROR,
                    http_status=resp.status,
                    message=f"answer larger than the {max_bytes} byte cap; dropped",
                )
            if isinstance(data, Spooled):
                return data
            return classify(resp.status, resp.headers, data)
    except aiohttp.ConnectionTimeoutError:  # a TimeoutError too: caught first
        return Outcome(
            OutcomeKind.UNREACHABLE,
            message=f"no connection within {min(timeout_s, CONNECT_TIMEOUT_S):g}s",
        )
    except TimeoutError:
        # The request was sent (or sending): a server error, which uses an attempt.
        return Outcome(
            OutcomeKind.SERVER_ERROR, message=f"no complete answer within {timeout_s:g}s"
        )
    except spool.SpoolError:
        raise  # the local disk, not the network: the pool stops the run
    except aiohttp.ClientPayloadError as exc:
        return Outcome(OutcomeKind.SERVER_ERROR, message=f"answer cut off ({type(exc).__name__})")
    except aiohttp.ClientConnectorError as exc:
        # Refused, DNS, TLS handshake: the request never left; the job is not to blame.
        return Outcome(
            OutcomeKind.UNREACHABLE,
            message=f"cannot connect: {type(exc).__name__}: {_short(str(exc))}",
        )
    except (aiohttp.ClientError, OSError) as exc:
        return Outcome(
            OutcomeKind.SERVER_ERROR,
            message=f"connection failed: {type(exc).__name__}: {_short(str(exc))}",
        )
    except asyncio.IncompleteReadError:
        return Outcome(OutcomeKind.SERVER_ERROR, message="connection closed mid-answer")
