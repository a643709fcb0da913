"""Platform size presets: parsing specs and resizing real Pillow images."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from batchgen.output.sizes import PRESETS, SizeSpec, parse_size, resize, resize_all

RED = (200, 30, 30)
WHITE = (255, 255, 255)


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def solid(size: tuple[int, int], colour: tuple[int, int, int] = RED, fmt: str = "PNG") -> bytes:
    return encode(Image.new("RGB", size, colour), fmt)


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 8) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=False))


# --------------------------------------------------------------------------- parse_size


def test_presets_are_the_platform_sizes() -> None:
    assert PRESETS == {
        "amazon": (1500, 1500),
        "shopify": (2048, 2048),
        "instagram": (1080, 1080),
    }


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("amazon", SizeSpec("amazon", 1500, 1500, "fit")),
        ("shopify", SizeSpec("shopify", 2048, 2048, "fit")),
        ("instagram", SizeSpec("instagram", 1080, 1080, "fit")),
        ("amazon:fit", SizeSpec("amazon", 1500, 1500, "fit")),
        ("amazon:fill", SizeSpec("amazon-fill", 1500, 1500, "fill")),
        (" Amazon:FILL ", SizeSpec("amazon-fill", 1500, 1500, "fill")),
        ("800x600", SizeSpec("800x600", 800, 600, "fit")),
        ("800x600:fit", SizeSpec("800x600", 800, 600, "fit")),
        ("800X600:fill", SizeSpec("800x600-fill", 800, 600, "fill")),
    ],
)
def test_parse_size(spec: str, expected: SizeSpec) -> None:
    assert parse_size(spec) == expected
    assert parse_size(expected.spec) == expected


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("ebay", "unknown size 'ebay'"),
        ("amazon:stretch", "unknown mode"),
        ("800x", "WIDTHxHEIGHT"),
        ("x600", "WIDTHxHEIGHT"),
        ("800*600", "WIDTHxHEIGHT"),
        ("", "unknown size"),
        ("5x5", "between 10 and 10000"),
        ("20000x100", "between 10 and 10000"),
    ],
)
def test_parse_size_rejects_with_a_clear_message(spec: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as info:
        parse_size(spec)
    if "unknown size" in needle:
        assert "amazon, instagram, shopify" in str(info.value)


@given(
    st.integers(10, 10_000),
    st.integers(10, 10_000),
    st.sampled_from(["", ":fit", ":fill"]),
)
def test_custom_specs_round_trip(width: int, height: int, mode: str) -> None:
    spec = parse_size(f"{width}x{height}{mode}")
    assert (spec.width, spec.height) == (width, height)
    assert spec.mode == ("fill" if mode == ":fill" else "fit")
    assert parse_size(spec.spec) == spec
    assert "/" not in spec.name
    assert ":" not in spec.name


# --------------------------------------------------------------------------- resize


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("mode", ["fit", "fill"])
def test_each_preset_has_its_pixel_size(preset: str, mode: str) -> None:
    data, mime, upscaled = resize(solid((1024, 1024)), parse_size(f"{preset}:{mode}"))
    image = decode(data)
    assert image.size == PRESETS[preset]
    # The platforms ask for JPEG product photos, whatever the model answered.
    assert mime == "image/jpeg"
    assert image.format == "JPEG"
    assert upscaled is True  # every preset is larger than the model's 1024 px


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_preset_is_png_when_asked_for(preset: str) -> None:
    data, mime, _up = resize(solid((1024, 1024)), parse_size(f"{preset}:fill:png"))
    assert mime == "image/png"
    assert decode(data).format == "PNG"
    assert parse_size(f"{preset}:png:fill").spec == f"{preset}:fill:png"


def test_all_sizes_of_one_image_come_from_one_decode() -> None:
    specs = [parse_size(s) for s in ("amazon", "shopify:fill", "instagram", "64x48:webp")]
    results = resize_all(solid((1024, 768)), specs)
    assert [decode(data).size for data, _m, _u in results] == [
        (1500, 1500),
        (2048, 2048),
        (1080, 1080),
        (64, 48),
    ]
    assert [mime for _d, mime, _u in results] == ["image/jpeg"] * 3 + ["image/webp"]
    assert [up for _d, _m, up in results] == [True, True, True, False]


def test_fit_keeps_the_whole_image_and_pads_with_white() -> None:
    # A wide red image with a blue stripe at each end: fit must keep both.
    src = Image.new("RGB", (1344, 768), RED)
    src.paste((20, 20, 220), (0, 0, 40, 768))
    src.paste((20, 20, 220), (1304, 0, 1344, 768))
    data, _mime, upscaled = resize(encode(src), parse_size("amazon"))
    out = decode(data).convert("RGB")
    assert out.size == (1500, 1500)
    assert upscaled is True
    for corner in [(0, 0), (1499, 0), (0, 1499), (1499, 1499)]:
        assert out.getpixel(corner) == WHITE
    assert close(out.getpixel((750, 750)), RED)  # type: ignore[arg-type]
    # Scaled to 1500 wide, so both stripes survive at the left and right edges.
    assert close(out.getpixel((5, 750)), (20, 20, 220), tol=20)  # type: ignore[arg-type]
    assert close(out.getpixel((1494, 750)), (20, 20, 220), tol=20)  # type: ignore[arg-type]
    # Padding above and below: 1344x768 -> 1500x857, centred.
    assert out.getpixel((750, 10)) == WHITE
    assert out.getpixel((750, 1489)) == WHITE


def test_fit_into_a_custom_box_pads_the_sides() -> None:
    data, _mime, upscaled = resize(solid((1024, 1024)), parse_size("800x600"))
    out = decode(data).convert("RGB")
    assert out.size == (800, 600)
    assert upscaled is False
    assert out.getpixel((0, 0)) == WHITE
    assert out.getpixel((799, 599)) == WHITE
    assert out.getpixel((50, 300)) == WHITE  # left bar: the 600 px square sits at 100..700
    assert close(out.getpixel((400, 300)), RED)  # type: ignore[arg-type]
    assert close(out.getpixel((105, 5)), RED)  # type: ignore[arg-type]


def test_fill_covers_the_box_and_crops_the_centre() -> None:
    # Left half green, right half blue, a red band in the middle third.
    src = Image.new("RGB", (1344, 768), (20, 160, 20))
    src.paste((20, 20, 220), (672, 0, 1344, 768))
    src.paste(RED, (448, 0, 896, 768))
    data, _mime, upscaled = resize(encode(src), parse_size("800x800:fill"))
    out = decode(data).convert("RGB")
    assert out.size == (800, 800)
    assert upscaled is True  # 768 high -> 800 high
    # No white anywhere: the box is covered, the sides were cropped away.
    for corner in [(0, 0), (799, 0), (0, 799), (799, 799)]:
        assert out.getpixel(corner) != WHITE
    # Scale 800/768: the 1400 px wide image loses 300 px at each side, so the
    # visible part spans source x 288..1056: green, red, blue in thirds-ish.
    assert close(out.getpixel((400, 400)), RED)  # type: ignore[arg-type]
    assert close(out.getpixel((50, 400)), (20, 160, 20), tol=20)  # type: ignore[arg-type]
    assert close(out.getpixel((750, 400)), (20, 20, 220), tol=20)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("amazon", True),  # 1024 -> 1500
        ("shopify", True),
        ("instagram", True),  # 1024 -> 1080
        ("800x800", False),  # 1024 -> 800
        ("1024x1024", False),  # same size: not an upscale
        ("800x600:fill", False),
        ("2000x500:fill", True),  # cover needs 2000 wide from 1024
    ],
)
def test_upscaled_flag(spec: str, expected: bool) -> None:
    _data, _mime, upscaled = resize(solid((1024, 1024)), parse_size(spec))
    assert upscaled is expected


def test_jpeg_stays_jpeg() -> None:
    data, mime, _up = resize(solid((1024, 1024), fmt="JPEG"), parse_size("instagram"))
    assert mime == "image/jpeg"
    assert data[:3] == b"\xff\xd8\xff"
    out = decode(data)
    assert out.format == "JPEG"
    assert out.size == (1080, 1080)


def test_webp_stays_webp() -> None:
    data, mime, _up = resize(solid((1024, 768), fmt="WEBP"), parse_size("800x800"))
    assert mime == "image/webp"
    assert decode(data).format == "WEBP"


def test_gif_becomes_png() -> None:
    data, mime, _up = resize(solid((100, 100), fmt="GIF"), parse_size("50x50"))
    assert mime == "image/png"
    assert decode(data).format == "PNG"


def test_transparent_png_pads_with_opaque_white_and_keeps_alpha() -> None:
    src = Image.new("RGBA", (1024, 512), (0, 0, 0, 0))
    src.paste((200, 30, 30, 255), (256, 128, 768, 384))
    data, mime, _up = resize(encode(src), parse_size("instagram"))
    out = decode(data)
    assert mime == "image/png"
    assert out.mode == "RGBA"
    assert out.getpixel((0, 0)) == (255, 255, 255, 255)
    assert close(out.getpixel((540, 540)), (200, 30, 30, 255))  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(
    st.integers(10, 400),
    st.integers(10, 400),
    st.integers(10, 300),
    st.integers(10, 300),
    st.sampled_from(["fit", "fill"]),
)
def test_output_is_always_exactly_the_box(sw: int, sh: int, bw: int, bh: int, mode: str) -> None:
    data, _mime, upscaled = resize(solid((sw, sh)), parse_size(f"{bw}x{bh}:{mode}"))
    assert decode(data).size == (bw, bh)
    scale = min(bw / sw, bh / sh) if mode == "fit" else max(bw / sw, bh / sh)
    assert upscaled is (scale > 1)


def test_not_an_image_raises() -> None:
    with pytest.raises(OSError, match="cannot identify"):
        resize(b"not an image at all", parse_size("amazon"))
