"""Expand a recipe (TOML) and a product sheet into ordinary jobs.

Consumes a recipe file and the sheet it names (CSV, TSV, JSONL or parquet);
produces job dicts in the JSONL job-file format (``id``, ``prompt``,
``images``, ``aspect_ratio``, ``tags``, ``priority``, ``model``, ``variant``,
``sizes``). Everything is expanded before a run starts, so resume, retries,
reports and the budget treat these jobs like any others.

Recipe schema (top-level keys must come before the first ``[table]``; only
``variants`` and ``templates_dir`` are also understood below ``[pack]`` or
``[matrix]``, where they cannot be anything else)::

    sheet = "products.csv"      # optional; relative to the recipe. Without a sheet
                                # the recipe expands one row made of [vars].
    id = "{sku}"                # base id pattern (default "{id}")
    template = "white_bg"       # one job kind per row: a template name/path ...
    prompt = "A {name} ..."     # ... or an inline prompt (not both; or use [pack])
    images = ["{photo}"]        # reference images: paths relative to the sheet,
                                # or "@other-id" refs to another job's output
    style = "house_style"       # style preset (name/path) appended to every prompt,
                                # or { text = "..." } for an inline style
    sizes = ["amazon", "shopify", "instagram", "800x600:fill"]
    tags = ["brand:{brand}"]
    aspect_ratio = "1:1"        # default for all jobs (beats a template's own)
    priority = 0                # an int, or a pattern such as "{priority}"
    model = "gemini-2.5-flash-image"
    variants = 1                # N > 1: N distinct images, ids <id>-1..<id>-N
    templates_dir = "templates" # user templates folder, relative to the recipe

    [vars]                      # defaults for fields; a non-empty cell wins
    brand = "Acme"

    [pack]                      # product pack: one job per entry per row
    white_bg = "white_bg"                               # template name or path
    scene = { template = "scene", images = ["@{sku}-white_bg"] }  # chained edit
    detail = { template = "detail", aspect_ratio = "4:5" }
    closeup = { prompt = "Create a macro photo of this {name} ..." }

    [matrix]                    # one job per combination of values
    season = ["summer", "winter"]                  # value = id part = tag value
    persona = { teen = "a teenager", pro = "a professional chef" }  # slug = text

    [[jobs]]                    # literal jobs emitted once, before the rows
    id = "mascot-sheet"
    template = "sticker"        # or prompt = "..."
    fields = { subject = "..." }

A pack entry (or a ``[[jobs]]`` entry) may set ``template``/``prompt``,
``images`` (replaces the recipe's), ``tags`` (added to the recipe's),
``aspect_ratio``, ``sizes``, ``variants``, ``priority``, ``model`` and
``style`` (``""`` turns the recipe's style off); unset keys inherit the
recipe's. Aspect ratio: entry, then recipe, then the template's own.

Ids: ``<base>`` then ``-<pack entry>`` then ``-<matrix slugs joined by ->``
then ``-<n>`` for variants (only when ``variants > 1``; the job's ``variant``
field is then ``n``). Tags: the recipe's and entry's tags, ``pack:<entry>``,
and ``<matrix key>:<slug>`` per combination, so cost per campaign falls out
of the report. Matrix values are also fields: ``{persona}`` is the value
("a professional chef"), ``{persona_slug}`` the slug ("chef"; the same as the
value for a list). ``{id}`` is the row's base id. Inside a matrix, a chain
ref that names one of the row's pack jobs without the matrix part
(``@{sku}-white_bg``) means the same combination's job
(``@<sku>-white_bg-winter``); spell it out (``@{id}-white_bg-{season_slug}``)
to pick another combination.

Validation: a first pass reads the whole sheet and collects *every* problem
(missing column, empty field, unknown template or size, missing photo, bad
id, duplicate id, a chain ref to a job this row does not make) without
holding rows; `expand_recipe` raises `InputError` with all of them before
returning. The second pass streams jobs row by row, so memory stays flat for
a 50,000-row sheet (only base ids are remembered, to catch duplicates). A
CSV's missing column is reported once, at the header (line 1); an empty cell
is reported at the row's line, with the column as the field. Rows whose cells
are all empty are skipped. Parquet rows are numbered from 1.
"""

from __future__ import annotations

import argparse
import csv
import functools
import itertools
import json
import os
import re
import sys
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import InputError, InputProblem, UsageError
from .reader import validate_id
from .sizes import parse_size
from .templates import (
    EmptyFieldError,
    MissingFieldError,
    Template,
    builtin_dir,
    check_aspect_ratio,
    fill_pattern,
    join_style,
    list_templates,
    load_template,
    pattern_fields,
)

__all__ = ["expand_recipe", "register", "write_expanded"]

MAX_PROBLEMS = 1000
MAX_VARIANTS = 100

