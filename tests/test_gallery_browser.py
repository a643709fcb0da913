"""The gallery in a real headless browser, after a real run on the simulator.

Debian's chromium (installed by `scripts/install-browser`) is driven by
Playwright's sync API; the page is opened from `file://` exactly as a person
would open it. A missing browser fails the test with the fix: this project
allows no skipped tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
#: No internet here: keep chromium from reaching for Google's services.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
XSS = '<img src=x onerror="window.__pwned=1"> & <b>bold</b>'

JOBS = [
    {"id": "mug-white", "prompt": "A blue mug on white", "tags": ["line:mugs", "shot:white"]},
    {"id": "mug-scene", "prompt": "A blue mug on a shelf", "tags": ["line:mugs", "shot:scene"]},
    {"id": "watch", "prompt": "A steel watch " + XSS, "tags": ["line:watches"]},
    {"id": "lamp-flaky", "prompt": "A brass lamp [[sim:503x1]]", "tags": ["line:lamps"]},
    {"id": "mug-nsfw", "prompt": "Not allowed [[sim:block]]", "tags": ["line:mugs"]},
    {"id": "lamp-bad", "prompt": "Broken request [[sim:400]]", "tags": ["line:lamps"]},
    {"id": "lamp-big", "prompt": "Too big [[sim:413]]", "tags": ["line:lamps"]},
]


@pytest.fixture(scope="module")
def run_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A finished simulator run: its folder and its report.json."""
    base = tmp_path_factory.mktemp("gallery-run")
    jobs = base / "jobs.jsonl"
    jobs.write_text("".join(json.dumps(j) + "\n" for j in JOBS), encoding="utf-8")
    out = base / "out"
    cmd = [sys.executable, "-m", "batchgen", "run", str(jobs), "--out", str(out), "--sim"]
    proc = subprocess.run(
        [*cmd, "--no-progress"], capture_output=True, text=True, timeout=90, check=False
    )
    assert proc.returncode in (0, 1), proc.stderr  # 1: some jobs failed, as planned
    assert (out / "report.html").is_file(), "the run did not write the gallery"
    report: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return out, report


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run `scripts/install-browser` (as root) "
            "before the tests; the gallery test needs a real browser",
            pytrace=False,
        )
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, run_out: tuple[Path, dict[str, Any]]) -> Iterator[Page]:
    out, _ = run_out
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    pg.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None
        ),
    )
    pg.on(
        "request",
        lambda req: None if req.url.startswith("file://") else problems.append(req.url),
    )
    pg.goto((out / "report.html").as_uri())
    pg.wait_for_selector("body[data-ready='1']")
    yield pg
    context.close()
    assert problems == [], "the page errored or reached beyond the folder"


def text(pg: Page, testid: str) -> str:
    return pg.get_by_test_id(testid).first.inner_text().strip()


def card_ids(pg: Page) -> list[str]:
    ids: list[str] = pg.eval_on_selector_all(
        "[data-testid=card]", "cards => cards.map(c => c.dataset.id)"
    )
    return ids


def statuses(pg: Page) -> set[str]:
    found: list[str] = pg.eval_on_selector_all(
        "[data-testid=card]", "cards => cards.map(c => c.dataset.status)"
    )
    return set(found)


def choose(pg: Page, testid: str, value: str) -> None:
    pg.get_by_test_id(testid).select_option(value)


def search(pg: Page, query: str, expect: list[str]) -> None:
    """Type a query and wait for the (debounced) cards to settle on `expect`."""
    pg.get_by_test_id("search").fill(query)
    pg.wait_for_function(
        "ids => JSON.stringify([...document.querySelectorAll('[data-testid=card]')]"
        ".map(c => c.dataset.id)) === JSON.stringify(ids)",
        arg=expect,
    )
    assert int(text(pg, "shown-count")) == len(expect)


def test_counts_match_report_json(page: Page, run_out: tuple[Path, dict[str, Any]]) -> None:
    _, report = run_out
    assert report["done"] > 0  # the run covers every kind of card
    assert report["blocked"] > 0
    assert report["failed"] > 0
    for key in ("total", "done", "blocked", "failed", "skipped", "pending"):
        assert int(text(page, f"count-{key}")) == report[key], key
    assert int(text(page, "count-requests")) == report["requests"]
    assert int(text(page, "count-retries")) == report["retries"]
    assert float(text(page, "count-cost")) == pytest.approx(report["cost_usd"], abs=1e-4)
    for kind, n in report["errors"].items():
        assert int(text(page, f"error-{kind}")) == n, kind
    assert int(text(page, "shown-count")) == report["total"]
    assert sorted(card_ids(page)) == sorted(j["id"] for j in report["jobs"])


def test_status_filter_shows_only_failed(page: Page, run_out: tuple[Path, dict[str, Any]]) -> None:
    _, report = run_out
    choose(page, "filter-status", "failed")
    failed = sorted(j["id"] for j in report["jobs"] if j["status"] == "failed")
    assert int(text(page, "shown-count")) == report["failed"] == len(failed)
    assert sorted(card_ids(page)) == failed
    assert statuses(page) == {"failed"}
    # failed cards say why
    errors = page.get_by_test_id("error").all_inner_texts()
    assert len(errors) == len(failed)
    assert any("bad_request" in e for e in errors)


