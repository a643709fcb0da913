"""`batchgen review` in a real headless browser, served by the real CLI.

The folder comes from real `batchgen run`s on the simulator; the app runs as
a `batchgen review OUT --no-browser` subprocess (its URL read from its first
line); Debian's chromium is driven by Playwright's sync API as in
`test_gallery_browser.py`. Decisions are checked in the folder's state.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from batchgen.sim import SimConfig, SimulatorThread
from batchgen.store import Store
from batchgen.store.reviews import Decision
from tests.conftest import KEY, TEST_MODEL, write_jobs
from tests.test_chaos import cli, cli_env, wait_for
from tests.test_gallery_browser import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "sample_jobs" / "photos" / "mug.jpg"
XSS = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script> & <b>bold</b>'
N = 50


def jobs_rows() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = [
        {"id": f"sku-{i:03d}", "prompt": f"product shot {i}", "tags": [f"line:{i % 3}"]}
        for i in range(N)
    ]
    rows[7]["prompt"] = "A mug " + XSS
    rows[7]["tags"] = ["<i>tag</i>"]
    rows[3]["images"] = [str(PHOTO)]
    rows.append({"id": "bad", "prompt": "broken [[sim:400]]", "tags": ["line:0"]})
    return rows


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished simulator run of 50 images and one failed job."""
    base = tmp_path_factory.mktemp("review-run")
    jobs = write_jobs(base / "jobs.jsonl", jobs_rows())
    out = base / "out"
    cmd = [sys.executable, "-m", "batchgen", "run", str(jobs), "--out", str(out), "--sim"]
    proc = subprocess.run(
        [*cmd, "--model", TEST_MODEL, "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr  # the one failed job, as planned
    return out


@contextlib.contextmanager
def review_server(out: Path) -> Iterator[str]:
    """`batchgen review OUT --no-browser` as a subprocess; its URL with the token."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchgen", "review", str(out), "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("review: http://127.0.0.1:"), line + proc.stderr.read()
        yield line.split(" ", 1)[1].strip()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `scripts/install-browser`", pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@contextlib.contextmanager
def open_page(browser: Browser, url: str) -> Iterator[Page]:
    """The app's page, ready; fails on a page error or a request beyond the app."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    problems: list[str] = []
    origin = url.split("/?", 1)[0]
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    pg.on(
        "console",
        lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None,
    )
    pg.on("response", lambda r: problems.append(r.url) if r.status >= 400 else None)
    pg.on("request", lambda r: None if r.url.startswith(origin) else problems.append(r.url))
    pg.goto(url)
    pg.wait_for_selector("body[data-ready='1']")
    try:
        yield pg
    finally:
        context.close()
    assert problems == [], "the page errored or reached beyond the app"


def text(pg: Page, testid: str) -> str:
    return pg.get_by_test_id(testid).first.inner_text().strip()


def saved(pg: Page) -> None:
    """Wait until every decision of the page has been written."""
    pg.wait_for_selector("body[data-saving='0']")


def standing(out: Path) -> dict[str, tuple[Decision, str]]:
    with Store(out, readonly=True) as store:
        return {r.job_id: (r.decision, r.note) for r in store.reviews()}


def card_ids(pg: Page) -> list[str]:
    ids: list[str] = pg.eval_on_selector_all(
        "[data-testid=card]", "cards => cards.map(c => c.dataset.id)"
    )
    return ids


def cards_count(pg: Page, n: int) -> None:
    """Wait for `n` cards (a function, not a string: the page's CSP allows no eval)."""
    pg.wait_for_function("n => document.querySelectorAll('[data-testid=card]').length === n", arg=n)


def cards_are(pg: Page, ids: list[str]) -> None:
    pg.wait_for_function(
        "ids => JSON.stringify([...document.querySelectorAll('[data-testid=card]')]"
        ".map(c => c.dataset.id)) === JSON.stringify(ids)",
        arg=ids,
    )


def keyboard_review(pg: Page, ids: list[str], note_every: int = 10) -> dict[str, tuple[str, str]]:
    """Review `ids` in order from the current card with the keyboard only:
    every fourth rejected, every `note_every`-th with a note."""
    expected: dict[str, tuple[str, str]] = {}
    for i, job_id in enumerate(ids):
        assert pg.get_by_test_id("detail-id").inner_text() == job_id
        note = ""
        if i % note_every == 0:
            note = f"six fingers on {job_id}"
            pg.keyboard.press("n")
            pg.keyboard.type(note)
            pg.keyboard.press("Escape")
        reject = i % 4 == 0
        pg.keyboard.press("r" if reject else "a")
        expected[job_id] = ("rejected" if reject else "approved", note)
    return expected


def test_a_keyboard_review_of_50_images_is_kept_across_a_restart(
    browser: Browser, folder: Path
) -> None:
    with review_server(folder) as url, open_page(browser, url) as pg:
        pg.get_by_test_id("filter-status").select_option("done")
        cards_count(pg, 50)
        ids = card_ids(pg)
        assert len(ids) == N
        # Back and forth with the arrows first: the cursor follows.
        pg.keyboard.press("ArrowRight")
        pg.keyboard.press("ArrowRight")
        assert text(pg, "detail-id") == ids[2]
        pg.keyboard.press("ArrowLeft")
        pg.keyboard.press("ArrowLeft")
        expected = keyboard_review(pg, ids)
        saved(pg)
        rejected = sum(d == "rejected" for d, _ in expected.values())
        assert int(text(pg, "count-rejected")) == rejected
        assert int(text(pg, "count-approved")) == N - rejected
        assert int(text(pg, "count-unreviewed")) == 1  # the failed job
    assert {k: (v[0].value, v[1]) for k, v in standing(folder).items()} == expected
    # A new server (a new token) shows every decision, and the filters use them.
    with review_server(folder) as url, open_page(browser, url) as pg:
        assert int(text(pg, "count-rejected")) == rejected
        pg.get_by_test_id("filter-view").select_option("rejected")
        want = [k for k, (d, _) in expected.items() if d == "rejected"]
        cards_are(pg, want)
        assert text(pg, "detail-decision") == "rejected"
        assert pg.get_by_test_id("note").input_value() == expected[want[0]][1]
        pg.get_by_test_id("filter-view").select_option("unreviewed")
        cards_are(pg, ["bad"])
        # The mouse undoes one decision; it is unreviewed in the state at once.
        pg.get_by_test_id("filter-view").select_option("")
        pg.locator("[data-testid=card][data-id='sku-001']").click()
        pg.get_by_test_id("clear").click()
        saved(pg)
    assert "sku-001" not in standing(folder)


def test_filters_references_and_hostile_text(browser: Browser, folder: Path) -> None:
    with review_server(folder) as url, open_page(browser, url) as pg:
        pg.get_by_test_id("filter-tag").select_option("line:2")
        cards_count(pg, len(range(2, N, 3)))
        pg.get_by_test_id("filter-tag").select_option("")
        pg.get_by_test_id("filter-status").select_option("failed")
        cards_are(pg, ["bad"])
        assert text(pg, "detail-id") == "bad"
        assert text(pg, "error")  # the server's message
        pg.get_by_test_id("filter-status").select_option("")
        pg.get_by_test_id("filter-model").select_option(TEST_MODEL)
        cards_count(pg, N + 1)  # the failed job was sent to it too
        # The job with a reference shows it beside the output, loaded.
        pg.locator("[data-testid=card][data-id='sku-003']").click()
        assert text(pg, "model") == TEST_MODEL
        ref = pg.get_by_test_id("reference")
        ref.wait_for()
        pg.wait_for_function(
            "() => { const i = document.querySelector('[data-testid=reference]');"
            " return i.complete && i.naturalWidth > 0; }"
        )
        # A hostile prompt and tag are text on the page, never markup.
        pg.locator("[data-testid=card][data-id='sku-007']").click()
        assert text(pg, "prompt") == "A mug " + XSS
        assert text(pg, "tags") == "<i>tag</i>"
        assert pg.evaluate("window.__pwned") is None
        assert pg.locator("#d-prompt b, #d-prompt img, #d-prompt script").count() == 0


ROUTES = [
    ("GET", "/"),
    ("GET", "/assets/review.js"),
    ("GET", "/assets/review.css"),
    ("GET", "/api/facets"),
    ("GET", "/api/jobs?view=rejected"),
    ("POST", "/api/review"),
    ("GET", "/file/images/sku-000.png"),
    ("GET", "/ref?job=sku-003&n=0"),
    ("GET", "/no/such/route"),
]


def ask(url: str, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """One raw request (the path sent as given, not normalized)."""
    u = urlparse(url)
    con = http.client.HTTPConnection(u.hostname or "", u.port, timeout=10)
    try:
        con.request(method, path, body=body, headers={"Content-Type": "application/json"})
        resp = con.getresponse()
        return resp.status, resp.read()
    finally:
        con.close()


def test_every_route_refuses_a_request_without_the_token(folder: Path) -> None:
    body = json.dumps({"id": "sku-000", "decision": "rejected"}).encode()
    state = (folder / ".batchgen" / "state.sqlite").read_bytes()[:16]
    with review_server(folder) as url:
        token = parse_qs(urlparse(url).query)["token"][0]
        for method, path in ROUTES:
            sep = "&" if "?" in path else "?"
            for bad in ("", f"{sep}token=", f"{sep}token={token[:-1]}", f"{sep}token={token}x"):
                status, _ = ask(url, method, path + bad, body)
                assert status == 403, (method, path + bad)
            status, _ = ask(url, method, f"{path}{sep}token={token}", body)
            assert status != 403, (method, path)
        # With the token, nothing outside the served folders comes out, however asked.
        for path in (
            "/file/images/../.batchgen/state.sqlite",
            "/file/images/%2e%2e/.batchgen/state.sqlite",
            "/file/..%2f.batchgen/state.sqlite",
            "/file/.batchgen/state.sqlite",
            "/file/images/..%5c..%5cstate.sqlite",
            "/file//etc/passwd",
            "/file/images/%2Fetc%2Fpasswd",
            "/ref?job=sku-003&n=1",
            "/ref?job=../../etc/passwd&n=0",
            "/assets/..%2freview.py",
        ):
            sep = "&" if "?" in path else "?"
            status, data = ask(url, "GET", f"{path}{sep}token={token}")
            assert status == 404, path
            assert state not in data
            assert b"root:" not in data
    assert standing(folder)["sku-000"][0] is Decision.REJECTED  # the request with the token


def test_a_review_while_a_run_is_going_on(browser: Browser, tmp_path: Path) -> None:
    """A real `batchgen run` subprocess writes to the folder while the page
    reviews its earlier images: the run ends cleanly, every decision is kept."""
    first = [{"id": f"old-{i:02d}", "prompt": f"old {i}"} for i in range(30)]
    # The second run needs ~400 / 8 x 0.25 s = 12 s of the simulator's latency alone,
    # whatever the machine's load (the review of 30 images takes a few seconds).
    more = [{"id": f"new-{i:03d}", "prompt": f"new {i}"} for i in range(400)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", first)
    out = tmp_path / "out"
    config = SimConfig(small_images=True, api_key=KEY, latency="uniform:0.2:0.3")
    with SimulatorThread(config) as sim:
        env = cli_env()
        done = subprocess.run(cli(jobs, out, sim.base_url), env=env, capture_output=True)
        assert done.returncode == 0, done.stderr
        write_jobs(jobs, first + more)
        with review_server(out) as url, open_page(browser, url) as pg:
            before = sim.stats.total
            run = subprocess.Popen(
                cli(jobs, out, sim.base_url, concurrency=8),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                assert wait_for(lambda: sim.stats.total > before, run, time.monotonic() + 60)
                expected = keyboard_review(pg, [r["id"] for r in first], note_every=7)
                saved(pg)
                during = run.poll() is None
                _, stderr = run.communicate(timeout=120)
            finally:
                if run.poll() is None:
                    run.kill()
                    run.communicate()
    assert during, "the run ended before the review: give it more jobs"
    assert run.returncode == 0, stderr
    assert "database is locked" not in stderr
    assert {k: (v[0].value, v[1]) for k, v in standing(out).items()} == expected
    with Store(out, readonly=True) as store:
        assert store.counts()["done"] == len(first) + len(more)


def test_a_redone_image_shows_its_history(browser: Browser, tmp_path: Path) -> None:
    """Rejected in the page, made again by `run --redo rejected`: the page shows
    the new image unreviewed, and the first one as version 1 beside it."""
    jobs = write_jobs(
        tmp_path / "jobs.jsonl", [{"id": f"h{i}", "prompt": f"h {i}"} for i in range(3)]
    )
    out = tmp_path / "out"
    run = [sys.executable, "-m", "batchgen", "run", str(jobs), "--out", str(out), "--sim"]
    run += ["--model", TEST_MODEL, "--no-progress"]
    assert subprocess.run(run, capture_output=True, timeout=120).returncode == 0
    with review_server(out) as url, open_page(browser, url) as pg:
        pg.keyboard.press("a")
        pg.keyboard.press("r")
        saved(pg)
    redo = subprocess.run([*run, "--redo", "rejected"], capture_output=True, text=True, timeout=120)
    assert redo.returncode == 0, redo.stderr
    with review_server(out) as url, open_page(browser, url) as pg:
        assert int(text(pg, "count-approved")) == 1
        assert int(text(pg, "count-rejected")) == 0
        pg.locator("[data-testid=card][data-id='h1']").click()
        assert text(pg, "detail-decision") == "unreviewed"
        pg.get_by_test_id("history-image").wait_for()
        pg.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=history-image]')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        assert pg.locator("[data-testid=history-image]").count() == 1
        src = pg.get_by_test_id("history-image").get_attribute("src") or ""
        assert src.startswith("/file/images/h1.v1.png?")