_ENTRY_KEYS = frozenset(("template", "prompt", "images", "style", "sizes", "tags"))
_ENTRY_KEYS |= {"aspect_ratio", "priority", "model", "variants"}
_RECIPE_KEYS = _ENTRY_KEYS | {"sheet", "id", "templates_dir", "vars", "pack", "matrix", "jobs"}
_STATIC_KEYS = _ENTRY_KEYS | {"id", "fields"}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class _Settings:
    """What a pack entry or a [[jobs]] entry inherits from the recipe."""

    style: str | None = None
    images: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    sizes: tuple[str, ...] = ()
    aspect_ratio: str | None = None
    variants: int = 1
    priority: int | str = 0
    model: str | None = None


@dataclass(frozen=True)
class _Spec:
    """One kind of job made from every row (a pack entry, or the recipe itself)."""

    where: str
    suffix: str | None
    template: Template
    style: str | None
    images: tuple[str, ...]
    aspect_ratio: str | None
    tags: tuple[str, ...]
    sizes: tuple[str, ...]
    variants: int
    priority: int | str
    model: str | None

    def fields(self) -> dict[str, str]:
        """Field name -> where it is needed."""
        used: dict[str, str] = {}
        for name in self.template.fields:
            used.setdefault(name, f"{self.where} template {self.template.name!r}")
        patterns = [self.style or "", *self.images, *self.tags]
        if isinstance(self.priority, str):
            patterns.append(self.priority)
        for pattern in patterns:
            for name in pattern_fields(pattern):
                used.setdefault(name, self.where)
        return used


@dataclass(frozen=True)
class _Static:
    id: str
    spec: _Spec
    values: dict[str, str]


@dataclass
class _Recipe:
    path: Path
    sheet: Path | None
    id_pattern: str
    specs: tuple[_Spec, ...]
    matrix: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]
    vars: dict[str, str]
    statics: tuple[_Static, ...]
    needed: dict[str, str] = field(default_factory=dict)

    def combos(self) -> list[tuple[tuple[str, str, str], ...]]:
        """Every matrix combination as ((key, slug, value), ...); one empty combo if none."""
        axes = [[(key, slug, value) for slug, value in values] for key, values in self.matrix]
        return [tuple(c) for c in itertools.product(*axes)]


# --------------------------------------------------------------------------- public API


def expand_recipe(path: Path) -> Iterator[dict[str, object]]:
    """Validate the recipe and its whole sheet, then return a stream of job dicts.

    Raises `InputError` carrying every problem before anything is returned
    (file = recipe or sheet, line = the sheet row's line, field = the column).
    """
    recipe = _load_recipe(Path(path))
    problems: list[InputProblem] = []
    for _job in _Expander(recipe, problems).run():
        if len(problems) >= MAX_PROBLEMS:
            break
    if problems:
        if len(problems) >= MAX_PROBLEMS:
            problems.append(
                InputProblem(str(recipe.path), 0, "", "stopped checking after too many problems")
            )
        raise InputError(problems)
    return _stream(recipe)


def write_expanded(recipe: Path, dest: Path) -> int:
    """Write the expanded jobs to `dest` as JSONL, atomically; return the job count."""
    jobs = expand_recipe(recipe)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            for job in jobs:
                fh.write(json.dumps(job, ensure_ascii=False) + "\n")
                count += 1
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, dest)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return count


def _stream(recipe: _Recipe) -> Iterator[dict[str, object]]:
    problems: list[InputProblem] = []
    yield from _Expander(recipe, problems).run()
    if problems:  # the sheet changed between the two passes
        raise InputError(problems)


# --------------------------------------------------------------------------- recipe


