"""A real PostgreSQL server for the shared-state tests, started from the machine's binaries.

initdb + pg_ctl in a temporary folder, the unix socket there too, no TCP
port; run as the `postgres` user through `runuser` when the tests run as
root (initdb refuses root). `scripts/install-postgres` installs the server
when the image lacks it. One server per test session; each test gets a
database of its own (`fresh_db`).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: A role that must log in with a password (the redaction tests' wrong password).
PW_USER = "pwuser"
PW_PASSWORD = "Sesame-7f3a9c-pw"


def _find(name: str) -> str | None:
    return shutil.which(name) or max(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), default=None)


def _bin(name: str) -> str:
    found = _find(name)
    if found is None:
        subprocess.run(["bash", str(ROOT / "scripts" / "install-postgres")], check=True)
        found = _find(name)
    assert found is not None, f"{name} missing after scripts/install-postgres"
    return found


def _as_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class PgServer:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="batchgen-pg-"))
        self.data = self.root / "data"
        self.user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self.root.chmod(0o755)

    def start(self) -> None:
        subprocess.run(
            _as_owner([_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user,
                       "--no-sync", "-E", "UTF8", "--locale=C"]),
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        hba = self.data / "pg_hba.conf"
        hba.write_text(f"local all {PW_USER} scram-sha-256\nlocal all all trust\n")
        options = f"-k {self.root} -c listen_addresses='' -c fsync=off -c max_connections=60"
        subprocess.run(
            _as_owner([_bin("pg_ctl"), "-D", str(self.data), "-o", options,
                       "-l", str(self.root / "log"), "-w", "start"]),
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        self.sql(f"CREATE ROLE {PW_USER} LOGIN PASSWORD '{PW_PASSWORD}' SUPERUSER")

    def stop(self) -> None:
        subprocess.run(
            _as_owner([_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
            check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, db: str = "postgres", user: str | None = None) -> str:
        return f"postgresql://{user or self.user}@/{db}?host={self.root}"

    def sql(self, statement: str, db: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(db), autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    def fresh_db(self) -> str:
        """A new empty database; its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.sql(f"CREATE DATABASE {name}")
        return self.url(name)

    def dump(self, url: str) -> str:
        """`pg_dump` of a database, as text."""
        return subprocess.run(
            [_bin("pg_dump"), "--dbname", url], check=True, capture_output=True, text=True
        ).stdout
