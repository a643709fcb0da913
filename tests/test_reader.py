"""The reader on real files: every problem kind, with its exact file, line and field."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image

from batchgen.errors import InputError, InputProblem
from batchgen.jobs import checks as reader_checks
from batchgen.jobs import inputs, reader
from batchgen.jobs.columns import ReadOptions
from batchgen.jobs.reader import read_jobs, validate, validate_id
from batchgen.models import Job

DATA = Path(__file__).parent / "data" / "reader"


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def jsonl(path: Path, *rows: object) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def problems(paths: Sequence[Path], *, check_images: bool = True) -> list[InputProblem]:
    with pytest.raises(InputError) as caught:
        validate(paths, check_images=check_images)
    return caught.value.problems


def where(paths: Sequence[Path], *, check_images: bool = True) -> list[tuple[str, int, str]]:
    """(file name, line, field) of each problem: what a user looks up first."""
    found = problems(paths, check_images=check_images)
    return [(Path(p.file).name, p.line, p.field) for p in found]


def png(path: Path, size: tuple[int, int] = (4, 4)) -> Path:
    Image.new("RGB", size, (200, 10, 10)).save(path, format="PNG")
    return path


# --- happy paths -----------------------------------------------------------------


def test_jsonl_rows_become_jobs_with_every_field(tmp_path: Path) -> None:
    png(tmp_path / "ref.png")
    path = jsonl(
        tmp_path / "jobs.jsonl",
        {
            "id": "sku-1",
            "prompt": "  A Cat,  on a MAT!  ",
            "images": ["ref.png"],
            "aspect_ratio": "4:5",
            "tags": [" shoes ", "", "red"],
            "priority": 3,
            "model": "gemini-2.5-flash-image",
            "variant": 2,
            "sizes": ["Amazon", "800x600:fill"],
            "_vendor_note": {"ignored": True},  # marked: not a job field
        },
        {"id": "sku-2", "prompt": "p", "images": "@sku-1"},
    )
    assert validate([path]) == 2
    jobs = list(read_jobs([path]))
    assert jobs == [
        Job(
            id="sku-1",
            prompt="  A Cat,  on a MAT!  ",
            images=(str(tmp_path / "ref.png"),),
            aspect_ratio="4:5",
            tags=("shoes", "red"),
            priority=3,
            model="gemini-2.5-flash-image",
            variant=2,
            sizes=("amazon", "800x600:fill"),
            source=str(path),
            line=1,
        ),
        Job(id="sku-2", prompt="p", images=("@sku-1",), source=str(path), line=2),
    ]


def test_csv_lists_as_semicolons_or_json_and_marked_columns_ignored(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    png(tmp_path / "b.png")
    path = write(
        tmp_path / "products.csv",
        "_sku_name,id,prompt,images,tags,priority,variant,aspect_ratio,sizes,x-price\n"
        'Shoe,s1,"red, shoe",a.png; b.png,"x; ;y",2,1,1:1,amazon;instagram:fill,9.99\n'
        'Hat,s2,hat,"[""a.png""]","[""t""]",,,,,\n',
    )
    assert validate([path]) == 2
    first, second = read_jobs([path])
    assert first.images == (str(tmp_path / "a.png"), str(tmp_path / "b.png"))
    assert (first.prompt, first.tags, first.priority, first.variant) == (
        "red, shoe",
        ("x", "y"),
        2,
        1,
    )
    assert first.sizes == ("amazon", "instagram:fill")
    assert (second.images, second.tags, second.priority, second.variant) == (
        (str(tmp_path / "a.png"),),
        ("t",),
        0,
        None,
    )
    assert second.aspect_ratio is None
    assert second.line == 3


def test_csv_line_numbers_count_embedded_newlines(tmp_path: Path) -> None:
    path = write(
        tmp_path / "jobs.csv",
        'id,prompt\r\na,"one\r\ntwo\r\nthree"\r\n\r\nb,"say ""hi"""\r\nc,"x\ny"\n',
    )
    jobs = list(read_jobs([path]))
    assert [(j.id, j.line) for j in jobs] == [("a", 2), ("b", 6), ("c", 7)]
    assert jobs[0].prompt == "one\r\ntwo\r\nthree"
    assert jobs[1].prompt == 'say "hi"'


