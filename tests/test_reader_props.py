"""Property tests for the reader: round trips, hostile bytes, and no row lost.

Each property runs an explicit number of examples (`EXAMPLES`,
`ROUND_TRIP_EXAMPLES`); the number
actually tried is printed at the end of each test (run with `-s` to see it,
or `--hypothesis-show-statistics`).
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchgen.errors import InputError, InputProblem
from batchgen.jobs.reader import read_jobs, validate, validate_id
from batchgen.models import ASPECT_RATIOS, Job

EXAMPLES = 250
#: Round trips draw whole tables of rows: fewer examples keep them under ~10 s.
ROUND_TRIP_EXAMPLES = 200
PROPS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ROUND_TRIPS = settings(PROPS, max_examples=ROUND_TRIP_EXAMPLES)
TRIED: dict[str, int] = {}


def tried(name: str) -> None:
    TRIED[name] = TRIED.get(name, 0) + 1


@contextmanager
def folder() -> Iterator[Path]:
    # A fresh folder per example: pytest's tmp_path is shared across examples.
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


# --- strategies --------------------------------------------------------------------

TEXT = st.characters(exclude_categories=["Cs"])
ids = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,30}", fullmatch=True).filter(
    lambda s: validate_id(s) is None
)
prompts = st.text(TEXT, min_size=1, max_size=60).filter(lambda s: s.strip() != "")
words = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,10}[A-Za-z0-9]|[A-Za-z0-9]", fullmatch=True)
rel_paths = st.from_regex(r"([a-z0-9_-]{1,8}/){0,2}[a-z0-9_-]{1,8}\.(png|jpg)", fullmatch=True)
sizes = st.sampled_from(["amazon", "shopify:fill", "instagram", "800x600", "1000x1000:fill"])
models = st.sampled_from(["gemini-2.5-flash-image", "models/gemini-x", "m1"])


@st.composite
def rows(draw: st.DrawFn, job_id: str, known_ids: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"id": job_id, "prompt": draw(prompts)}
    if draw(st.booleans()):
        refs = []
        if known_ids:
            refs = [f"@{i}" for i in draw(st.lists(st.sampled_from(known_ids), max_size=2))]
        row["images"] = draw(st.lists(rel_paths, max_size=2)) + refs
    if draw(st.booleans()):
        row["aspect_ratio"] = draw(st.sampled_from(sorted(ASPECT_RATIOS)))
    if draw(st.booleans()):
        row["tags"] = draw(st.lists(words, max_size=3))
    if draw(st.booleans()):
        row["priority"] = draw(st.integers(-(10**9), 10**9))
    if draw(st.booleans()):
        row["model"] = draw(models)
    if draw(st.booleans()):
        row["variant"] = draw(st.integers(1, 10**6))
    if draw(st.booleans()):
        row["sizes"] = draw(st.lists(sizes, max_size=3))
    return row


@st.composite
def job_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    names = draw(st.lists(ids, min_size=1, max_size=8, unique_by=str.lower))
    # Refs point only to earlier rows, so the chain graph has no cycle.
    return [draw(rows(name, names[:i])) for i, name in enumerate(names)]


def expected_job(row: dict[str, Any], path: Path, line: int) -> Job:
    base = path.parent
    images = tuple(i if i.startswith("@") else str(base / i) for i in row.get("images", []))
    return Job(
        id=row["id"],
        prompt=row["prompt"],
        images=images,
        aspect_ratio=row.get("aspect_ratio"),
        tags=tuple(row.get("tags", [])),
        priority=row.get("priority", 0),
        model=row.get("model"),
        variant=row.get("variant"),
        sizes=tuple(row.get("sizes", [])),
        source=str(path),
        line=line,
    )


def csv_cell(value: Any, as_json: bool) -> str:
    if isinstance(value, list):
        return json.dumps(value) if as_json or not value else ";".join(value)
    return str(value)


COLUMNS = ["_sku", "id", "prompt", "images", "aspect_ratio", "tags", "priority"]
COLUMNS += ["model", "variant", "sizes", "x-notes"]


def write_csv(path: Path, table: list[dict[str, Any]], as_json: bool) -> list[int]:
    """Write rows with csv.writer; return the line each record starts on."""
    out = io.StringIO(newline="")
    # "\r\n" so csv.writer quotes a field holding a lone "\r" (with "\n" it
    # does not, and the "\r" would read back as part of the line ending).
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    starts = []
    for n, row in enumerate(table):
        starts.append(out.getvalue().count("\n") + 1)
        cells = {k: csv_cell(v, as_json) for k, v in row.items()}
        writer.writerow(
            [cells.get(c, "") if c not in ("_sku", "x-notes") else f"x{n}" for c in COLUMNS]
        )
    path.write_text(out.getvalue(), encoding="utf-8", newline="")
    return starts


# --- (a) round trip ------------------------------------------------------------------


@ROUND_TRIPS
@given(table=job_rows())
def test_jsonl_round_trip(table: list[dict[str, Any]]) -> None:
    tried("jsonl_round_trip")
    with folder() as tmp:
        path = tmp / "jobs.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in table), encoding="utf-8")
        assert validate([path], check_images=False) == len(table)
        expected = [expected_job(r, path, n) for n, r in enumerate(table, start=1)]
        assert list(read_jobs([path])) == expected


@ROUND_TRIPS
@given(table=job_rows(), as_json=st.booleans())
def test_csv_round_trip(table: list[dict[str, Any]], as_json: bool) -> None:
    tried("csv_round_trip")
    with folder() as tmp:
        path = tmp / "jobs.csv"
        starts = write_csv(path, table, as_json)
        assert validate([path], check_images=False) == len(table)
        expected = [expected_job(r, path, line) for r, line in zip(table, starts, strict=True)]
        assert list(read_jobs([path])) == expected


# --- (b) hostile bytes ----------------------------------------------------------------

FRAGMENTS = [
    b'{"id": "a", "prompt": "p"}',
    b'{"id": ',
    b'"prompt"',
    b'"images": ["@a"]',
    b"id,prompt",
    b"a,p",
    b'"',
    b",",
    b";",
    b"\n",
    b"\r\n",
    b"\r",
    b"\x00",
    b"\xff\xfe",
    b"\xef\xbb\xbf",
    b"\xe9",
    b"[" * 50,
    b"{}",
    b"null",
    b"1e999",
    b"\\u0000",
]
hostile = st.one_of(
    st.binary(max_size=400),
    st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=8), max_size=40).map(b"".join),
)


def check_problems(problems: list[InputProblem], path: Path) -> None:
    assert problems
    for p in problems:
        assert p.file == str(path)
        assert p.line >= 1 or p.field in ("", "id", "prompt")
        assert p.message


@PROPS
@given(data=hostile, ext=st.sampled_from([".jsonl", ".csv", ".ndjson"]))
def test_arbitrary_bytes_never_raise_anything_but_input_error(data: bytes, ext: str) -> None:
    tried("arbitrary_bytes")
    with folder() as tmp:
        path = tmp / f"jobs{ext}"
        path.write_bytes(data)
        try:
            count = validate([path])
        except InputError as exc:
            check_problems(exc.problems, path)
        else:
            assert count >= 1
            assert len(list(read_jobs([path]))) == count
        try:
            for job in read_jobs([path]):
                assert job.line >= 1
                assert validate_id(job.id) is None
        except InputError as exc:
            check_problems(exc.problems, path)


# --- (c) no row is dropped silently ---------------------------------------------------


def outcome(path: Path) -> tuple[int, list[InputProblem]]:
    """validate's answer as data: (job count, []) or (0, problems)."""
    try:
        return validate([path], check_images=False), []
    except InputError as exc:
        return 0, exc.problems


