"""The simulator's pure rules: markers, faults, latency, quotas, pictures."""

from __future__ import annotations

import io
import json
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import batchgen.sim
from batchgen.sim import images, wire
from batchgen.sim.faults import (
    KINDS,
    Latency,
    Marker,
    SpecError,
    delay_of,
    fault_draw,
    forced_kind,
    format_delay,
    parse_faults,
    parse_markers,
    pick_fault,
    scripted_kind,
)
from batchgen.sim.parse import BadRequest, decode_base64, parse_request
from batchgen.sim.quota import PER_DAY_ID, PER_MINUTE_ID, FixedWindow, Quota, SlidingWindow


def test_public_api_is_pinned() -> None:
    assert sorted(batchgen.sim.__all__) == [
        "KINDS",
        "Latency",
        "RequestRecord",
        "SIM_KEY",
        "SimConfig",
        "SimStats",
        "Simulator",
        "SimulatorThread",
        "SpecError",
        "make_app",
    ]


# -- markers ---------------------------------------------------------------


def test_markers_parse_kind_and_count() -> None:
    assert parse_markers("a cat") == ()
    assert parse_markers("a cat [[sim:429]]") == (Marker("429", None),)
    assert parse_markers("[[sim:500x3]] a cat [[sim:text]]") == (
        Marker("500", 3),
        Marker("text", None),
    )
    assert parse_markers("[[sim:429-delay=2.5x2]]") == (Marker("429-delay=2.5", 2),)
    assert parse_markers("[[sim:block-prohibited]]") == (Marker("block-prohibited", None),)


@pytest.mark.parametrize("prompt", ["[[sim:nope]]", "[[sim:500x0]]", "[[sim:]]", "[[sim:x3]]"])
def test_bad_markers_raise(prompt: str) -> None:
    with pytest.raises(SpecError):
        parse_markers(prompt)


def test_every_kind_is_a_valid_marker() -> None:
    for kind in KINDS:
        assert parse_markers(f"p [[sim:{kind}x2]]") == (Marker(kind, 2),)


@settings(deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(KINDS)), st.one_of(st.none(), st.integers(1, 99))),
        max_size=4,
    ),
    st.text(alphabet=st.characters(blacklist_characters="[]"), max_size=20),
)
def test_markers_round_trip(specs: list[tuple[str, int | None]], text: str) -> None:
    prompt = text + "".join(f"[[sim:{k}{'' if n is None else f'x{n}'}]] {text}" for k, n in specs)
    assert parse_markers(prompt) == tuple(Marker(k, n) for k, n in specs)


def test_marker_schedule() -> None:
    once = parse_markers("[[sim:500x2]]")
    assert [forced_kind(once, i) for i in range(4)] == ["500", "500", None, None]
    always = parse_markers("[[sim:429]]")
    assert [forced_kind(always, i) for i in range(3)] == ["429"] * 3
    chain = parse_markers("[[sim:503x1]][[sim:429x2]]")
    assert [forced_kind(chain, i) for i in range(5)] == ["503", "429", "429", None, None]
    tail = parse_markers("[[sim:503x1]][[sim:text]]")
    assert [forced_kind(tail, i) for i in range(3)] == ["503", "text", "text"]


def test_delay_kind() -> None:
    assert delay_of("429-delay=2.5") == 2.5
    assert delay_of("429") is None


def test_script_consumes_in_order() -> None:
    script = {"cat": ["500", "text"], "dog": ["429"]}
    consumed: dict[str, int] = {}
    assert scripted_kind(script, "a big cat", consumed) == ("cat", "500")
    consumed["cat"] = 2
    assert scripted_kind(script, "a big cat", consumed) is None
    assert scripted_kind(script, "a dog", consumed) == ("dog", "429")


# -- faults ----------------------------------------------------------------


def test_parse_faults() -> None:
    table = parse_faults("429=0.02, 500=0.01,reset=0.01,hang=0.005")
    assert table == {"429": 0.02, "500": 0.01, "reset": 0.01, "hang": 0.005}
    assert parse_faults("429-delay=2.5=0.1") == {"429-delay=2.5": 0.1}
    for bad in ("429", "bogus=0.1", "500=x", "500=0.7,503=0.7", "500=-1"):
        with pytest.raises(SpecError):
            parse_faults(bad)


def test_fault_draws_are_seeded_and_order_free() -> None:
    first = [fault_draw(7, "p", n) for n in range(50)]
    assert first == [fault_draw(7, "p", n) for n in range(50)]
    assert first != [fault_draw(8, "p", n) for n in range(50)]
    assert all(0.0 <= d < 1.0 for d in first)


