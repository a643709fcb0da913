"""The pool, driven by a scripted in-process sender (no HTTP) against a real
SQLite store: every outcome the pool carries out, chains, the budget, the
answer cache. Statuses are read back through a second connection, so they are
what the ledger committed. The last test runs end to end through the
simulator, where a stop's kind matters."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from batchgen.config import RunConfig, Secret
from batchgen.engine.budget import Budget
from batchgen.engine.cache import SharedCache
from batchgen.engine.chains import RUN_NOW, Chains, Gate, Skip, Wait, gate
from batchgen.engine.limiter import Pacer
from batchgen.engine.planner import plan
from batchgen.engine.pool import Pool
from batchgen.engine.pricing import PriceTable
from batchgen.engine.runner import arun_files
from batchgen.errors import AbortError
from batchgen.models import (
    GeneratedImage,
    Job,
    Outcome,
    OutcomeKind,
    Status,
    StopKind,
    Usage,
)
from batchgen.store import Store
from batchgen.store.db import DB_NAME, STATE_DIR
from batchgen.store.jobs import Known
from tests.conftest import KEY, TEST_MODEL, make_config, write_jobs
from tests.test_limiter import FakeClock

K = OutcomeKind


def png(colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, "PNG")
    return buf.getvalue()


def ok(colour: tuple[int, int, int] = (200, 30, 30)) -> Outcome:
    image = GeneratedImage("image/png", png(colour))
    usage = Usage(prompt_tokens=10, output_tokens=1290, total_tokens=1300)
    return Outcome(K.OK, images=(image,), usage=usage, http_status=200)


RATE_LIMITED = Outcome(K.RATE_LIMITED, http_status=429, message="slow down", retry_after=0.001)
SERVER_ERROR = Outcome(K.SERVER_ERROR, http_status=500, message="internal")
BLOCKED = Outcome(K.BLOCKED, http_status=200, message="SAFETY")
NO_IMAGE = Outcome(K.NO_IMAGE, http_status=200, message="text only", text="a poem")
FATAL = Outcome(K.FATAL, http_status=401, message="API key not valid", reason="UNAUTHENTICATED")
DAILY = Outcome(
    K.QUOTA_EXHAUSTED, http_status=429, message="quota", quota_id="RequestsPerDayPerProject"
)


class Script:
    """A sender answering each prompt from its own list, in order (the last answer
    repeats), and keeping what was sent."""

    def __init__(self, answers: Mapping[str, Sequence[Outcome]]) -> None:
        self.answers = {prompt: list(outcomes) for prompt, outcomes in answers.items()}
        self.sent: list[str] = []
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, model: str, body: bytes, /) -> Outcome:
        request = json.loads(body)
        prompt = request["contents"][0]["parts"][0]["text"]
        self.sent.append(prompt)
        self.bodies.append(request)
        queue = self.answers[prompt]
        return queue.pop(0) if len(queue) > 1 else queue[0]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "out") as s:
        with s.transaction():
            s.start_run()
        yield s


def job(job_id: str, prompt: str | None = None, *images: str) -> Job:
    return Job(id=job_id, prompt=prompt or f"prompt of {job_id}", images=images)


async def run_pool(
    store: Store,
    send: Script,
    jobs: Sequence[Job],
    *,
    budget: float | None = None,
    shared: SharedCache | None = None,
    **options: Any,
) -> Pool:
    options.setdefault("concurrency", 2)
    options.setdefault("model", TEST_MODEL)
    config = RunConfig(
        out=store.out,
        api_key=Secret(KEY),
        progress=False,
        seed=1,
        backoff_base=0.001,
        backoff_cap=0.002,
        **options,
    )
    plan(jobs, store, default_model=config.model)
    clock = FakeClock()  # the pacer's pauses pass at once
    pool = Pool(
        config,
        store,
        send,
        prices=PriceTable(),
        pacer=Pacer(clock=clock, sleep=clock.sleep),
        budget=Budget(budget, store.spent()),
        sharded=False,
        shared_cache=shared,
    )
    await pool.run(store.pending())
    return pool


def committed(out: Path) -> dict[str, dict[str, Any]]:
    """Every job row as another reader of the state file sees it."""
    path = out / STATE_DIR / DB_NAME
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM jobs").fetchall()
    return {row["id"]: dict(row) for row in rows}


def statuses(out: Path) -> dict[str, str]:
    return {job_id: row["status"] for job_id, row in committed(out).items()}


async def test_ok_ends_done_with_its_image_and_its_cost(store: Store) -> None:
    send = Script({"prompt of a": [ok()]})
    pool = await run_pool(store, send, [job("a")])
    row = committed(store.out)["a"]
    assert row["status"] == "done"
    assert json.loads(row["files"]) == ["images/a.png"]
    assert (store.out / "images" / "a.png").read_bytes() == png()
    assert (row["requests"], row["cost_source"]) == (1, "usage")
    assert row["cost_usd"] == pytest.approx((10 * 0.30 + 1290 * 30.0) / 1e6)
    c = pool.counters
    assert (c.done, c.requests, c.in_flight, c.retrying) == (1, 1, 0, 0)
    assert c.spent == pytest.approx(row["cost_usd"])
    assert pool.stop is None


async def test_429s_are_retried_without_using_attempts(store: Store) -> None:
    # Two attempts: the server error uses one, the 429s none, so the job gets its answer.
    send = Script({"prompt of a": [RATE_LIMITED, RATE_LIMITED, SERVER_ERROR, ok()]})
    pool = await run_pool(store, send, [job("a")], max_attempts=2)
    assert statuses(store.out) == {"a": "done"}
    assert (pool.counters.requests, pool.counters.rate_limited) == (4, 2)
    assert pool.pacer.rate_limited == 2
    assert committed(store.out)["a"]["requests"] == 4


async def test_server_errors_are_retried_up_to_max_attempts(store: Store) -> None:
    send = Script({"prompt of a": [SERVER_ERROR], "prompt of b": [SERVER_ERROR, ok()]})
    pool = await run_pool(store, send, [job("a"), job("b")], max_attempts=3)
    rows = committed(store.out)
    assert statuses(store.out) == {"a": "failed", "b": "done"}
    assert (rows["a"]["error_kind"], rows["a"]["http_status"]) == ("server_error", 500)
    assert send.sent.count("prompt of a") == 3
    assert (pool.counters.failed, pool.counters.done, pool.counters.requests) == (1, 1, 5)


async def test_no_image_has_its_own_cap_and_a_corrupt_image_is_no_image(store: Store) -> None:
    corrupt = Outcome(K.OK, images=(GeneratedImage("image/png", png()[:40]),), http_status=200)
    send = Script({"prompt of a": [NO_IMAGE], "prompt of b": [corrupt, ok()]})
    await run_pool(store, send, [job("a"), job("b")], max_attempts=5, max_no_image_attempts=2)
    rows = committed(store.out)
    assert (rows["a"]["status"], rows["a"]["error_kind"], rows["a"]["text"]) == (
        "failed",
        "no_image",
        "a poem",
    )
    assert send.sent.count("prompt of a") == 2
    assert rows["b"]["status"] == "done"
    assert send.sent.count("prompt of b") == 2


async def test_blocked_and_bad_requests_end_at_once_and_never_leak_the_key(
    store: Store,
) -> None:
    bad = Outcome(K.BAD_REQUEST, http_status=400, message=f"bad request for key {KEY}")
    send = Script({"prompt of a": [BLOCKED], "prompt of b": [bad]})
    pool = await run_pool(store, send, [job("a"), job("b")])
    rows = committed(store.out)
    assert statuses(store.out) == {"a": "blocked", "b": "failed"}
    assert rows["a"]["error_message"] == "SAFETY"
    assert rows["b"]["error_message"] == "bad request for key ***"
    assert len(send.sent) == 2
    assert (pool.counters.blocked, pool.counters.failed) == (1, 1)


@pytest.mark.parametrize(
    ("answer", "kind", "words"),
    [(FATAL, StopKind.FATAL, "the API refused the run"), (DAILY, StopKind.QUOTA, "daily quota")],
    ids=["fatal", "daily-quota"],
)
async def test_a_refusal_of_the_run_stops_it_and_fails_nothing(
    store: Store, answer: Outcome, kind: StopKind, words: str
) -> None:
    jobs = [job(f"j{n}", "same refusal") for n in range(4)]
    send = Script({"same refusal": [answer]})
    pool = await run_pool(store, send, jobs, concurrency=1)
    assert pool.stop is not None
    assert (pool.stop.kind, pool.stop.exit_code) == (kind, 3)
    assert words in pool.stop.message
    assert set(statuses(store.out).values()) == {"pending"}
    assert len(send.sent) == 1
    assert committed(store.out)["j0"]["requests"] == 0  # a refusal is not billed


async def test_an_error_in_the_sender_stops_the_run_instead_of_hanging(store: Store) -> None:
    class Broken(Script):
        async def __call__(self, model: str, body: bytes, /) -> Outcome:
            raise RuntimeError("sender bug")

    pool = await run_pool(store, Broken({}), [job("a"), job("b")])
    assert pool.stop is not None
    assert pool.stop.kind is StopKind.ERROR
    assert "sender bug" in pool.stop.message
    assert set(statuses(store.out).values()) == {"pending"}


async def test_a_chain_runs_on_its_parents_image_and_skips_after_a_failed_parent(
    store: Store,
) -> None:
    jobs = [
        job("child", "edit", "@parent"),
        job("parent"),
        job("bad"),
        job("kid", "edit of bad", "@bad"),
        job("grandkid", "edit of kid", "@kid"),
    ]
    send = Script(
        {"prompt of parent": [ok()], "edit": [ok((0, 0, 200))], "prompt of bad": [BLOCKED]}
    )
    pool = await run_pool(store, send, jobs, concurrency=1)
    rows = committed(store.out)
    assert statuses(store.out) == {
        "child": "done",
        "parent": "done",
        "bad": "blocked",
        "kid": "skipped",
        "grandkid": "skipped",
    }
    assert rows["kid"]["error_message"] == "parent bad ended blocked"
    assert rows["grandkid"]["error_message"] == "parent kid ended skipped"
    # The child was sent after its parent, with the parent's image inline, and its
    # fingerprint now covers those bytes.
    assert send.sent.index("edit") > send.sent.index("prompt of parent")
    inline = send.bodies[send.sent.index("edit")]["contents"][0]["parts"][1]["inlineData"]
    assert base64.b64decode(inline["data"]) == png()
    assert rows["child"]["fingerprint"] != ""
    assert (pool.counters.done, pool.counters.skipped) == (2, 2)


PARENTS = {
    "done": Known(Status.DONE, "f1", ("images/done.png",)),
    "pending": Known(Status.PENDING, "", ()),
    "failed": Known(Status.FAILED, "f2", ()),
}


@pytest.mark.parametrize(
    ("refs", "expected"),
    [
        (("@done", "/tmp/plain.png"), RUN_NOW),
        (("@pending",), Wait("pending")),
        (("@unknown",), Wait("unknown")),
        (("@done", "@pending"), Wait("pending")),
        (("@failed",), Skip("failed", Status.FAILED)),
        # A parent that ended badly skips the job even while another still runs.
        (("@pending", "@failed"), Skip("failed", Status.FAILED)),
    ],
)
def test_the_chain_gate(refs: tuple[str, ...], expected: Gate) -> None:
    assert gate(job("c", "edit", *refs), PARENTS.get) == expected


def test_waiting_children_are_released_once_with_their_parent(tmp_path: Path) -> None:
    chains = Chains(PARENTS.get, tmp_path)
    first, second = job("c1", "edit", "@pending"), job("c2", "edit", "@pending")
    assert chains.admit(first) == chains.admit(second) == Wait("pending")
    assert chains.release("pending") == [first, second]
    assert chains.release("pending") == []
    assert chains.reference("@done") == tmp_path / "images" / "done.png"
    assert chains.reference("/tmp/plain.png") == Path("/tmp/plain.png")
    with pytest.raises(AbortError, match="chained input @failed has no image") as caught:
        chains.reference("@failed")
    assert caught.value.kind is StopKind.ERROR


async def test_the_budget_stops_before_a_request_could_pass_it(store: Store) -> None:
    # One request's worst case is about $0.078; after one answer ($0.039) a second
    # reservation would pass $0.10.
    jobs = [job(f"j{n}", f"prompt {n}") for n in range(3)]
    send = Script({f"prompt {n}": [ok()] for n in range(3)})
    pool = await run_pool(store, send, jobs, budget=0.10, concurrency=1)
    assert pool.stop is not None
    assert pool.stop.kind is StopKind.BUDGET
    assert "budget $0.10 reached" in pool.stop.message
    assert sorted(statuses(store.out).values()) == ["done", "pending", "pending"]
    assert pool.budget.committed <= 0.10
    assert pool.budget.reserved == pytest.approx(0.0)


async def test_identical_requests_are_sent_once_in_a_run_and_across_runs(
    store: Store,
) -> None:
    send = Script({"same": [ok()]})
    pool = await run_pool(store, send, [job("a", "same"), job("b", "same")], concurrency=2)
    assert statuses(store.out) == {"a": "done", "b": "done"}
    assert len(send.sent) == 1  # b waited for a's answer instead of sending
    assert pool.counters.cache_hits == 1
    # A later run in the same folder finds the answer in the store.
    again = await run_pool(store, send, [job("a", "same"), job("b", "same"), job("c", "same")])
    assert len(send.sent) == 1
    assert again.counters.cache_hits == 1
    rows = committed(store.out)
    assert (rows["c"]["cache_hit"], rows["c"]["cost_source"]) == (1, "cache")
    assert (store.out / json.loads(rows["c"]["files"])[0]).read_bytes() == png()


async def test_the_shared_cache_serves_another_folder(tmp_path: Path) -> None:
    shared = SharedCache(tmp_path / "cache")
    send = Script({"same": [ok()]})
    try:
        for folder in ("one", "two"):
            with Store(tmp_path / folder) as store:
                with store.transaction():
                    store.start_run()
                pool = await run_pool(store, send, [job(folder, "same")], shared=shared)
                assert statuses(store.out) == {folder: "done"}
    finally:
        shared.close()
    assert len(send.sent) == 1
    assert pool.counters.cache_hits == 1


async def test_a_done_parent_without_an_image_stops_the_run_as_an_error_not_a_full_disk(
    tmp_path: Path,
) -> None:
    """A chained job whose parent is done but has no file cannot be sent: the run
    stops (the child stays pending), and the stop says what happened rather than
    blaming the disk."""
    out = tmp_path / "out"
    parent = {"id": "p", "prompt": "a red cube"}
    child = {"id": "c", "prompt": "make it blue", "images": ["@p"]}
    first = await arun_files(
        [write_jobs(tmp_path / "one.jsonl", [parent])], make_config(out, ""), sim=True
    )
    assert first.exit_code == 0
    with contextlib.closing(sqlite3.connect(out / STATE_DIR / DB_NAME)) as db, db:
        db.execute("UPDATE jobs SET files='[]' WHERE id='p'")
    both = write_jobs(tmp_path / "two.jsonl", [parent, child])
    result = await arun_files([both], make_config(out, ""), sim=True)
    assert result.exit_code == 3
    assert result.stop is not None
    assert result.stop.kind == "error"
    assert "chained input @p has no image" in result.stop.message
    assert result.report["pending"] == 1