BAD_JSONL = st.sampled_from(
    [
        "{broken",
        "[1, 2]",
        '"just a string"',
        '{"id": "../up", "prompt": "p"}',
        '{"id": "x1", "prompt": "   "}',
        '{"prompt": "no id"}',
        '{"id": "x2", "prompt": "p", "priority": "high"}',
        '{"id": "x3", "prompt": "p", "tags": [1]}',
        '{"id": "x4", "prompt": "p", "aspect_ratio": "2:1"}',
        '{"id": "x5", "prompt": "p", "images": ["@nowhere"]}',
        '{"id": "con", "prompt": "p"}',
        "nul\x00byte",
    ]
)
BLANK = st.sampled_from(["", "   ", "\t", "\r"])


@st.composite
def jsonl_lines(draw: st.DrawFn) -> list[tuple[str, str]]:
    """(kind, text) per physical line: 'good', 'bad' or 'blank'."""
    kinds = draw(st.lists(st.sampled_from(["good", "bad", "blank"]), max_size=25))
    lines = []
    for n, kind in enumerate(kinds):
        if kind == "good":
            row = {"id": f"g{n}", "prompt": draw(prompts)}
            lines.append((kind, json.dumps(row)))
        elif kind == "bad":
            lines.append((kind, draw(BAD_JSONL)))
        else:
            lines.append((kind, draw(BLANK)))
    return lines


