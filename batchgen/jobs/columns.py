"""Column names (and JSONL keys) in, the fields the reader knows out, or why not.

A catalogue team names columns the way a spreadsheet shows them: `Aspect
Ratio`, `ID`, `image`. Matching is loose in one documented way (`normalise`:
strip, lower-case, runs of spaces and hyphens become `_`) and no looser: a
name that still is not a field but looks meant for one (an alias such as
`ratio`, or a near spelling, `difflib`) is an error naming the field (`did
you mean aspect_ratio?`), because a column dropped in silence turns a 16:9
job into a square one without a word. A column like no field at all (`sku`,
`price`: job files are often product sheets) is not used, and said so in
one notice per file. Columns meant to travel with the file but not into the
jobs can say so: a name starting with `_` or `x-` (`_notes`, `x-sku`), or
`--ignore-columns` (`ReadOptions.ignore`); they are neither refused nor
noticed.

Pure: nothing here opens a file. `docs/job-files.md` is the user's version.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "ALIASES",
    "DEFAULT_OPTIONS",
    "DELIMITERS",
    "KNOWN_FIELDS",
    "Header",
    "KeyMap",
    "ReadOptions",
    "is_ignored",
    "normalise",
    "resolve_header",
    "suggestion",
    "unknown_message",
    "unused_message",
]

logger = logging.getLogger(__name__)

#: Columns the reader understands.
KNOWN_FIELDS = (
    "id",
    "prompt",
    "images",
    "aspect_ratio",
    "tags",
    "priority",
    "model",
    "variant",
    "sizes",
    "image_size",
    "redo_note",
)

#: Names people reach for, offered as the suggestion in the error. Not
#: accepted as the field: one spelling per field keeps a file readable by
#: every tool that reads it (the JSONL export, `failed.jsonl`, a teammate's
#: script), and an error costs one rename, once.
ALIASES: Mapping[str, str] = {
    "image": "images",
    "photo": "images",
    "photos": "images",
    "picture": "images",
    "ratio": "aspect_ratio",
    "aspect": "aspect_ratio",
    "tag": "tags",
    "size": "sizes",
    "text": "prompt",
}

#: The delimiters told apart in a CSV header line, and their names in messages.
DELIMITERS: Mapping[str, str] = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}

#: Prefixes (after `normalise`) of columns kept out of the jobs on purpose.
IGNORED_PREFIXES = ("_", "x_")

_RUNS = re.compile(r"[\s\-]+")
#: Distinct unknown JSONL keys reported per file; one is enough to stop the run.
_MAX_REPORTED = 100
_MAX_CACHED = 1024


def normalise(name: str) -> str:
    """The one matching rule: `" Aspect  Ratio "` and `aspect-ratio` are `aspect_ratio`."""
    return _RUNS.sub("_", name.strip().lower())


def is_ignored(key: str) -> bool:
    """True for a normalised name written to be skipped (`_notes`, `x-sku`, `X_SKU`)."""
    return key.startswith(IGNORED_PREFIXES)


def suggestion(key: str, known: Sequence[str] = KNOWN_FIELDS) -> str | None:
    """The field an unknown normalised name most likely meant, if any."""
    alias = ALIASES.get(key)
    if alias in known:
        return alias
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return close[0] if close else None


def unused_message(names: Sequence[str], noun: str = "column") -> str:
    """Why columns (or keys) like no job field are refused, and the exact way to
    keep them out of the jobs: nothing a file holds is dropped without a word."""
    shown = ", ".join(repr(n) for n in names[:10]) + (", ..." if len(names) > 10 else "")
    known = ", ".join(KNOWN_FIELDS)
    keep = "name them '_...' or 'x-...'"
    if noun == "column":
        keep += f", or pass --ignore-columns {','.join(n.strip() for n in names)!r}"
    return (
        f"unknown {noun}{'s' if len(names) > 1 else ''} {shown}: not a job field "
        f"(the fields are {known}); to keep {'them' if len(names) > 1 else 'it'} out of the "
        f"jobs, {keep}"
    )


def unknown_message(raw: str, key: str, noun: str = "column") -> str:
    """Why a column (or key) that looks meant for a field is refused, and the
    ways to keep it, in one line."""
    guess = f"did you mean {suggestion(key)}?"
    name = raw.strip()
    keep = f"name it '_{name}' or 'x-{name}'"
    if noun == "column":
        keep += f", or pass --ignore-columns {name!r}"
    return f"unknown {noun} {raw!r}: {guess} (to keep a {noun} out of the jobs, {keep})"


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How to read job files beyond what their bytes say (`run`/`validate` flags).

    `delimiter`: None detects it from the header line. `sheet`: an XLSX sheet's
    name or 1-based position (None: the first). `ignore`: normalised names of
    columns to skip. `notify`: where a one-line notice goes (the detected
    delimiter); None logs it."""

    delimiter: str | None = None
    sheet: str | None = None
    ignore: frozenset[str] = frozenset()
    notify: Callable[[str], None] | None = field(default=None, compare=False)

    @classmethod
    def make(
        cls,
        *,
        delimiter: str | None = None,
        sheet: str | None = None,
        ignore: Iterable[str] = (),
        notify: Callable[[str], None] | None = None,
    ) -> ReadOptions:
        names = frozenset(normalise(n) for n in ignore if n.strip())
        return cls(delimiter, sheet, names, notify)

    @property
    def customised(self) -> bool:
        """True when the options, not only the bytes, decide a file's jobs."""
        return bool(self.delimiter or self.sheet or self.ignore)

    def skipped(self, key: str) -> bool:
        return is_ignored(key) or key in self.ignore

    def tell(self, message: str) -> None:
        if self.notify is None:
            logger.info("%s", message)
        else:
            self.notify(message)


