"""Issue 13: job files as people really save them, end to end through the CLI.

Column names matched ignoring case, spaces and hyphens; a column that looks
meant for a field refused with the field it meant; columns like no field
named once; `_` / `x-` prefixes and `--ignore-columns`; the delimiter read
from the header line; ids in any script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from batchgen.errors import InputError
from batchgen.jobs import reader
from batchgen.jobs.columns import ReadOptions, normalise, resolve_header, suggestion
from batchgen.jobs.inputs import FileSource, RecordsSource
from batchgen.jobs.records import sniff_delimiter

ROOT = Path(__file__).resolve().parent.parent


def batchgen(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "batchgen", *map(str, args)],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        timeout=120,
        check=False,
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- 1. misnamed columns ---------------------------------------------------------------


def test_aspect_ratio_with_a_space_reaches_the_image(tmp_path: Path) -> None:
    jobs = write(tmp_path / "jobs.csv", "ID,Prompt,Aspect Ratio\nwide,a cat,16:9\n")
    out = tmp_path / "out"
    ran = batchgen("run", jobs, "--out", out, "--sim", "--no-progress")
    assert ran.returncode == 0, ran.stderr
    with Image.open(out / "images" / "wide.png") as image:
        width, height = image.size
    assert width > height  # 16:9, not the square of a dropped column


@pytest.mark.parametrize(
    ("column", "meant"),
    [("ratio", "aspect_ratio"), ("image", "images"), ("Tag", "tags"), ("promt", "prompt")],
)
def test_a_column_meant_for_a_field_is_refused_with_the_field(
    tmp_path: Path, column: str, meant: str
) -> None:
    header = "id,prompt" if column != "promt" else "id"
    jobs = write(tmp_path / "jobs.csv", f"{header},{column}\na,{'b,' if header != 'id' else ''}x\n")
    checked = batchgen("validate", jobs)
    assert checked.returncode == 2
    assert "jobs OK" not in checked.stdout
    assert str(jobs) in checked.stderr
    assert repr(column) in checked.stderr
    assert f"meant to be {meant}" in checked.stderr or f"did you mean {meant}?" in checked.stderr


def test_ignored_prefixes_and_ignore_columns(tmp_path: Path) -> None:
    jobs = write(tmp_path / "jobs.csv", "id,prompt,_notes,x-sku,ratio\na,b,n,s,16:9\n")
    refused = batchgen("validate", jobs)
    assert refused.returncode == 2
    assert "'_notes'" not in refused.stderr
    assert "'x-sku'" not in refused.stderr
    kept = batchgen("validate", jobs, "--ignore-columns", "Ratio")
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.strip() == "1 jobs OK"
    assert kept.stderr == ""  # nothing to say: every column is accounted for


def test_columns_like_no_field_are_one_error_naming_them_and_the_way_out(tmp_path: Path) -> None:
    jobs = write(tmp_path / "jobs.csv", "id,prompt,sku,price\na,b,1,2\nc,d,3,4\n")
    checked = batchgen("validate", jobs)
    assert checked.returncode == 2
    assert checked.stderr.count("unknown columns 'sku', 'price': not a job field") == 1
    assert f"{jobs}:1:" in checked.stderr
    assert "--ignore-columns 'sku,price'" in checked.stderr
    assert batchgen("validate", jobs, "--ignore-columns", "sku,price").returncode == 0


def test_two_headers_that_normalise_alike_are_an_error(tmp_path: Path) -> None:
    jobs = write(tmp_path / "jobs.csv", "id,prompt,Aspect Ratio,aspect-ratio\na,b,1:1,1:1\n")
    checked = batchgen("validate", jobs)
    assert checked.returncode == 2
    assert "'Aspect Ratio' and 'aspect-ratio' are both aspect_ratio" in checked.stderr


def test_jsonl_keys_follow_the_same_rules(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "prompt": "p", "ratio": "16:9", "_note": 1, "x-sku": 2},
        {"id": "b", "prompt": "p", "ratio": "1:1"},
        {"ID": "c", "Prompt": "p", "vendor": "v"},
    ]
    jobs = write(tmp_path / "jobs.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    checked = batchgen("validate", jobs)
    assert checked.returncode == 2
    assert checked.stderr.count("unknown key 'ratio': did you mean aspect_ratio?") == 1
    assert f"{jobs}:1:" in checked.stderr  # on the first line that has it
    assert "unknown key 'vendor': not a job field" in checked.stderr


def test_records_from_python_follow_the_jsonl_rules() -> None:
    source = RecordsSource([{"id": "a", "prompt": "p", "image": "x.png"}])
    with pytest.raises(InputError) as caught:
        reader.check([source])
    assert "did you mean images?" in caught.value.problems[0].message


def test_normalise_and_suggestion() -> None:
    assert normalise("  Aspect  Ratio ") == normalise("aspect-ratio") == "aspect_ratio"
    assert suggestion("ratio") == "aspect_ratio"
    assert suggestion("sku") is None
    header = resolve_header(["ID", "Prompt", "X-SKU", "_n", "sizes"], ("id", "prompt"))
    assert (header.columns, header.problems) == ({"id": 0, "prompt": 1, "sizes": 4}, [])


# --- 2. delimiters ---------------------------------------------------------------------


def test_semicolon_csv_is_detected_and_said_once(tmp_path: Path) -> None:
    jobs = write(tmp_path / "jobs.csv", 'id;prompt;tags\na;"x, y";t1\n')
    checked = batchgen("validate", jobs)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == "1 jobs OK"
    assert checked.stderr.count("semicolon-separated") == 1
    (job,) = reader.read_jobs([jobs])
    assert (job.prompt, job.tags) == ("x, y", ("t1",))


@pytest.mark.parametrize(("sep", "name"), [("\t", "tab"), ("|", "|")])
def test_tab_and_pipe_delimiters(tmp_path: Path, sep: str, name: str) -> None:
    jobs = write(tmp_path / "jobs.csv", f"id{sep}prompt\na{sep}b, c\n")
    assert batchgen("validate", jobs).returncode == 0
    forced = batchgen("validate", jobs, "--delimiter", name)
    assert forced.returncode == 0, forced.stderr
    assert forced.stderr == ""  # a delimiter given is not announced


def test_a_forced_wrong_delimiter_is_one_problem_not_two(tmp_path: Path) -> None:
    jobs = write(tmp_path / "jobs.csv", "id;prompt\na;b\n")
    checked = batchgen("validate", jobs, "--delimiter", ",")
    assert checked.returncode == 2
    assert checked.stderr.count("semicolon-separated") == 1
    assert "1 problem in the job files" in checked.stderr


def test_sniff_ignores_delimiters_inside_quotes() -> None:
    assert sniff_delimiter('"a,b,c";prompt\n', ",") == ";"
    assert sniff_delimiter("id\n", ",") == ","


# --- 4. ids ------------------------------------------------------------------------------


def test_ids_in_any_script_run_and_fold_case_and_normalisation(tmp_path: Path) -> None:
    jobs = write(tmp_path / "jobs.csv", "id,prompt\ncrème-brûlée,a\n東京-1,b\n")
    assert batchgen("validate", jobs).stdout.strip() == "2 jobs OK"
    decomposed = "cre\u0300me-bru\u0302le\u0301e"  # the same id, as a Mac may type it
    clash = write(
        tmp_path / "clash.csv", f"id,prompt\ncrème-brûlée,a\n{decomposed},b\nCRÈME-BRÛLÉE,c\n"
    )
    checked = batchgen("validate", clash)
    assert checked.returncode == 2
    assert "duplicate id 'crème-brûlée' (first on line 2)" in checked.stderr
    assert "differs only in letter case" in checked.stderr
    assert "may contain only" not in checked.stderr


def test_unsafe_ids_are_still_refused_with_a_message_that_holds(tmp_path: Path) -> None:
    jobs = write(tmp_path / "jobs.csv", "id,prompt\nAB/123,a\nx y,b\n..,c\n")
    checked = batchgen("validate", jobs)
    assert checked.returncode == 2
    assert "path separator" in checked.stderr
    assert "letters and digits (of any script)" in checked.stderr
    assert "cannot be '..'" in checked.stderr


def test_options_change_whether_bytes_alone_decide(tmp_path: Path) -> None:
    path = write(tmp_path / "j.csv", "id,prompt\na,b\n")
    assert FileSource(path).identified_by_bytes
    assert not FileSource(path, ReadOptions.make(sheet="2")).identified_by_bytes
