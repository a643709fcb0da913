"""The Files API's storage: upload sessions, stored files, expiry, on disk.

A batch's input and result files can weigh gigabytes, so bytes never stay in
memory: an upload session appends each chunk to a ``.part`` file in the files
folder (`SimConfig.files_dir`, or a temporary one) as it arrives, hashing as
it goes, and finalising renames it; a batch streams its results into the same
folder. What is kept in memory is metadata only. Every file expires 48
simulated hours after it was made (`SimClock`); an expired file is gone
(its bytes deleted) the next time anything looks. `batchgen.sim.uploads`
puts this on HTTP.
"""

from __future__ import annotations

import hashlib
import random
import re
import shutil
import string
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from batchgen.sim.clock import SimClock

#: How long a file lives, in simulated seconds.
FILE_TTL_S = 48 * 3600.0
#: A file id: lowercase letters, digits and dashes, at most 40 characters.
FILE_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
_ALPHABET = string.ascii_lowercase + string.digits


class FileError(Exception):
    """A refusal with the API's code, status and wording."""

    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def not_found(file_id: str) -> FileError:
    """What the API answers for a file that is not there (missing, expired, deleted)."""
    return FileError(
        403,
        "PERMISSION_DENIED",
        f"You do not have permission to access the File {file_id} or it may not exist.",
    )


@dataclass
class StoredFile:
    """One file: uploaded (``source`` UPLOADED) or a batch's results (GENERATED)."""

    id: str
    display_name: str
    mime_type: str
    size: int
    sha256: bytes
    created: float
    path: Path
    generated: bool = False

    @property
    def expires(self) -> float:
        return self.created + FILE_TTL_S


@dataclass
class Session:
    """A resumable upload in progress: what was announced, what has arrived."""

    id: str
    file_id: str
    display_name: str
    mime_type: str
    #: ``X-Goog-Upload-Header-Content-Length``, if the client announced one.
    declared: int | None
    path: Path
    received: int = 0
    hasher: Any = field(default_factory=hashlib.sha256)
    #: Set once finalised: later queries answer with it.
    file: StoredFile | None = None
    cancelled: bool = False


class FileStore:
    """Sessions and files of one simulator, their bytes in `root`."""

    def __init__(self, root: Path | None, clock: SimClock, max_bytes: int, seed: int) -> None:
        self._chosen_root = root
        self._root: Path | None = None
        self.clock = clock
        self.max_bytes = max_bytes
        self._rng = random.Random(seed)
        self.files: dict[str, StoredFile] = {}
        self.sessions: dict[str, Session] = {}

    @property
    def root(self) -> Path:
        """The folder, made on first use (a simulator that never stores a file
        leaves no folder behind)."""
        if self._root is None:
            if self._chosen_root is None:
                self._root = Path(tempfile.mkdtemp(prefix="batchgen-sim-files-"))
            else:
                self._root = self._chosen_root
                self._root.mkdir(parents=True, exist_ok=True)
        return self._root

    def new_id(self, length: int = 12) -> str:
        return "".join(self._rng.choice(_ALPHABET) for _ in range(length))

    # -- uploads -------------------------------------------------------------

    def start(
        self, display_name: str, mime_type: str, declared: int | None, name: str | None
    ) -> Session:
        """Open a session for a file to come (its id chosen now, or the client's)."""
        if declared is not None and declared > self.max_bytes:
            raise FileError(
                400, "INVALID_ARGUMENT", f"File size {declared} exceeds {self.max_bytes} bytes."
            )
        file_id = self._chosen_id(name) if name else self.new_id()
        session_id = self.new_id(32)
        session = Session(
            session_id, file_id, display_name, mime_type, declared, self.root / f"{session_id}.part"
        )
        session.path.touch()
        self.sessions[session_id] = session
        return session

    def _chosen_id(self, name: str) -> str:
        file_id = name.removeprefix("files/")
        if not FILE_ID_RE.match(file_id):
            raise FileError(
                400,
                "INVALID_ARGUMENT",
                "* File.name: may only contain lowercase alphanumeric characters or dashes "
                "(-), cannot begin or end with a dash, and has at most 40 characters.\n",
            )
        if self.get(file_id) is not None or any(
            s.file_id == file_id for s in self.sessions.values()
        ):
            raise FileError(409, "ALREADY_EXISTS", f"File files/{file_id} already exists.")
        return file_id

    def append(self, session: Session, out: IO[bytes], chunk: bytes) -> None:
        """Write a piece of a chunk as it arrives (to `out`, the session's part
        file opened for appending), so `received` is what is on disk."""
        limit = self.max_bytes if session.declared is None else session.declared
        if session.received + len(chunk) > min(limit, self.max_bytes):
            raise FileError(
                400, "INVALID_ARGUMENT", "Upload exceeds the announced or allowed size."
            )
        out.write(chunk)
        out.flush()
        session.hasher.update(chunk)
        session.received += len(chunk)

    def finalize(self, session: Session) -> StoredFile:
        if session.declared is not None and session.received != session.declared:
            raise FileError(
                400,
                "INVALID_ARGUMENT",
                f"Upload finalized with {session.received} bytes; {session.declared} announced.",
            )
        path = self.root / session.file_id
        session.path.replace(path)
        stored = StoredFile(
            session.file_id,
            session.display_name,
            session.mime_type,
            session.received,
            session.hasher.digest(),
            self.clock.now(),
            path,
        )
        self.files[stored.id] = stored
        session.file = stored
        return stored

    def cancel(self, session: Session) -> None:
        session.cancelled = True
        session.path.unlink(missing_ok=True)

    # -- files ---------------------------------------------------------------

    def add_generated(self, file_id: str, path: Path, mime_type: str, sha256: bytes) -> StoredFile:
        """Register a file the simulator wrote itself (a batch's results)."""
        stored = StoredFile(
            file_id,
            file_id,
            mime_type,
            path.stat().st_size,
            sha256,
            self.clock.now(),
            path,
            generated=True,
        )
        self.files[file_id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        """The file, unless it is missing or has expired (then its bytes go)."""
        stored = self.files.get(file_id)
        if stored is not None and self.clock.now() >= stored.expires:
            self.delete(file_id)
            return None
        return stored

    def delete(self, file_id: str) -> bool:
        stored = self.files.pop(file_id, None)
        if stored is None:
            return False
        stored.path.unlink(missing_ok=True)
        return True

    def live(self) -> list[StoredFile]:
        """Every unexpired file, newest first (expired ones are swept on the way)."""
        for file_id in list(self.files):
            self.get(file_id)
        return sorted(self.files.values(), key=lambda f: -f.created)

    def close(self) -> None:
        """Remove the folder if it is ours; else only the parts of unfinished uploads."""
        if self._root is None:
            return
        if self._chosen_root is None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
            return
        for session in self.sessions.values():
            if session.file is None:
                session.path.unlink(missing_ok=True)
