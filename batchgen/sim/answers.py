"""The bodies of 200 answers: pictures sized per model, thoughts, streams.

`Composer` turns a parsed request and the model's catalogue entry into the
answer the model would give. ``gemini-2.5-flash-image`` (and any id answering
like it) keeps the fast path of joined strings; a thinking model adds thought
text and one or two thought images (``"thought": true``) before its final
image, which carries a ``thoughtSignature``, and reports ``thoughtsTokenCount``;
a model that answers JPEG under a PNG label (3 Pro) does so. A request without
IMAGE in ``responseModalities`` gets text only. `stream_chunks` splits any
answer into the pieces ``streamGenerateContent`` sends.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from typing import Any

from batchgen.catalogue import ModelInfo
from batchgen.sim import images, wire
from batchgen.sim.config import SimConfig
from batchgen.sim.parse import ParsedRequest
from batchgen.sim.served import ModelBook

DEFAULT_TEXT = "Here is the image you asked for."
TEXT_ONLY = "A picture of that would show the subject on a plain, softly lit background."
THOUGHT_TEXT = (
    "**Composing the scene**\n\nI'm settling the layout, the light and the palette "
    "before drawing, then checking the draft against the request."
)
_DEFAULT_TEXT_TOKENS = wire.text_tokens(DEFAULT_TEXT)
_Reference = tuple[images.Colour, tuple[int, int]]
_SEP = (",", ":")


def dump(doc: Any) -> bytes:
    return json.dumps(doc, separators=_SEP).encode()


class Composer:
    """Answers for one simulator: its config (scale, noise, text part) and models."""

    def __init__(self, config: SimConfig, book: ModelBook) -> None:
        self.config = config
        self.book = book
        self._ids = itertools.count(1)

    def response_id(self) -> str:
        return f"sim-{self.config.seed:x}-{next(self._ids):08x}"

    def _digest(self, parsed: ParsedRequest, model: str, variant: int) -> bytes:
        h = hashlib.blake2b(digest_size=20)
        h.update(f"{model}\x00{parsed.aspect_ratio}\x00{variant}\x00{parsed.prompt}".encode())
        if parsed.image_size is not None:  # absent: the bytes 2.5 Flash always had
            h.update(f"\x00{parsed.image_size}".encode())
        for _, data in parsed.images:
            h.update(data)
        return h.digest()

    def size_of(
        self, parsed: ParsedRequest, info: ModelInfo, refs: list[_Reference] | None = None
    ) -> tuple[int, int]:
        """The answer's pixel size: the model's, for the ratio asked (an edit
        without one follows its first input's shape) and size, times the scale."""
        ratio = parsed.aspect_ratio
        if ratio is None:
            refs = self._references(parsed) if refs is None else refs
            ratio = self.book.closest_ratio(info, *refs[0][1]) if refs else "1:1"
        width, height = info.pixels(ratio, parsed.image_size) or (1024, 1024)
        scale = self.config.scale
        return max(1, round(width * scale)), max(1, round(height * scale))

    def _references(self, parsed: ParsedRequest) -> list[_Reference]:
        """Average colour and size of the first two inputs Pillow can read."""
        return [r for r in (images.inspect_reference(d) for _, d in parsed.images[:2]) if r]

    def image(
        self,
        parsed: ParsedRequest,
        info: ModelInfo,
        variant: int = 0,
        size: tuple[int, int] | None = None,
    ) -> tuple[str, tuple[int, int]]:
        """Standard base64 of a deterministic PNG for this request, and its size."""
        data, pixels = self._image(parsed, info, variant, size)
        return (data if isinstance(data, str) else data.decode("ascii")), pixels

    def _image(
        self,
        parsed: ParsedRequest,
        info: ModelInfo,
        variant: int = 0,
        size: tuple[int, int] | None = None,
    ) -> tuple[str | bytes, tuple[int, int]]:
        """`image`, with a pooled image as the pool's own ASCII bytes (no copy)."""
        digest = self._digest(parsed, info.id, variant)
        colours = images.colours_from(digest)
        refs = self._references(parsed)
        if refs:  # the edit's output carries its references' colours
            colours = (colours[0], refs[0][0], refs[1][0] if len(refs) > 1 else colours[2])
        width, height = size or self.size_of(parsed, info, refs)
        rgb, pool = self.config.rgb_noise, self.config.noise_pool
        if self.config.noise or rgb:
            seed = int.from_bytes(digest[9:17], "big")
            if pool:
                return images.pooled_base64(width, height, rgb, seed % pool), (width, height)
            png = images.make_rgb_png(width, height, seed) if rgb else None
            png = png or images.make_png(width, height, colours, seed)
            return base64.b64encode(png), (width, height)
        return images.png_base64(width, height, colours), (width, height)

    def jpeg(self, parsed: ParsedRequest, info: ModelInfo) -> str:
        width, height = self.size_of(parsed, info)
        r, g, b = hashlib.blake2b(parsed.prompt.encode(), digest_size=3).digest()
        return images.jpeg_base64(width, height, (r, g, b))

    def success(self, parsed: ParsedRequest, info: ModelInfo, count: int = 1) -> bytes:
        """The bytes of a normal answer with `count` images."""
        return b"".join(self.success_pieces(parsed, info, count))

    def success_pieces(self, parsed: ParsedRequest, info: ModelInfo, count: int = 1) -> list[bytes]:
        """`success` as pieces to send one after another (`wire.answer_pieces`)."""
        if "IMAGE" not in parsed.modalities:
            return [self._text_only(parsed, info)]
        if (info.thinking or info.jpeg_as_png) and count == 1:
            return [self._considered(parsed, info)]
        text = DEFAULT_TEXT if self.config.text_part and "TEXT" in parsed.modalities else None
        pictures = [("image/png", self._image(parsed, info, v)[0]) for v in range(count)]
        usage = wire.usage_json(
            wire.text_tokens(parsed.prompt),
            len(parsed.images),
            count,
            _DEFAULT_TEXT_TOKENS if text else 0,
            *_token_rates(info, parsed),
        )
        return wire.answer_pieces(
            text, pictures, model=info.id, response_id=self.response_id(), usage=usage
        )

    def with_image(self, parsed: ParsedRequest, info: ModelInfo, mime: str, data: str) -> wire.Json:
        usage = wire.usage(parsed.prompt, len(parsed.images), 1)
        parts = [wire.image_part(mime, data)]
        return wire.answer(parts, model=info.id, response_id=self.response_id(), usage_meta=usage)

    def _text_only(self, parsed: ParsedRequest, info: ModelInfo) -> bytes:
        parts: list[wire.Json] = [{"text": THOUGHT_TEXT, "thought": True}] if info.thinking else []
        parts.append({"text": TEXT_ONLY})
        per_in, _ = _token_rates(info, parsed)
        usage = wire.usage_counts(
            wire.text_tokens(parsed.prompt),
            len(parsed.images),
            0,
            wire.text_tokens(TEXT_ONLY),
            per_image_in=per_in,
            thoughts=_thoughts(self._digest(parsed, info.id, 0)) if info.thinking else 0,
        )
        doc = wire.answer(parts, model=info.id, response_id=self.response_id(), usage_meta=usage)
        return dump(doc)

    def _considered(self, parsed: ParsedRequest, info: ModelInfo) -> bytes:
        """A Gemini 3 answer: thoughts first, then text and the signed final image."""
        digest = self._digest(parsed, info.id, 0)
        parts: list[wire.Json] = []
        if info.thinking:
            parts.append({"text": THOUGHT_TEXT, "thought": True})
            width, height = self.size_of(parsed, info)
            draft = (max(1, width // 2), max(1, height // 2))
            for n in range(1 + digest[10] % 2):  # one or two interim drafts
                data = self.image(parsed, info, 1000 + n, draft)[0]
                parts.append({**wire.image_part("image/png", data), "thought": True})
        signature = base64.b64encode(hashlib.blake2b(digest, digest_size=24).digest()).decode()
        text = self.config.text_part and "TEXT" in parsed.modalities
        if text:
            parts.append({"text": DEFAULT_TEXT, "thoughtSignature": signature[:16]})
        final = self.jpeg(parsed, info) if info.jpeg_as_png else self.image(parsed, info)[0]
        parts.append({**wire.image_part("image/png", final), "thoughtSignature": signature})
        per_in, per_out = _token_rates(info, parsed)
        usage = wire.usage_counts(
            wire.text_tokens(parsed.prompt),
            len(parsed.images),
            1,
            _DEFAULT_TEXT_TOKENS if text else 0,
            per_image_in=per_in,
            per_image_out=per_out,
            thoughts=_thoughts(digest) if info.thinking else 0,
        )
        doc = wire.answer(parts, model=info.id, response_id=self.response_id(), usage_meta=usage)
        return dump(doc)

    def count_tokens(self, parsed: ParsedRequest, info: ModelInfo) -> wire.Json:
        """``countTokens``: what the prompt would cost as input."""
        per_in, _ = _token_rates(info, parsed)
        meta = wire.usage_counts(
            wire.text_tokens(parsed.prompt), len(parsed.images), 0, 0, per_image_in=per_in
        )
        return {
            "totalTokens": meta["promptTokenCount"],
            "promptTokensDetails": meta["promptTokensDetails"],
        }


def _token_rates(info: ModelInfo, parsed: ParsedRequest) -> tuple[int, int]:
    """Tokens per input image and per output image, from the catalogue."""
    per_in = (info.prices and info.prices.image_input_tokens) or wire.TOKENS_PER_IMAGE_IN
    per_out = info.image_tokens(parsed.image_size) or wire.TOKENS_PER_IMAGE_OUT
    return per_in, per_out


def _thoughts(digest: bytes) -> int:
    """~200-250 thinking tokens, as seen per image on 3 Pro."""
    return 200 + digest[11] % 51


def stream_chunks(doc: wire.Json) -> list[wire.Json]:
    """``streamGenerateContent``'s pieces: one per part (an image whole in its
    own), the last with the finishReason and usage; a body without a
    candidate's parts (blocked, empty) is sent as a single piece."""
    candidates = doc.get("candidates")
    first = candidates[0] if isinstance(candidates, list) and candidates else {}
    parts = first.get("content", {}).get("parts")
    if not parts:
        return [doc]
    common = {"modelVersion": doc.get("modelVersion"), "responseId": doc.get("responseId")}
    chunks: list[wire.Json] = []
    for i, part in enumerate(parts):
        candidate: wire.Json = {"content": {"parts": [part], "role": "model"}, "index": 0}
        chunk: wire.Json = {"candidates": [candidate]}
        if i == len(parts) - 1:
            candidate["finishReason"] = first.get("finishReason", "STOP")
            chunk["usageMetadata"] = doc.get("usageMetadata", {})
        chunks.append(chunk | common)
    return chunks


def encode_stream(chunks: list[wire.Json], *, sse: bool) -> list[bytes]:
    """The pieces to write: server-sent events (``alt=sse``, what the SDK asks
    for), or one JSON array written element by element."""
    if sse:
        return [b"data: " + dump(c) + b"\r\n\r\n" for c in chunks]
    pieces = [(b"[" if i == 0 else b",\r\n") + dump(c) for i, c in enumerate(chunks)]
    return [*pieces, b"]"]