def test_csv_bad_row_after_multiline_record_names_its_start_line(tmp_path: Path) -> None:
    path = write(tmp_path / "jobs.csv", 'id,prompt\na,"x\ny\nz"\nb,""\n')
    assert where([path]) == [("jobs.csv", 5, "prompt")]


def test_bom_is_tolerated_in_jsonl_and_csv(tmp_path: Path) -> None:
    j = write(tmp_path / "a.jsonl", b'\xef\xbb\xbf{"id": "a", "prompt": "p"}\n')
    c = write(tmp_path / "b.csv", b"\xef\xbb\xbfid,prompt\nb,p\n")
    assert validate([j, c]) == 2
    assert [job.id for job in read_jobs([j, c])] == ["a", "b"]


def test_blank_lines_skipped_and_ndjson_accepted(tmp_path: Path) -> None:
    path = write(
        tmp_path / "j.ndjson", '\n{"id": "a", "prompt": "p"}\n  \t\n\n{"id": "b", "prompt": "q"}'
    )
    assert [(j.id, j.line) for j in read_jobs([path])] == [("a", 2), ("b", 5)]


def test_mixed_files_stream_in_order(tmp_path: Path) -> None:
    a = jsonl(tmp_path / "a.jsonl", {"id": "a1", "prompt": "p"}, {"id": "a2", "prompt": "p"})
    b = write(tmp_path / "b.csv", "id,prompt\nb1,p\n")
    assert validate([b, a]) == 3
    assert [j.id for j in read_jobs([b, a])] == ["b1", "a1", "a2"]
    assert [j.source for j in read_jobs([b, a])] == [str(b), str(a), str(a)]


def test_paths_given_as_str_are_accepted_and_named_as_given(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "j.jsonl", {"id": "a", "prompt": "p"})
    assert validate([str(path)]) == 1  # type: ignore[list-item]
    (job,) = read_jobs([str(path)])  # type: ignore[list-item]
    assert job.source == str(path)


def test_old_mac_line_endings_are_a_problem_not_a_crash(tmp_path: Path) -> None:
    path = write(tmp_path / "j.csv", "id,prompt\ra,p\rb,q\r")
    (found,) = problems([path])
    assert (found.line, found.field) == (1, "")
    assert found.message.startswith("broken CSV")


def test_utf16_file_is_one_problem(tmp_path: Path) -> None:
    row = '{"id": "a", "prompt": "p"}\n'
    j = write(tmp_path / "j.jsonl", (row * 3).encode("utf-16"))
    c = write(tmp_path / "c.csv", "id,prompt\na,p\n".encode("utf-16"))
    found = problems([j, c])
    assert [(p.line, p.message) for p in found] == [
        (1, "file is UTF-16 encoded; save it as UTF-8")
    ] * 2


def test_sample_fixtures_validate() -> None:
    paths = [DATA / "products.csv", DATA / "chained.jsonl"]
    assert validate(paths) == 5
    jobs = list(read_jobs(paths))
    assert jobs[0].images == (str((DATA / "ref.png").resolve()),)
    assert jobs[-1].images == ("@shoe-red",)


# --- all problems at once ---------------------------------------------------------


def test_five_bad_rows_give_five_problems_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path / "jobs.jsonl",
        '{"id": "ok", "prompt": "fine"}\n'
        '{"id": "a", "prompt": ""}\n'
        "{not json\n"
        '["a", "list"]\n'
        '{"id": "ok", "prompt": "again"}\n'
        '{"id": "b", "prompt": "p", "aspect_ratio": "7:3"}\n',
    )
    found = problems([path])
    assert [(p.line, p.field) for p in found] == [
        (2, "prompt"),
        (3, ""),
        (4, ""),
        (5, "id"),
        (6, "aspect_ratio"),
    ]
    assert all(p.file == str(path) for p in found)
    assert "Expecting property name" in found[1].message
    assert "got array" in found[2].message
    assert "first on line 1" in found[3].message
    assert "1:1" in found[4].message
    assert "21:9" in found[4].message


