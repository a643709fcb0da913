"""Request building, response parsing and classification, with plain data."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from batchgen.models import Job, OutcomeKind
from batchgen.output import client
from batchgen.output.client import build_request, classify, parse_delay

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32


def ok_body(*parts: dict[str, Any], finish: str = "STOP", usage: bool = True) -> bytes:
    body: dict[str, Any] = {
        "candidates": [{"content": {"role": "model", "parts": list(parts)}, "finishReason": finish}]
    }
    if usage:
        body["usageMetadata"] = {
            "promptTokenCount": 11,
            "candidatesTokenCount": 1290,
            "totalTokenCount": 1301,
            "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1290}],
        }
    return json.dumps(body).encode()


def img(data: bytes = PNG, mime: str = "image/png") -> dict[str, Any]:
    return {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode()}}


def error_body(code: int, status: str, message: str, *details: dict[str, Any]) -> bytes:
    env = {"error": {"code": code, "message": message, "status": status, "details": list(details)}}
    return json.dumps(env).encode()


def quota(quota_id: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [{"quotaMetric": "m", "quotaId": quota_id}],
    }


def retry_info(delay: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


class TestBuildRequest:
    def test_text_only(self) -> None:
        body = build_request(Job(id="a", prompt="a red cube"), [])
        assert body["contents"] == [{"role": "user", "parts": [{"text": "a red cube"}]}]
        assert body["generationConfig"] == {"responseModalities": ["TEXT", "IMAGE"]}

    def test_references_in_order_with_mime_and_aspect(self) -> None:
        job = Job(id="a", prompt="combine", aspect_ratio="16:9")
        body = build_request(job, [("image/png", PNG), ("image/jpeg", JPEG)])
        parts = body["contents"][0]["parts"]
        assert parts[0] == {"text": "combine"}
        assert parts[1]["inlineData"]["mimeType"] == "image/png"
        assert base64.b64decode(parts[1]["inlineData"]["data"]) == PNG
        assert parts[2]["inlineData"]["mimeType"] == "image/jpeg"
        assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9"}


class TestSuccess:
    def test_image_and_text(self) -> None:
        out = classify(200, {}, ok_body({"text": "here"}, img()))
        assert out.kind is OutcomeKind.OK
        assert out.images[0].data == PNG
        assert out.images[0].mime_type == "image/png"
        assert out.text == "here"
        assert out.usage is not None
        assert out.usage.output_tokens == 1290

    def test_several_images_and_thoughts_skipped(self) -> None:
        body = ok_body({"text": "thinking", "thought": True}, img(), img(JPEG, "image/jpeg"))
        out = classify(200, {}, body)
        assert [i.mime_type for i in out.images] == ["image/png", "image/jpeg"]
        assert out.text == ""

    def test_wrong_declared_mime_uses_the_bytes(self) -> None:
        out = classify(200, {}, ok_body(img(JPEG, "image/png")))
        assert out.images[0].mime_type == "image/jpeg"

    def test_url_safe_base64_without_padding(self) -> None:
        data = base64.urlsafe_b64encode(PNG + b"\xfb\xff").decode().rstrip("=")
        out = classify(200, {}, ok_body({"inline_data": {"mime_type": "image/png", "data": data}}))
        assert out.images[0].data == PNG + b"\xfb\xff"

    def test_text_only_is_no_image(self) -> None:
        out = classify(200, {}, ok_body({"text": "I can describe it instead"}))
        assert out.kind is OutcomeKind.NO_IMAGE
        assert out.text == "I can describe it instead"

    def test_empty_candidates_is_no_image(self) -> None:
        out = classify(200, {}, json.dumps({"candidates": []}).encode())
        assert out.kind is OutcomeKind.NO_IMAGE

    @pytest.mark.parametrize("finish", ["NO_IMAGE", "IMAGE_OTHER", "SOMETHING_NEW", "OTHER"])
    def test_no_image_finish_reasons(self, finish: str) -> None:
        body = {"candidates": [{"content": {"role": "model"}, "finishReason": finish}]}
        out = classify(200, {}, json.dumps(body).encode())
        assert out.kind is OutcomeKind.NO_IMAGE
        assert out.reason == finish

    @pytest.mark.parametrize("finish", ["SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT"])
    def test_candidate_block(self, finish: str) -> None:
        body = {
            "candidates": [
                {"content": {"role": "model"}, "finishReason": finish, "finishMessage": "nope"}
            ]
        }
        out = classify(200, {}, json.dumps(body).encode())
        assert out.kind is OutcomeKind.BLOCKED
        assert out.reason == finish
        assert out.message == "nope"

    def test_prompt_block(self) -> None:
        body = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}
        out = classify(200, {}, json.dumps(body).encode())
        assert out.kind is OutcomeKind.BLOCKED
        assert out.reason == "PROHIBITED_CONTENT"

    @pytest.mark.parametrize("body", [b"<html>Bad gateway</html>", b'{"candidates": [{"con'])
    def test_non_json_or_truncated_is_server_error(self, body: bytes) -> None:
        assert classify(200, {}, body).kind is OutcomeKind.SERVER_ERROR

    def test_bad_base64_and_not_an_image(self) -> None:
        bad = ok_body({"inlineData": {"mimeType": "image/png", "data": "!!!not base64!!!"}})
        assert classify(200, {}, bad).kind is OutcomeKind.NO_IMAGE
        assert "base64" in classify(200, {}, bad).message
        fake = ok_body(img(b"hello world, no image here", "image/png"))
        out = classify(200, {}, fake)
        assert out.kind is OutcomeKind.NO_IMAGE
        assert "not an image" in out.message


class TestErrors:
    def test_rate_limited_with_retry_info(self) -> None:
        body = error_body(
            429,
            "RESOURCE_EXHAUSTED",
            "quota",
            quota("GenerateRequestsPerMinutePerProjectPerModel"),
            retry_info("45.837906927s"),
        )
        out = classify(429, {}, body)
        assert out.kind is OutcomeKind.RATE_LIMITED
        assert out.retry_after == pytest.approx(45.837906927)
        assert out.quota_id == "GenerateRequestsPerMinutePerProjectPerModel"

    def test_rate_limited_retry_after_header_and_message(self) -> None:
        assert classify(429, {"Retry-After": "7"}, b"").retry_after == 7
        body = error_body(429, "RESOURCE_EXHAUSTED", "Please retry in 47.43s.")
        assert classify(429, {}, body).retry_after == pytest.approx(47.43)
        assert classify(429, {}, error_body(429, "RESOURCE_EXHAUSTED", "x")).retry_after is None

    def test_daily_quota(self) -> None:
        body = error_body(
            429,
            "RESOURCE_EXHAUSTED",
            "quota",
            quota("GenerateRequestsPerMinutePerProjectPerModel"),
            quota("GenerateRequestsPerDayPerProjectPerModel-FreeTier"),
        )
        out = classify(429, {}, body)
        assert out.kind is OutcomeKind.QUOTA_EXHAUSTED
        assert out.quota_id == "GenerateRequestsPerDayPerProjectPerModel-FreeTier"

    def test_invalid_key_is_fatal(self) -> None:
        info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
        body = error_body(400, "INVALID_ARGUMENT", "API key not valid.", info)
        assert classify(400, {}, body).kind is OutcomeKind.FATAL

    def test_plain_400_and_413_are_bad_requests(self) -> None:
        body = error_body(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")
        out = classify(400, {}, body)
        assert out.kind is OutcomeKind.BAD_REQUEST
        assert out.message == "Request contains an invalid argument."
        assert classify(413, {}, b"<html>too big</html>").kind is OutcomeKind.BAD_REQUEST

    def test_precondition_is_fatal(self) -> None:
        body = error_body(400, "FAILED_PRECONDITION", "User location is not supported")
        assert classify(400, {}, body).kind is OutcomeKind.FATAL

    @pytest.mark.parametrize("status", [401, 403, 404])
    def test_auth_and_unknown_model_are_fatal(self, status: int) -> None:
        assert classify(status, {}, error_body(status, "X", "no")).kind is OutcomeKind.FATAL

    @pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
    def test_server_errors(self, status: int) -> None:
        assert classify(status, {}, b"oops").kind is OutcomeKind.SERVER_ERROR

    def test_redirect_is_not_followed(self) -> None:
        out = classify(302, {"Location": "http://elsewhere/"}, b"")
        assert out.kind is OutcomeKind.BAD_REQUEST
        assert "redirect" in out.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [("47s", 47.0), ("0.5s", 0.5), ("12", 12.0), ("soon", None), (None, None), ("-3", None)],
)
def test_parse_delay(value: str | None, expected: float | None) -> None:
    assert parse_delay(value) == expected


def _encoded(fmt: str, size: tuple[int, int] = (20, 10)) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 60)).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif")],
)
def test_image_size_of_a_whole_image(fmt: str, mime: str) -> None:
    data = _encoded(fmt)
    assert client.image_size(data, mime) == (20, 10)
    assert client.image_size(data) == (20, 10)  # without a type: Pillow finds it


def test_image_size_refuses_what_is_not_a_whole_image() -> None:
    png = _encoded("PNG")
    assert client.image_size(png[: len(png) // 2], "image/png") is None  # cut off
    assert client.image_size(png[:8] + b"garbage" * 20, "image/png") is None
    damaged = bytearray(png)
    damaged[40] ^= 0xFF  # inside a chunk: its checksum no longer matches
    assert client.image_size(bytes(damaged), "image/png") is None
    assert client.image_size(png, "image/jpeg") is None  # not what it was sniffed as
    assert client.image_size(b"", "image/png") is None


# -- the Gemini 3 family: thinking models, sizes, relabelled bytes ------------


def thinking_answer(final: dict[str, Any], *, usage: dict[str, Any] | None = None) -> bytes:
    """An answer shaped like 3 Pro's: thought text, two thought images, a text
    part and the final image, each after the thoughts carrying a signature."""
    thought_png = PNG + b"thought"
    parts = [
        {"text": "**Composing** a calm product shot", "thought": True},
        {**img(thought_png), "thought": True},
        {**img(JPEG, "image/jpeg"), "thought": True},
        {"text": "Here is the watch.", "thoughtSignature": "c2ln"},
        {**final, "thoughtSignature": "c2lnbmF0dXJl"},
    ]
    body: dict[str, Any] = {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}]
    }
    if usage is not None:
        body["usageMetadata"] = usage
    return json.dumps(body).encode()


class TestThinkingModels:
    def test_thought_text_and_images_are_never_outputs(self) -> None:
        out = classify(200, {}, thinking_answer(img()))
        assert out.kind is OutcomeKind.OK
        assert [i.data for i in out.images] == [PNG]  # the final image only
        assert out.text == "Here is the watch."

    def test_only_thought_images_is_no_image(self) -> None:
        parts = [{"text": "drafting", "thought": True}, {**img(), "thought": True}]
        out = classify(200, {}, ok_body(*parts))
        assert out.kind is OutcomeKind.NO_IMAGE
        assert out.images == ()
        assert "thought" not in out.message
        assert out.text == ""

    def test_final_image_is_the_first_image_without_thought(self) -> None:
        body = ok_body({**img(JPEG, "image/jpeg"), "thought": True}, img(), img(JPEG))
        out = classify(200, {}, body)
        assert out.images[0].data == PNG

    def test_jpeg_bytes_labelled_png_are_saved_as_jpg(self) -> None:
        from batchgen.output.mime import extension_for

        out = classify(200, {}, thinking_answer(img(JPEG, "image/png")))
        (image,) = out.images
        assert image.mime_type == "image/jpeg"
        assert extension_for(image.mime_type) == "jpg"

    def test_usage_with_thoughts_and_modalities(self) -> None:
        usage = {
            "promptTokenCount": 571,
            "candidatesTokenCount": 1125,
            "thoughtsTokenCount": 231,
            "totalTokenCount": 1927,
            "promptTokensDetails": [
                {"modality": "TEXT", "tokenCount": 11},
                {"modality": "IMAGE", "tokenCount": 560},
            ],
            "candidatesTokensDetails": [
                {"modality": "IMAGE", "tokenCount": 1120},
                {"modality": "TEXT", "tokenCount": 5},
            ],
        }
        out = classify(200, {}, thinking_answer(img(), usage=usage))
        assert out.usage is not None
        assert out.usage.prompt_tokens == 571
        assert out.usage.output_tokens == 1125
        assert out.usage.thoughts_tokens == 231
        assert out.usage.total_tokens == 1927
        assert (out.usage.output_image_tokens, out.usage.output_text_tokens) == (1120, 5)
        assert (out.usage.prompt_text_tokens, out.usage.prompt_image_tokens) == (11, 560)

    def test_usage_without_thoughts_keeps_its_old_reading(self) -> None:
        out = classify(200, {}, ok_body(img()))
        assert out.usage is not None
        assert out.usage.thoughts_tokens == 0
        assert out.usage.output_image_tokens == 1290
        assert out.usage.prompt_image_tokens == 0


class TestRequestForNewModels:
    def test_image_size_goes_in_image_config(self) -> None:
        job = Job(id="a", prompt="a watch", aspect_ratio="4:5", image_size="2K")
        body = build_request(job, [])
        assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "4:5", "imageSize": "2K"}
        body = build_request(Job(id="a", prompt="a watch", image_size="512"), [])
        assert body["generationConfig"]["imageConfig"] == {"imageSize": "512"}

    def test_no_size_sends_no_image_size(self) -> None:
        body = build_request(Job(id="a", prompt="a watch", aspect_ratio="1:1"), [])
        assert "imageSize" not in body["generationConfig"]["imageConfig"]

    def test_references_are_labelled_from_their_bytes(self) -> None:
        body = build_request(Job(id="a", prompt="edit"), [("image/png", JPEG), ("image/x", PNG)])
        labels = [p["inlineData"]["mimeType"] for p in body["contents"][0]["parts"][1:]]
        assert labels == ["image/jpeg", "image/png"]
        # Bytes that are no known image keep the label they were given.
        body = build_request(Job(id="a", prompt="edit"), [("image/heic", b"....ftypheic")])
        assert body["contents"][0]["parts"][1]["inlineData"]["mimeType"] == "image/heic"
