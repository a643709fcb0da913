"""Expand a recipe (TOML) and a product sheet into ordinary jobs.

Consumes a recipe file and the sheet it names (CSV, TSV, JSONL or parquet);
produces job dicts in the JSONL job-file format (``id``, ``prompt``,
``images``, ``aspect_ratio``, ``tags``, ``priority``, ``model``, ``variant``,
``sizes``). Everything is expanded before a run starts, so resume, retries,
reports and the budget treat these jobs like any others.

The recipe schema, ids and tags are documented in `batchgen.recipes.schema`, which
loads and checks the recipe; `batchgen.recipes.sheet` reads the sheet's rows.
This module expands them and holds the public API and the CLI commands.

Two ways out. A run reads a recipe as a job source (`RecipeSource`): one
pass over the sheet yields each job as its row is expanded, with the
problems found on the way (missing column, empty field, unknown template or
size, missing photo, bad id, duplicate id, a chain ref to a job this row
does not make), each job named by the sheet row it came from; the reader
checks the jobs like any others and the run starts only if nothing was
wrong anywhere. `expand_recipe` (the `expand` command) checks the whole
sheet first and raises `InputError` with every problem before returning,
then streams the jobs in a second pass. Either way memory stays flat for a
50,000-row sheet (only base ids are remembered, to catch duplicates). A
CSV's missing column is reported once, at the header (line 1); an empty cell
is reported at the row's line, with the column as the field. Rows whose cells
are all empty are skipped. Parquet rows are numbered from 1.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from batchgen.errors import InputError, InputProblem
from batchgen.jobs.columns import DEFAULT_OPTIONS, ReadOptions
from batchgen.jobs.sources import RawRow, SourceItem
from batchgen.output.atomic import write_text
from batchgen.recipes.entry import Spec
from batchgen.recipes.schema import Combo, Recipe, field_message, id_problem, load_recipe
from batchgen.recipes.sheet import Row, missing_columns, read_rows
from batchgen.recipes.templates import (
    fill_pattern,
    join_style,
    pattern_fields,
)

__all__ = ["RecipeSource", "expand_recipe", "write_expanded"]

MAX_PROBLEMS = 1000


# --------------------------------------------------------------------------- public API


def expand_recipe(path: Path) -> Iterator[dict[str, object]]:
    """Validate the recipe and its whole sheet, then return a stream of job dicts.

    Raises `InputError` carrying every problem before anything is returned
    (file = recipe or sheet, line = the sheet row's line, field = the column).
    """
    recipe = load_recipe(Path(path))
    problems: list[InputProblem] = []
    for _located in _Expander(recipe, problems).run():
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
    count = 0
    # Durable: the user's job file, written once and not rebuilt by a run.
    with write_text(Path(dest), durable=True) as fh:
        for job in jobs:
            fh.write(json.dumps(job, ensure_ascii=False) + "\n")
            count += 1
    return count


def _stream(recipe: Recipe) -> Iterator[dict[str, object]]:
    problems: list[InputProblem] = []
    for _where, job in _Expander(recipe, problems).run():
        yield job
    if problems:  # the sheet changed between the two passes
        raise InputError(problems)


class RecipeSource:
    """A recipe as a run's job source (`batchgen.jobs.inputs.JobSource`).

    Expanded as it is read, in memory: each job is a row named by its sheet
    row (the recipe itself, line 0, for `[[jobs]]` and sheet-less recipes),
    and every problem the recipe or its rows have comes out with the rows,
    so it is listed with the problems of the other inputs.
    """

    #: The jobs also depend on the sheet and the templates, so the recipe's
    #: bytes alone do not say whether a finished folder is still up to date.
    identified_by_bytes = False

    def __init__(
        self, path: str | os.PathLike[str], options: ReadOptions = DEFAULT_OPTIONS
    ) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.base = os.path.abspath(self.path.parent)
        self.options = options

    def items(self) -> Iterator[SourceItem]:
        try:
            recipe = load_recipe(self.path)
        except InputError as exc:
            yield from exc.problems
            return
        problems: list[InputProblem] = []
        for jobs in _Expander(recipe, problems, self.options).by_row():
            yield from problems  # emptied row by row: a garbage sheet costs no memory
            problems.clear()
            for where, job in jobs:
                yield RawRow(where.line, job, table=False, file=where.file)
        yield from problems


# --------------------------------------------------------------------------- expansion


@dataclass(frozen=True)
class _Where:
    file: str
    line: int

    def at(self, field: str, message: str) -> InputProblem:
        return InputProblem(self.file, self.line, field, message)


#: A job dict and the row it was expanded from.
_Located = tuple[_Where, dict[str, object]]


class _Expander:
    """Turns a recipe's rows into jobs. Problems are appended, never raised, so
    the same code serves the validation pass and the streaming pass."""

    def __init__(
        self, recipe: Recipe, problems: list[InputProblem], options: ReadOptions = DEFAULT_OPTIONS
    ) -> None:
        self.recipe = recipe
        self.problems = problems
        # The recipe's own `sheet_name` beats the run's --sheet.
        self.options = dataclasses.replace(options, sheet=recipe.sheet_name or options.sheet)
        self.static_ids = {static.id for static in recipe.statics}
        self.combos = recipe.combos()
        # Many rows share a photo: remember recent answers, within a fixed size.
        self.is_file = functools.lru_cache(maxsize=4096)(os.path.isfile)

    def run(self) -> Iterator[_Located]:
        for jobs in self.by_row():
            yield from jobs

    def by_row(self) -> Iterator[list[_Located]]:
        """The jobs of each row together (a `[[jobs]]` entry is a row), possibly
        none: a caller can act on the problems between rows."""
        recipe = self.recipe
        here = _Where(str(recipe.path), 0)
        for static in recipe.statics:
            yield list(
                self.jobs(static.spec, static.id, static.values, (), here, recipe.path.parent)
            )
        if not recipe.specs:
            return
        if recipe.sheet is None:  # no sheet: one row made of [vars]
            yield list(self.row_jobs(Row(0, {}), here, recipe.path.parent, set(), {}))
            return
        file = str(recipe.sheet)
        missing = self.missing_columns(recipe.sheet)
        seen: dict[str, tuple[int, str]] = {}
        for row in read_rows(recipe.sheet, self.options):
            where = _Where(row.file or file, row.line)
            yield list(self.row_jobs(row, where, recipe.sheet.parent, missing, seen))

    def missing_columns(self, sheet: Path) -> set[str]:
        """Needed columns a CSV/TSV/XLSX header lacks, each reported once at line 1."""
        recipe = self.recipe
        missing, found = missing_columns(sheet, recipe.needed, set(recipe.vars), self.options)
        self.problems.extend(found)
        return missing

    def row_jobs(
        self,
        row: Row,
        where: _Where,
        base: Path,
        missing: set[str],
        seen: dict[str, tuple[int, str]],
    ) -> Iterator[_Located]:
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
        try:
            base_id = fill_pattern(recipe.id_pattern, values)
        except ValueError as exc:  # a `{sku:slug}` with nothing to slug
            self.problems.append(where.at(_one_field(recipe.id_pattern, "id"), str(exc)))
            return
        id_fields = _fields(recipe.id_pattern)
        if not bad & set(id_fields):
            id_field = id_fields[0] if len(id_fields) == 1 else "id"
            problem = id_problem(base_id)
            written = _unslugged(recipe.id_pattern, values)
            if not problem and base_id in self.static_ids:
                problem = f"duplicate id {base_id!r}"
            elif not problem and base_id in seen:
                problem = _duplicate(base_id, written, *seen[base_id])
            if problem:
                self.problems.append(where.at(id_field, problem))
                return
            if row.line:
                seen[base_id] = (row.line, written)
        values["id"] = base_id
        own = (base_id, set(self.row_ids(base_id)))
        for spec in recipe.specs:
            job_base = spec.job_base(base_id)
            for combo in self.combos:
                yield from self.jobs(spec, job_base, values, combo, where, base, own, bad)

    def row_ids(self, base_id: str) -> Iterator[str]:
        for spec in self.recipe.specs:
            job_base = spec.job_base(base_id)
            for combo in self.combos:
                yield from _variant_ids(_combo_id(job_base, combo), spec.variants)

    def jobs(
        self,
        spec: Spec,
        job_base: str,
        row_values: Mapping[str, str],
        combo: Combo,
        where: _Where,
        base: Path,
        own: tuple[str, set[str]] | None = None,
        bad: set[str] | frozenset[str] = frozenset(),
    ) -> Iterator[_Located]:
        """The jobs of one spec for one row and matrix combination, each with its row."""
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
                self.problems.append(where.at(field, field_message(exc, spec.where)))
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
            problem = id_problem(variant_id)
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
            yield where, job

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


def _unslugged(pattern: str, values: Mapping[str, str]) -> str:
    """The id as written before `{field:slug}` made it safe ("" without a slug)."""
    if ":slug}" not in pattern:
        return ""
    try:
        return fill_pattern(pattern.replace(":slug}", "}"), values)
    except (KeyError, ValueError):
        return ""


def _duplicate(base_id: str, written: str, line: int, first: str) -> str:
    """A second row making the same id, naming the first; after a slug, both values."""
    if written and written != first:
        return (
            f"duplicate id {base_id!r}: {written!r} here and {first!r} on line {line} "
            "slug to the same id"
        )
    return f"duplicate id {base_id!r} (first on line {line})"


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


# --------------------------------------------------------------------------- CLI