def test_fault_rates_roughly_hold() -> None:
    table = {"500": 0.1, "503": 0.2}
    picks = [pick_fault(table, fault_draw(1, f"p{i}", 0)) for i in range(20000)]
    assert picks.count("500") / len(picks) == pytest.approx(0.1, abs=0.015)
    assert picks.count("503") / len(picks) == pytest.approx(0.2, abs=0.015)
    assert pick_fault(table, 0.999) is None


# -- latency ---------------------------------------------------------------


def test_latency_parse() -> None:
    assert Latency.parse("0") == Latency("fixed", 0.0)
    assert Latency.parse(0.2) == Latency("fixed", 0.2)
    assert Latency.parse("uniform:0.1:0.5") == Latency("uniform", 0.1, 0.5)
    assert Latency.parse("lognormal:8:0.5") == Latency("lognormal", 8.0, 0.5)
    for bad in ("soon", "uniform:1", "uniform:2:1", "lognormal:1:2:3", "-1"):
        with pytest.raises(SpecError):
            Latency.parse(bad)


def test_latency_distributions() -> None:
    rng = random.Random(3)
    uniform = [Latency.parse("uniform:0.1:0.5").sample(rng) for _ in range(5000)]
    assert min(uniform) >= 0.1
    assert max(uniform) <= 0.5
    assert statistics.mean(uniform) == pytest.approx(0.3, abs=0.01)
    lognormal = [Latency.parse("lognormal:2:0.5").sample(rng) for _ in range(20000)]
    assert statistics.median(lognormal) == pytest.approx(2.0, rel=0.05)
    assert statistics.mean(lognormal) > statistics.median(lognormal)  # a long right tail
    assert Latency.parse("0.25").sample(rng) == 0.25


@settings(deadline=None)  # a loaded CI box must not make these flaky
@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_format_delay_round_trips(seconds: float) -> None:
    text = format_delay(seconds)
    assert text.endswith("s")
    assert float(text[:-1]) == pytest.approx(seconds, abs=1e-9)


def test_format_delay_shapes() -> None:
    assert format_delay(17) == "17s"
    assert format_delay(3.5) == "3.5s"
    assert format_delay(45.837906927) == "45.837906927s"


# -- quota -----------------------------------------------------------------


def test_sliding_window_admits_limit_and_says_when_a_slot_frees() -> None:
    window = SlidingWindow(3, 10.0)
    assert [window.admit(t) for t in (0.0, 1.0, 2.0)] == [None, None, None]
    assert window.admit(4.0) == pytest.approx(6.0)  # the 0.0 request leaves at 10.0
    assert window.admit(10.0) is None
    assert window.admit(10.5) == pytest.approx(0.5)  # the 1.0 request leaves at 11.0


def test_twice_the_rate_gets_half_refused() -> None:
    window = SlidingWindow(60, 60.0)
    # 120 requests a minute for three minutes: one every half second.
    results = [window.admit(i * 0.5) for i in range(360)]
    assert sum(r is None for r in results) == 180  # exactly the limit, every minute
    assert all(0 < r <= 60 for r in results if r is not None)


def test_fixed_window_resets() -> None:
    day = FixedWindow(2, 100.0, start=0.0)
    assert [day.admit(t) for t in (1.0, 2.0)] == [None, None]
    assert day.admit(30.0) == pytest.approx(70.0)
    assert day.admit(100.0) is None
    assert day.admit(350.0) is None


def test_quota_reports_the_right_id() -> None:
    now = [0.0]
    quota = Quota(2, 3, window=10.0, day=1000.0, clock=lambda: now[0])
    assert quota.admit() is None
    assert quota.admit() is None
    minute = quota.admit()
    assert minute is not None
    assert minute.quota_id == PER_MINUTE_ID
    assert minute.retry_after == pytest.approx(10.0)
    now[0] = 20.0
    assert quota.admit() is None  # third of the day: refusals did not count
    day = quota.admit()
    assert day is not None
    assert day.quota_id == PER_DAY_ID
    assert day.retry_after == pytest.approx(980.0)


# -- request parsing ---------------------------------------------------------


@settings(deadline=None)  # a loaded CI box must not make these flaky
@given(st.binary(max_size=64))
def test_both_base64_alphabets_with_or_without_padding(data: bytes) -> None:
    import base64

    for encoded in (base64.b64encode(data), base64.urlsafe_b64encode(data)):
        text = encoded.decode()
        assert decode_base64(text) == data
        assert decode_base64(text.rstrip("=")) == data


