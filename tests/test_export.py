"""`batchgen export`: the approved images (or every done one), the sizes asked
for and a manifest, to a folder that can be exported again or to a zip written
whole; a missing size names the job."""

from __future__ import annotations

import csv
import hashlib
import io
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from batchgen.cli.main import main
from batchgen.errors import EXIT_OK, EXIT_USAGE
from batchgen.models import Job, Status
from batchgen.output.atomic import TEMP_PREFIX
from batchgen.report.export import COLUMNS, MANIFEST, export
from batchgen.sim import SimulatorThread
from batchgen.store import Store
from batchgen.store.reviews import Decision
from tests.conftest import TEST_MODEL, batchgen, write_jobs


@pytest.fixture
def folder(tmp_path: Path, sim_thread: SimulatorThread) -> Path:
    """A run's folder: four jobs done (one without a shopify size), one failed;
    a, b and d approved, c rejected."""
    both = ["amazon", "shopify"]
    rows = [
        {"id": "a", "prompt": "shoe", "tags": ["line:shoes", "sku:1"], "sizes": both},
        {"id": "b", "prompt": "boot", "tags": ["line:shoes"], "sizes": both},
        {"id": "c", "prompt": "hat", "sizes": both},
        {"id": "d", "prompt": "belt", "sizes": ["amazon"]},
        {"id": "e", "prompt": "nope [[sim:400]]", "sizes": ["amazon"]},
    ]  # fmt: skip
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    ran = batchgen("run", jobs, "--out", out, "--base-url", sim_thread.base_url,
                   "--no-progress", "--model", TEST_MODEL)  # fmt: skip
    assert ran.returncode == 1, ran.stderr
    with Store(out) as store, store.transaction():
        for job_id in ("a", "b", "d"):
            store.set_review(job_id, Decision.APPROVED)
        store.set_review("c", Decision.REJECTED, "six fingers")
    return out


def manifest(text: str) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows == [] or tuple(rows[0]) == COLUMNS
    return rows


def test_approved_to_a_folder_with_sizes_and_a_manifest(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    to = tmp_path / "upload"
    code = main(["export", str(folder), "--approved", "--to", str(to), "--sizes", "amazon"])
    assert code == EXIT_OK
    rows = manifest((to / MANIFEST).read_text(encoding="utf-8"))
    assert [(r["id"], r["size"]) for r in rows] == [
        ("a", "original"), ("a", "amazon"), ("b", "original"), ("b", "amazon"),
        ("d", "original"), ("d", "amazon"),
    ]  # fmt: skip
    assert rows[0]["tags"] == "line:shoes;sku:1"
    for row in rows:
        data = (to / row["file"]).read_bytes()
        assert data == (folder / row["file"]).read_bytes()
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
        assert int(row["bytes"]) == len(data)
        with Image.open(to / row["file"]) as image:
            assert image.size == (int(row["width"]), int(row["height"]))
    assert rows[1]["width"] == rows[1]["height"] == "1500"
    assert not (to / "images" / "c.png").exists()
    assert "exported 6 files of 3 jobs" in capsys.readouterr().err


def test_a_folder_export_runs_again_and_follows_the_decisions(folder: Path, tmp_path: Path) -> None:
    to = tmp_path / "upload"
    with Store(folder) as store:
        export(store, to, approved=True, sizes=["amazon"])
    first = (to / MANIFEST).read_bytes()
    mine = to / "notes.txt"
    mine.write_text("the user's own file")
    killed = to / "images" / f"{TEMP_PREFIX}123-a.png"  # a copy a killed export left
    killed.write_bytes(b"half")
    with Store(folder) as store:
        again = export(store, to, approved=True, sizes=["amazon"])
    assert (to / MANIFEST).read_bytes() == first
    assert again.removed == 0
    assert not killed.exists()
    with Store(folder) as store, store.transaction():
        store.set_review("b", Decision.REJECTED)
    with Store(folder) as store:
        third = export(store, to, approved=True, sizes=["amazon"])
    assert third.removed == 2
    assert not (to / "images" / "b.png").exists()
    assert not (to / "sizes" / "amazon" / "b.jpg").exists()
    assert (to / "images" / "a.png").exists()
    assert mine.read_text() == "the user's own file"
    names = {p.name for p in to.rglob("*")}
    assert not any(n.startswith(TEMP_PREFIX) for n in names)


def test_a_missing_size_names_the_job_and_writes_nothing(folder: Path, tmp_path: Path) -> None:
    for to in (tmp_path / "upload", tmp_path / "upload.zip"):
        failed = batchgen("export", folder, "--approved", "--to", to, "--sizes", "amazon,shopify")
        assert failed.returncode == EXIT_USAGE
        assert "d: missing shopify" in failed.stderr
        assert "a:" not in failed.stderr
        assert not to.exists()
    (folder / "sizes" / "amazon" / "a.jpg").unlink()  # a file deleted by hand
    gone = batchgen("export", folder, "--all-done", "--to", tmp_path / "x", "--sizes", "amazon")
    assert gone.returncode == EXIT_USAGE
    assert "a: missing amazon (sizes/amazon/a.jpg)" in gone.stderr


def test_a_zip_is_whole_and_the_same_each_time(folder: Path, tmp_path: Path) -> None:
    to = tmp_path / "upload.zip"
    done = batchgen("export", folder, "--all-done", "--to", to, "--sizes", "amazon")
    assert done.returncode == EXIT_OK, done.stderr
    with zipfile.ZipFile(to) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        assert names[-1] == MANIFEST
        rows = manifest(zf.read(MANIFEST).decode("utf-8"))
        assert {r["id"] for r in rows} == {"a", "b", "c", "d"}
        for row in rows:
            assert hashlib.sha256(zf.read(row["file"])).hexdigest() == row["sha256"]
    first = to.read_bytes()
    again = batchgen("export", folder, "--all-done", "--to", to, "--sizes", "amazon")
    assert again.returncode == EXIT_OK
    assert to.read_bytes() == first
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)] == []


def test_export_is_streamed_not_held_in_memory(tmp_path: Path) -> None:
    """A 32 MB image goes to a folder and into a zip in chunks."""
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    big = png.getvalue() + b"\0" * (32 << 20)  # a PNG reader stops at IEND
    (out / "images" / "big.png").write_bytes(big)
    with Store(out) as store:
        with store.transaction():
            store.start_run()
            store.plan(Job(id="big", prompt="p"), "fp", reset=True)
            store.finish("big", Status.DONE, files=["images/big.png"])
        for to in (tmp_path / "dir", tmp_path / "big.zip"):
            tracemalloc.start()
            done = export(store, to, approved=False)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert done.bytes == len(big)
            assert peak < 4 << 20, peak
    assert (tmp_path / "dir" / "images" / "big.png").stat().st_size == len(big)


def test_export_refuses_a_folder_inside_the_output_and_bad_sizes(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inside = main(["export", str(folder), "--all-done", "--to", str(folder / "upload")])
    assert inside == EXIT_USAGE
    assert "inside the output folder" in capsys.readouterr().err
    elsewhere = str(folder.parent / "x")
    bad = main(["export", str(folder), "--all-done", "--to", elsewhere, "--sizes", "../a"])
    assert bad == EXIT_USAGE
    with Store(folder) as store, store.transaction():
        store.clear_review(["a", "b", "c", "d"])
    assert main(["export", str(folder), "--approved", "--to", elsewhere]) == EXIT_OK
    assert "no image is approved yet" in capsys.readouterr().err
    neither = batchgen("export", folder, "--to", folder.parent / "x")
    assert neither.returncode == EXIT_USAGE
