"""The gallery without a browser: files, escaping, previews, and size at scale.

Stores are real SQLite files filled through the same `Store` calls the
pipeline makes; images are real PNGs written with Pillow.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from batchgen.models import ErrorInfo, Job, Status
from batchgen.output import thumbs
from batchgen.output.storage import LocalOutput
from batchgen.report import gallery
from batchgen.report.summary import summarize
from batchgen.store import Store

EVIL = "</script><script>window.__pwned=1</script><img src=x onerror=alert(1)> & \"q\" 'a'"


def load_data(out: Path) -> dict[str, Any]:
    """Parse report-data.js back: it is `window.BATCHGEN_DATA = <JSON>;`."""
    text = (out / gallery.DATA_NAME).read_text(encoding="utf-8")
    prefix = "window.BATCHGEN_DATA = "
    assert text.startswith(prefix)
    data: dict[str, Any] = json.loads(text[len(prefix) :].rstrip().removesuffix(";"))
    return data


def rows_as_dicts(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(zip(data["fields"], row, strict=True)) for row in data["rows"]]


def png(path: Path, size: tuple[int, int], mode: str = "RGB") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    color: Any = (40, 90, 200, 0) if mode == "RGBA" else (40, 90, 200)
    Image.new(mode, size, color).save(path)
    return path.as_posix()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "out") as s:
        with s.transaction():
            s.start_run()
        yield s


def add_job(
    store: Store,
    job_id: str,
    status: Status,
    *,
    prompt: str = "a product photo",
    tags: tuple[str, ...] = (),
    image: tuple[int, int] | None = (640, 480),
    sharded: bool = False,
    error: ErrorInfo | None = None,
    text: str = "",
) -> list[str]:
    files: list[str] = []
    with store.transaction():
        store.plan(Job(id=job_id, prompt=prompt, tags=tags), f"fp-{job_id}", reset=True)
        if status is Status.PENDING:
            return files
        store.record_attempt(
            job_id, cost=0.039, prompt_tokens=10, output_tokens=1290, cost_source="usage"
        )
        if status is Status.DONE and image is not None:
            rel = f"images/{job_id[:2]}/{job_id}.png" if sharded else f"images/{job_id}.png"
            png(store.out / rel, image)
            files.append(rel)
        store.finish(job_id, status, files=files, error=error, text=text)
    return files


def build(store: Store) -> tuple[Path, dict[str, Any]]:
    summary = summarize(store)
    return gallery.write_gallery(store, summary), summary


class Links(HTMLParser):
    """Every src/href attribute value of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v or "" for k, v in attrs if k in ("src", "href")]


def test_writes_page_and_data_atomically(store: Store) -> None:
    add_job(store, "a", Status.DONE)
    page, _ = build(store)
    assert page == store.out / "report.html"
    assert page.is_file()
    assert (store.out / gallery.DATA_NAME).is_file()
    leftovers = [p.name for p in store.out.rglob("*") if p.name.startswith(".part-")]
    assert leftovers == []


def test_removes_its_own_leftover_temporaries(store: Store) -> None:
    stale = store.out / ".part-999-report.html"
    stale.write_text("half a page")
    other = store.out / ".part-1-notes.txt"
    other.write_text("not ours")
    build(store)
    assert not stale.exists()
    assert other.exists()


def test_page_has_no_external_urls(store: Store) -> None:
    add_job(store, "a", Status.DONE, tags=("line:mugs",))
    add_job(store, "b", Status.FAILED, error=ErrorInfo("bad_request", 400, "nope"))
    page, _ = build(store)
    text = page.read_text(encoding="utf-8")
    assert "http://" not in text
    assert "https://" not in text
    parser = Links()
    parser.feed(text)
    assert parser.urls == [gallery.DATA_NAME]  # the only reference: the data file, relative
    for url in parser.urls:
        assert not re.match(r"^([a-z]+:)?//", url)
    data_text = (store.out / gallery.DATA_NAME).read_text(encoding="utf-8")
    assert "http://" not in data_text
    assert "https://" not in data_text