def test_tag_and_kind_filters_and_search(page: Page, run_out: tuple[Path, dict[str, Any]]) -> None:
    _, report = run_out
    choose(page, "filter-tag", "line:mugs")
    mugs = sorted(j["id"] for j in report["jobs"] if "line:mugs" in j["tags"])
    assert sorted(card_ids(page)) == mugs
    choose(page, "filter-tag", "")
    choose(page, "filter-kind", "blocked")
    assert card_ids(page) == ["mug-nsfw"]
    assert statuses(page) == {"blocked"}
    page.get_by_role("button", name="Reset").click()
    search(page, "lamp-bad", ["lamp-bad"])
    search(page, "steel WATCH", ["watch"])  # words of the prompt, any case, any order
    search(page, "no such job", [])
    assert page.locator("#empty").is_visible()


def test_prompt_markup_is_shown_as_text(page: Page) -> None:
    search(page, "watch", ["watch"])
    prompt = page.locator("[data-id=watch] .prompt").inner_text()
    assert XSS in prompt
    assert page.evaluate("window.__pwned") is None
    assert page.locator("[data-id=watch] .prompt b").count() == 0


def test_thumbnail_is_small_and_opens_the_full_image(
    page: Page, run_out: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    out, report = run_out
    job = next(j for j in report["jobs"] if j["id"] == "mug-white")
    img = page.locator("[data-id=mug-white] a.thumb img")
    img.scroll_into_view_if_needed()
    page.wait_for_function(
        "document.querySelector('[data-id=mug-white] a.thumb img').naturalWidth > 0"
    )
    src = unquote(urlparse(img.evaluate("i => i.src")).path)
    assert Path(src) == out / "thumbs" / Path(job["files"][0]).with_suffix(".jpg")
    assert max(img.evaluate("i => [i.naturalWidth, i.naturalHeight]")) <= 256
    with page.context.expect_page() as opened:
        img.click()
    full = opened.value
    full.wait_for_load_state()
    assert Path(unquote(urlparse(full.url).path)) == out / job["files"][0]
    assert full.evaluate("document.images.length && document.images[0].naturalWidth") > 256
    full.close()

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000


def test_pages_of_one_hundred_cards(browser: Browser, tmp_path: Path) -> None:
    """250 jobs: never more than one page of cards in the DOM; prev/next walk them."""
    from batchgen.models import Job
    from batchgen.report.gallery import write_gallery
    from batchgen.report.summary import summarize
    from batchgen.store import Store

    with Store(tmp_path / "out") as store:
        with store.transaction():
            store.start_run()
            for n in range(250):
                store.plan(Job(id=f"p{n:03d}", prompt=f"prompt {n}"), "fp", reset=True)
        page_path = write_gallery(store, summarize(store))
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    pg.goto(page_path.as_uri())
    pg.wait_for_selector("body[data-ready='1']")
    assert text(pg, "shown-count") == "250"
    assert text(pg, "page-range") == "showing 1–100 of 250"
    assert card_ids(pg)[:2] == ["p000", "p001"]
    assert len(card_ids(pg)) == 100
    assert pg.get_by_test_id("prev").is_disabled()
    pg.get_by_test_id("next").click()
    assert text(pg, "page-range") == "showing 101–200 of 250"
    assert card_ids(pg)[0] == "p100"
    pg.get_by_test_id("next").click()
    assert text(pg, "page-range") == "showing 201–250 of 250"
    assert len(card_ids(pg)) == 50
    assert pg.get_by_test_id("next").is_disabled()
    pg.get_by_test_id("prev").click()
    assert card_ids(pg)[0] == "p100"
    context.close()


@pytest.fixture(scope="module")
def chunked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5,000 jobs in chunks of 1,000 (the page holds the first; four files), every
    ninth failed, 7 tags, every 500th with a real reference image."""
    from PIL import Image

    from batchgen.models import ErrorInfo, Job, Status
    from batchgen.report.gallery import write_gallery
    from batchgen.report.summary import summarize
    from batchgen.store import Store

    base = tmp_path_factory.mktemp("chunked")
    ref = base / "refs" / "ref.png"
    ref.parent.mkdir()
    Image.new("RGB", (40, 30), (200, 40, 40)).save(ref)
    with Store(base / "out") as store:
        with store.transaction():
            store.start_run()
            for i in range(5_000):
                job_id = f"c{i:05d}"
                refs = (str(ref),) if i % 500 == 0 else ()
                job = Job(id=job_id, prompt=f"item {i}", tags=(f"t{i % 7}",), images=refs)
                store.plan(job, "fp", reset=True)
                store.record_attempt(job_id, cost=0.001 * (i % 17), prompt_tokens=1,
                                     output_tokens=1, cost_source="usage")  # fmt: skip
                failed = i % 9 == 4
                err = ErrorInfo("bad_request", 400, "no") if failed else None
                store.finish(job_id, Status.FAILED if failed else Status.DONE, error=err)
        write_gallery(store, summarize(store), chunk_rows=1_000)
    return base / "out"


@pytest.fixture
def cpage(browser: Browser, chunked: Path) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    pg.on("request", lambda r: None if r.url.startswith("file://") else problems.append(r.url))
    CHUNK_LOADS.clear()
    pg.on("request", lambda r: CHUNK_LOADS.append(r.url) if "/report-data/" in r.url else None)
    pg.goto((chunked / "report.html").as_uri())
    pg.wait_for_selector("body[data-ready='1']")
    yield pg
    context.close()
    assert problems == []


def settled(pg: Page, act: Any) -> None:
    """Do `act` and wait for the page to draw its result (it may load chunks first)."""
    before = pg.evaluate("document.body.dataset.renders")
    act()
    pg.wait_for_function(f"document.body.dataset.renders !== {before!r}")


#: The chunk files the page under test asked for, in order.
CHUNK_LOADS: list[str] = []


def loaded_chunks(pg: Page) -> list[str]:
    return sorted({Path(urlparse(url).path).stem for url in CHUNK_LOADS})


def test_chunked_pages_walk_across_chunk_boundaries(cpage: Page) -> None:
    assert text(cpage, "shown-count") == "5000"
    assert text(cpage, "page-range") == "showing 1–100 of 5000"
    assert loaded_chunks(cpage) == []  # the first page is in report-data.js
    for _ in range(10):
        settled(cpage, lambda: cpage.get_by_test_id("next").click())
    assert text(cpage, "page-range") == "showing 1001–1100 of 5000"
    assert card_ids(cpage)[0] == "c01000"
    assert loaded_chunks(cpage) == ["1"]


def test_chunked_filters_use_the_index(cpage: Page) -> None:
    failed = [f"c{i:05d}" for i in range(5_000) if i % 9 == 4]
    settled(cpage, lambda: choose(cpage, "filter-status", "failed"))
    assert text(cpage, "shown-count") == str(len(failed))  # exact, from the index
    assert card_ids(cpage) == failed[:100]
    assert statuses(cpage) == {"failed"}
    assert loaded_chunks(cpage) == []  # 100 failed jobs are in the first chunk
    for _ in range(2):
        settled(cpage, lambda: cpage.get_by_test_id("next").click())
    assert card_ids(cpage) == failed[200:300]  # rows of chunks 1 and 2
    assert loaded_chunks(cpage) == ["1", "2"]
    # Two filters: the index bounds them; matching rows are found by scanning.
    both = [c for c in failed if int(c[1:]) % 7 == 3]
    settled(cpage, lambda: choose(cpage, "filter-tag", "t3"))
    assert card_ids(cpage) == both  # fewer than a page: every chunk scanned, so exact
    assert text(cpage, "shown-count") == str(len(both))


def test_chunked_search_sort_and_references(cpage: Page, chunked: Path) -> None:
    cpage.get_by_test_id("search").fill("item 4321")
    cpage.wait_for_function(
        "[...document.querySelectorAll('[data-testid=card]')].map(c => c.dataset.id)"
        ".join() === 'c04321'"
    )
    assert text(cpage, "shown-count") == "1"  # every chunk scanned: exact
    cpage.get_by_role("button", name="Reset").click()
    settled(cpage, lambda: choose(cpage, "sort", "cost"))
    costs = cpage.eval_on_selector_all(
        "[data-testid=card] .meta span:nth-child(2)", "s => s.map(e => e.textContent)"
    )
    assert costs[0] == "$0.0160"
    assert costs == sorted(costs, reverse=True)
    settled(cpage, lambda: cpage.get_by_role("button", name="Reset").click())
    refs = cpage.locator("[data-id=c00000] [data-testid=refs] img")
    assert refs.count() == 1
    refs.scroll_into_view_if_needed()
    cpage.wait_for_function(
        "document.querySelector('[data-id=c00000] [data-testid=refs] img').naturalWidth > 0"
    )
    src = unquote(urlparse(refs.evaluate("i => i.src")).path)
    assert Path(src) == chunked.parent / "refs" / "ref.png"
    assert refs.get_attribute("src") == "../refs/ref.png"  # relative: works offline


def test_chunked_search_opens_only_chunks_that_can_match(cpage: Page) -> None:
    # "c04321": its trigram "c04" is in chunk 4's ids only (search.js says so).
    settled(cpage, lambda: cpage.get_by_test_id("search").fill("C04321"))
    assert card_ids(cpage) == ["c04321"]
    assert text(cpage, "shown-count") == "1"
    assert loaded_chunks(cpage) == ["4", "search"]
    # A term no row holds: no chunk file is opened at all.
    settled(cpage, lambda: cpage.get_by_test_id("search").fill("item zzz"))
    assert card_ids(cpage) == []
    assert text(cpage, "shown-count") == "0"
    assert loaded_chunks(cpage) == ["4", "search"]
    # Terms of fewer than three characters narrow nothing, and still match.
    settled(cpage, lambda: cpage.get_by_test_id("search").fill("m 49"))
    assert card_ids(cpage)[:3] == ["c00049", "c00149", "c00249"]
