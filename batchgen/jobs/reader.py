"""The reader stage: job files in, validated `Job`s out.

Consumes CSV, JSONL/NDJSON, Parquet or XLSX job files; produces `Job`s
(`read_jobs`) or one `InputError` listing every bad row with its file, line
and field (`validate`). Rows are streamed and never kept, so a million-line
file costs the same memory as a small one, apart from a compact table of ids
(duplicates and `@id` chains span files and need it).

A row that cannot become a job never reaches the API: `validate` runs
before anything is sent, and `read_jobs` raises rather than skip a row.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchgen.errors import InputError, InputProblem
from batchgen.jobs.checks import (
    ChainNode,
    IdTable,
    ImageChecker,
    ProblemSink,
    Seen,
    find_cycles,
    human_size,
)
from batchgen.jobs.sources import RawRow, cell_text, iter_source, json_type
from batchgen.models import ASPECT_RATIOS, Job

__all__ = [
    "ID_PATTERN",
    "MAX_INLINE_BYTES",
    "MAX_LINE_BYTES",
    "MAX_PROBLEMS",
    "read_jobs",
    "validate",
    "validate_id",
]

#: The API's inline request limit; one image, and all of a job's images
#: together, must fit under it.
MAX_INLINE_BYTES: int = 20 * 1024 * 1024
#: One line longer than this is reported, not read: it bounds memory.
MAX_LINE_BYTES: int = 32 * 1024 * 1024
#: Problems kept for the report; the rest are only counted.
MAX_PROBLEMS: int = 10_000

ID_MAX_LEN = 128
#: The characters an id may use. It becomes a file name in the output
#: folder, so only characters safe on every file system, and no leading `.`
#: (hidden files, `..`) or `-` (read as an option by shell tools). A match is
#: necessary, not sufficient: `validate_id` also refuses Windows device names
#: (`con`, `nul.png`) and a trailing `.`.
ID_PATTERN: re.Pattern[str] = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")

# Windows opens the device, not a file, for these names with any extension.
_RESERVED = frozenset(
    ["con", "prn", "aux", "nul"]
    + [f"com{i}" for i in range(1, 10)]
    + [f"lpt{i}" for i in range(1, 10)]
)
_MODEL_RE = re.compile(r"\A(?:models/)?[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


def validate_id(job_id: str) -> str | None:
    """None if `job_id` is safe to use as a file name; else why it is not."""
    if ID_PATTERN.match(job_id):  # the common case; the pattern rules out most of the below
        if job_id.endswith("."):
            return "id cannot end with '.' (Windows drops it, so two ids would share a file)"
        if job_id.split(".", 1)[0].lower() in _RESERVED:
            return f"id '{job_id}' is a reserved device name on Windows"
        return None
    if not job_id:
        return "id is empty"
    if len(job_id) > ID_MAX_LEN:
        return f"id is {len(job_id)} characters long; the limit is {ID_MAX_LEN}"
    if "\0" in job_id:
        return "id contains a NUL character"
    if "/" in job_id or "\\" in job_id:
        return "id contains a path separator ('/' or '\\')"
    if ":" in job_id:
        return "id contains ':' (drive letters and streams are not allowed)"
    if job_id in (".", ".."):
        return f"id cannot be '{job_id}'"
    if job_id[0] in ".-":
        return f"id cannot start with '{job_id[0]}'"
    bad = sorted({c for c in job_id if not (c.isascii() and (c.isalnum() or c in "._-"))})
    shown = ", ".join(repr(c) for c in bad[:5])
    return f"id may contain only letters, digits, '-', '_' and '.' (found {shown})"


@dataclass(slots=True)
class _Parsed:
    """A row after validation: the job if every field was good, and the id
    alone when it was, so duplicates and chains are checked on bad rows too."""

    job_id: str | None = None
    job: Job | None = None
    images: tuple[str, ...] = ()
    refs: tuple[str, ...] = ()
    problems: list[InputProblem] = field(default_factory=list)


class _Bad(Exception):
    """A field's value is wrong; carries the message for `InputProblem`."""


def _type_name(value: object) -> str:
    # Field types are described as lists (CSV users write `a;b`), rows as JSON arrays.
    return "list" if isinstance(value, list | tuple) else json_type(value)


def _text(value: object, row: RawRow) -> str | None:
    if row.table:
        try:
            return cell_text(value)
        except TypeError:
            raise _Bad(f"must be text, got {_type_name(value)}") from None
    if value is None or isinstance(value, str):
        return value
    raise _Bad(f"must be a string, got {_type_name(value)}")


def _str_list(value: object, row: RawRow) -> list[str]:
    """A list field: a JSON list, or in a table cell `a;b` or `["a", "b"]`."""
    if value is None:
        return []
    if isinstance(value, str) and row.table:
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except (ValueError, RecursionError) as exc:
                raise _Bad(f"looks like a JSON list but is not valid JSON ({exc})") from None
        else:
            return [part.strip() for part in text.split(";") if part.strip()]
    if not isinstance(value, list | tuple):
        raise _Bad(f"must be a list of strings, got {_type_name(value)}")
    items = []
    for item in value:
        if not isinstance(item, str):
            raise _Bad(f"must be a list of strings, found {_type_name(item)} {item!r:.40}")
        if item.strip():
            items.append(item.strip())
    return items