def test_one_row_with_many_bad_fields_reports_each_field(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "j.jsonl",
        {
            "id": "../x",
            "prompt": 5,
            "tags": "a;b",
            "priority": "3",
            "variant": 0,
            "model": "m/../../x",
            "sizes": ["huge"],
            "aspect_ratio": 1,
        },
    )
    fields = [f for _, _, f in where([path])]
    assert sorted(fields) == sorted(
        ["id", "prompt", "tags", "priority", "variant", "model", "sizes", "aspect_ratio"]
    )


def test_problem_count_is_capped_with_a_tally_of_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader, "MAX_PROBLEMS", 5)
    path = write(tmp_path / "junk.jsonl", "garbage\n" * 20)
    found = problems([path])
    assert len(found) == 6
    assert [p.line for p in found[:5]] == [1, 2, 3, 4, 5]
    assert found[5].message.startswith("... and 15 more problems")


# --- required fields and types ----------------------------------------------------


@pytest.mark.parametrize(
    ("row", "field", "text"),
    [
        ({"prompt": "p"}, "id", "id is required"),
        ({"id": None, "prompt": "p"}, "id", "id is required"),
        ({"id": "  ", "prompt": "p"}, "id", "id is empty"),
        ({"id": 7, "prompt": "p"}, "id", "id must be a string, got number"),
        ({"id": "a"}, "prompt", "prompt is required"),
        ({"id": "a", "prompt": " \n\t"}, "prompt", "prompt is empty"),
        ({"id": "a", "prompt": ["p"]}, "prompt", "prompt must be a string, got list"),
        ({"id": "a", "prompt": "p", "priority": 1.5}, "priority", "whole number"),
        ({"id": "a", "prompt": "p", "priority": True}, "priority", "whole number"),
        ({"id": "a", "prompt": "p", "priority": "3"}, "priority", "whole number"),
        ({"id": "a", "prompt": "p", "variant": 0}, "variant", "1 or more"),
        ({"id": "a", "prompt": "p", "tags": "x"}, "tags", "list of strings, got string"),
        ({"id": "a", "prompt": "p", "tags": ["x", 1]}, "tags", "found number"),
        ({"id": "a", "prompt": "p", "images": 3}, "images", "list of strings"),
        ({"id": "a", "prompt": "p", "images": ["", "x.png"]}, "images", "empty image path"),
        ({"id": "a", "prompt": "p", "images": ["https://x/y.png"]}, "images", "URLs"),
        ({"id": "a", "prompt": "p", "images": ["@../x"]}, "images", "not a valid job ref"),
        ({"id": "a", "prompt": "p", "model": 3}, "model", "must be a string"),
        ({"id": "a", "prompt": "p", "model": "a?key=x"}, "model", "not a model name"),
        ({"id": "a", "prompt": "p", "sizes": "amazon"}, "sizes", "list of strings"),
        ({"id": "a", "prompt": "p", "sizes": ["5x5"]}, "sizes", "between 10 and"),
        ({"id": "a", "prompt": "p", "sizes": ["amazon:crop"]}, "sizes", "unknown mode"),
        ({"id": "a", "prompt": "p", "aspect_ratio": "1:2"}, "aspect_ratio", "is not one of"),
    ],
)
def test_field_problem_names_line_and_field(
    tmp_path: Path, row: dict[str, object], field: str, text: str
) -> None:
    path = jsonl(tmp_path / "j.jsonl", {"id": "first", "prompt": "p"}, row)
    (found,) = problems([path])
    assert (found.file, found.line, found.field) == (str(path), 2, field)
    assert text in found.message


def test_optional_fields_may_be_null_or_empty(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "j.jsonl",
        {"id": "a", "prompt": "p", "images": None, "aspect_ratio": "", "tags": None},
        {"id": "b", "prompt": "p", "images": "", "priority": None, "model": "", "sizes": []},
    )
    assert validate([path]) == 2
    assert all(j.aspect_ratio is None and j.priority == 0 for j in read_jobs([path]))


