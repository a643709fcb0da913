"""Reference images given as URLs are refused, clearly, and never fetched.

batchgen does not download reference images (docs/remote-references.md says
why): a URL in `images` is a validation problem naming the file, the line and
the URL, and pointing at that page. The URLs point at a server this test
starts on 127.0.0.1, which must see no request.
"""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from batchgen.jobs.rows import URL_REFUSAL
from tests.conftest import ROOT, batchgen, write_jobs


class _Counting(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def cdn() -> Iterator[tuple[str, list[str]]]:
    """A loopback "CDN": its base URL and the paths it was asked for."""
    seen: ClassVar[list[str]] = []
    handler = type("Handler", (_Counting,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_urls_are_refused_at_validation_naming_file_line_and_url(
    tmp_path: Path, cdn: tuple[str, list[str]]
) -> None:
    host, seen = cdn
    urls = [f"https://{host}/sku-1.png", f"http://{host}/sku-2.jpg", f"ftp://{host}/x.png"]
    rows = [{"id": "ok", "prompt": "a mug"}]
    rows += [{"id": f"r{n}", "prompt": "edit", "images": [url]} for n, url in enumerate(urls)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    for command in (["validate", jobs], ["run", jobs, "--out", tmp_path / "out", "--sim"]):
        done = batchgen(*command, key=None)
        assert done.returncode == 2, done.stderr
        for line, url in enumerate(urls, start=2):
            pattern = rf"{re.escape(str(jobs))}:{line}: \[images\] images '{re.escape(url)}': "
            assert re.search(pattern + re.escape(URL_REFUSAL), done.stderr), done.stderr
        assert "Traceback" not in done.stderr
    assert seen == []  # nothing was fetched
    assert not (tmp_path / "out").exists()  # nothing was sent or kept


def test_the_refusal_points_at_a_page_that_says_why_and_what_to_do() -> None:
    (page,) = re.findall(r"docs/[\w-]+\.md", URL_REFUSAL)
    text = (ROOT / page).read_text(encoding="utf-8")
    assert URL_REFUSAL.split(" (")[0] in text
    assert "## Why not (yet)" in text
    assert "## What to do" in text
