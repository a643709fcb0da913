"""The model catalogue: the built-in facts, a user's file merged over them, and
refusals that name the file and the key."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from batchgen.catalogue import (
    IMAGE_SIZES,
    Catalogue,
    CatalogueError,
    ModelStatus,
    Tier,
    load_catalogue,
)
from batchgen.cli.main import main
from batchgen.errors import EXIT_USAGE
from batchgen.models import ASPECT_RATIOS

CLASSIC = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
ALL_14 = (*CLASSIC, "1:4", "4:1", "1:8", "8:1")


@pytest.fixture(scope="module")
def cat() -> Catalogue:
    return load_catalogue()


def test_the_models_of_today(cat: Catalogue) -> None:
    served = {m.id: m for m in cat.served()}
    assert set(served) == {
        "gemini-nano-banana-2.1",
        "gemini-3.1-flash-image",
        "gemini-3.1-flash-lite-image",
        "gemini-3-pro-image",
        "gemini-2.5-flash-image",
    }
    assert cat.recommended().id == "gemini-nano-banana-2.1"
    assert [m.id for m in cat if m.thinking] == [
        "gemini-nano-banana-2.1",
        "gemini-3.1-flash-image",
        "gemini-3.1-flash-lite-image",
        "gemini-3-pro-image",
    ]
    assert {m.id for m in cat if m.flex} == {"gemini-3-pro-image", "gemini-2.5-flash-image"}
    flash = served["gemini-3.1-flash-image"]
    assert flash.status is ModelStatus.DEPRECATED
    assert flash.deprecated == dt.date(2026, 10, 6)
    assert flash.replacement == "gemini-nano-banana-2.1"
    assert served["gemini-3-pro-image"].ga == dt.date(2026, 5, 28)
    assert served["gemini-3-pro-image"].jpeg_as_png


@pytest.mark.parametrize(
    ("model", "sizes", "ratios", "references"),
    [
        ("gemini-nano-banana-2.1", ("1K", "2K", "4K"), ALL_14, 14),
        ("gemini-3.1-flash-image", ("512", "1K", "2K", "4K"), ALL_14, 14),
        ("gemini-3.1-flash-lite-image", ("1K",), CLASSIC, 14),
        ("gemini-3-pro-image", ("1K", "2K", "4K"), CLASSIC, 14),
        ("gemini-2.5-flash-image", (), CLASSIC, None),
    ],
)
def test_sizes_ratios_and_references(
    cat: Catalogue, model: str, sizes: tuple[str, ...], ratios: tuple[str, ...], references: int
) -> None:
    info = cat.get(model)
    assert info is not None
    assert info.sizes == sizes
    assert sorted(info.ratios) == sorted(ratios)
    assert info.max_references == references
    for size in (*sizes, None):
        for ratio in ratios:
            assert info.pixels(ratio, size) is not None, (ratio, size)
    assert info.pixels("7:3") is None
    assert not info.takes_size("2k")
    assert info.pixels("1:1", "2k") is None


def test_flash_25_has_the_protocol_sizes_and_takes_no_image_size(cat: Catalogue) -> None:
    info = cat.get("gemini-2.5-flash-image")
    assert info is not None
    assert {r: info.pixels(r) for r in info.ratios} == ASPECT_RATIOS
    assert info.sizes == ()
    assert info.pixels("1:1", "1K") is None  # imageSize is not taken at all
    assert info.best_references == 3


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [
        ("1:1", ((512, 512), (1024, 1024), (2048, 2048), (4096, 4096))),
        ("16:9", ((688, 384), (1376, 768), (2752, 1536), (5504, 3072))),
        ("9:16", ((384, 688), (768, 1376), (1536, 2752), (3072, 5504))),
        ("4:5", ((464, 576), (928, 1152), (1856, 2304), (3712, 4608))),
    ],
)
def test_gemini_3_pixels_are_the_published_ones(
    cat: Catalogue, ratio: str, expected: tuple[tuple[int, int], ...]
) -> None:
    flash = cat.get("gemini-3.1-flash-image")
    assert flash is not None
    assert tuple(flash.pixels(ratio, s) for s in IMAGE_SIZES) == expected
    for model in ("gemini-3-pro-image", "gemini-nano-banana-2.1"):
        other = cat.get(model)
        assert other is not None
        assert tuple(other.pixels(ratio, s) for s in ("1K", "2K", "4K")) == expected[1:]
        assert other.pixels(ratio, "512") is None
        assert other.pixels(ratio) == expected[1]  # 1K when the request names none
    assert flash.pixels("21:9", "1K") == (1584, 672)


#: gemini-models.md §3: $ per image, standard and Batch, per size.
PRICE_TABLE = [
    ("gemini-2.5-flash-image", None, 1290, 0.039, 0.0195),
    ("gemini-3.1-flash-lite-image", "1K", 1120, 0.034, 0.017),
    ("gemini-nano-banana-2.1", "1K", 1120, 0.0336, 0.0168),
    ("gemini-nano-banana-2.1", "2K", 1680, 0.0504, 0.0252),
    ("gemini-nano-banana-2.1", "4K", 3780, 0.113, 0.0567),
    ("gemini-3.1-flash-image", "512", 747, 0.045, 0.0224),
    ("gemini-3.1-flash-image", "1K", 1120, 0.067, 0.0336),
    ("gemini-3.1-flash-image", "2K", 1680, 0.101, 0.0504),
    ("gemini-3.1-flash-image", "4K", 2520, 0.151, 0.0756),
    ("gemini-3-pro-image", "1K", 1120, 0.134, 0.067),
    ("gemini-3-pro-image", "2K", 1120, 0.134, 0.067),
    ("gemini-3-pro-image", "4K", 2000, 0.24, 0.12),
]


@pytest.mark.parametrize(("model", "size", "tokens", "standard", "batch"), PRICE_TABLE)
def test_prices_per_image_are_the_published_table(
    cat: Catalogue, model: str, size: str | None, tokens: int, standard: float, batch: float
) -> None:
    info = cat.get(model)
    assert info is not None
    assert info.image_tokens(size) == tokens
    # The table rounds to a tenth of a cent; the catalogue bills tokens x rate.
    assert info.image_price(size) == pytest.approx(standard, abs=0.0005)
    assert info.image_price(size, Tier.BATCH) == pytest.approx(batch, abs=0.0005)
    assert info.image_price(size, "batch") == pytest.approx(info.image_price(size) / 2)
    flex = info.image_price(size, Tier.FLEX)
    assert flex == (info.image_price(size, Tier.BATCH) if info.flex else None)


def test_exact_pro_prices_and_other_rates(cat: Catalogue) -> None:
    pro = cat.get("models/gemini-3-pro-image")
    assert pro is not None
    assert round(pro.image_price("2K") or 0, 3) == 0.134
    assert round(pro.image_price("2K", "batch") or 0, 3) == 0.067
    assert pro.prices is not None
    assert (pro.prices.input, pro.prices.text_output, pro.prices.image_output) == (2.0, 12.0, 120.0)
    assert pro.prices.image_input_tokens == 560
    flash25 = cat.get("gemini-2.5-flash-image")
    assert flash25 is not None
    assert flash25.prices is not None
    assert flash25.prices.text_output is None
    assert flash25.image_price("2K") is None  # a size it does not take
    assert pro.image_price("1K", "overnight") is None


def test_retired_ids_name_their_replacement(cat: Catalogue) -> None:
    for old, new in [
        ("gemini-3-pro-image-preview", "gemini-3-pro-image"),
        ("gemini-3.1-flash-image-preview", "gemini-3.1-flash-image"),
        ("gemini-2.5-flash-image-preview", "gemini-2.5-flash-image"),
    ]:
        info = cat.get(old)
        assert info is not None
        assert info.status is ModelStatus.RETIRED
        assert not info.served
        assert info.replacement == new
        assert new in cat
        assert info.pixels("1:1") is None
        assert info.image_price() is None
    retired = cat.get("gemini-3-pro-image-preview")
    assert retired is not None
    assert retired.retires == dt.date(2026, 6, 25)
    assert cat.get("gemini-9-ultra-image") is None


# -- a user's file -----------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "my-models.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_user_file_overrides_one_price_and_keeps_the_rest(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[models."gemini-3-pro-image".prices]\nimage_output = 100.0\n'
        '[models."gemini-3-pro-image".image_tokens]\n"4K" = 2500\n'
        "[tiers]\nbatch = 0.6\n",
    )
    cat = load_catalogue(path)
    pro = cat.get("gemini-3-pro-image")
    assert pro is not None
    assert pro.prices is not None
    assert pro.prices.input == 2.0
    assert pro.prices.image_output == 100.0
    assert pro.image_tokens("1K") == 1120
    assert pro.image_tokens("4K") == 2500
    assert pro.image_price("4K", "batch") == pytest.approx(2500 * 100 / 1e6 * 0.6)
    assert pro.sizes == ("1K", "2K", "4K")
    assert cat.sources == ("batchgen/catalogue.toml", str(path))
    assert load_catalogue().get("gemini-3-pro-image").prices.image_output == 120.0  # type: ignore[union-attr]


def test_a_user_file_adds_a_model_and_may_recommend_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[pixels.square."2K"]
"1:1" = "2000x2000"

[models."gemini-4-image"]
nickname = "Nano Banana 4"
status = "preview"
image_sizes = ["2K"]
aspect_ratios = ["1:1"]
pixels = "square"
thinking = true
recommended = true
prices = { input = 1.0, image_output = 40.0 }
image_tokens = { "2K" = 1000 }

[models."gemini-4-mini-image"]
image_sizes = ["1K"]
aspect_ratios = ["16:9"]
pixels = { "1K" = { "16:9" = "1280x720" } }
prices = { input = 0.1, image_output = 10.0 }
image_tokens = { "1K" = 500 }
""",
    )
    cat = load_catalogue(path)
    new = cat.get("gemini-4-image")
    assert new is not None
    assert new.status is ModelStatus.PREVIEW
    assert new.pixels("1:1") == (2000, 2000)
    assert new.default_size == "2K"
    assert new.image_price() == pytest.approx(0.04)
    assert cat.recommended().id == "gemini-4-image"
    assert sum(m.recommended for m in cat) == 1
    mini = cat.get("gemini-4-mini-image")
    assert mini is not None
    assert mini.pixels("16:9", "1K") == (1280, 720)
    assert mini.nickname == "gemini-4-mini-image"
    assert len(cat) == len(load_catalogue()) + 2


