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