def test_parse_request_accepts_both_spellings() -> None:
    camel = (
        b'{"contents":[{"parts":[{"text":"a"},{"inlineData":{"mimeType":"image/png","data":"AAE"}}]}],'
        b'"generationConfig":{"imageConfig":{"aspectRatio":"16:9"},"responseModalities":["IMAGE"]}}'
    )
    snake = (
        b'{"contents":[{"parts":[{"text":"a"},{"inline_data":{"mime_type":"image/png","data":"AAE="}}]}],'
        b'"generation_config":{"image_config":{"aspect_ratio":"16:9"},"response_modalities":["IMAGE"]}}'
    )
    for body in (camel, snake):
        parsed = parse_request(body)
        assert parsed.prompt == "a"
        assert parsed.images == (("image/png", b"\x00\x01"),)
        assert parsed.aspect_ratio == "16:9"
        assert parsed.modalities == ("IMAGE",)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"contents": []}',
        b'{"contents": [{"parts": []}]}',
        b'{"contents":[{"parts":[{"inlineData":{"mimeType":"image/png","data":"!!"}}]}]}',
        b'{"contents":[{"parts":[{"text":"a"}]}],"generationConfig":{"imageConfig":{"aspectRatio":"7:3"}}}',
        b'{"contents":[{"parts":[{"text":"a"}]}],"generationConfig":{"imageConfig":{"aspectRatio":[1]}}}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_parse_request_rejects(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_request(body)


# -- images ----------------------------------------------------------------


def _open(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def test_png_is_valid_and_banded() -> None:
    colours = ((255, 0, 0), (0, 255, 0), (0, 0, 255))
    img = _open(images.make_png(30, 30, colours)).convert("RGB")
    assert img.size == (30, 30)
    assert img.getpixel((5, 2)) == (255, 0, 0)
    assert img.getpixel((5, 15)) == (0, 255, 0)
    assert img.getpixel((5, 28)) == (0, 0, 255)


def test_noisy_png_weighs_like_a_real_one() -> None:
    colours = ((200, 10, 10), (10, 200, 10), (10, 10, 200))
    data = images.make_png(1024, 1024, colours, noise_seed=1)
    assert 1_000_000 <= len(data) <= 1_500_000
    assert _open(data).size == (1024, 1024)
    assert data == images.make_png(1024, 1024, colours, noise_seed=1)


def test_closest_ratio_and_reference_inspection() -> None:
    assert images.closest_ratio(1920, 1080) == "16:9"
    assert images.closest_ratio(500, 500) == "1:1"
    buf = io.BytesIO()
    Image.new("RGB", (40, 20), (10, 20, 30)).save(buf, "PNG")
    assert images.inspect_reference(buf.getvalue()) == ((10, 20, 30), (40, 20))
    assert images.inspect_reference(b"not an image") is None


# -- wire ------------------------------------------------------------------


@settings(deadline=None)  # a loaded CI box must not make these flaky
@given(
    text=st.one_of(st.none(), st.text(max_size=40)),
    n_images=st.integers(min_value=0, max_value=3),
    prompt=st.text(max_size=60),
)
def test_answer_pieces_join_to_the_documented_answer(
    text: str | None, n_images: int, prompt: str
) -> None:
    images_ = [("image/png", f"iVBOR{i}==") for i in range(n_images)]
    usage = wire.usage(prompt, 1, n_images, text or "")
    usage_text = wire.usage_json(
        wire.text_tokens(prompt), 1, n_images, wire.text_tokens(text or "")
    )
    fast = b"".join(
        wire.answer_pieces(
            text, images_, model="gemini-2.5-flash-image", response_id="r-1", usage=usage_text
        )
    )
    parts = ([{"text": text}] if text is not None else []) + [
        wire.image_part(m, d) for m, d in images_
    ]
    slow = wire.answer(parts, model="gemini-2.5-flash-image", response_id="r-1", usage_meta=usage)
    assert json.loads(fast) == slow


def test_zero_limits_refuse_everything() -> None:
    assert SlidingWindow(0, 60.0).admit(5.0) == 60.0
    assert FixedWindow(0, 100.0, start=0.0).admit(5.0) == pytest.approx(95.0)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["contents", "parts", "text", "inlineData", "inline_data", "mimeType",
                         "data", "generationConfig", "imageConfig", "aspectRatio",
                         "responseModalities", "x"]),
        inner,
        max_size=4,
    ),
    max_leaves=12,
)  # fmt: skip


@settings(deadline=None)
@given(_json_values)
def test_parse_request_never_crashes(doc: object) -> None:
    """Any JSON is either a request or a 400, never a server error."""
    try:
        parsed = parse_request(json.dumps(doc).encode())
    except BadRequest:
        return
    assert isinstance(parsed.prompt, str)