def _int(value: object, row: RawRow) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if row.table and isinstance(value, float) and value.is_integer():
        return int(value)
    if row.table and isinstance(value, float) and value != value:
        return None
    if row.table and isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if re.fullmatch(r"[+-]?\d{1,18}", text, flags=re.ASCII):
            return int(text)
        raise _Bad(f"must be a whole number, got {value!r:.40}")
    raise _Bad(f"must be a whole number, got {_type_name(value)} {value!r:.40}")


def _images(value: object, row: RawRow, base: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Image paths made absolute against the job file's folder, and the
    `@id` references among them (kept verbatim: they name another job)."""
    if isinstance(value, str) and not row.table:
        value = [value] if value.strip() else []
    if (
        not row.table
        and isinstance(value, list)
        and any(isinstance(v, str) and not v.strip() for v in value)
    ):
        raise _Bad("contains an empty image path")
    out: list[str] = []
    refs: list[str] = []
    for entry in _str_list(value, row):
        if entry.startswith("@"):
            problem = validate_id(entry[1:])
            if problem:
                raise _Bad(f"{entry!r:.60} is not a valid job reference: {problem}")
            out.append(entry)
            refs.append(entry[1:])
        elif "://" in entry:
            raise _Bad(
                f"{entry!r:.80}: URLs are not supported; download the image and give its path"
            )
        elif "\0" in entry:
            raise _Bad("image path contains a NUL character")
        else:
            path = os.path.expanduser(entry)
            out.append(os.path.normpath(os.path.join(base, path)))
    return tuple(out), tuple(refs)


def _sizes(value: object, row: RawRow) -> tuple[str, ...]:
    """Checked with the sink's own parser, so a size the sink would refuse
    after paying for the image is refused here instead; kept canonical."""
    from batchgen.output.sizes import parse_size  # lazily: it imports Pillow

    sizes = []
    for entry in _str_list(value, row):
        try:
            sizes.append(parse_size(entry).spec)
        except ValueError as exc:
            raise _Bad(f"has a bad entry: {exc}") from None
    return tuple(sizes)


def _aspect(value: object, row: RawRow) -> str | None:
    ratio = (_text(value, row) or "").strip()
    if ratio and ratio not in ASPECT_RATIOS:
        raise _Bad(f"{ratio!r:.20} is not one of {', '.join(ASPECT_RATIOS)}")
    return ratio or None


def _variant(value: object, row: RawRow) -> int | None:
    n = _int(value, row)
    if n is not None and n < 1:
        raise _Bad(f"must be 1 or more, got {n}")
    return n


def _model(value: object, row: RawRow) -> str | None:
    text = (_text(value, row) or "").strip()
    if text and not _MODEL_RE.match(text):
        raise _Bad(f"{text!r:.60} is not a model name like gemini-2.5-flash-image")
    return text or None


def _required(value: object, row: RawRow) -> str:
    text = _text(value, row)
    if text is None:
        raise _Bad("is required")
    if not text.strip():
        raise _Bad("is empty")
    return text


#: Optional fields: parser from raw value to the `Job` attribute. Absent or
#: null fields keep `Job`'s defaults and cost nothing.
_OPTIONAL: tuple[tuple[str, Callable[[object, RawRow], object]], ...] = (
    ("aspect_ratio", _aspect),
    ("tags", lambda v, row: tuple(_str_list(v, row))),
    ("priority", lambda v, row: _int(v, row) or 0),
    ("model", _model),
    ("variant", _variant),
    ("sizes", _sizes),
)


def _parse(row: RawRow, name: str, base: str) -> _Parsed:
    """Validate every field of one row, collecting a problem per bad field."""
    out = _Parsed()
    f = row.fields
    problems = out.problems
    job_id = prompt = ""
    try:
        job_id = _required(f.get("id"), row).strip()
        problem = validate_id(job_id)
        if problem:
            problems.append(InputProblem(name, row.line, "id", problem))
        else:
            out.job_id = job_id
    except _Bad as exc:
        problems.append(InputProblem(name, row.line, "id", f"id {exc}"))
    try:
        prompt = _required(f.get("prompt"), row)
    except _Bad as exc:
        problems.append(InputProblem(name, row.line, "prompt", f"prompt {exc}"))
    values: dict[str, Any] = {}
    images = f.get("images")
    if images is not None:
        try:
            out.images, out.refs = _images(images, row, base)
            values["images"] = out.images
        except _Bad as exc:
            problems.append(InputProblem(name, row.line, "images", f"images {exc}"))
    for key, parse in _OPTIONAL:
        value = f.get(key)
        if value is None:
            continue
        try:
            values[key] = parse(value, row)
        except _Bad as exc:
            problems.append(InputProblem(name, row.line, key, f"{key} {exc}"))
    if not problems:
        out.job = Job(id=job_id, prompt=prompt, source=name, line=row.line, **values)
    return out


def _base_dir(path: Path) -> str:
    return os.path.abspath(path.parent)


def read_jobs(paths: Sequence[Path]) -> Iterator[Job]:
    """Stream jobs in file order.

    Meant to run after `validate`; a row that is bad anyway raises
    `InputError` for that row rather than being skipped, so no job is ever
    dropped without a word. Image files, duplicates and chains are not
    re-checked here: that is `validate`'s whole-run pass.
    """
    for given in paths:
        path = Path(given)  # callers sometimes pass str; the name stays as given
        name, base = str(given), _base_dir(path)
        for item in iter_source(path, MAX_LINE_BYTES):
            if isinstance(item, InputProblem):
                raise InputError([item])
            parsed = _parse(item, name, base)
            if parsed.job is None:
                raise InputError(parsed.problems)
            yield parsed.job


def validate(paths: Sequence[Path], *, check_images: bool = True) -> int:
    """Read every file once and return the number of jobs, or raise
    `InputError` with every problem found (up to `MAX_PROBLEMS`, then a count).
    """
    sink = ProblemSink(MAX_PROBLEMS)
    ids = IdTable()
    images = ImageChecker(MAX_INLINE_BYTES)
    chains: dict[str, ChainNode] = {}
    orphans: list[ChainNode] = []
    names = [str(p) for p in paths]
    count = 0
    seen_files: dict[str, str] = {}
    for index, given in enumerate(paths):
        path = Path(given)
        name, base = names[index], _base_dir(path)
        real = os.path.realpath(path)
        if real in seen_files:
            sink.add(InputProblem(name, 0, "", f"same file as {seen_files[real]}; given twice"))
            continue
        seen_files[real] = name
        items = 0
        for item in iter_source(path, MAX_LINE_BYTES):
            items += 1
            if isinstance(item, InputProblem):
                sink.add(item)
                continue
            parsed = _parse(item, name, base)
            sink.extend(parsed.problems)
            seen = None if parsed.job_id is None else ids.add(parsed.job_id, index, item.line)
            if seen is not None:
                sink.add(_duplicate(str(parsed.job_id), seen, names, name, item.line))
            if parsed.refs:
                node = ChainNode(index, item.line, parsed.refs)
                if parsed.job_id is None or seen is not None:
                    orphans.append(node)  # still check that its targets exist
                else:
                    chains[parsed.job_id] = node
            if check_images and len(parsed.images) > len(parsed.refs):
                sink.extend(_image_problems(parsed.images, images, name, item.line))
            if parsed.job is not None:
                count += 1
        if items == 0:
            sink.add(InputProblem(name, 0, "", "no jobs in file"))
    sink.extend(_chain_problems(chains, orphans, ids, names))
    if not len(sink):
        return count
    order = {name: i for i, name in enumerate(names)}
    problems = sorted(sink.kept, key=lambda p: (order.get(p.file, -1), p.line))
    if sink.dropped:
        more = f"... and {sink.dropped} more problems not listed; fix the ones above first"
        problems.append(InputProblem(sink.first_dropped_file, 0, "", more))
    raise InputError(problems, omitted=sink.dropped - 1 if sink.dropped else 0)


def _duplicate(job_id: str, seen: Seen, names: list[str], name: str, line: int) -> InputProblem:
    where = (
        f"line {seen.line}"
        if names[seen.file_index] == name
        else (f"{names[seen.file_index]}:{seen.line}")
    )
    if seen.exact:
        msg = f"duplicate id '{job_id}' (first on {where})"
    else:
        msg = (
            f"id '{job_id}' differs only in letter case from the id on {where}; their images "
            "would overwrite each other on case-insensitive disks (macOS, Windows)"
        )
    return InputProblem(name, line, "id", msg)


def _image_problems(
    paths: tuple[str, ...], images: ImageChecker, name: str, line: int
) -> list[InputProblem]:
    problems = []
    total = 0
    for path in paths:
        if path.startswith("@"):
            continue
        result = images.check(path)
        if isinstance(result, str):
            problems.append(InputProblem(name, line, "images", result))
        else:
            total += result
    if not problems and total > images.limit:
        msg = (
            f"reference images total {human_size(total)}, over the "
            f"{human_size(images.limit)} inline request limit"
        )
        problems.append(InputProblem(name, line, "images", msg))
    return problems


def _chain_problems(
    chains: dict[str, ChainNode], orphans: list[ChainNode], ids: IdTable, names: list[str]
) -> list[InputProblem]:
    problems = []
    for node in [*chains.values(), *orphans]:
        for ref in node.refs:
            if ref not in ids:
                msg = f"'@{ref}' refers to job id '{ref}', which is not in the job files"
                problems.append(InputProblem(names[node.file_index], node.line, "images", msg))
    for cycle in find_cycles(chains):
        node = chains[cycle[0]]
        msg = "chained edits form a cycle: " + " → ".join(f"@{c}" for c in cycle)
        problems.append(InputProblem(names[node.file_index], node.line, "images", msg))
    return problems