def test_summary_values_are_bare_numbers_under_test_ids(store: Store) -> None:
    add_job(store, "a", Status.DONE)
    add_job(store, "b", Status.DONE)
    add_job(store, "c", Status.BLOCKED, error=ErrorInfo("blocked", 200, "SAFETY"))
    add_job(store, "d", Status.PENDING)
    page, summary = build(store)
    text = page.read_text(encoding="utf-8")
    shown = dict(re.findall(r'data-testid="(count-[a-z]+)" id="[^"]+">([^<]*)<', text))
    for key in ("total", "done", "blocked", "failed", "skipped", "pending", "requests", "retries"):
        assert int(shown[f"count-{key}"]) == summary[key], key
    assert float(shown["count-cost"]) == pytest.approx(summary["cost_usd"], abs=1e-4)
    assert 'data-testid="error-blocked">1<' in text


def test_data_file_streams_every_row_in_store_order(store: Store) -> None:
    ids = [f"job-{n:03d}" for n in range(25)]
    for n, job_id in enumerate(ids):
        status = [Status.DONE, Status.FAILED, Status.PENDING][n % 3]
        err = ErrorInfo("no_image", 200, "text only") if status is Status.FAILED else None
        add_job(store, job_id, status, tags=(f"t{n % 4}",), error=err, text="I can't" * 100)
    build(store)
    data = load_data(store.out)
    rows = rows_as_dicts(data)
    assert [r["id"] for r in rows] == ids
    assert list(data["fields"]) == list(gallery.FIELDS)
    failed = [r for r in rows if r["status"] == "failed"]
    assert {r["kind"] for r in failed} == {"no_image"}
    assert all(len(r["text"]) <= gallery.TEXT_LIMIT for r in rows)
    done = rows[0]
    assert done["image"] == "images/job-000.png"
    assert done["thumb"] == "thumbs/images/job-000.jpg"
    assert done["tags"] == ["t0"]
    assert done["cost"] == pytest.approx(0.039)
    assert dict(map(tuple, data["tags"])) == {"t0": 7, "t1": 6, "t2": 6, "t3": 6}


def test_data_is_written_as_it_streams(tmp_path: Path) -> None:
    """write_data consumes an iterator one record at a time (no list of rows)."""
    seen: list[int] = []

    class Sink:
        def __init__(self) -> None:
            self.parts: list[str] = []

        def write(self, s: str) -> int:
            self.parts.append(s)
            return len(s)

    def records() -> Iterator[Any]:
        from batchgen.models import JobRecord

        for n in range(5):
            # the previous row is already written when the next is pulled
            seen.append(sum(p.startswith('["r') for p in sink.parts))
            yield JobRecord(id=f"r{n}", fingerprint="", status=Status.PENDING, prompt="p")

    sink = Sink()
    n = gallery.write_data(sink, records(), {"by_tag": {}, "errors": {}})  # type: ignore[arg-type]
    assert n == 5
    assert seen == [0, 1, 2, 3, 4]


def test_user_text_is_inert(store: Store) -> None:
    add_job(store, "x", Status.DONE, prompt=EVIL, tags=("<b>tag</b>", "@JS@"))
    add_job(
        store, "y", Status.FAILED, prompt=EVIL, error=ErrorInfo("bad_request", 400, EVIL), text=EVIL
    )
    page, _ = build(store)
    text = page.read_text(encoding="utf-8")
    assert "<b>tag</b>" not in text
    assert "&lt;b&gt;tag&lt;/b&gt;" in text
    assert text.count('"use strict"') == 1  # a tag named @JS@ is not a template slot
    data_text = (store.out / gallery.DATA_NAME).read_text(encoding="utf-8")
    assert "<" not in data_text  # escaped as \u003c: no tag can open or close
    rows = rows_as_dicts(load_data(store.out))
    assert rows[0]["prompt"] == EVIL  # the data itself is intact
    assert rows[1]["message"] == EVIL
    # the page's script never parses data as markup
    assert "innerHTML" not in gallery._asset("gallery.js")
    assert "insertAdjacentHTML" not in gallery._asset("gallery.js")