DEFAULT_OPTIONS = ReadOptions()


class KeyMap:
    """JSONL (and Python dict) keys to fields under the column rules, for one file.

    Keys are few and repeat on every line, so each distinct key is judged
    once (a bounded cache); a key that looks meant for a field is reported
    once, on the first line that has it (the run will not start, and a
    million copies of the same complaint help nobody); a key like no field
    is reported once, on the first line that has it, too."""

    def __init__(self, options: ReadOptions = DEFAULT_OPTIONS) -> None:
        self._options = options
        self._cache: dict[str, str | None] = {}
        self._reported: set[str] = set()

    def _field(self, raw: str) -> str | None:
        """The field a key names; "" for a skipped key; None for an unknown one."""
        if raw in self._cache:
            return self._cache[raw]
        key = normalise(raw)
        found: str | None = key if key in KNOWN_FIELDS else None
        if found is None and self._options.skipped(key):
            found = ""
        if len(self._cache) < _MAX_CACHED:
            self._cache[raw] = found
        return found

    def fields(self, obj: Mapping[str, object]) -> tuple[dict[str, object], list[tuple[str, str]]]:
        """The known fields of one object and its problems as (field, message)."""
        out: dict[str, object] = {}
        problems: list[tuple[str, str]] = []
        for raw, value in obj.items():
            name = raw if raw in KNOWN_FIELDS else self._field(str(raw))
            if name is None:
                if raw not in self._reported and len(self._reported) < _MAX_REPORTED:
                    self._reported.add(raw)
                    key = normalise(str(raw))
                    if suggestion(key) is None:
                        problems.append(("", unused_message([str(raw)], "key")))
                    else:
                        problems.append(("", unknown_message(str(raw), key, "key")))
            elif name:
                if name in out:
                    problems.append((name, f"keys for {name} given twice (one as {raw!r})"))
                out[name] = value
        return out, problems


@dataclass(slots=True)
class Header:
    """A job file's header, judged: where each field is, which columns have no
    name (a value under one is a problem, not dropped), and every problem as
    (field, message)."""

    columns: dict[str, int] = field(default_factory=dict)
    blank: tuple[int, ...] = ()
    problems: list[tuple[str, str]] = field(default_factory=list)
    missing: tuple[str, ...] = ()


def resolve_header(
    names: Sequence[str],
    required: Sequence[str],
    options: ReadOptions = DEFAULT_OPTIONS,
    delimiter: str | None = None,
) -> Header:
    """Match a header's names to the fields (`normalise`), under the column rules.

    `delimiter` is the one the file was read with, when it was forced: a
    header read as one cell that holds another delimiter is then one
    problem, not one per missing column."""
    header = Header()
    if delimiter is not None and len(names) == 1:
        other = [d for d in DELIMITERS if d != delimiter and d in names[0]]
        if other:
            looks, given = DELIMITERS[other[0]], DELIMITERS.get(delimiter, repr(delimiter))
            msg = (
                f"the header is one column, {names[0][:60]!r}: it looks {looks}-separated, "
                f"but --delimiter {delimiter!r} expects {given}s; leave --delimiter out to "
                "detect it"
            )
            header.problems.append(("", msg))
            return header
    first: dict[str, str] = {}
    blank: list[int] = []
    unused: list[str] = []
    for i, raw in enumerate(names):
        key = normalise(raw)
        if not key:
            blank.append(i)
        elif options.skipped(key):
            continue
        elif key not in KNOWN_FIELDS:
            if suggestion(key) is None:
                unused.append(raw.strip())
            else:
                header.problems.append(("", unknown_message(raw, key)))
        elif key in header.columns:
            written = raw.strip()
            msg = (
                f"column '{key}' appears twice"
                if written.lower() == first[key].lower()
                else f"columns {first[key]!r} and {written!r} are both {key} "
                "(names match ignoring case, spaces and hyphens)"
            )
            header.problems.append((key, msg))
        else:
            header.columns[key] = i
            first[key] = raw.strip()
    if unused:
        header.problems.append(("", unused_message(unused)))
    header.blank = tuple(blank)
    header.missing = tuple(k for k in required if k not in header.columns)
    return header
