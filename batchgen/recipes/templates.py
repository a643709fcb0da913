"""Prompt templates: small versioned TOML files with a pattern and named fields.

Consumes a template name (or path) and a row of values; produces a prompt.
The expander (`batchgen.recipes.expand`) fills templates from the rows of a product
sheet; nothing here does network I/O.

A template file (``<name>.toml``; the file's stem is the template's name)::

    version = 1                       # required, an integer >= 1
    kind = "prompt"                   # "prompt" (default) or "style"
    description = "one line for `batchgen templates list`"
    edit = true                       # expects a reference photo (default false)
    aspect_ratio = "1:1"              # optional, one of the model's ratios
    prompt = "Create a photo of this {name} on a pure white background ..."

A *style* preset (``kind = "style"``) carries ``style = "..."`` instead of
``prompt``; its text is appended to other prompts (``render(row, style=...)``).

Fields are ``{name}`` placeholders, parsed with `string.Formatter`; ``{{`` and
``}}`` are literal braces. Only plain names are allowed (no ``{0}``, ``{a.b}``,
``{a:>10}``), and one filter, ``{name:slug}`` (`slug`: `AB/123 Crème` →
`ab-123-creme`), meant for ids made from SKUs. Values are otherwise inserted
exactly as given: ``{text}`` keeps its case, spacing and punctuation, which
matters for text the model must render.

Built-in templates live in ``batchgen/recipes/builtin_templates/``; a user folder
(``--dir`` / a recipe's ``templates_dir``) adds templates and overrides
built-ins of the same name.
"""

from __future__ import annotations

import re
import string
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from batchgen.errors import UsageError
from batchgen.models import ASPECT_RATIOS

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEYS = frozenset(
    {"name", "version", "kind", "description", "edit", "aspect_ratio", "prompt", "style"}
)
_SENTENCE_END = (".", "!", "?", "…")


class MissingFieldError(KeyError):
    """A field the template needs is not in the row."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field

    def __str__(self) -> str:
        return f"missing field {self.field!r}"


class SlugError(ValueError):
    """A value has no letter or digit left after `slug`."""

    def __init__(self, field: str, value: str) -> None:
        super().__init__(
            f"{field!r} ({value[:40]!r}) has no ASCII letter or digit to make a slug of"
        )
        self.field = field


def slug(text: str) -> str:
    """A value as an id part: NFKD (accents dropped), lower case, every run of
    characters other than ASCII letters and digits one `-`, none at either
    end. Safe on every file system, and the same on every machine."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return _SLUG_RUNS.sub("-", plain.lower()).strip("-")


_SLUG_RUNS = re.compile(r"[^a-z0-9]+")


class EmptyFieldError(ValueError):
    """A field the template needs is in the row but blank."""

    def __init__(self, field: str) -> None:
        super().__init__(f"field {field!r} is empty")
        self.field = field


def pattern_fields(pattern: str) -> tuple[str, ...]:
    """Field names used by `pattern`, in order of first use, without repeats.

    Raises `ValueError` for unbalanced braces and for anything but a plain
    name inside braces.
    """
    names: list[str] = []
    for _literal, field, spec, conversion in string.Formatter().parse(pattern):
        if field is None:
            continue
        if not _FIELD.match(field) or (spec and spec != "slug") or conversion:
            shown = "{" + field + (f"!{conversion}" if conversion else "")
            shown += (f":{spec}" if spec else "") + "}"
            raise ValueError(
                f"placeholder {shown} is not a plain field name;"
                " use {name} or {name:slug}, or {{ and }} for literal braces"
            )
        if field not in names:
            names.append(field)
    return tuple(names)


def fill_pattern(pattern: str, values: Mapping[str, str]) -> str:
    """Fill ``{field}`` placeholders with values, inserted verbatim.

    Raises `MissingFieldError` (a `KeyError`) for an absent field and
    `EmptyFieldError` (a `ValueError`) for a blank one.
    """
    out: list[str] = []
    for literal, field, spec, _conversion in string.Formatter().parse(pattern):
        out.append(literal)
        if field is None:
            continue
        if field not in values:
            raise MissingFieldError(field)
        value = values[field]
        if value is None or not str(value).strip():
            raise EmptyFieldError(field)
        if spec == "slug":
            made = slug(str(value))
            if not made:
                raise SlugError(field, str(value))
            out.append(made)
            continue
        out.append(str(value))
    return "".join(out)


def join_style(prompt: str, style: str) -> str:
    """Append a style sentence to a prompt, ending the prompt's sentence first."""
    prompt = prompt.rstrip()
    style = style.strip()
    if not style:
        return prompt
    if not prompt:
        return style
    if not prompt.endswith(_SENTENCE_END):
        prompt += "."
    return f"{prompt} {style}"