@pytest.mark.parametrize(
    ("cell", "ok"),
    [("3", True), (" -2 ", True), ("", True), ("x", False), ("3.5", False), ("1e3", False)],
)
def test_csv_priority_is_a_numeric_string(tmp_path: Path, cell: str, ok: bool) -> None:
    path = write(tmp_path / "j.csv", f'id,prompt,priority\na,p,"{cell}"\n')
    if ok:
        assert validate([path]) == 1
    else:
        assert where([path]) == [("j.csv", 2, "priority")]


# --- ids ------------------------------------------------------------------------------


BAD_IDS = [
    "../x",
    "/etc/passwd",
    "C:x",
    "a/b",
    "a\\b",
    "con",
    "CON",
    "nul.png",
    "Com1",
    "lpt9.txt",
    "aux",
    "prn.x.y",
    "a\0b",
    "x" * 300,
    "x" * 129,
    ".",
    "..",
    ".hidden",
    "-rf",
    "trailing.",
    "has space",
    "ta\tb",
    "semi;colon",
    "",
]


@pytest.mark.parametrize("job_id", BAD_IDS)
def test_validate_id_rejects_unsafe_ids(job_id: str) -> None:
    message = validate_id(job_id)
    assert message
    assert not reader.ID_PATTERN.match(job_id) or "reserved" in message or "end" in message


# "ünïcode" moved here from BAD_IDS by issue 13: letters of any script are ids.
@pytest.mark.parametrize(
    "job_id", ["a", "A-1", "sku_00.v2", "x" * 128, "_x", "com10", "conx", "0", "ünïcode"]
)
def test_validate_id_accepts_safe_ids(job_id: str) -> None:
    assert validate_id(job_id) is None


@pytest.mark.parametrize("job_id", [i for i in BAD_IDS if i.strip()])
def test_unsafe_id_in_a_file_is_a_problem_on_its_line(tmp_path: Path, job_id: str) -> None:
    path = jsonl(tmp_path / "j.jsonl", {"id": "ok", "prompt": "p"}, {"id": job_id, "prompt": "p"})
    assert where([path]) == [("j.jsonl", 2, "id")]


def test_id_length_limit_is_named() -> None:
    assert validate_id("x" * 300) == "id is 300 characters long; the limit is 128"


# --- duplicates ------------------------------------------------------------------------


def test_duplicate_across_two_files_names_the_first(tmp_path: Path) -> None:
    a = jsonl(tmp_path / "a.jsonl", {"id": "x", "prompt": "p"}, {"id": "y", "prompt": "p"})
    b = write(tmp_path / "b.csv", "id,prompt\nz,p\ny,p\n")
    (found,) = problems([a, b])
    assert (found.file, found.line, found.field) == (str(b), 3, "id")
    assert found.message == f"duplicate id 'y' (first on {a}:2)"


def test_ids_differing_only_in_case_clash(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "j.jsonl", {"id": "Sku-1", "prompt": "p"}, {"id": "sku-1", "prompt": "p"}
    )
    (found,) = problems([path])
    assert (found.line, found.field) == (2, "id")
    assert "letter case" in found.message
    assert "line 1" in found.message


def test_duplicate_of_a_row_with_other_problems_is_still_found(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "j.jsonl", {"id": "x", "prompt": ""}, {"id": "x", "prompt": "p"})
    assert where([path]) == [("j.jsonl", 1, "prompt"), ("j.jsonl", 2, "id")]


def test_id_table_grows_and_tells_places_apart() -> None:
    table = reader_checks.IdTable(capacity=8)
    for i in range(20_000):
        assert table.add(f"id-{i}", i % 3, i + 1) is None
    assert len(table) == 20_000
    seen = table.add("id-12345", 9, 1)
    assert seen == reader_checks.Seen(12345 % 3, 12346, exact=True)
    assert "id-19999" in table
    assert "id-20000" not in table
    assert "ID-5" not in table
    assert table.add("ID-5", 0, 1) == reader_checks.Seen(5 % 3, 6, exact=False)


