"""Recipe expansion: packs, matrix, variants, chains, validation, JSONL output."""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from batchgen.cli.expand import register
from batchgen.errors import InputError, InputProblem
from batchgen.recipes.expand import expand_recipe, write_expanded
from batchgen.recipes.templates import load_template

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_jobs"
COLUMNS = ["sku", "name", "brand", "features", "scene", "photo"]


def make_photo(path: Path, colour: tuple[int, int, int] = (200, 40, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), colour).save(path, format="PNG")
    return path


def write_csv(path: Path, rows: Sequence[Sequence[str]], header: Sequence[str] = COLUMNS) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def product(sku: str, **over: str) -> list[str]:
    values = {
        "sku": sku,
        "name": f"{sku.lower()} mug",
        "brand": "Acme",
        "features": "the glossy glaze",
        "scene": "a breakfast table",
        "photo": "photos/mug.png",
    }
    values.update(over)
    return [values[c] for c in COLUMNS]


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """A folder with a photo and a two-product sheet; recipes go next to it."""
    make_photo(tmp_path / "photos" / "mug.png")
    write_csv(tmp_path / "products.csv", [product("A1"), product("B2")])
    return tmp_path


def recipe(folder: Path, body: str, name: str = "recipe.toml") -> Path:
    path = folder / name
    path.write_text(body, encoding="utf-8")
    return path


def expand(path: Path) -> list[dict[str, object]]:
    return list(expand_recipe(path))


def problems(path: Path) -> list[InputProblem]:
    with pytest.raises(InputError) as info:
        expand_recipe(path)
    return info.value.problems


PACK = """
sheet = "products.csv"
id = "{sku}"
images = ["{photo}"]
[pack]
white_bg = "white_bg"
scene = { template = "scene", images = ["@{sku}-white_bg"] }
detail = "detail"
"""


# --------------------------------------------------------------------------- packs


def test_pack_ids_are_sku_dash_variant(shop: Path) -> None:
    jobs = expand(recipe(shop, PACK))
    assert [j["id"] for j in jobs] == [
        "A1-white_bg", "A1-scene", "A1-detail", "B2-white_bg", "B2-scene", "B2-detail",
    ]  # fmt: skip
    # Stable: expanding again gives the very same jobs.
    assert expand(recipe(shop, PACK)) == jobs


def test_pack_jobs_are_full_job_records(shop: Path) -> None:
    jobs = {j["id"]: j for j in expand(recipe(shop, PACK))}
    white = jobs["A1-white_bg"]
    assert white["prompt"] == load_template("white_bg").render({"name": "a1 mug"})
    assert white["images"] == [str(shop / "photos" / "mug.png")]
    assert white["aspect_ratio"] == "1:1"  # from the template
    assert white["tags"] == ["pack:white_bg"]
    assert white["priority"] == 0
    assert white["sizes"] == []
    assert "variant" not in white
    assert "model" not in white
    assert "a breakfast table" in str(jobs["A1-scene"]["prompt"])
    assert "the glossy glaze" in str(jobs["B2-detail"]["prompt"])


def test_chain_refs_are_rendered(shop: Path) -> None:
    jobs = {j["id"]: j for j in expand(recipe(shop, PACK))}
    assert jobs["A1-scene"]["images"] == ["@A1-white_bg"]
    assert jobs["B2-scene"]["images"] == ["@B2-white_bg"]
    # The target of every ref is a job of the same expansion.
    for job in jobs.values():
        for image in job["images"]:  # type: ignore[attr-defined]
            if image.startswith("@"):
                assert image[1:] in jobs


def test_relative_photo_paths_become_absolute(shop: Path) -> None:
    sub = shop / "recipes"
    sub.mkdir()
    # The sheet lives one folder up; photo paths are relative to the sheet.
    path = recipe(sub, PACK.replace('"products.csv"', '"../products.csv"'))
    for job in expand(path):
        for image in job["images"]:  # type: ignore[attr-defined]
            if not image.startswith("@"):
                assert os.path.isabs(image)
                assert Path(image) == (shop / "photos" / "mug.png").resolve()