def test_long_prompts_are_clipped_for_cards(store: Store) -> None:
    add_job(store, "long", Status.DONE, prompt="word " * 400)
    build(store)
    (row,) = rows_as_dicts(load_data(store.out))
    assert len(row["prompt"]) == gallery.TEXT_LIMIT
    assert row["prompt"].endswith("…")


def test_thumbs_made_once_small_and_mirroring_the_image_layout(store: Store) -> None:
    add_job(store, "wide", Status.DONE, image=(1344, 768), sharded=True)
    add_job(store, "tall", Status.DONE, image=(768, 1344))
    add_job(store, "tiny", Status.DONE, image=(64, 48))
    build(store)
    made = {
        "wide": store.out / "thumbs/images/wi/wide.jpg",
        "tall": store.out / "thumbs/images/tall.jpg",
        "tiny": store.out / "thumbs/images/tiny.jpg",
    }
    for path in made.values():
        with Image.open(path) as im:
            assert im.format == "JPEG"
            assert max(im.size) <= thumbs.MAX_SIDE
    with Image.open(made["wide"]) as im:
        assert im.size == (256, 146)
    with Image.open(made["tiny"]) as im:
        assert im.size == (64, 48)  # never upscaled
    before = {k: p.stat().st_mtime_ns for k, p in made.items()}
    build(store)
    assert {k: p.stat().st_mtime_ns for k, p in made.items()} == before
    # a regenerated image gets a new preview
    image = store.out / "images/tall.png"
    later = made["tall"].stat().st_mtime_ns + 1_000_000_000
    os.utime(image, ns=(later, later))
    build(store)
    assert made["tall"].stat().st_mtime_ns > before["tall"]
    assert made["wide"].stat().st_mtime_ns == before["wide"]


def test_preview_budget_defers_and_a_later_pass_catches_up(store: Store) -> None:
    for n in range(3):
        add_job(store, f"j{n}", Status.DONE, image=(400, 300))
    gallery.write_gallery(store, summarize(store), thumb_budget_s=0)
    rows = rows_as_dicts(load_data(store.out))
    assert [r["thumb"] for r in rows] == [None, None, None]
    assert [r["image"] for r in rows] == ["images/j0.png", "images/j1.png", "images/j2.png"]
    assert not (store.out / "thumbs").exists()
    build(store)
    rows = rows_as_dicts(load_data(store.out))
    assert [r["thumb"] for r in rows] == [f"thumbs/images/j{n}.jpg" for n in range(3)]
    assert all((store.out / r["thumb"]).is_file() for r in rows)


def test_transparent_image_previews_on_white(tmp_path: Path) -> None:
    src = Path(png(tmp_path / "images/a.png", (300, 300), mode="RGBA"))
    dst = tmp_path / "thumbs/images/a.jpg"
    assert thumbs.make_thumb(src, dst)
    with Image.open(dst) as im:
        r, g, b = im.convert("RGB").getpixel((10, 10))  # type: ignore[misc]
        assert min(r, g, b) > 240
    assert not thumbs.make_thumb(src, dst)  # fresh: not made again


def test_a_preview_is_made_from_the_bytes_in_hand(tmp_path: Path) -> None:
    """The writer passes the image's bytes: the preview is made from them, not
    by reading back the file it has just written (for a 4K image that read
    was a third of the writer threads' CPU)."""
    src = tmp_path / "images/a.png"
    png(src, (300, 200))
    data = src.read_bytes()
    src.write_bytes(b"\x89PNG\r\n\x1a\nnot this one")  # what a read-back would find
    rel = thumbs.preview(LocalOutput(tmp_path), "images/a.png", (300, 200), len(data), data)
    assert rel == "thumbs/images/a.jpg"
    with Image.open(tmp_path / rel) as im:
        assert im.format == "JPEG"
        assert im.convert("RGB").getpixel((5, 5)) == pytest.approx((40, 90, 200), abs=4)