# --- chained edits -----------------------------------------------------------------------


def test_chain_refs_valid_across_files(tmp_path: Path) -> None:
    a = jsonl(tmp_path / "a.jsonl", {"id": "edit", "prompt": "p", "images": ["@base"]})
    b = write(tmp_path / "b.csv", "id,prompt,images\nbase,p,\nfinal,p,@edit\n")
    assert validate([a, b]) == 3


def test_chain_ref_to_unknown_id(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "j.jsonl", {"id": "a", "prompt": "p"}, {"id": "b", "prompt": "p", "images": "@A"}
    )
    (found,) = problems([path])
    assert (found.line, found.field) == (2, "images")
    assert "'@A' refers to job id 'A', which is not in the job files" in found.message


def test_chain_cycle_is_reported_once_with_its_path(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "j.jsonl",
        {"id": "a", "prompt": "p", "images": ["@c"]},
        {"id": "b", "prompt": "p", "images": ["@a"]},
        {"id": "c", "prompt": "p", "images": ["@b"]},
        {"id": "self", "prompt": "p", "images": ["@self"]},
    )
    found = problems([path])
    assert [(p.line, p.field) for p in found] == [(1, "images"), (4, "images")]
    assert found[0].message == "chained edits form a cycle: @a → @c → @b → @a"
    assert found[1].message == "chained edits form a cycle: @self → @self"


def test_long_chain_has_no_recursion_limit() -> None:
    n = 50_000
    edges = {
        f"j{i}": reader_checks.ChainNode(0, i + 1, (f"j{i + 1}",) if i < n else ("j0",))
        for i in range(n + 1)
    }
    (cycle,) = reader_checks.find_cycles(edges)
    assert len(cycle) == n + 2


def test_chain_refs_never_touch_the_filesystem(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "j.jsonl",
        {"id": "a", "prompt": "p"},
        {"id": "b", "prompt": "p", "images": ["@a"]},
    )
    assert validate([path]) == 1 + 1


# --- reference images ---------------------------------------------------------------------


def test_image_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    png(tmp_path / "ok.png")
    write(tmp_path / "text.png", "just text, not an image")
    Image.new("RGB", (2, 2)).save(tmp_path / "anim.gif", format="GIF")
    png(tmp_path / "big.png", (64, 64))
    (tmp_path / "folder.png").mkdir()
    limit = (tmp_path / "big.png").stat().st_size - 1
    monkeypatch.setattr(reader, "MAX_INLINE_BYTES", limit)
    path = jsonl(
        tmp_path / "j.jsonl",
        {"id": "a", "prompt": "p", "images": ["ok.png"]},
        {"id": "b", "prompt": "p", "images": ["missing.png"]},
        {"id": "c", "prompt": "p", "images": ["text.png"]},
        {"id": "d", "prompt": "p", "images": ["anim.gif"]},
        {"id": "e", "prompt": "p", "images": ["big.png"]},
        {"id": "f", "prompt": "p", "images": ["folder.png"]},
    )
    found = problems([path])
    assert [(p.line, p.field) for p in found] == [(n, "images") for n in range(2, 7)]
    assert found[0].message == f"image not found: {tmp_path / 'missing.png'}"
    assert found[1].message.startswith("not an image (looks like text: 'just text, n')")
    assert "image/gif is not accepted" in found[2].message
    assert f"is {limit + 1} bytes, over the {limit} bytes inline request limit" in found[3].message
    assert "directory" in found[4].message


def test_the_limit_is_named_in_megabytes() -> None:
    assert reader.MAX_INLINE_BYTES == 20 * 1024 * 1024
    assert reader_checks.human_size(reader.MAX_INLINE_BYTES) == "20 MB"