def _load_recipe(path: Path) -> _Recipe:
    where = str(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise InputError([InputProblem(where, 0, "", f"cannot read recipe: {exc}")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError([InputProblem(where, 0, "", f"not valid TOML: {exc}")]) from exc
    loader = _RecipeLoader(path, data)
    recipe = loader.load()
    if loader.problems or recipe is None:
        raise InputError(loader.problems)
    return recipe


class _RecipeLoader:
    """Turns the recipe's TOML into a `_Recipe`, collecting every problem."""

    def __init__(self, path: Path, data: dict[str, object]) -> None:
        self.path = path
        self.base = path.parent
        self.data = data
        self.problems: list[InputProblem] = []
        self.templates_dir: Path | None = None

    def problem(self, key: str, message: str) -> None:
        self.problems.append(InputProblem(str(self.path), 0, key, message))

    def load(self) -> _Recipe | None:
        data = self.data
        self.hoist_settings()
        for key in sorted(set(data) - _RECIPE_KEYS):
            self.problem(key, f"unknown key; allowed: {', '.join(sorted(_RECIPE_KEYS))}")

        tdir = self.opt_str(data, "templates_dir")
        if tdir is not None:
            self.templates_dir = self.base / tdir
            if not self.templates_dir.is_dir():
                self.problem("templates_dir", f"folder {self.templates_dir} does not exist")
                self.templates_dir = None

        sheet_value = self.opt_str(data, "sheet")
        sheet = self.base / sheet_value if sheet_value else None
        if sheet is not None and not sheet.is_file():
            self.problem("sheet", f"sheet {sheet} not found")
        if sheet is not None and _sheet_kind(sheet) is None:
            self.problem("sheet", "use a .csv, .tsv, .jsonl or .parquet sheet")

        id_pattern = self.opt_str(data, "id") or "{id}"
        self.check_pattern("id", id_pattern)

        variables: dict[str, str] = {}
        raw_vars = data.get("vars", {})
        if not isinstance(raw_vars, dict):
            self.problem("vars", "must be a table of name = value")
        else:
            for name, value in raw_vars.items():
                text = _cell(value)
                if not _FIELD_NAME.match(name):
                    self.problem(f"vars.{name}", "not a valid field name")
                variables[name] = text

        defaults = self.entry_settings(data, "recipe", _Settings())
        specs: list[_Spec] = []
        pack = data.get("pack")
        has_single = "template" in data or "prompt" in data
        if pack is not None:
            if has_single:
                self.problem("pack", "use either [pack] or a top-level template/prompt, not both")
            if not isinstance(pack, dict) or not pack:
                self.problem("pack", "must be a table of variant = template or { ... }")
            else:
                for name, entry in pack.items():
                    where = f"pack.{name}"
                    if not _NAME.match(name):
                        self.problem(where, "variant names are letters, digits and _ . -")
                    if isinstance(entry, str):
                        entry = {"template": entry}
                    if not isinstance(entry, dict):
                        message = "must be a template name or a table { template = ... }"
                        self.problem(where, message + _top_level_hint(name))
                        continue
                    self.check_keys(entry, _ENTRY_KEYS, where)
                    settings = self.entry_settings(entry, where, defaults)
                    spec = self.make_spec(entry, where, settings, suffix=name)
                    if spec is not None:
                        specs.append(spec)
        elif has_single:
            spec = self.make_spec(data, "recipe", defaults, suffix=None)
            if spec is not None:
                specs.append(spec)
        elif not has_single and "jobs" not in data:
            self.problem("pack", "nothing to make: add [pack], template, prompt or [[jobs]]")

        matrix = self.load_matrix(data.get("matrix"))
        statics = self.load_statics(data.get("jobs"), defaults, variables)
        if self.problems:
            return None
        recipe = _Recipe(
            path=self.path,
            sheet=sheet,
            id_pattern=id_pattern,
            specs=tuple(specs),
            matrix=matrix,
            vars=variables,
            statics=statics,
        )
        matrix_keys = {key for key, _values in matrix} | {f"{key}_slug" for key, _v in matrix}
        needed = {name: "id" for name in pattern_fields(id_pattern)}
        for spec in specs:
            for name, user in spec.fields().items():
                needed.setdefault(name, user)
        recipe.needed = {k: v for k, v in needed.items() if k not in matrix_keys and k != "id"}
        if "id" in pattern_fields(id_pattern):
            recipe.needed["id"] = "id"
        return recipe

    # -- pieces

    def hoist_settings(self) -> None:
        """Read ``variants = N`` and ``templates_dir = "..."`` written below
        [pack] or [matrix] as the recipe's own: in TOML they land inside that
        table, yet as a scalar they cannot be a pack entry or a matrix axis."""
        for table_name in ("pack", "matrix"):
            table = self.data.get(table_name)
            if not isinstance(table, dict):
                continue
            for key, kind in (("variants", int), ("templates_dir", str)):
                if key in table and isinstance(table[key], kind):
                    if key in self.data:
                        self.problem(f"{table_name}.{key}", f"{key!r} is set twice")
                    self.data[key] = table.pop(key)

    def entry_settings(
        self, entry: Mapping[str, object], where: str, defaults: _Settings
    ) -> _Settings:
        """Settings of an entry; unset keys inherit from `defaults` (tags add up)."""
        style = defaults.style
        if "style" in entry:
            style = self.load_style(entry["style"], _key(where, "style"))
        images = defaults.images
        if "images" in entry:
            images = self.str_list(entry, "images", where)
        tags = defaults.tags + self.str_list(entry, "tags", where)
        sizes = self.load_sizes(entry, where) if "sizes" in entry else defaults.sizes
        aspect_ratio = defaults.aspect_ratio
        if "aspect_ratio" in entry:
            aspect_ratio = self.opt_str(entry, "aspect_ratio", where)
            try:
                check_aspect_ratio(aspect_ratio)
            except ValueError as exc:
                self.problem(_key(where, "aspect_ratio"), str(exc))
        variants = defaults.variants
        if "variants" in entry:
            value = entry["variants"]
            if not isinstance(value, int) or isinstance(value, bool):
                self.problem(_key(where, "variants"), "must be an integer")
            elif not 1 <= value <= MAX_VARIANTS:
                self.problem(_key(where, "variants"), f"must be between 1 and {MAX_VARIANTS}")
            else:
                variants = value
        priority = defaults.priority
        if "priority" in entry:
            raw = entry["priority"]
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                self.problem(_key(where, "priority"), "must be an integer or a pattern")
            else:
                priority = raw
                if isinstance(raw, str):
                    self.check_pattern(_key(where, "priority"), raw)
        model = self.opt_str(entry, "model", where) if "model" in entry else defaults.model
        for index, pattern in enumerate(images):
            self.check_pattern(f"{_key(where, 'images')}[{index}]", pattern)
        for index, pattern in enumerate(tags):
            self.check_pattern(f"{_key(where, 'tags')}[{index}]", pattern)
        return _Settings(style, images, tags, sizes, aspect_ratio, variants, priority, model)

    def make_spec(
        self, entry: Mapping[str, object], where: str, settings: _Settings, *, suffix: str | None
    ) -> _Spec | None:
        """Attach the entry's template to its settings, checking they fit together."""
        before = len(self.problems)
        template = self.entry_template(entry, where)
        if template is None:
            return None
        if template.kind == "style":
            self.problem(_key(where, "template"), f"{template.name!r} is a style preset; use style")
            return None
        if template.edit and not settings.images:
            self.problem(
                _key(where, "images"),
                f"template {template.name!r} edits a reference photo: give the job images",
            )
        if len(self.problems) > before:
            return None
        return _Spec(
            where=where,
            suffix=suffix,
            template=template,
            style=settings.style,
            images=settings.images,
            aspect_ratio=settings.aspect_ratio or template.aspect_ratio,
            tags=settings.tags,
            sizes=settings.sizes,
            variants=settings.variants,
            priority=settings.priority,
            model=settings.model,
        )

    def entry_template(self, entry: Mapping[str, object], where: str) -> Template | None:
        has_t, has_p = "template" in entry, "prompt" in entry
        if has_t and has_p:
            self.problem(where, "give template or prompt, not both")
            return None
        if has_p:
            prompt = entry["prompt"]
            if not isinstance(prompt, str) or not prompt.strip():
                self.problem(_key(where, "prompt"), "must be a non-empty string")
                return None
            try:
                return Template.inline(f"{where}.prompt", prompt.strip())
            except ValueError as exc:
                self.problem(_key(where, "prompt"), str(exc))
                return None
        if has_t:
            name = entry["template"]
            if not isinstance(name, str):
                self.problem(_key(where, "template"), "must be a template name or path")
                return None
            return self.find_template(name, _key(where, "template"))
        self.problem(where, "needs a template or a prompt")
        return None

    def find_template(self, name: str, key: str) -> Template | None:
        if name.endswith(".toml") or "/" in name or "\\" in name:
            name = str(self.base / Path(name).expanduser())
        try:
            return load_template(name, self.templates_dir)
        except UsageError as exc:
            self.problem(key, str(exc))
            return None

    def load_style(self, value: object, key: str) -> str | None:
        if value == "" or value is False:
            return None
        if isinstance(value, dict):
            text = value.get("text")
            if set(value) != {"text"} or not isinstance(text, str) or not text.strip():
                self.problem(key, 'an inline style is { text = "..." }')
                return None
            self.check_pattern(key, text)
            return text.strip()
        if not isinstance(value, str):
            self.problem(key, "must be a style preset name, a path or { text = ... }")
            return None
        template = self.find_template(value, key)
        if template is None:
            return None
        if template.kind != "style":
            self.problem(key, f"template {template.name!r} is not a style preset")
            return None
        return template.style

    def load_sizes(self, entry: Mapping[str, object], where: str) -> tuple[str, ...]:
        out: list[str] = []
        for index, spec in enumerate(self.str_list(entry, "sizes", where)):
            try:
                canonical = parse_size(spec).spec
            except ValueError as exc:
                self.problem(f"{_key(where, 'sizes')}[{index}]", str(exc))
                continue
            if canonical not in out:
                out.append(canonical)
        return tuple(out)

    def load_matrix(self, raw: object) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
        if raw is None:
            return ()
        if not isinstance(raw, dict):
            self.problem("matrix", "must be a table of name = [values]")
            return ()
        axes: list[tuple[str, tuple[tuple[str, str], ...]]] = []
        for key, values in raw.items():
            where = f"matrix.{key}"
            if not _FIELD_NAME.match(key) or key == "id":
                self.problem(where, "matrix keys are field names (letters, digits, _), not 'id'")
                continue
            pairs: list[tuple[str, str]] = []
            if isinstance(values, list):
                pairs = [(_cell(v), _cell(v)) for v in values]
            elif isinstance(values, dict):
                pairs = [(str(slug), _cell(v)) for slug, v in values.items()]
            else:
                message = "must be a list of values or a table of slug = value"
                self.problem(where, message + _top_level_hint(key))
                continue
            if not pairs:
                self.problem(where, "needs at least one value")
            slugs = [slug for slug, _value in pairs]
            for slug, value in pairs:
                if not _NAME.match(slug):
                    self.problem(
                        where,
                        f"{slug!r} cannot be part of a job id (letters, digits, _ . -);"
                        " use a table of slug = value",
                    )
                elif not value.strip():
                    self.problem(where, f"value for {slug!r} is empty")
            if len(set(slugs)) != len(slugs):
                self.problem(where, "values repeat")
            axes.append((key, tuple(pairs)))
        return tuple(axes)

    def load_statics(
        self, raw: object, defaults: _Settings, variables: dict[str, str]
    ) -> tuple[_Static, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.problem("jobs", "use [[jobs]] tables")
            return ()
        statics: list[_Static] = []
        seen: set[str] = set()
        for index, entry in enumerate(raw):
            where = f"jobs[{index}]"
            if not isinstance(entry, dict):
                self.problem(where, "must be a table")
                continue
            self.check_keys(entry, _STATIC_KEYS, where)
            fields_raw = entry.get("fields", {})
            values = dict(variables)
            if isinstance(fields_raw, dict):
                values.update({k: _cell(v) for k, v in fields_raw.items()})
            else:
                self.problem(f"{where}.fields", "must be a table of name = value")
            # [[jobs]] entries inherit everything but the rows' images.
            settings = self.entry_settings(entry, where, replace(defaults, images=()))
            spec = self.make_spec(entry, where, settings, suffix=None)
            id_pattern = self.opt_str(entry, "id", where)
            if not id_pattern:
                self.problem(f"{where}.id", "a job needs an id")
                continue
            if spec is None:
                continue
            try:
                job_id = fill_pattern(id_pattern, values)
            except (KeyError, ValueError) as exc:
                self.problem(f"{where}.id", _field_message(exc))
                continue
            bad = _id_problem(job_id)
            if bad:
                self.problem(f"{where}.id", bad)
            if job_id in seen:
                self.problem(f"{where}.id", f"duplicate id {job_id!r}")
            seen.add(job_id)
            statics.append(_Static(job_id, spec, values))
        return tuple(statics)

    # -- small checks

    def check_keys(self, entry: Mapping[str, object], allowed: frozenset[str], where: str) -> None:
        for key in sorted(set(entry) - allowed):
            self.problem(f"{where}.{key}", f"unknown key; allowed: {', '.join(sorted(allowed))}")

    def check_pattern(self, key: str, pattern: str) -> None:
        try:
            pattern_fields(pattern)
        except ValueError as exc:
            self.problem(key, str(exc))

    def opt_str(self, data: Mapping[str, object], key: str, where: str = "") -> str | None:
        value = data.get(key)
        if value is None or isinstance(value, str):
            return value
        self.problem(_key(where, key), "must be a string")
        return None

    def str_list(self, data: Mapping[str, object], key: str, where: str) -> tuple[str, ...]:
        value = data.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(_key(where, key), "must be a list of strings")
            return ()
        return tuple(value)


def _key(where: str, key: str) -> str:
    return key if where in ("", "recipe") else f"{where}.{key}"


def _top_level_hint(key: str) -> str:
    """TOML puts keys written after [pack] or [matrix] inside that table."""
    if key in _RECIPE_KEYS:
        return f"; to set the recipe's {key!r}, move it above the first [table]"
    return ""


# --------------------------------------------------------------------------- sheets


def _sheet_kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(
        suffix, "parquet" if suffix in (".parquet", ".pq") else None
    )


def _cell(value: object) -> str:
    """A sheet or TOML value as the text a pattern receives."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value != value:  # NaN: an empty parquet cell
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


@dataclass
class _Row:
    line: int
    values: dict[str, str]
    problem: str = ""


def _csv_columns(path: Path, delimiter: str) -> list[str] | None:
    """The header's column names; None if unreadable (the row pass says why)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            header = next(csv.reader(fh, delimiter=delimiter), [])
    except (csv.Error, OSError, ValueError):
        return None
    return [name.strip() for name in header]


def _read_rows(path: Path) -> Iterator[_Row]:
    """Stream rows with their line numbers; never loads the whole sheet.

    A sheet that cannot be read to the end becomes a last row carrying the
    problem (line 0: the reader does not know where it stopped)."""
    kind = _sheet_kind(path)
    try:
        if kind in ("csv", "tsv"):
            yield from _read_csv(path, "\t" if kind == "tsv" else ",")
        elif kind == "jsonl":
            yield from _read_jsonl(path)
        else:
            yield from _read_parquet(path)
    except UnicodeDecodeError:
        yield _Row(0, {}, 'the sheet is not UTF-8 text; save it as UTF-8 ("CSV UTF-8")')
    except (csv.Error, OSError, ValueError) as exc:
        yield _Row(0, {}, f"cannot read the sheet: {exc}")


def _read_csv(path: Path, delimiter: str) -> Iterator[_Row]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        header = [name.strip() for name in next(reader, [])]
        last = reader.line_num
        for cells in reader:
            line, last = last + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            values = {name: cell for name, cell in zip(header, cells, strict=False) if name}
            extra = len(cells) - len(header)
            problem = f"{extra} more cell(s) than the header has columns" if extra > 0 else ""
            yield _Row(line, values, problem)


def _read_jsonl(path: Path) -> Iterator[_Row]:
    with path.open(encoding="utf-8-sig") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield _Row(line_no, {}, f"not valid JSON: {exc.msg}")
                continue
            if not isinstance(obj, dict):
                yield _Row(line_no, {}, "each line must be a JSON object")
                continue
            yield _Row(line_no, {str(k): _cell(v) for k, v in obj.items()})


def _read_parquet(path: Path) -> Iterator[_Row]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=2048):
        for record in batch.to_pylist():
            number += 1
            yield _Row(number, {str(k): _cell(v) for k, v in record.items()})


# --------------------------------------------------------------------------- expansion


@dataclass(frozen=True)
class _Where:
    file: str
    line: int

    def at(self, field: str, message: str) -> InputProblem:
        return InputProblem(self.file, self.line, field, message)


Combo = tuple[tuple[str, str, str], ...]


class _Expander:
    """Turns a recipe's rows into jobs. Problems are appended, never raised, so
    the same code serves the validation pass and the streaming pass."""

    def __init__(self, recipe: _Recipe, problems: list[InputProblem]) -> None:
        self.recipe = recipe
        self.problems = problems
        self.static_ids = {static.id for static in recipe.statics}
        self.combos = recipe.combos()
        # Many rows share a photo: remember recent answers, within a fixed size.
        self.is_file = functools.lru_cache(maxsize=4096)(os.path.isfile)

    def run(self) -> Iterator[dict[str, object]]:
        recipe = self.recipe
        here = _Where(str(recipe.path), 0)
        for static in recipe.statics:
            yield from self.jobs(
                static.spec, static.id, static.values, (), here, recipe.path.parent
            )
        if not recipe.specs:
            return
        if recipe.sheet is None:  # no sheet: one row made of [vars]
            yield from self.row_jobs(_Row(0, {}), here, recipe.path.parent, set(), set())
            return
        file = str(recipe.sheet)
        missing = self.missing_columns(recipe.sheet)
        seen: set[str] = set()
        for row in _read_rows(recipe.sheet):
            yield from self.row_jobs(
                row, _Where(file, row.line), recipe.sheet.parent, missing, seen
            )

    def missing_columns(self, sheet: Path) -> set[str]:
        """Needed columns a CSV/TSV header lacks, each reported once at line 1."""
        kind = _sheet_kind(sheet)
        if kind not in ("csv", "tsv"):
            return set()
        header = _csv_columns(sheet, "\t" if kind == "tsv" else ",")
        if header is None:
            return set()
        columns = set(header)
        missing: set[str] = set()
        for name, user in self.recipe.needed.items():
            if name not in columns and name not in self.recipe.vars:
                missing.add(name)
                message = f"column {name!r} is missing (needed by {user})"
                self.problems.append(InputProblem(str(sheet), 1, name, message))
        return missing

    def row_jobs(
        self, row: _Row, where: _Where, base: Path, missing: set[str], seen: set[str]
    ) -> Iterator[dict[str, object]]:
        recipe = self.recipe
        if row.problem:
            self.problems.append(where.at("", row.problem))
            return
        values = dict(recipe.vars)
        values.update({k: v for k, v in row.values.items() if v.strip() or k not in values})
        bad: set[str] = set()
        for name, user in recipe.needed.items():
            if name in missing:
                bad.add(name)
            elif name not in values:
                self.problems.append(
                    where.at(name, f"field {name!r} is missing (needed by {user})")
                )
                bad.add(name)
            elif not values[name].strip():
                self.problems.append(where.at(name, f"{name!r} is empty (needed by {user})"))
                bad.add(name)
        # Stand-ins let the rest of the row be checked; a bad row yields no job.
        values.update({name: name for name in bad})
        base_id = fill_pattern(recipe.id_pattern, values)
        id_fields = _fields(recipe.id_pattern)
        if not bad & set(id_fields):
            id_field = id_fields[0] if len(id_fields) == 1 else "id"
            problem = _id_problem(base_id)
            if not problem and (base_id in seen or base_id in self.static_ids):
                problem = f"duplicate id {base_id!r}"
            if problem:
                self.problems.append(where.at(id_field, problem))
                return
            if row.line:
                seen.add(base_id)
        values["id"] = base_id
        own = (base_id, set(self.row_ids(base_id)))
        for spec in recipe.specs:
            job_base = f"{base_id}-{spec.suffix}" if spec.suffix else base_id
            for combo in self.combos:
                yield from self.jobs(spec, job_base, values, combo, where, base, own, bad)

    def row_ids(self, base_id: str) -> Iterator[str]:
        for spec in self.recipe.specs:
            job_base = f"{base_id}-{spec.suffix}" if spec.suffix else base_id
            for combo in self.combos:
                yield from _variant_ids(_combo_id(job_base, combo), spec.variants)

    def jobs(
        self,
        spec: _Spec,
        job_base: str,
        row_values: Mapping[str, str],
        combo: Combo,
        where: _Where,
        base: Path,
        own: tuple[str, set[str]] | None = None,
        bad: set[str] | frozenset[str] = frozenset(),
    ) -> Iterator[dict[str, object]]:
        """The jobs of one spec for one row and matrix combination."""
        values = dict(row_values)
        for key, slug, value in combo:
            values[key] = value
            values[f"{key}_slug"] = slug
        job_id = _combo_id(job_base, combo)
        count = len(self.problems)

        def fill(pattern: str, default_field: str) -> str | None:
            try:
                return fill_pattern(pattern, values).strip()
            except (KeyError, ValueError) as exc:
                field = str(getattr(exc, "field", "")) or default_field
                self.problems.append(where.at(field, _field_message(exc, spec.where)))
                return None

        prompt = fill(spec.template.pattern, "prompt")
        if prompt is not None and spec.style:
            style = fill(spec.style, "style")
            prompt = join_style(prompt, style or "")
        images: list[str] = []
        for pattern in spec.images:
            text = fill(pattern, "images")
            if text is None or bad & set(_fields(pattern)):
                continue
            problem, image = self.image(text, job_id, base, own, combo)
            if problem:
                self.problems.append(where.at(_one_field(pattern, "images"), problem))
            images.append(image)
        tags = [tag for tag in (fill(pattern, "tags") for pattern in spec.tags) if tag]
        if spec.suffix:
            tags.append(f"pack:{spec.suffix}")
        tags.extend(f"{key}:{slug}" for key, slug, _value in combo)
        priority = spec.priority
        if isinstance(spec.priority, str):
            text = fill(spec.priority, "priority")
            if text is not None and not bad & set(_fields(spec.priority)):
                try:
                    priority = int(text)
                except ValueError:
                    message = f"priority must be a whole number, got {text!r:.40}"
                    self.problems.append(where.at(_one_field(spec.priority, "priority"), message))
        if len(self.problems) > count or bad or prompt is None or isinstance(priority, str):
            return
        unique_tags = list(dict.fromkeys(tags))
        for n, variant_id in enumerate(_variant_ids(job_id, spec.variants), start=1):
            problem = _id_problem(variant_id)
            if problem:
                self.problems.append(where.at("id", problem))
                return
            job: dict[str, object] = {"id": variant_id, "prompt": prompt, "images": list(images)}
            if spec.aspect_ratio:
                job["aspect_ratio"] = spec.aspect_ratio
            job["tags"] = unique_tags
            job["priority"] = priority
            if spec.model:
                job["model"] = spec.model
            if spec.variants > 1:
                job["variant"] = n
            job["sizes"] = list(spec.sizes)
            yield job

    def image(
        self,
        text: str,
        job_id: str,
        base: Path,
        own: tuple[str, set[str]] | None,
        combo: Combo = (),
    ) -> tuple[str, str]:
        """(problem or "", the image as written to the job: absolute path or @ref)."""
        if text.startswith("@"):
            target = text[1:].strip()
            if own is not None and combo and target not in own[1]:
                # "@{sku}-white_bg" inside a matrix means this combination's white_bg.
                same = _combo_id(target, combo)
                target = same if same in own[1] else target
            return self.ref_problem(target, job_id, own), "@" + target
        full = os.path.abspath(os.path.join(base, os.path.expanduser(text)))
        if not self.is_file(full):
            return f"image {text!r} not found ({full})", full
        return "", full

    def ref_problem(self, target: str, job_id: str, own: tuple[str, set[str]] | None) -> str:
        """Catch chain refs that cannot work; refs to jobs elsewhere are left to the run."""
        if not target:
            return "an @ reference needs a job id"
        if target == job_id or target.startswith(job_id + "-"):
            return f"job {job_id!r} cannot use its own output (@{target})"
        if target in self.static_ids or own is None:
            return ""
        base_id, ids = own
        if target.startswith(base_id + "-") and target not in ids:
            return f"@{target} is not a job of this row (it makes: {', '.join(sorted(ids))})"
        return ""


def _combo_id(job_base: str, combo: Combo) -> str:
    return "-".join([job_base, *(slug for _key, slug, _value in combo)])


def _variant_ids(job_id: str, variants: int) -> list[str]:
    return [job_id] if variants == 1 else [f"{job_id}-{n}" for n in range(1, variants + 1)]


@functools.lru_cache(maxsize=1024)
def _fields(pattern: str) -> tuple[str, ...]:
    return pattern_fields(pattern)


def _one_field(pattern: str, default: str) -> str:
    """The column a problem belongs to: the pattern's only field, else `default`."""
    fields = _fields(pattern)
    return fields[0] if len(fields) == 1 else default


def _field_message(exc: Exception, where: str = "") -> str:
    needed = f" (needed by {where})" if where else ""
    if isinstance(exc, EmptyFieldError):
        return f"{exc.field!r} is empty{needed}"
    if isinstance(exc, MissingFieldError):
        return f"field {exc.field!r} is missing{needed}"
    return str(exc)


def _id_problem(job_id: str) -> str:
    """The reader's id rules, checked here so a bad sku is named at its row."""
    problem = validate_id(job_id)
    return f"id {job_id[:60]!r}: {problem}" if problem else ""


# --------------------------------------------------------------------------- CLI


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``expand`` and ``templates list|show`` to the main CLI."""
    expand = subparsers.add_parser(
        "expand",
        help="expand a recipe (TOML) into the JSONL jobs it will send",
        description="Expand a recipe and its product sheet into jobs, after checking every row.",
    )
    expand.add_argument("recipe", type=Path, help="recipe file (.toml)")
    expand.add_argument(
        "-o", "--output", type=Path, default=None, help="write JSONL here (default: stdout)"
    )
    expand.set_defaults(func=_cmd_expand)

    templates = subparsers.add_parser(
        "templates", help="list or show prompt templates", description="Prompt templates."
    )
    sub = templates.add_subparsers(dest="templates_command", metavar="{list,show}")
    sub.required = True
    listing = sub.add_parser("list", help="list built-in and user templates")
    listing.add_argument("--dir", type=Path, default=None, help="user templates folder")
    listing.set_defaults(func=_cmd_templates_list)
    show = sub.add_parser("show", help="show one template")
    show.add_argument("name", help="template name or path to a .toml file")
    show.add_argument("--dir", type=Path, default=None, help="user templates folder")
    show.set_defaults(func=_cmd_templates_show)


def _cmd_expand(args: argparse.Namespace) -> int:
    try:
        if args.output is not None:
            count = write_expanded(args.recipe, args.output)
            sys.stderr.write(f"wrote {count} jobs to {args.output}\n")
            return 0
        for job in expand_recipe(args.recipe):
            sys.stdout.write(json.dumps(job, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    except InputError as exc:
        sys.stderr.write(exc.render() + "\n")
        return exc.exit_code
    except BrokenPipeError:
        # `batchgen expand r.toml | head`: stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError as exc:
        sys.stderr.write(f"batchgen expand: {exc}\n")
        return 2
    return 0


def _cmd_templates_list(args: argparse.Namespace) -> int:
    try:
        templates = list_templates(args.dir)
    except UsageError as exc:
        sys.stderr.write(f"{exc}\n")
        return exc.exit_code
    builtin = _builtin_names()
    width = max((len(t.name) for t in templates), default=0)
    for t in templates:
        origin = "" if t.path is not None and t.path.parent == _builtin_parent() else " (user)"
        if t.name in builtin and origin:
            origin = " (user, overrides built-in)"
        if t.kind == "style":
            detail = f'style preset: recipes append it with style = "{t.name}"'
        else:
            detail = f"fields: {', '.join(t.fields) or '-'}"
            detail += "; edits a reference photo" if t.edit else ""
            detail += f"; aspect {t.aspect_ratio}" if t.aspect_ratio else ""
        sys.stdout.write(f"{t.name:<{width}}  v{t.version}  {t.description}{origin}\n")
        sys.stdout.write(f"{'':<{width}}      {detail}\n")
    return 0


def _cmd_templates_show(args: argparse.Namespace) -> int:
    try:
        t = load_template(args.name, args.dir)
    except UsageError as exc:
        sys.stderr.write(f"{exc}\n")
        return exc.exit_code
    lines = [
        f"{t.name}  v{t.version}  ({t.kind})",
        t.description,
        f"file: {t.path}",
        f"fields: {', '.join(t.fields) or '-'}",
        f"edit: {'yes, expects a reference photo' if t.edit else 'no'}",
        f"aspect_ratio: {t.aspect_ratio or '-'}",
        "",
        t.pattern,
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _builtin_parent() -> Path:
    return builtin_dir()


def _builtin_names() -> set[str]:
    return {p.stem for p in _builtin_parent().glob("*.toml")}
