"""The streamed report: SQL-built rows, the gallery's chunk files and index, parquet.

Stores are real SQLite files filled through the `Store` calls the pipeline
makes. The rows SQLite builds as JSON text are held equal to the ones
`summary.job_row` and `gallery.data_row` build from a `JobRecord`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from batchgen.models import ErrorInfo, Job, Status
from batchgen.report import gallery
from batchgen.report.gallery_data import DATA_DIR, Refs
from batchgen.report.parquet import write_parquet
from batchgen.report.summary import job_row, summarize, write_reports
from batchgen.store import Store

EVIL = "</script><b>x</b> & \"q\" 'a' \u00e9\u4e2d\U0001f600\n\ttab"


def load_head(out: Path) -> dict[str, Any]:
    text = (out / gallery.DATA_NAME).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(
        text.removeprefix("window.BATCHGEN_DATA = ").rstrip().removesuffix(";")
    )
    return data


def load_chunk(out: Path, head: dict[str, Any], name: str) -> list[list[Any]]:
    text = (out / head["dir"] / f"{name}.js").read_text(encoding="utf-8")
    assert text.startswith("BATCHGEN_CHUNK(")
    rows: list[list[Any]] = json.loads(text[text.index(",") + 1 :].rstrip().removesuffix(");"))
    return rows


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "out") as s:
        with s.transaction():
            s.start_run()
        yield s


def varied(store: Store, ref: Path) -> None:
    """Every shape a row can take: errors, long and hostile text, several files,
    upscaled sizes, retries, a size mismatch, references (a file, a chained job)."""
    with store.transaction():
        jobs = [
            Job(id="done", prompt="a mug", tags=("t1", "t<2>"), images=(str(ref),)),
            Job(id="evil", prompt=EVIL * 40, tags=(EVIL,), source="x.csv", line=7),
            Job(id="chain", prompt="edit it", images=("@done", str(ref))),
            Job(id="pend", prompt="later"),
            Job(id="fail", prompt="bad"),
        ]
        for job in jobs:
            store.plan(job, f"fp-{job.id}", reset=True)
        store.record_retry("done", "rate_limited")
        store.record_retry("done", "rate_limited")
        store.record_retry("done", "server_error")
        for job_id in ("done", "evil", "chain", "fail"):
            store.record_attempt(
                job_id, cost=0.0391234567, prompt_tokens=9, output_tokens=1290,
                cost_source="usage", model="m", image_size="1K", mode="live",
            )  # fmt: skip
        store.finish(
            "done", Status.DONE, files=["images/done.png", "sizes/a/done.png#x", "sizes/b/d.png"],
            upscaled=["sizes/b/d.png"], preview="images/done.png", pixels="16x16",
            expected_pixels="1024x1024",
        )  # fmt: skip
        store.finish("evil", Status.FAILED, error=ErrorInfo("bad_request", 400, EVIL * 30),
                     text=EVIL * 30)  # fmt: skip
        store.finish("chain", Status.DONE, files=["images/chain.png"], pixels="8x8",
                     expected_pixels="8x8")  # fmt: skip
        store.finish("fail", Status.BLOCKED, error=ErrorInfo("blocked", None, ""))


def test_sql_rows_equal_the_record_rows(store: Store, tmp_path: Path) -> None:
    ref = tmp_path / "refs" / "r.png"
    ref.parent.mkdir()
    Image.new("RGB", (8, 8)).save(ref)
    varied(store, ref)
    refs = Refs(store.out, store.first_file)
    records = list(store.records())
    rows = list(store.report_rows())
    assert [r.status for r in rows] == [r.status.value for r in records]
    for rec, row in zip(records, rows, strict=True):
        assert json.loads(row.report) == job_row(rec), rec.id
        built = gallery.data_row(rec, None, refs)
        data = json.loads(row.data[:-1] + "," + json.dumps(refs.links(rec.images)) + "]")
        assert data == built, rec.id
        assert "<" not in row.data
    done = json.loads(rows[0].data[:-1] + ",[]]")
    assert done[gallery.FIELDS.index("files")] == ["sizes/a/done.png#x", "sizes/b/d.png#upscaled"]
    assert refs.links(["@done", str(ref)]) == ["images/done.png", "../refs/r.png"]


def test_report_json_keeps_its_fields_and_parses(store: Store, tmp_path: Path) -> None:
    varied(store, tmp_path / "r.png")
    summary = write_reports(store)
    report = json.loads((store.out / "report.json").read_text(encoding="utf-8"))
    assert report["total"] == summary["total"] == 5
    assert [j["id"] for j in report["jobs"]] == ["done", "evil", "chain", "pend", "fail"]
    assert report["jobs"][1]["prompt"] == EVIL * 40
    assert summary["upscaled"] == 1
    failed = (store.out / "failed.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in failed] == ["evil", "fail"]


def build(store: Store, n: int) -> None:
    statuses = [Status.DONE] * 6 + [Status.FAILED, Status.BLOCKED, Status.PENDING]
    with store.transaction():
        for i in range(n):
            job_id = f"p{i:05d}"
            store.plan(Job(id=job_id, prompt=f"item {i}", tags=(f"t{i % 7}",)), "f", reset=True)
            status = statuses[i % len(statuses)]
            if status is Status.PENDING:
                continue
            store.record_attempt(job_id, cost=0.01 * (i % 13), prompt_tokens=1,
                                 output_tokens=1, cost_source="usage")  # fmt: skip
            err = None if status is Status.DONE else ErrorInfo(f"k{i % 2}", 400, "m")
            store.finish(job_id, status, error=err)


def test_chunks_and_index_cover_every_row_once(store: Store) -> None:
    build(store, 5_000)
    summary = summarize(store)
    gallery.write_gallery(store, summary, chunk_rows=1_000)
    head = load_head(store.out)
    assert (head["total"], head["chunk"], head["chunks"]) == (5_000, 1_000, 5)
    ids = [r[0] for r in head["rows"]]
    for k in range(1, 5):
        ids += [r[0] for r in load_chunk(store.out, head, str(k))]
    assert ids == [f"p{i:05d}" for i in range(5_000)]
    index = head["index"]
    for status in ("done", "failed", "blocked", "pending"):
        assert sum(index["status"][status]) == summary[status]
        assert len(index["status"][status]) == 5
    assert sum(index["tag"]["t3"]) == summary["by_tag"]["t3"]["jobs"]
    assert sum(index["kind"]["k1"]) == summary["errors"]["k1"]
    top = load_chunk(store.out, head, head["top"]["cost"])
    costs = [r[gallery.FIELDS.index("cost")] for r in top]
    assert costs == sorted(costs, reverse=True)
    assert costs[0] == pytest.approx(0.12)


def test_a_new_report_replaces_the_chunks_of_the_last(store: Store) -> None:
    build(store, 2_500)
    gallery.write_gallery(store, summarize(store), chunk_rows=1_000)
    first = load_head(store.out)["dir"]
    gallery.write_gallery(store, summarize(store), chunk_rows=1_000)
    second = load_head(store.out)["dir"]
    generations = [p.name for p in (store.out / DATA_DIR).iterdir()]
    assert generations == [Path(second).name]
    assert first != second or generations == [Path(first).name]


def test_one_chunk_has_no_chunk_files(store: Store) -> None:
    build(store, 30)
    gallery.write_gallery(store, summarize(store))
    head = load_head(store.out)
    assert (head["chunks"], len(head["rows"]), head["top"]) == (1, 30, {})
    assert not any((store.out / head["dir"]).glob("*.js"))


def test_parquet_holds_every_job(store: Store, tmp_path: Path) -> None:
    import pandas as pd

    varied(store, tmp_path / "r.png")
    build(store, 300)
    path = write_parquet(store)
    assert path == store.out / "report.parquet"
    df = pd.read_parquet(path)
    report = [json.loads(r.report) for r in store.report_rows()]
    assert list(df["id"]) == [j["id"] for j in report]
    assert list(df["status"]) == [j["status"] for j in report]
    assert list(df.loc[0, "files"]) == report[0]["files"]
    assert list(df.loc[0, "tags"]) == ["t1", "t<2>"]
    assert df["cost_usd"].sum() == pytest.approx(sum(j["cost_usd"] for j in report), abs=1e-4)
    assert df.loc[1, "prompt"] == EVIL * 40
    assert str(df["started_at"].dtype).startswith("datetime64")


def test_report_command_writes_parquet(store: Store) -> None:
    build(store, 50)
    store.close()
    proc = subprocess.run(
        [sys.executable, "-m", "batchgen", "report", str(store.out), "--format", "parquet"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "report.parquet" in proc.stdout
    import pyarrow.parquet as pq

    assert pq.read_metadata(store.out / "report.parquet").num_rows == 50


def test_search_index_holds_every_trigram_of_every_chunk(store: Store) -> None:
    build(store, 2_500)
    with store.transaction():
        store.plan(Job(id="Zeta-1", prompt=f"ΣΟΦΙΑ {EVIL}"), "f", reset=True)
    gallery.write_gallery(store, summarize(store), chunk_rows=1_000)
    head = load_head(store.out)
    assert head["search"] == "search"
    text = (store.out / head["dir"] / "search.js").read_text(encoding="utf-8")
    assert text.startswith('BATCHGEN_CHUNK("search",')
    assert "<" not in text
    index = json.loads(text[text.index(",") + 1 :].rstrip().removesuffix(");"))
    assert (index["chunks"], index["complete"]) == (3, True)

    def chunks_of(gram: str) -> set[int]:
        m = index["grams"][gram]
        return set(m) if isinstance(m, list) else {k for k in range(3) if int(m, 16) >> k & 1}

    rows = [(k, r) for k in range(3) for r in load_chunk_rows(store.out, head, k)]
    for k, row in rows:
        for word in f"{row[0]} {row[2]}".lower().split():
            for i in range(len(word) - 2):
                assert k in chunks_of(word[i : i + 3]), (row[0], word)
    assert chunks_of("p02") == chunks_of("zet") == chunks_of("σοφ") == {2}
    assert chunks_of("ite") == {0, 1, 2}
    assert "zzz" not in index["grams"]


def load_chunk_rows(out: Path, head: dict[str, Any], k: int) -> list[list[Any]]:
    return head["rows"] if k == 0 else load_chunk(out, head, str(k))


def test_search_index_stops_recording_new_trigrams_when_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    from batchgen.report import search_index

    monkeypatch.setattr(search_index, "MAX_GRAMS", 5)
    index = search_index.SearchIndex()
    index.add_chunk(0, ["abcdef"])  # four trigrams: all recorded
    index.add_chunk(1, ["abcxyz", "zzzz"])  # "abc" gets chunk 1, one new fits, one does not
    fh = io.StringIO()
    index.write(fh, "search")
    doc = json.loads(fh.getvalue().removeprefix('BATCHGEN_CHUNK("search",').rstrip()[:-2])
    assert doc["complete"] is False
    assert len(doc["grams"]) == 5
    assert doc["grams"]["abc"] == [0, 1]
    assert doc["grams"]["def"] == [0]
    assert search_index.chunk_grams(["Ab-CD  e"]) == {"ab-", "b-c", "-cd"}