def test_rejected_image_files_name_what_they_are(tmp_path: Path) -> None:
    Image.new("RGB", (2, 2)).save(tmp_path / "scan.png", format="BMP")
    write(tmp_path / "empty.png", b"")
    write(tmp_path / "noise.jpg", bytes(range(250, 256)) + b"\x00" * 20)
    path = jsonl(
        tmp_path / "j.jsonl",
        *(
            {"id": n, "prompt": "p", "images": [f"{n}.{e}"]}
            for n, e in [("scan", "png"), ("empty", "png"), ("noise", "jpg")]
        ),
    )
    found = [p.message.rsplit(": ", 1)[0] for p in problems([path])]
    assert found == [
        "image type BMP is not accepted (use PNG, JPEG or WEBP)",
        "not an image (the file is empty); expected PNG, JPEG or WEBP",
        "not an image (starts with bytes fa fb fc fd fe ff 00 00); expected PNG, JPEG or WEBP",
    ]


def test_images_together_over_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = png(tmp_path / "one.png", (32, 32))
    png(tmp_path / "two.png", (32, 32))
    monkeypatch.setattr(reader, "MAX_INLINE_BYTES", int(one.stat().st_size * 1.5))
    path = jsonl(
        tmp_path / "j.jsonl",
        {"id": "a", "prompt": "p", "images": ["one.png"]},
        {"id": "b", "prompt": "p", "images": ["one.png", "two.png"]},
    )
    (found,) = problems([path])
    assert (found.line, found.field) == (2, "images")
    assert found.message.startswith("reference images total")


def test_each_distinct_image_is_checked_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    png(tmp_path / "ref.png")
    calls: list[str] = []
    original = reader_checks.ImageChecker._check

    def counting(self: reader_checks.ImageChecker, path: str) -> int | str:
        calls.append(path)
        return original(self, path)

    monkeypatch.setattr(reader_checks.ImageChecker, "_check", counting)
    sub = tmp_path / "sub"
    sub.mkdir()
    a = jsonl(
        tmp_path / "a.jsonl",
        *({"id": f"a{i}", "prompt": "p", "images": "ref.png"} for i in range(50)),
    )
    b = jsonl(sub / "b.jsonl", {"id": "b", "prompt": "p", "images": ["../ref.png", "./../ref.png"]})
    assert validate([a, b]) == 51
    assert calls == [str(tmp_path / "ref.png")]


def test_check_images_false_skips_the_filesystem(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "j.jsonl", {"id": "a", "prompt": "p", "images": ["nowhere.png"]})
    assert validate([path], check_images=False) == 1


def test_absolute_and_home_image_paths(tmp_path: Path) -> None:
    ref = png(tmp_path / "ref.png")
    path = jsonl(tmp_path / "j.jsonl", {"id": "a", "prompt": "p", "images": [str(ref)]})
    (job,) = read_jobs([path])
    assert job.images == (str(ref),)


# --- files and formats ---------------------------------------------------------------------


def test_file_level_problems(tmp_path: Path) -> None:
    empty = write(tmp_path / "empty.jsonl", "")
    blank = write(tmp_path / "blank.jsonl", "\n\n  \n")
    header = write(tmp_path / "header.csv", "id,prompt\n")
    txt = write(tmp_path / "jobs.txt", "id,prompt\na,b\n")
    folder = tmp_path / "dir.csv"
    folder.mkdir()
    missing = tmp_path / "missing.jsonl"
    found = problems([empty, blank, header, txt, folder, missing])
    assert [(Path(p.file).name, p.line, p.message) for p in found] == [
        ("empty.jsonl", 0, "no jobs in file"),
        ("blank.jsonl", 0, "no jobs in file"),
        ("header.csv", 0, "no jobs in file"),
        (
            "jobs.txt",
            0,
            "unsupported file type (.txt); use one of .csv, .jsonl, .ndjson, .parquet, .xlsx",
        ),
        ("dir.csv", 0, "job file is a directory"),
        ("missing.jsonl", 0, "job file not found"),
    ]


def test_same_file_given_twice(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "j.jsonl", {"id": "a", "prompt": "p"})
    (found,) = problems([path, tmp_path / "." / "j.jsonl"])
    assert "given twice" in found.message


