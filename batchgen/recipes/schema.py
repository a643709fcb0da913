"""Load a recipe (TOML): the schema, its checks, and the `Recipe` it becomes.

Consumes a recipe file; produces a validated `Recipe` (its specs, matrix,
[vars] and literal jobs) or raises `InputError` with every problem found in
the file. `batchgen.recipes.expand` turns a `Recipe` and the rows of its sheet
(`batchgen.recipes.sheet`) into job dicts in the JSONL job-file format
(``id``, ``prompt``, ``images``, ``aspect_ratio``, ``tags``, ``priority``,
``model``, ``variant``, ``sizes``); one entry's keys are parsed in
`batchgen.recipes.entry`.

Recipe schema (top-level keys must come before the first ``[table]``; only
``variants`` and ``templates_dir`` are also understood below ``[pack]`` or
``[matrix]``, where they cannot be anything else)::

    sheet = "products.csv"      # optional; relative to the recipe. Without a sheet
                                # the recipe expands one row made of [vars].
    sheet_name = "Products"     # an .xlsx sheet's tab: name or 1-based number
                                # (default: --sheet, else the first sheet)
    id = "{sku}"                # base id pattern (default "{id}"); "{sku:slug}"
                                # makes a safe id of any SKU: "AB/123 É" -> "ab-123-e"
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

Ids: ``{field:slug}`` is the field's value made safe for a file name (NFKD,
ASCII letters and digits, lower case, other runs one ``-``); two rows whose
values slug to the same id are an error naming both rows. ``<base>`` then
``-<pack entry>`` then ``-<matrix slugs joined by ->`` then ``-<n>`` for
variants (only when ``variants > 1``; the job's ``variant`` field is then
``n``). Tags: the recipe's and entry's tags, ``pack:<entry>``, and
``<matrix key>:<slug>`` per combination, so cost per campaign falls out
of the report. Matrix values are also fields: ``{persona}`` is the value
("a professional chef"), ``{persona_slug}`` the slug ("chef"; the same as the
value for a list). ``{id}`` is the row's base id. Inside a matrix, a chain
ref that names one of the row's pack jobs without the matrix part
(``@{sku}-white_bg``) means the same combination's job
(``@<sku>-white_bg-winter``); spell it out (``@{id}-white_bg-{season_slug}``)
to pick another combination.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from batchgen.errors import InputError, InputProblem
from batchgen.jobs.reader import validate_id
from batchgen.recipes.entry import ENTRY_KEYS, EntryParser, Settings, Spec
from batchgen.recipes.sheet import cell_text, sheet_kind
from batchgen.recipes.templates import (
    EmptyFieldError,
    MissingFieldError,
    fill_pattern,
    pattern_fields,
)

_RECIPE_KEYS = ENTRY_KEYS | {
    "sheet",
    "sheet_name",
    "id",
    "templates_dir",
    "vars",
    "pack",
    "matrix",
    "jobs",
}
_STATIC_KEYS = ENTRY_KEYS | {"id", "fields"}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: One matrix combination: (key, slug, value) per axis.
Combo = tuple[tuple[str, str, str], ...]


@dataclass(frozen=True)
class Static:
    id: str
    spec: Spec
    values: dict[str, str]


@dataclass
class Recipe:
    path: Path
    sheet: Path | None
    id_pattern: str
    specs: tuple[Spec, ...]
    matrix: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]
    vars: dict[str, str]
    statics: tuple[Static, ...]
    needed: dict[str, str] = field(default_factory=dict)
    #: The XLSX sheet's tab (`sheet_name`), None for the run's `--sheet` or the first.
    sheet_name: str | None = None

    def combos(self) -> list[Combo]:
        """Every matrix combination as ((key, slug, value), ...); one empty combo if none."""
        axes = [[(key, slug, value) for slug, value in values] for key, values in self.matrix]
        return [tuple(c) for c in itertools.product(*axes)]


def load_recipe(path: Path) -> Recipe:
    """Read and check the recipe file; raise `InputError` with every problem."""
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


class _RecipeLoader(EntryParser):
    """Turns the recipe's TOML into a `Recipe`, collecting every problem."""

    def __init__(self, path: Path, data: dict[str, object]) -> None:
        super().__init__(path)
        self.data = data

    def load(self) -> Recipe | None:
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
        if sheet is not None and sheet_kind(sheet) is None:
            self.problem("sheet", "use a .csv, .tsv, .jsonl, .parquet or .xlsx sheet")

        id_pattern = self.opt_str(data, "id") or "{id}"
        self.check_pattern("id", id_pattern)

        variables: dict[str, str] = {}
        raw_vars = data.get("vars", {})
        if not isinstance(raw_vars, dict):
            self.problem("vars", "must be a table of name = value")
        else:
            for name, value in raw_vars.items():
                text = cell_text(value)
                if not _FIELD_NAME.match(name):
                    self.problem(f"vars.{name}", "not a valid field name")
                variables[name] = text

        defaults = self.entry_settings(data, "recipe", Settings())
        specs: list[Spec] = []
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
                    self.check_keys(entry, ENTRY_KEYS, where)
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
        recipe = Recipe(
            path=self.path,
            sheet=sheet,
            id_pattern=id_pattern,
            specs=tuple(specs),
            matrix=matrix,
            vars=variables,
            statics=statics,
            sheet_name=self.sheet_name(data.get("sheet_name")),
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

    def sheet_name(self, value: object) -> str | None:
        """An XLSX tab, by name or by number from 1."""
        if value is None or (isinstance(value, str | int) and not isinstance(value, bool)):
            return None if value is None else str(value)
        self.problem("sheet_name", "must be a sheet's name or its number (from 1)")
        return None

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
                pairs = [(cell_text(v), cell_text(v)) for v in values]
            elif isinstance(values, dict):
                pairs = [(str(slug), cell_text(v)) for slug, v in values.items()]
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
        self, raw: object, defaults: Settings, variables: dict[str, str]
    ) -> tuple[Static, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.problem("jobs", "use [[jobs]] tables")
            return ()
        statics: list[Static] = []
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
                values.update({k: cell_text(v) for k, v in fields_raw.items()})
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
                self.problem(f"{where}.id", field_message(exc))
                continue
            bad = id_problem(job_id)
            if bad:
                self.problem(f"{where}.id", bad)
            if job_id in seen:
                self.problem(f"{where}.id", f"duplicate id {job_id!r}")
            seen.add(job_id)
            statics.append(Static(job_id, spec, values))
        return tuple(statics)


def _top_level_hint(key: str) -> str:
    """TOML puts keys written after [pack] or [matrix] inside that table."""
    if key in _RECIPE_KEYS:
        return f"; to set the recipe's {key!r}, move it above the first [table]"
    return ""


def field_message(exc: Exception, where: str = "") -> str:
    """A pattern's missing or empty field, worded the same for rows and [[jobs]]."""
    needed = f" (needed by {where})" if where else ""
    if isinstance(exc, EmptyFieldError):
        return f"{exc.field!r} is empty{needed}"
    if isinstance(exc, MissingFieldError):
        return f"field {exc.field!r} is missing{needed}"
    return str(exc)


def id_problem(job_id: str) -> str:
    """The reader's id rules, checked here so a bad sku is named at its row."""
    problem = validate_id(job_id)
    return f"id {job_id[:60]!r}: {problem}" if problem else ""
