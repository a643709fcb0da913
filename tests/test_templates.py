"""Prompt templates: built-ins, fields, rendering, user folders."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchgen.cli.expand import register
from batchgen.errors import UsageError
from batchgen.models import ASPECT_RATIOS
from batchgen.recipes.templates import (
    EmptyFieldError,
    MissingFieldError,
    Template,
    builtin_dir,
    list_templates,
    load_template,
    pattern_fields,
)

BUILTINS = {"white_bg", "scene", "detail", "logo_text", "sticker", "photoreal", "house_style"}
EDIT_BUILTINS = {"white_bg", "scene", "detail"}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- built-ins


def test_builtins_are_all_there_and_versioned() -> None:
    templates = {t.name: t for t in list_templates()}
    assert set(templates) == BUILTINS
    assert {p.stem for p in builtin_dir().glob("*.toml")} == BUILTINS
    for t in templates.values():
        assert t.version == 1
        assert t.description
        assert t.aspect_ratio is None or t.aspect_ratio in ASPECT_RATIOS
        assert t.path is not None
        assert t.path.parent == builtin_dir()


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_every_builtin_loads_and_renders(name: str) -> None:
    t = load_template(name)
    row = {field: f"<{field} value>" for field in t.fields}
    text = t.render(row)
    assert "{" not in text
    assert "}" not in text
    for field in t.fields:
        assert f"<{field} value>" in text


def test_expected_fields() -> None:
    assert load_template("white_bg").fields == ("name",)
    assert set(load_template("scene").fields) == {"name", "scene"}
    assert set(load_template("detail").fields) == {"name", "features"}
    assert "text" in load_template("logo_text").fields
    assert set(load_template("photoreal").fields) == {
        "shot", "subject", "action", "setting", "lighting", "lens", "mood",
    }  # fmt: skip


def test_edit_templates_ask_for_an_image() -> None:
    for name in EDIT_BUILTINS:
        t = load_template(name)
        assert t.edit is True
        # Phrased as a request for an image, not a bare instruction.
        assert t.prompt.startswith("Create a ")
        assert "reference image" in t.prompt
    for name in BUILTINS - EDIT_BUILTINS:
        assert load_template(name).edit is False


def test_white_bg_sets_a_square_aspect_ratio() -> None:
    assert load_template("white_bg").aspect_ratio == "1:1"


def test_sticker_mentions_white_background_and_outlines() -> None:
    prompt = load_template("sticker").prompt.lower()
    assert "white background" in prompt
    assert "outline" in prompt


def test_house_style_is_a_style_preset() -> None:
    t = load_template("house_style")
    assert t.kind == "style"
    assert t.prompt == ""
    assert t.style is not None
    assert "45-degree" in t.style
    assert t.render({}) == t.style


# --------------------------------------------------------------------------- rendering


def test_missing_field_names_the_field() -> None:
    t = load_template("scene")
    with pytest.raises(KeyError) as info:
        t.render({"name": "mug"})
    assert isinstance(info.value, MissingFieldError)
    assert info.value.field == "scene"
    assert "scene" in str(info.value)


@pytest.mark.parametrize("blank", ["", "   ", "\t"])
def test_empty_field_is_an_error(blank: str) -> None:
    with pytest.raises(ValueError, match="'name' is empty") as info:
        load_template("white_bg").render({"name": blank})
    assert isinstance(info.value, EmptyFieldError)
    assert info.value.field == "name"


def test_unused_values_are_fine() -> None:
    text = load_template("white_bg").render({"name": "mug", "price": "12", "sku": "A1"})
    assert "mug" in text
    assert "12" not in text


@pytest.mark.parametrize(
    "text",
    [
        "SALE! 50% OFF",
        "Hello, World.",
        "iPhone eBay McDonald's",
        "café — naïve “quotes” {braces}",
        "  two  spaces  ",
        "line one\nline two",
    ],
)
def test_text_is_inserted_verbatim(text: str) -> None:
    prompt = load_template("logo_text").render({"text": text, "subject": "a bakery"})
    assert f'"{text}"' in prompt


@given(st.text(min_size=1).filter(lambda s: s.strip() != ""))
def test_text_verbatim_for_any_string(text: str) -> None:
    t = load_template("logo_text")
    assert f'"{text}"' in t.render({"text": text, "subject": "x"})


def test_style_is_appended_as_its_own_sentence() -> None:
    style = load_template("house_style").style
    assert style is not None
    text = load_template("white_bg").render({"name": "mug"}, style=style)
    assert text.endswith(style)
    assert text.count(style) == 1
    plain = Template.inline("t", "A {name} on a table")
    assert plain.render({"name": "mug"}, style="Warm light.") == "A mug on a table. Warm light."
    assert plain.render({"name": "mug"}, style="{name} in focus") == (
        "A mug on a table. mug in focus"
    )


def test_literal_braces() -> None:
    t = Template.inline("t", "Print {{json}} for {name}")
    assert t.fields == ("name",)
    assert t.render({"name": "x"}) == "Print {json} for x"


@pytest.mark.parametrize(
    "pattern", ["{0}", "{}", "{a.b}", "{a[0]}", "{a:>10}", "{a!r}", "{a", "a}"]
)
def test_only_plain_field_names(pattern: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - both kinds of message are fine
        pattern_fields(pattern)


def test_fields_in_order_without_repeats() -> None:
    assert pattern_fields("{b} {a} {b} {c}") == ("b", "a", "c")


# --------------------------------------------------------------------------- user folders


def test_user_template_overrides_builtin(tmp_path: Path) -> None:
    write(
        tmp_path / "white_bg.toml",
        'version = 2\ndescription = "ours"\nedit = true\n'
        'prompt = "Create a photo of this {name} on white, from {angle}."\n',
    )
    write(tmp_path / "flatlay.toml", 'version = 1\nprompt = "A flat lay of {name}"\n')
    t = load_template("white_bg", tmp_path)
    assert t.version == 2
    assert t.fields == ("name", "angle")
    assert t.path == tmp_path / "white_bg.toml"
    listed = {t.name: t for t in list_templates(tmp_path)}
    assert set(listed) == BUILTINS | {"flatlay"}
    assert listed["white_bg"].description == "ours"
    assert listed["scene"].path is not None
    assert listed["scene"].path.parent == builtin_dir()
    # Without the folder, the built-in again.
    assert load_template("white_bg").version == 1


def test_load_by_path(tmp_path: Path) -> None:
    path = write(tmp_path / "my.toml", 'version = 3\nprompt = "Create a {thing}"\n')
    t = load_template(str(path))
    assert (t.name, t.version, t.fields) == ("my", 3, ("thing",))


def test_unknown_template_names_what_was_tried(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        load_template("nope", tmp_path)
    message = str(info.value)
    assert "'nope'" in message
    assert str(tmp_path / "nope.toml") in message
    assert str(builtin_dir() / "nope.toml") in message
    assert "white_bg" in message  # lists what exists


def test_missing_template_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        load_template(str(tmp_path / "gone.toml"))


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('prompt = "x {a}"\n', "'version'"),
        ('version = 0\nprompt = "x"\n', "'version'"),
        ('version = "1"\nprompt = "x"\n', "'version'"),
        ("version = 1\n", "non-empty 'prompt'"),
        ('version = 1\nprompt = "x {0}"\n', "plain field name"),
        ('version = 1\nprompt = "x"\naspect_ratio = "7:3"\n', "aspect_ratio"),
        ('version = 1\nprompt = "x"\nedit = "yes"\n', "'edit'"),
        ('version = 1\nprompt = "x"\npromt = "typo"\n', "unknown key"),
        ('version = 1\nkind = "style"\nprompt = "x"\n', "style"),
        ('version = 1\nkind = "banner"\nprompt = "x"\n', "'kind'"),
        ('version = 1\nname = "other"\nprompt = "x"\n', "does not match"),
        ("version = [1\n", "not valid TOML"),
    ],
)
def test_bad_template_files_are_usage_errors(tmp_path: Path, body: str, needle: str) -> None:
    path = write(tmp_path / "bad.toml", body)
    with pytest.raises(UsageError, match=needle) as info:
        load_template("bad", tmp_path)
    assert str(path) in str(info.value)


def test_list_with_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        list_templates(tmp_path / "nowhere")


# --------------------------------------------------------------------------- CLI


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="batchgen")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def test_cli_templates_list(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    write(tmp_path / "scene.toml", 'version = 5\ndescription = "mine"\nprompt = "A {x}"\n')
    assert _cli(["templates", "list", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in BUILTINS:
        assert name in out
    assert "v5  mine (user, overrides built-in)" in out


def test_cli_templates_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["templates", "show", "logo_text"]) == 0
    out = capsys.readouterr().out
    assert "logo_text  v1" in out
    assert '"{text}"' in out
    assert "fields: subject, text" in out


def test_cli_templates_show_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["templates", "show", "nope"]) == 2
    assert "unknown template 'nope'" in capsys.readouterr().err