@dataclass(frozen=True)
class Template:
    """A parsed template. `fields` are the names its pattern needs, in order."""

    name: str
    version: int
    description: str
    prompt: str
    fields: tuple[str, ...]
    aspect_ratio: str | None = None
    edit: bool = False
    style: str | None = None
    kind: Literal["prompt", "style"] = "prompt"
    #: Where it was loaded from (None for templates built in code).
    path: Path | None = None

    @property
    def pattern(self) -> str:
        """The text that gets filled: the prompt, or a style preset's style."""
        return (self.style or "") if self.kind == "style" else self.prompt

    def render(self, row: Mapping[str, str], *, style: str | None = None) -> str:
        """Fill the pattern from `row`; append `style` (itself a pattern) if given.

        Raises `KeyError` for a missing field and `ValueError` for an empty one
        (`MissingFieldError` / `EmptyFieldError`, both with ``.field``).
        """
        text = fill_pattern(self.pattern, row)
        if style:
            text = join_style(text, fill_pattern(style, row))
        return text

    @classmethod
    def inline(
        cls, name: str, prompt: str, *, aspect_ratio: str | None = None, edit: bool = False
    ) -> Template:
        """A template written directly in a recipe (``prompt = "..."``)."""
        check_aspect_ratio(aspect_ratio)
        return cls(
            name=name,
            version=1,
            description="inline prompt",
            prompt=prompt,
            fields=pattern_fields(prompt),
            aspect_ratio=aspect_ratio,
            edit=edit,
        )


def check_aspect_ratio(value: object) -> None:
    if value is not None and value not in ASPECT_RATIOS:
        known = ", ".join(ASPECT_RATIOS)
        raise ValueError(f"aspect_ratio {value!r} is not one of {known}")


def builtin_dir() -> Path:
    """The folder of built-in templates shipped with the package."""
    return Path(__file__).resolve().parent / "builtin_templates"


def parse_template(path: Path) -> Template:
    """Read one template file. Raises `UsageError` naming the file."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise UsageError(f"template {path}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"template {path}: not valid TOML: {exc}") from exc
    try:
        return _from_mapping(path.stem, data, path)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"template {path}: {exc}") from exc


def _from_mapping(name: str, data: Mapping[str, object], path: Path | None) -> Template:
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_KEYS))}"
        )
    declared = data.get("name", name)
    if declared != name:
        raise ValueError(f"name {declared!r} does not match the file name {name!r}")
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a valid template name (letters, digits, _ . -)")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError("'version' must be an integer >= 1")
    kind = data.get("kind", "prompt")
    if kind not in ("prompt", "style"):
        raise ValueError(f"'kind' must be 'prompt' or 'style', not {kind!r}")
    description = _opt_str(data, "description") or ""
    aspect_ratio = _opt_str(data, "aspect_ratio")
    check_aspect_ratio(aspect_ratio)
    edit = data.get("edit", False)
    if not isinstance(edit, bool):
        raise TypeError("'edit' must be true or false")
    prompt = _opt_str(data, "prompt")
    style = _opt_str(data, "style")
    if kind == "prompt":
        if not prompt or not prompt.strip():
            raise ValueError("a prompt template needs a non-empty 'prompt'")
        if style is not None:
            raise ValueError("'style' belongs in a style preset (kind = \"style\")")
        fields = pattern_fields(prompt)
        return Template(
            name=name,
            version=version,
            description=description,
            prompt=prompt.strip(),
            fields=fields,
            aspect_ratio=aspect_ratio,
            edit=edit,
            path=path,
        )
    if not style or not style.strip():
        raise ValueError("a style preset needs a non-empty 'style'")
    if prompt is not None:
        raise ValueError("a style preset has 'style', not 'prompt'")
    fields = pattern_fields(style)
    return Template(
        name=name,
        version=version,
        description=description,
        prompt="",
        fields=fields,
        aspect_ratio=aspect_ratio,
        edit=edit,
        style=style.strip(),
        kind="style",
        path=path,
    )


def _opt_str(data: Mapping[str, object], key: str) -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{key!r} must be a string")


def _folder_templates(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.toml")) if p.is_file()}


def list_templates(user_dir: Path | None = None) -> list[Template]:
    """Built-in and user templates, sorted by name; a user's wins over a built-in."""
    if user_dir is not None and not user_dir.is_dir():
        raise UsageError(f"template folder {user_dir} does not exist")
    paths = _folder_templates(builtin_dir())
    if user_dir is not None:
        paths.update(_folder_templates(user_dir))
    return [parse_template(paths[name]) for name in sorted(paths)]


def load_template(name_or_path: str, user_dir: Path | None = None) -> Template:
    """Load a template by name (user folder first, then built-ins) or by path.

    A value ending in ``.toml`` or containing a path separator is a path.
    Raises `UsageError` naming every place that was tried.
    """
    if name_or_path.endswith(".toml") or "/" in name_or_path or "\\" in name_or_path:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise UsageError(f"template file {path} not found")
        return parse_template(path)
    if not _NAME.match(name_or_path):
        raise UsageError(f"{name_or_path!r} is not a valid template name")
    tried: list[str] = []
    for folder in ([user_dir] if user_dir is not None else []) + [builtin_dir()]:
        candidate = folder / f"{name_or_path}.toml"
        if candidate.is_file():
            return parse_template(candidate)
        tried.append(str(candidate))
    names = sorted(_folder_templates(builtin_dir()))
    if user_dir is not None:
        names = sorted(set(names) | set(_folder_templates(user_dir)))
    raise UsageError(
        f"unknown template {name_or_path!r} (tried {', '.join(tried)});"
        f" available: {', '.join(names)}"
    )
