"""One row in, a `Job` (or every problem with it) out: the reader's field rules.

Consumes a `RawRow` from any source; produces a `Parsed`: the `Job` when
every field is good, and always the id (when it is a good one) and the
row's `@id` references, so that duplicates and chains are checked on bad
rows too. Pure: nothing here opens a file or remembers a row.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchgen.catalogue import IMAGE_SIZES, load_catalogue
from batchgen.errors import InputProblem
from batchgen.jobs.sources import RawRow, cell_text, json_type
from batchgen.models import Job

__all__ = ["ID_PATTERN", "Parsed", "normal_id", "parse_row", "validate_id"]

ID_MAX_LEN = 128
#: File names are limited in bytes (255 on most file systems); what is left
#: after this is room for the suffixes the sink adds (`-2`, `.png`).
ID_MAX_BYTES = 200
#: The common case of a safe id, checked in one match: ASCII letters and
#: digits, `.`, `_`, `-`, no leading `.` (hidden files, `..`) or `-` (read as
#: an option by shell tools). Not the whole rule: `validate_id` also accepts
#: letters and digits of every script (a French team's `crème-brûlée`), and
#: refuses Windows device names (`con`, `nul.png`) and a trailing `.`.
ID_PATTERN: re.Pattern[str] = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")

# Windows opens the device, not a file, for these names with any extension.
_RESERVED = frozenset(
    ["con", "prn", "aux", "nul"]
    + [f"com{i}" for i in range(1, 10)]
    + [f"lpt{i}" for i in range(1, 10)]
)
#: Every ratio some model takes; `models_check` narrows it to the job's model.
ASPECT_RATIOS: tuple[str, ...] = tuple(
    sorted({r for m in load_catalogue() for r in m.ratios}, key=lambda r: (len(r), r))
)
_MODEL_RE = re.compile(r"\A(?:models/)?[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


def normal_id(text: str) -> str:
    """An id as the reader keeps it: NFC, so `é` typed on a Mac (`e` and an
    accent) and on Windows (one character) is one id and one file name."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def validate_id(job_id: str) -> str | None:
    """None if `job_id` is safe to use as a file name; else why it is not."""
    if not ID_PATTERN.match(job_id):  # the common case passes this in one match
        problem = _unsafe(job_id)
        if problem:
            return problem
    if job_id.endswith("."):
        return "id cannot end with '.' (Windows drops it, so two ids would share a file)"
    if job_id.split(".", 1)[0].lower() in _RESERVED:
        return f"id '{job_id}' is a reserved device name on Windows"
    return None


def _unsafe(job_id: str) -> str | None:
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
    bad = sorted({c for c in job_id if not _id_char(c)})
    if bad:
        shown = ", ".join(repr(c) for c in bad[:5])
        return (
            "id may contain only letters and digits (of any script), '-', '_' and '.' "
            f"(found {shown})"
        )
    if unicodedata.category(job_id[0]).startswith("M"):
        return "id cannot start with a combining mark"
    size = len(job_id.encode("utf-8"))
    if size > ID_MAX_BYTES:
        return f"id is {size} bytes long in UTF-8; the limit is {ID_MAX_BYTES}"
    return None


def _id_char(c: str) -> bool:
    """Letters, marks (the accents and vowel signs of many scripts) and digits
    of any script, and `._-`: nothing a file system or a shell reads specially."""
    if c.isascii():
        return c.isalnum() or c in "._-"
    return unicodedata.category(c)[0] in "LMN"


@dataclass(slots=True)
class Parsed:
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


#: Why a reference image URL is refused, and what to do instead.
URL_REFUSAL = (
    "image URLs are not fetched: batchgen has no download of reference images that is "
    "bounded, cached and safe against redirects yet (docs/remote-references.md); "
    "download the image and give its path"
)


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
            ref = normal_id(entry[1:])
            problem = validate_id(ref)
            if problem:
                raise _Bad(f"{entry!r:.60} is not a valid job reference: {problem}")
            out.append("@" + ref)
            refs.append(ref)
        elif "://" in entry:
            raise _Bad(f"{entry!r:.80}: {URL_REFUSAL}")
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


def _image_size(value: object, row: RawRow) -> str | None:
    size = (_text(value, row) or "").strip()
    if size and size not in IMAGE_SIZES:
        raise _Bad(f"{size!r:.20} is not one of {', '.join(IMAGE_SIZES)}")
    return size or None


def _redo_note(value: object, row: RawRow) -> str | None:
    text = (_text(value, row) or "").strip()
    if text and "{note}" not in text:
        raise _Bad("must say where the reviewer's note goes, as {note}")
    return text or None


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
    ("image_size", _image_size),
    ("redo_note", _redo_note),
)


def parse_row(row: RawRow, name: str, base: str) -> Parsed:
    """Validate every field of one row, collecting a problem per bad field."""
    out = Parsed()
    f = row.fields
    problems = out.problems
    job_id = prompt = ""
    try:
        job_id = normal_id(_required(f.get("id"), row).strip())
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