def test_unreadable_image_gets_no_preview_and_no_crash(store: Store) -> None:
    add_job(store, "ok", Status.DONE)
    bad = store.out / "images/bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with store.transaction():
        store.plan(Job(id="bad", prompt="p"), "fp", reset=True)
        store.finish("bad", Status.DONE, files=["images/bad.png"])
    build(store)
    assert (store.out / "thumbs/images/ok.jpg").is_file()
    assert not (store.out / "thumbs/images/bad.jpg").exists()
    assert not list((store.out / "thumbs").rglob(".part-*"))


@pytest.mark.parametrize(
    ("image", "thumb"),
    [
        ("images/ab/x.png", "thumbs/images/ab/x.jpg"),
        ("images/x.jpeg", "thumbs/images/x.jpg"),
        ("sizes/amazon/x.png#upscaled", "thumbs/sizes/amazon/x.jpg"),
        ("images/x.webp", "thumbs/images/x.jpg"),
        ("../etc/x.png", None),
        ("/etc/x.png", None),
        ("images/x.svg", None),
        ("", None),
    ],
)
def test_thumb_paths(image: str, thumb: str | None) -> None:
    assert thumbs.thumb_rel(image) == thumb


def test_extra_files_and_pending_rows(store: Store) -> None:
    png(store.out / "images/multi.png", (100, 100))
    png(store.out / "images/multi-2.png", (100, 100))
    with store.transaction():
        store.plan(Job(id="multi", prompt="p"), "fp", reset=True)
        store.finish(
            "multi",
            Status.DONE,
            files=["images/multi.png", "images/multi-2.png", "sizes/s/m.png#up"],
        )
    add_job(store, "later", Status.PENDING)
    build(store)
    multi, later = rows_as_dicts(load_data(store.out))
    assert multi["image"] == "images/multi.png"
    assert multi["files"] == ["images/multi-2.png", "sizes/s/m.png#up"]
    assert later["status"] == "pending"
    assert later["image"] is None
    assert later["thumb"] is None


def test_empty_store_renders(store: Store) -> None:
    page, _ = build(store)
    assert 'data-testid="count-total" id="count-total">0<' in page.read_text(encoding="utf-8")
    assert load_data(store.out)["rows"] == []


def test_two_thousand_jobs_render_fast_with_a_small_page(store: Store) -> None:
    n = 2000
    statuses = [Status.DONE] * 7 + [Status.FAILED, Status.BLOCKED, Status.SKIPPED]
    for i in range(n):
        status = statuses[i % len(statuses)]
        err = None if status is Status.DONE else ErrorInfo(f"kind{i % 3}", 400, "msg")
        add_job(
            store,
            f"sku-{i:05d}",
            status,
            prompt=f"product {i} " + "detail " * 60,
            tags=(f"line:{i % 20}", f"shot:{i % 3}"),
            image=(320, 320),
            error=err,
        )
    started = time.perf_counter()
    page, summary = build(store)
    first = time.perf_counter() - started
    started = time.perf_counter()
    build(store)
    second = time.perf_counter() - started
    assert first < 60, f"first build of {n} jobs took {first:.1f}s"
    assert second < 10, f"rebuild (previews reused) took {second:.1f}s"
    html = page.read_text(encoding="utf-8")
    assert len(html) < 60_000  # the page does not grow with the jobs
    assert "sku-00" not in html
    assert len(load_data(store.out)["rows"]) == n == summary["total"]
    assert len(list((store.out / "thumbs/images").glob("*.jpg"))) == summary["done"]


@pytest.mark.parametrize(
    ("suffix", "size", "nbytes", "own"),
    [
        (".png", (16, 16), 100, True),
        (".JPG", (256, 200), 20_000, True),
        (".png", (257, 16), 100, False),  # larger than a preview
        (".png", (256, 256), thumbs.OWN_PREVIEW_BYTES + 1, False),  # heavier than a few
        (".bmp", (16, 16), 100, False),  # not every browser shows it
    ],
)
def test_which_images_are_their_own_preview(
    suffix: str, size: tuple[int, int], nbytes: int, own: bool
) -> None:
    assert thumbs.is_own_preview(suffix, size, nbytes) is own