def test_unused_columns_are_fine(shop: Path) -> None:
    write_csv(
        shop / "products.csv",
        [[*product("A1"), "12.50", "unused"]],
        header=[*COLUMNS, "price", "notes"],
    )
    assert len(expand(recipe(shop, PACK))) == 3


def test_recipe_settings_and_entry_overrides(shop: Path) -> None:
    body = """
sheet = "products.csv"
id = "{sku}"
images = ["{photo}"]
style = "house_style"
sizes = ["amazon", "800x600:FILL", "amazon"]
tags = ["brand:{brand}"]
priority = 5
model = "gemini-2.5-flash-image"
aspect_ratio = "3:4"
[pack]
white_bg = "white_bg"
detail = { template = "detail", aspect_ratio = "4:5", tags = ["close"], sizes = ["instagram"], \
priority = 9, style = "" }
scene = { template = "scene", style = { text = "Golden hour, {brand} colours." } }
"""
    jobs = {j["id"]: j for j in expand(recipe(shop, body))}
    white, detail, scene = jobs["A1-white_bg"], jobs["A1-detail"], jobs["A1-scene"]
    house = load_template("house_style").style
    assert house is not None
    assert str(white["prompt"]).endswith(house)
    assert white["aspect_ratio"] == "3:4"  # the recipe's beats the template's 1:1
    assert white["sizes"] == ["amazon", "800x600:fill"]  # canonical, no repeats
    assert white["tags"] == ["brand:Acme", "pack:white_bg"]
    assert (white["priority"], white["model"]) == (5, "gemini-2.5-flash-image")
    assert detail["aspect_ratio"] == "4:5"
    assert detail["tags"] == ["brand:Acme", "close", "pack:detail"]
    assert detail["sizes"] == ["instagram"]
    assert detail["priority"] == 9
    assert house not in str(detail["prompt"])
    assert str(scene["prompt"]).endswith("Golden hour, Acme colours.")


def test_single_template_recipe_and_inline_prompt(shop: Path) -> None:
    body = """
sheet = "products.csv"
id = "{sku}-ad"
prompt = "Create a poster of {name} for {brand}"
priority = "{sku_rank}"
[vars]
sku_rank = "3"
"""
    jobs = expand(recipe(shop, body))
    assert [j["id"] for j in jobs] == ["A1-ad", "B2-ad"]
    assert jobs[0]["prompt"] == "Create a poster of a1 mug for Acme"
    assert jobs[0]["images"] == []
    assert jobs[0]["priority"] == 3
    assert jobs[0]["tags"] == []


def test_vars_are_defaults_and_cells_win(shop: Path) -> None:
    write_csv(shop / "products.csv", [product("A1", brand=""), product("B2", brand="Zed")])
    body = """
sheet = "products.csv"
id = "{sku}"
prompt = "A {name} by {brand}"
[vars]
brand = "House"
"""
    assert [j["prompt"] for j in expand(recipe(shop, body))] == [
        "A a1 mug by House",
        "A b2 mug by Zed",
    ]


# --------------------------------------------------------------------------- matrix, variants


