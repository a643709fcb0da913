"""moto's S3 server on loopback for the object-storage tests, counting what is written.

The tests reach it as a user reaches MinIO: the endpoint and credentials in
the standard environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, …),
nothing in flags. The server counts the requests that write (PUT, POST,
DELETE) as they arrive, so a test can say "this run wrote no object" of a
run in another process (the CLI, a Ray worker), where a counting fsspec
wrapper cannot see.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

#: A recognisable S3 secret: it must appear in no object and no message.
AWS_SECRET = "moto-SECRET-9f3b27d1c6a4"
WRITES = ("PUT", "POST", "DELETE")


class CountingMotoServer(ThreadedMotoServer):  # type: ignore[misc]
    """`ThreadedMotoServer` with a count of the writing requests it answered."""

    def __init__(self) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.writes: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)

        def counted(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            method = environ.get("REQUEST_METHOD", "")
            if method in WRITES:
                with self._lock:
                    self.writes[method] += 1
            return app(environ, start_response)  # type: ignore[no-any-return]

        # As moto's own `_server_entry`, with the counting app in front.
        self._server = make_server(
            self._ip_address, self._port, counted, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def written(self) -> int:
        with self._lock:
            return sum(self.writes.values())


@contextmanager
def s3_environment(server: CountingMotoServer) -> Iterator[dict[str, str]]:
    """The standard AWS environment pointing at `server`, set for this process
    (and every process it starts afterwards); the previous values restored."""
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "moto-access-key",
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    cleared = ("AWS_PROFILE", "AWS_CA_BUNDLE", "AWS_SESSION_TOKEN")
    saved = {k: os.environ.get(k) for k in (*env, *cleared)}
    os.environ.update(env)
    for name in cleared:
        os.environ.pop(name, None)
    try:
        yield env
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass(frozen=True)
class S3:
    server: CountingMotoServer
    bucket: str


def new_bucket() -> str:
    bucket = f"bg-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return bucket


def objects_in(bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Every object under `prefix`, by key, with its bytes."""
    client = boto3.client("s3")
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return found


def keys(bucket: str, prefix: str = "") -> list[str]:
    """The keys under `prefix` (a listing only: no object is read)."""
    client = boto3.client("s3")
    found: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.extend(item["Key"] for item in page.get("Contents", []))
    return found