BAD_FILES = [
    ("this is = = not toml", "not valid TOML"),
    ('[models."gemini-3-pro-image"]\nflexx = true\n', 'models."gemini-3-pro-image".flexx: unknown'),
    ('[models."gemini-3-pro-image"]\nimage_sizes = ["1K", "2k"]\n', "image_sizes: '2k' is not"),
    ('[models."gemini-3-pro-image"]\nimage_sizes = ["1K", "9K"]\n', "'9K' is not a size"),
    ('[models."gemini-3-pro-image"]\naspect_ratios = ["1:1", "7:3"]\n', "has no 1K size for 7:3"),
    ('[models."gemini-3-pro-image"]\ndefault_size = "2K"\nimage_sizes = ["1K"]\n', "default_"),
    ('[models."gemini-3-pro-image"]\nstatus = "beta"\n', "status: must be one of"),
    ('[models."gemini-3-pro-image"]\nga = "May 28"\n', "ga: must be a date"),
    ('[models."gemini-3-pro-image"]\nthinking = "yes"\n', "thinking: must be bool"),
    ('[models."gemini-3-pro-image"]\nmax_reference_images = 0\n', "max_reference_images: must"),
    ('[models."gemini-3-pro-image"]\nreplacement = "gemini-x"\n', "unknown model 'gemini-x'"),
    ('[models."gemini-3-pro-image"]\npixels = "nope"\n', "no pixel table named 'nope'"),
    ('[models."gemini-3-pro-image".prices]\ninput = -1\n', "prices.input: must be a number"),
    ('[models."gemini-3-pro-image".prices]\ncheap = 1\n', "prices.cheap: unknown key"),
    ('[models."gemini-3-pro-image".image_tokens]\n"2K" = 0\n', "image_tokens.2K: must be"),
    (
        '[models."gemini-x"]\nimage_sizes = ["1K"]\naspect_ratios = ["1:1"]\npixels = "gemini-3"\n',
        "prices: missing",
    ),
    ('[models."gemini-x"]\nimage_sizes = ["1K"]\npixels = "gemini-3"\n', "aspect_ratios: must"),
    ('[pixels.mine."1K"]\n"1:1" = "big"\n', "pixels.mine.1K: \"1:1\" = 'big'"),
    ('[pixels.mine."8K"]\n"1:1" = "8x8"\n', "'8K' is not a size"),
    ("[tiers]\novernight = 0.3\n", "tiers.overnight: unknown tier"),
    ("colour = 1\n", "unknown top-level key 'colour'"),
    ("format = 2\n", "format 2 is not supported"),
    (
        '[models."gemini-3-pro-image"]\nrecommended = true\n'
        '[models."gemini-3.1-flash-image"]\nrecommended = true\n',
        "exactly one model must be recommended, not 2",
    ),
    (
        '[models."gemini-3-pro-image-preview"]\nrecommended = true\n',
        "a retired model cannot be recommended",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_FILES)
def test_bad_files_are_refused_with_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(path)
    message = str(caught.value)
    assert expected in message
    assert message.startswith(f"{path}:")
    assert caught.value.exit_code == EXIT_USAGE


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(CatalogueError, match=f"{missing}: cannot read the models file"):
        load_catalogue(missing)


def test_successor_follows_replacements_to_a_model_in_good_standing(cat: Catalogue) -> None:
    def successor(model_id: str) -> str | None:
        found = cat.successor(model_id)
        return found.id if found else None

    assert successor("gemini-3-pro-image-preview") == "gemini-3-pro-image"
    # 2.5 Flash -> 3.1 Flash (itself deprecated) -> Nano Banana 2.1
    assert successor("gemini-2.5-flash-image") == "gemini-nano-banana-2.1"
    assert successor("gemini-3.1-flash-image-preview") == "gemini-nano-banana-2.1"
    assert successor("gemini-3-pro-image") is None
    assert successor("gemini-unknown") is None


def test_successor_survives_a_cycle(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[models."gemini-3-pro-image"]\nstatus = "deprecated"\n'
        'replacement = "gemini-3-pro-image-preview"\n',
    )
    assert load_catalogue(path).successor("gemini-3-pro-image") is None


# -- batchgen models ---------------------------------------------------------


def test_models_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    rows: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("gemini-"):
            rows.setdefault(line.split()[0], line)
    assert "gemini-nano-banana-2.1 *" in out
    assert rows["gemini-3-pro-image"].split()[-3:] == ["1K", "$0.1344", "$0.0672"]
    assert "512 1K 2K 4K" in rows["gemini-3.1-flash-image"]
    assert "$0.0387" in rows["gemini-2.5-flash-image"]
    assert "  gemini-3-pro-image-preview since 2026-06-25; use gemini-3-pro-image" in out
    assert "ratios 14 (B): 1:1 1:4 1:8" in out


def test_models_command_json_for_scripts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, '[models."gemini-3-pro-image".prices]\nimage_output = 100.0\n')
    assert main(["models", "--json", "--models", str(path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["recommended"] == "gemini-nano-banana-2.1"
    assert doc["sources"] == ["batchgen/catalogue.toml", str(path)]
    models = {m["id"]: m for m in doc["models"]}
    pro = models["gemini-3-pro-image"]
    assert pro["per_image"]["2K"] == {
        "tokens": 1120,
        "standard": pytest.approx(0.112),
        "batch": pytest.approx(0.056),
        "flex": pytest.approx(0.056),
    }
    assert pro["pixels"]["4K"]["16:9"] == [5504, 3072]
    assert models["gemini-2.5-flash-image"]["per_image"]["default"]["tokens"] == 1290
    assert models["gemini-3-pro-image-preview"]["status"] == "retired"
    assert models["gemini-3-pro-image-preview"]["successor"] == "gemini-3-pro-image"


def test_models_command_refuses_a_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, '[models."gemini-3-pro-image"]\nimage_sizes = ["2k"]\n')
    assert main(["models", "--models", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f'batchgen: {path}: models."gemini-3-pro-image".image_sizes:')
    assert "Traceback" not in err