def test_matrix_ids_tags_and_fields(shop: Path) -> None:
    body = """
sheet = "products.csv"
id = "{sku}"
images = ["{photo}"]
tags = ["brand:{brand}"]
[pack]
white_bg = "white_bg"
scene = { prompt = "Create a photo of this {name} in {season}, for {persona}", \
images = ["@{id}-white_bg-{season_slug}-{persona_slug}"] }
[matrix]
season = ["summer", "winter"]
persona = { teen = "a teenager", chef = "a professional chef" }
"""
    jobs = {j["id"]: j for j in expand(recipe(shop, body))}
    assert len(jobs) == 2 * 2 * 2 * 2  # rows x pack x seasons x personas
    job = jobs["A1-scene-winter-chef"]
    assert job["tags"] == ["brand:Acme", "pack:scene", "season:winter", "persona:chef"]
    assert job["prompt"] == "Create a photo of this a1 mug in winter, for a professional chef"
    assert job["images"] == ["@A1-white_bg-winter-chef"]
    assert "A1-white_bg-summer-teen" in jobs
    assert jobs["B2-white_bg-summer-teen"]["tags"] == [
        "brand:Acme", "pack:white_bg", "season:summer", "persona:teen",
    ]  # fmt: skip


def test_variants_ids_and_field(shop: Path) -> None:
    body = """
sheet = "products.csv"
id = "{sku}"
prompt = "A {name}"
variants = 3
"""
    jobs = expand(recipe(shop, body))
    assert [(j["id"], j["variant"]) for j in jobs] == [
        ("A1-1", 1), ("A1-2", 2), ("A1-3", 3), ("B2-1", 1), ("B2-2", 2), ("B2-3", 3),
    ]  # fmt: skip
    assert len({j["prompt"] for j in jobs[:3]}) == 1  # same prompt, distinct variants


def test_pack_matrix_and_variants_compose(shop: Path) -> None:
    body = (
        PACK
        + """
[matrix]
season = ["summer"]
"""
    )
    body = body.replace('detail = "detail"', 'detail = { template = "detail", variants = 2 }')
    body = body.replace("@{sku}-white_bg", "@{sku}-white_bg-{season}")
    ids = [j["id"] for j in expand(recipe(shop, body))]
    assert ids[:4] == ["A1-white_bg-summer", "A1-scene-summer", "A1-detail-summer-1",
                       "A1-detail-summer-2"]  # fmt: skip


def test_literal_jobs_come_first_with_their_own_fields(shop: Path) -> None:
    make_photo(shop / "refs" / "logo.png")
    body = """
sheet = "products.csv"
id = "{sku}"
prompt = "Create a photo of {name}, in the style of the {brand} board"
images = ["@moodboard"]
tags = ["brand:{brand}"]
[vars]
brand = "Acme"
[[jobs]]
id = "moodboard"
template = "logo_text"
fields = { subject = "the Acme shop", text = "Acme & Sons, est. 1921" }
images = ["refs/logo.png"]
"""
    jobs = expand(recipe(shop, body))
    assert [j["id"] for j in jobs] == ["moodboard", "A1", "B2"]
    board = jobs[0]
    assert board["images"] == [str(shop / "refs" / "logo.png")]  # relative to the recipe
    assert '"Acme & Sons, est. 1921"' in str(board["prompt"])
    assert board["tags"] == ["brand:Acme"]
    assert jobs[1]["images"] == ["@moodboard"]


_cell_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x00"), min_size=1
).filter(lambda text: text.strip() != "")