def test_invalid_utf8_names_the_line_and_others_still_validate(tmp_path: Path) -> None:
    j = write(
        tmp_path / "j.jsonl", b'{"id": "a", "prompt": "p"}\n{"id": "b", "prompt": "caf\xe9"}\n'
    )
    c = write(tmp_path / "latin1.csv", "id,prompt\nx,plain\ny,café\nz,ok\n".encode("latin-1"))
    found = problems([j, c])
    assert [(Path(p.file).name, p.line) for p in found] == [("j.jsonl", 2), ("latin1.csv", 3)]
    assert all("not valid UTF-8 (byte 0xe9" in p.message for p in found)


def test_nul_bytes_and_deep_nesting_are_problems(tmp_path: Path) -> None:
    path = write(
        tmp_path / "j.jsonl",
        b'{"id": "a", "prompt": "p"}\x00\n'
        + b"[" * 200_000
        + b"\n"
        + b'{"id": 1'
        + b"0" * 5000
        + b"}\n",
    )
    found = problems([path])
    assert [p.line for p in found] == [1, 2, 3]
    assert "nested too deeply" in found[1].message or "invalid JSON" in found[1].message


def test_nul_in_csv_cell_is_kept_in_prompt_but_rejected_in_id(tmp_path: Path) -> None:
    path = write(tmp_path / "j.csv", b"id,prompt\na,p\x00q\nb\x00,p\n")
    assert where([path]) == [("j.csv", 3, "id")]


def test_enormous_line_is_reported_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inputs, "MAX_LINE_BYTES", 100)
    path = write(
        tmp_path / "j.jsonl",
        '{"id": "a", "prompt": "p"}\n{"id": "b", "prompt": "'
        + "x" * 5000
        + '"}\n{"id": "c", "prompt": "p"}\n',
    )
    (found,) = problems([path])
    assert (found.line, found.message) == (2, "line is longer than 100 bytes; skipped")
    monkeypatch.setattr(inputs, "MAX_LINE_BYTES", 10_000)
    assert validate([path]) == 3


def test_enormous_csv_line_stops_that_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inputs, "MAX_LINE_BYTES", 100)
    path = write(tmp_path / "j.csv", "id,prompt\na,p\nb," + "x" * 500 + "\nc,p\n")
    (found,) = problems([path])
    assert found.line == 3
    assert "longer than 100 bytes" in found.message


def test_csv_missing_required_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "j.csv", "sku,description\na,b\nc,d\n")
    found = problems([path])
    assert [(p.line, p.field) for p in found] == [(1, "id"), (1, "prompt")]
    assert "missing column 'id'" in found[0].message


def test_semicolon_separated_csv_gets_a_hint(tmp_path: Path) -> None:
    # Issue 13: the delimiter is now detected (tests/test_columns.py); forcing
    # commas on a ';' file still gets the hint, once.
    path = write(tmp_path / "j.csv", "id;prompt\na;b\n")
    with pytest.raises(InputError) as caught:
        reader.check([inputs.FileSource(path, ReadOptions(delimiter=","))])
    found = caught.value.problems
    assert "expects commas" in found[0].message


def test_csv_header_is_case_insensitive(tmp_path: Path) -> None:
    path = write(tmp_path / "j.csv", " ID , Prompt ,Tags\na,p,x\n")
    (job,) = read_jobs([path])
    assert (job.id, job.tags) == ("a", ("x",))


def test_csv_structure_problems(tmp_path: Path) -> None:
    path = write(
        tmp_path / "j.csv",
        'id,prompt\na,p,extra\nb,p,,\nc,"bad"quote\nd,"never closed\n',
    )
    found = problems([path])
    assert [(p.line, p.field) for p in found] == [(2, ""), (4, ""), (5, "")]
    assert "has 3 cells" in found[0].message
    assert found[1].message.startswith("broken CSV")


def test_csv_short_row_and_bad_json_list_cell(tmp_path: Path) -> None:
    path = write(tmp_path / "j.csv", 'id,prompt,tags\nonly-id\nb,p,"[""x"""\n')
    assert where([path]) == [("j.csv", 2, "prompt"), ("j.csv", 3, "tags")]