@PROPS
@given(lines=jsonl_lines())
def test_every_jsonl_row_is_a_job_or_a_problem(lines: list[tuple[str, str]]) -> None:
    tried("jsonl_count")
    with folder() as tmp:
        path = tmp / "jobs.jsonl"
        path.write_text("\n".join(text for _, text in lines) + "\n", encoding="utf-8")
        good = {n for n, (kind, _) in enumerate(lines, start=1) if kind == "good"}
        bad = {n for n, (kind, _) in enumerate(lines, start=1) if kind == "bad"}
        count, problems = outcome(path)
        assert {p.line for p in problems if p.line} == bad
        if not (good | bad):
            assert [p.message for p in problems] == ["no jobs in file"]
        elif not bad:
            assert count == len(good)
        # The good rows alone (bad ones blanked) come back, each on its own line.
        kept = "\n".join(text if kind == "good" else "" for kind, text in lines) + "\n"
        path.write_text(kept, encoding="utf-8")
        assert {job.line for job in read_jobs([path])} == good


@st.composite
def csv_records(draw: st.DrawFn) -> list[tuple[str, list[str]]]:
    kinds = draw(st.lists(st.sampled_from(["good", "bad", "blank"]), max_size=20))
    out = []
    for n, kind in enumerate(kinds):
        if kind == "good":
            out.append((kind, [f"g{n}", draw(prompts), draw(st.sampled_from(["", "3", "-1"]))]))
        elif kind == "bad":
            out.append(
                (
                    kind,
                    draw(
                        st.sampled_from(
                            [
                                [f"b{n}", "  ", ""],
                                ["a/b", "p", ""],
                                ["", "p", ""],
                                [f"b{n}", "p", "x"],
                                [f"b{n}", "p", "1", "extra"],
                                [f"b{n}"],
                            ]
                        )
                    ),
                )
            )
        else:
            out.append((kind, draw(st.sampled_from([[], ["", "", ""], [" "]]))))
    return out


@PROPS
@given(records=csv_records())
def test_every_csv_record_is_a_job_or_a_problem(records: list[tuple[str, list[str]]]) -> None:
    tried("csv_count")
    with folder() as tmp:
        path = tmp / "jobs.csv"
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(["id", "prompt", "priority"])
        starts: dict[str, set[int]] = {"good": set(), "bad": set(), "blank": set()}
        for kind, cells in records:
            starts[kind].add(out.getvalue().count("\n") + 1)
            writer.writerow(cells)
        path.write_bytes(out.getvalue().encode("utf-8"))
        count, problems = outcome(path)
        assert {p.line for p in problems if p.line} == starts["bad"]
        if not starts["bad"] and starts["good"]:
            assert count == len(starts["good"])


def test_examples_were_tried() -> None:
    """Runs last in this file: records how many examples each property saw."""
    if not TRIED:  # run on its own
        return
    print("\nhypothesis examples tried:", ", ".join(f"{k}={v}" for k, v in sorted(TRIED.items())))
    assert all(v >= 1 for v in TRIED.values())