@settings(max_examples=40, deadline=None)
@given(name=_cell_text, features=_cell_text)
def test_any_cell_text_survives_csv_to_jsonl(name: str, features: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        make_photo(base / "photos" / "mug.png")
        write_csv(base / "products.csv", [product("A1", name=name, features=features)])
        dest = base / "jobs.jsonl"
        assert write_expanded(recipe(base, PACK), dest) == 3
        jobs = [json.loads(line) for line in dest.read_text(encoding="utf-8").splitlines()]
        assert len(jobs) == 3
        assert f"this {name} " in jobs[0]["prompt"]
        assert features in jobs[2]["prompt"]


# --------------------------------------------------------------------------- problems


def test_missing_column_and_empty_fields_all_at_once(shop: Path) -> None:
    header = ["sku", "name", "brand", "features", "photo"]  # no "scene" column
    write_csv(
        shop / "products.csv",
        [
            ["A1", "mug", "Acme", "glaze", "photos/mug.png"],
            ["B2", "", "Acme", "glaze", "photos/mug.png"],  # empty name
            ["C3", "cup", "Acme", " ", "photos/mug.png"],  # blank features
            ["D4", "jug", "Acme", "spout", "photos/none.png"],  # missing photo
        ],
        header=header,
    )
    found = problems(recipe(shop, PACK))
    sheet = str(shop / "products.csv")
    where = {(p.file, p.line, p.field) for p in found}
    assert (sheet, 1, "scene") in where  # once, at the header
    assert (sheet, 3, "name") in where
    assert (sheet, 4, "features") in where
    assert (sheet, 5, "photo") in where
    assert sum(p.field == "scene" for p in found) == 1
    text = InputError(found).render()
    assert "column 'scene' is missing" in text
    assert "'name' is empty" in text
    assert "photos/none.png" in text


def test_jsonl_sheet_reports_missing_keys_per_row(shop: Path) -> None:
    lines = [
        {"sku": "A1", "name": "mug", "features": "x", "scene": "y", "photo": "photos/mug.png"},
        {"sku": "B2", "features": "x", "scene": "y", "photo": "photos/mug.png"},
        "not an object",
    ]
    text = "\n".join(json.dumps(obj) for obj in lines) + "\n\n{broken\n"
    (shop / "products.jsonl").write_text(text, encoding="utf-8")
    found = problems(recipe(shop, PACK.replace("products.csv", "products.jsonl")))
    by_line = {(p.line, p.field) for p in found}
    assert (2, "name") in by_line
    assert any(p.line == 3 and "JSON object" in p.message for p in found)
    assert any(p.line == 5 and "not valid JSON" in p.message for p in found)


def test_bad_and_duplicate_ids(shop: Path) -> None:
    write_csv(
        shop / "products.csv",
        [product("A1"), product("A1"), product("x/y"), product("Ok")],
    )
    found = problems(recipe(shop, PACK))
    assert [(p.line, p.field) for p in found] == [(3, "sku"), (4, "sku")]
    assert "duplicate id 'A1'" in found[0].message
    assert "path separator" in found[1].message


def test_chain_ref_to_a_job_the_row_does_not_make(shop: Path) -> None:
    body = PACK.replace("@{sku}-white_bg", "@{sku}-whitebg")
    found = problems(recipe(shop, body))
    assert len(found) == 2
    assert found[0].line == 2
    assert "@A1-whitebg is not a job of this row" in found[0].message
    assert "A1-white_bg" in found[0].message


def test_chain_ref_to_itself(shop: Path) -> None:
    body = PACK.replace("@{sku}-white_bg", "@{sku}-scene")
    assert "its own output" in problems(recipe(shop, body))[0].message


def test_chain_ref_elsewhere_is_left_to_the_run(shop: Path) -> None:
    body = PACK.replace("@{sku}-white_bg", "@brand-{brand}-backdrop")
    jobs = {j["id"]: j for j in expand(recipe(shop, body))}
    assert jobs["A1-scene"]["images"] == ["@brand-Acme-backdrop"]


@pytest.mark.parametrize(
    ("body", "field", "needle"),
    [
        (PACK.replace('"white_bg"', '"nope"', 1), "pack.white_bg.template", "unknown template"),
        (PACK + '\n[matrix]\nseason = ["a b"]\n', "matrix.season", "cannot be part of a job id"),
        (PACK.replace("[pack]", 'sizes = ["ebay"]\n[pack]'), "sizes[0]", "unknown size 'ebay'"),
        (PACK.replace("[pack]", 'aspect_ratio = "7:1"\n[pack]'), "aspect_ratio", "not one of"),
        (PACK.replace("[pack]", "variants = 0\n[pack]"), "variants", "between 1 and"),
        (PACK.replace('images = ["{photo}"]', ""), "pack.white_bg.images", "reference photo"),
        (PACK.replace("[pack]", 'template = "sticker"\n[pack]'), "pack", "not both"),
        (PACK.replace("[pack]", 'style = "white_bg"\n[pack]'), "style", "not a style preset"),
        (PACK.replace("[pack]", 'shets = "x"\n[pack]'), "shets", "unknown key"),
        (PACK + '\n[matrix]\ntags = "x"\n', "matrix.tags", "move it above the first"),
        (PACK + 'sizes = ["amazon"]\n', "pack.sizes", "move it above the first [table]"),
        (PACK.replace('"products.csv"', '"gone.csv"'), "sheet", "not found"),
        (PACK.replace('detail = "detail"', "detail = { tags = [] }"), "pack.detail", "needs a"),
        (PACK.replace('id = "{sku}"', 'id = "{sku!r}"'), "id", "plain field name"),
        ('sheet = "products.csv"\n', "pack", "nothing to make"),
    ],
)
def test_recipe_problems_name_the_key(shop: Path, body: str, field: str, needle: str) -> None:
    path = recipe(shop, body)
    found = problems(path)
    assert any(p.field == field and needle in p.message for p in found), found
    assert all(p.file == str(path) and p.line == 0 for p in found)


def test_recipe_problems_are_collected_together(shop: Path) -> None:
    body = PACK.replace('"white_bg"', '"nope"', 1).replace(
        "[pack]", 'sizes = ["ebay", "tiktok"]\n[pack]'
    )
    assert {p.field for p in problems(recipe(shop, body))} == {
        "pack.white_bg.template", "sizes[0]", "sizes[1]",
    }  # fmt: skip


def test_bad_toml(tmp_path: Path) -> None:
    found = problems(recipe(tmp_path, "sheet = \n"))
    assert "not valid TOML" in found[0].message


def test_user_templates_dir(shop: Path) -> None:
    (shop / "templates").mkdir()
    (shop / "templates" / "white_bg.toml").write_text(
        'version = 2\nedit = true\nprompt = "Create a photo of this {name}, ours"\n',
        encoding="utf-8",
    )
    body = PACK.replace("[pack]", 'templates_dir = "templates"\n[pack]')
    jobs = {j["id"]: j for j in expand(recipe(shop, body))}
    assert jobs["A1-white_bg"]["prompt"] == "Create a photo of this a1 mug, ours"
    assert "aspect_ratio" not in jobs["A1-white_bg"]


def test_empty_rows_are_skipped_and_extra_cells_reported(shop: Path) -> None:
    text = (shop / "products.csv").read_text(encoding="utf-8")
    text += ",,,,,\n" + ",".join(product("C3")) + ",surplus\n"
    (shop / "products.csv").write_text(text, encoding="utf-8")
    found = problems(recipe(shop, PACK))
    assert [(p.line, p.message) for p in found] == [
        (5, "1 more cell(s) than the header has columns")
    ]


def test_multiline_cell_keeps_the_row_start_line(shop: Path) -> None:
    write_csv(
        shop / "products.csv",
        [product("A1", features="line one\nline two"), product("B2", name="")],
    )
    found = problems(recipe(shop, PACK))
    assert [(p.line, p.field) for p in found] == [(4, "name")]


def test_unreadable_sheet_is_a_problem_not_a_crash(shop: Path) -> None:
    (shop / "products.csv").write_bytes("sku,name\nA1,caf\xe9\n".encode("latin-1"))
    found = problems(recipe(shop, PACK))
    assert any("not UTF-8" in p.message for p in found)


def test_tsv_sheet(shop: Path) -> None:
    lines = ["\t".join(COLUMNS), "\t".join(product("A1"))]
    (shop / "products.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    jobs = expand(recipe(shop, PACK.replace("products.csv", "products.tsv")))
    assert len(jobs) == 3


def test_parquet_sheet(shop: Path) -> None:
    import pandas as pd

    rows = [dict(zip(COLUMNS, product(sku), strict=True)) for sku in ("A1", "B2")]
    pd.DataFrame(rows).to_parquet(shop / "products.parquet")
    jobs = expand(recipe(shop, PACK.replace("products.csv", "products.parquet")))
    assert [j["id"] for j in jobs][:3] == ["A1-white_bg", "A1-scene", "A1-detail"]


# --------------------------------------------------------------------------- output


def test_write_expanded_round_trips_as_jsonl(shop: Path) -> None:
    dest = shop / "out" / "jobs.jsonl"
    path = recipe(shop, PACK)
    assert write_expanded(path, dest) == 6
    lines = dest.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == expand(path)
    assert sorted(os.listdir(dest.parent)) == ["jobs.jsonl"]  # no temp file left


def test_write_expanded_leaves_the_old_file_on_error(shop: Path) -> None:
    dest = shop / "jobs.jsonl"
    dest.write_text("old\n", encoding="utf-8")
    with pytest.raises(InputError):
        write_expanded(recipe(shop, PACK.replace('"white_bg"', '"nope"', 1)), dest)
    assert dest.read_text(encoding="utf-8") == "old\n"
    assert sorted(os.listdir(shop)) == ["jobs.jsonl", "photos", "products.csv", "recipe.toml"]


def test_expanded_file_is_a_valid_job_file(shop: Path) -> None:
    from batchgen.jobs import reader

    dest = shop / "jobs.jsonl"
    write_expanded(recipe(shop, PACK.replace("[pack]", 'sizes = ["amazon:fill"]\n[pack]')), dest)
    assert reader.validate([dest]) == 6
    jobs = list(reader.read_jobs([dest]))
    assert [j.id for j in jobs][:2] == ["A1-white_bg", "A1-scene"]
    assert jobs[1].images == ("@A1-white_bg",)
    assert jobs[0].sizes == ("amazon:fill",)


def _peak_memory(folder: Path, rows: int) -> int:
    write_csv(folder / "products.csv", [product(f"S{i:05d}") for i in range(rows)])
    path = recipe(folder, PACK)
    tracemalloc.start()
    try:
        count = sum(1 for _job in expand_recipe(path))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 3 * rows
    return peak


def test_memory_stays_flat_as_the_sheet_grows(tmp_path: Path) -> None:
    make_photo(tmp_path / "photos" / "mug.png")
    small, big = _peak_memory(tmp_path, 500), _peak_memory(tmp_path, 2000)
    # Only base ids are remembered (to catch duplicates), ~100 bytes a row;
    # holding the rows or the jobs would cost several KB a row.
    assert (big - small) / 1500 < 400
    assert big < 1024 * 1024


# --------------------------------------------------------------------------- samples and CLI


BRIEF_EXAMPLE = """
sheet = "products.csv"          # relative to the recipe
id = "{sku}"                    # id pattern for the base id
images = ["{photo}"]            # reference images (paths relative to the sheet); optional
style = "house_style"           # optional style preset appended to every prompt
sizes = ["amazon", "shopify", "instagram"]
tags = ["brand:{brand}", "line:{line}"]
[pack]                          # product pack: variant name -> template
white_bg = "white_bg"
scene = { template = "scene", images = ["@{sku}-white_bg"] }   # optional chain
detail = { template = "detail", aspect_ratio = "4:5" }
[matrix]                        # optional: one job per combination
season = ["summer", "winter"]
variants = 1                    # optional N distinct images per job
templates_dir = "templates"     # optional user template folder
"""


def test_the_schema_example_from_the_design_works_verbatim(tmp_path: Path) -> None:
    (tmp_path / "products.csv").write_bytes((SAMPLES / "products.csv").read_bytes())
    (tmp_path / "photos").mkdir()
    for photo in (SAMPLES / "photos").iterdir():
        (tmp_path / "photos" / photo.name).write_bytes(photo.read_bytes())
    (tmp_path / "templates").mkdir()
    jobs = {j["id"]: j for j in expand(recipe(tmp_path, BRIEF_EXAMPLE))}
    assert len(jobs) == 12 * 3 * 2
    job = jobs["MUG-001-detail-winter"]
    assert job["aspect_ratio"] == "4:5"
    assert job["tags"] == ["brand:Hearth & Co", "line:kitchen", "pack:detail", "season:winter"]
    assert "variant" not in job
    # The chain names the white_bg job without the season: it means the
    # white_bg of the same season.
    assert jobs["MUG-001-scene-summer"]["images"] == ["@MUG-001-white_bg-summer"]
    assert jobs["MUG-001-scene-winter"]["images"] == ["@MUG-001-white_bg-winter"]


def test_variants_below_a_table_are_read_as_the_recipes(shop: Path) -> None:
    body = 'sheet = "products.csv"\nid = "{sku}"\nprompt = "A {name}"\n[matrix]\n'
    body += 'season = ["summer"]\nvariants = 2\n'
    ids = [j["id"] for j in expand(recipe(shop, body))]
    assert ids == ["A1-summer-1", "A1-summer-2", "B2-summer-1", "B2-summer-2"]
    twice = body.replace('prompt = "A {name}"', 'prompt = "A {name}"\nvariants = 3')
    assert "set twice" in problems(recipe(shop, twice))[0].message


def test_sample_catalogue_expands_to_36_jobs() -> None:
    jobs = expand(SAMPLES / "catalogue.toml")
    assert len(jobs) == 36
    ids = [j["id"] for j in jobs]
    assert len(set(ids)) == 36
    with (SAMPLES / "products.csv").open(encoding="utf-8") as fh:
        skus = [row["sku"] for row in csv.DictReader(fh)]
    assert len(skus) == 12
    assert {f"{s}-{v}" for s in skus for v in ("white_bg", "scene", "detail")} == set(ids)
    for job in jobs:
        assert job["sizes"] == ["amazon", "shopify", "instagram"]
        for image in job["images"]:  # type: ignore[attr-defined]
            assert image.startswith("@") or (os.path.isabs(image) and os.path.isfile(image))
    scene = next(j for j in jobs if j["id"] == "MUG-001-scene")
    assert scene["images"] == ["@MUG-001-white_bg"]


def test_sample_photos_are_small_images() -> None:
    photos = sorted((SAMPLES / "photos").iterdir())
    assert len(photos) >= 12
    for photo in photos:
        assert photo.stat().st_size <= 30 * 1024
        with Image.open(photo) as image:
            assert image.format in ("PNG", "JPEG")


def test_sample_mascot_reuses_the_character_sheet() -> None:
    jobs = expand(SAMPLES / "mascot.toml")
    assert jobs[0]["id"] == "mascot-sheet"
    assert jobs[0]["images"] == []
    scenes = jobs[1:]
    assert len(scenes) == 20
    assert all(j["images"] == ["@mascot-sheet"] for j in scenes)
    assert all(any(str(t).startswith("scene:") for t in j["tags"]) for j in scenes)  # type: ignore[attr-defined]


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="batchgen")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def test_cli_expand_to_stdout(shop: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = recipe(shop, PACK)
    assert _cli(["expand", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == expand(path)


def test_cli_expand_to_file(shop: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = shop / "jobs.jsonl"
    assert _cli(["expand", str(recipe(shop, PACK)), "-o", str(dest)]) == 0
    assert "wrote 6 jobs" in capsys.readouterr().err
    assert len(dest.read_text(encoding="utf-8").splitlines()) == 6


def test_cli_expand_problems_exit_2(shop: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_csv(shop / "products.csv", [product("A1", name="")])
    assert _cli(["expand", str(recipe(shop, PACK))]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{shop / 'products.csv'}:2: [name]" in captured.err
    assert "nothing was sent" in captured.err