def test_parquet_round_trip(tmp_path: Path) -> None:
    import pandas as pd

    png(tmp_path / "r.png")
    frame = pd.DataFrame(
        {
            "id": ["p1", "p2"],
            "prompt": ["a cat", "a dog"],
            "images": [["r.png"], []],
            "tags": [["x", "y"], None],
            "priority": [5, 0],
            "variant": [None, 2],
            "_extra": [1.5, 2.5],
        }
    )
    path = tmp_path / "jobs.parquet"
    frame.to_parquet(path, row_group_size=1)
    assert validate([path]) == 2
    assert list(read_jobs([path])) == [
        Job(
            id="p1",
            prompt="a cat",
            images=(str(tmp_path / "r.png"),),
            tags=("x", "y"),
            priority=5,
            source=str(path),
            line=1,
        ),
        Job(id="p2", prompt="a dog", variant=2, source=str(path), line=2),
    ]


def test_parquet_typed_cells_read_as_a_person_typed_them(tmp_path: Path) -> None:
    import datetime

    import pandas as pd

    frame = pd.DataFrame(
        {
            "id": [1.0, 2.5, 3.0],
            "prompt": ["a", "b", None],
            "priority": [2.0, float("nan"), 1.5],
            "model": [None, datetime.datetime(2025, 1, 1), None],
        }
    )
    path = tmp_path / "typed.parquet"
    frame.to_parquet(path)
    assert where([path]) == [
        ("typed.parquet", 2, "model"),
        ("typed.parquet", 3, "prompt"),
        ("typed.parquet", 3, "priority"),
    ]
    first = next(iter(read_jobs([path])))
    assert (first.id, first.priority) == ("1", 2)


def test_parquet_problems(tmp_path: Path) -> None:
    import pandas as pd

    no_prompt = tmp_path / "np.parquet"
    pd.DataFrame({"id": ["a"]}).to_parquet(no_prompt)
    garbage = write(tmp_path / "g.parquet", b"PAR1 not really PAR1")
    bad_row = tmp_path / "bad.parquet"
    pd.DataFrame({"id": ["a", "b"], "prompt": ["p", ""]}).to_parquet(bad_row)
    found = problems([no_prompt, garbage, bad_row])
    assert [(Path(p.file).name, p.line, p.field) for p in found] == [
        ("np.parquet", 0, "prompt"),
        ("g.parquet", 0, ""),
        ("bad.parquet", 2, "prompt"),
    ]


def test_xlsx_rows_use_sheet_row_numbers(tmp_path: Path) -> None:
    import openpyxl  # type: ignore[import-untyped]

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["id", "prompt", "priority", "_note"])
    sheet.append([])
    sheet.append([12345, "numeric sku", 2.0, "x"])
    sheet.append(["b", None, None, None])
    path = tmp_path / "jobs.xlsx"
    book.save(path)
    assert where([path]) == [("jobs.xlsx", 4, "prompt")]
    (job,) = read_jobs([write(tmp_path / "one.csv", "id,prompt\n12345,numeric sku\n")])
    first = next(iter(read_jobs([path])))
    assert (first.id, first.priority, first.line) == (job.id, 2, 3)


def test_corrupt_xlsx_is_a_problem(tmp_path: Path) -> None:
    path = write(tmp_path / "x.xlsx", b"PK\x03\x04 not a workbook")
    assert where([path]) == [("x.xlsx", 0, "")]


# --- read_jobs on bad input ----------------------------------------------------------------


def test_read_jobs_yields_good_rows_then_raises_on_a_bad_one(tmp_path: Path) -> None:
    path = write(
        tmp_path / "j.jsonl",
        '{"id": "a", "prompt": "p"}\n{"id": "b"}\n{"id": "c", "prompt": "p"}\n',
    )
    got: list[str] = []
    with pytest.raises(InputError) as caught:
        got.extend(j.id for j in read_jobs([path]))
    assert got == ["a"]
    assert [(p.line, p.field) for p in caught.value.problems] == [(2, "prompt")]


def test_read_jobs_raises_for_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        list(read_jobs([tmp_path / "nope.csv"]))
