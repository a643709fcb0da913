"""Whole-run checks of the reader's pass: duplicate ids, reference images, chains.

These are the checks that need memory across rows, so each keeps the
smallest structure that answers its question: a flat hash table of ids
(24 bytes a slot, no Python object per job), a bounded cache of image checks,
and edges only for jobs that chain on another job's output.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from batchgen.errors import InputProblem
from batchgen.output.mime import ACCEPTED_INPUT_TYPES, sniff_mime

_M64 = (1 << 64) - 1
_M32 = (1 << 32) - 1
_LINE_BITS = 40


def human_size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.3g} MB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.3g} KB"
    return f"{n} bytes"


@dataclass(frozen=True, slots=True)
class Seen:
    """Where an id was first seen, and whether it matched exactly or only
    ignoring letter case."""

    file_index: int
    line: int
    exact: bool


def _zeros(n: int) -> array[int]:
    """n zeroed 64-bit slots, allocated once (`array(bytes(...))` also built an
    n*8-byte `bytes` first, and over-allocated the array)."""
    return array("Q", [0]) * n


def _moved(old: array[int], moved: array[int], capacity: int) -> array[int]:
    """`old`'s values at their new slots (`moved[j]`: where slot j went, -1: empty)."""
    new = _zeros(capacity)
    for j, i in enumerate(moved):
        if i >= 0:
            new[i] = old[j]
    return new


class IdTable:
    """Open-addressing set of ids with the place each was first seen.

    A dict of id -> line costs ~130 bytes a job (the str, the int, the
    slot); this costs 24 bytes a slot. Ids are keyed by a 64-bit hash of the
    lower-cased id, so `SKU-1` and `sku-1` collide on purpose: on macOS and
    Windows disks their output files would overwrite each other. A key match
    is confirmed with an independent 32-bit hash before it counts as the
    same id (false match odds ~ n^2 / 2^97); a 64-bit key collision between
    different ids just probes on. A second exact-case hash tells a true
    duplicate from a case-only one.
    """

    def __init__(self, capacity: int = 1 << 12) -> None:
        self._keys = _zeros(capacity)
        self._checks = _zeros(capacity)
        self._places = _zeros(capacity)
        self._mask = capacity - 1
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @staticmethod
    def _hashes(job_id: str) -> tuple[int, int, int]:
        low = job_id.lower()
        key = hash(low) & _M64 or 1
        confirm = hash("\0" + low) & _M32
        exact = hash(job_id) & _M32
        return key, confirm, exact

    def _find(self, key: int, confirm: int) -> int:
        """Slot holding the id, or the empty slot where it would go."""
        keys, checks, mask = self._keys, self._checks, self._mask
        i = key & mask
        while True:
            k = keys[i]
            if k == 0 or (k == key and checks[i] >> 32 == confirm):
                return i
            i = (i + 1) & mask

    def add(self, job_id: str, file_index: int, line: int) -> Seen | None:
        """Record an id; if it was already there, say where."""
        key, confirm, exact = self._hashes(job_id)
        i = self._find(key, confirm)
        if self._keys[i]:
            place = self._places[i]
            same = self._checks[i] & _M32 == exact
            return Seen(place >> _LINE_BITS, place & ((1 << _LINE_BITS) - 1), same)
        self._keys[i] = key
        self._checks[i] = confirm << 32 | exact
        self._places[i] = file_index << _LINE_BITS | line
        self._count += 1
        if self._count * 10 > (self._mask + 1) * 7:
            self._grow()
        return None

    def __contains__(self, job_id: object) -> bool:
        """Exact-case membership, for `@id` references."""
        if not isinstance(job_id, str):
            return False
        key, confirm, exact = self._hashes(job_id)
        i = self._find(key, confirm)
        return bool(self._keys[i]) and self._checks[i] & _M32 == exact

    def _grow(self) -> None:
        """Double the table, one array at a time: the old keys are placed first
        (remembering where each went), then each old array is moved and freed
        before the next new one exists. Building all three new arrays beside
        the old ones (from zeroed `bytes`) peaked at twice the table: 24 MB at
        200,000 ids (12.6 MB table), 97 MB at a million, which was what made a
        run's peak RSS grow with its jobs; this peaks at 1.25 times (15.7 and
        63 MB), for ~0.3 s more CPU per million ids."""
        capacity = 2 * (self._mask + 1)
        mask = capacity - 1
        old_keys, self._keys = self._keys, _zeros(capacity)
        keys = self._keys
        moved = array("i", [-1]) * len(old_keys)  # old slot -> new slot
        for j, key in enumerate(old_keys):
            if key:
                i = key & mask
                while keys[i]:
                    i = (i + 1) & mask
                keys[i] = key
                moved[j] = i
        del old_keys
        self._checks = _moved(self._checks, moved, capacity)
        self._places = _moved(self._places, moved, capacity)
        self._mask = mask


class ImageChecker:
    """Checks each distinct reference image once: readable, an accepted
    image type by its bytes, and under the inline limit.

    The cache is keyed by absolute path and bounded (oldest entry out
    first) so a million distinct images cannot grow it without limit; a
    re-check after eviction only costs an open and a 16-byte read.
    """

    def __init__(self, limit: int, cache_size: int = 1 << 16) -> None:
        self.limit = limit
        self._cache: dict[str, int | str] = {}
        self._cache_size = cache_size
        self.checked = 0

    def check(self, path: str) -> int | str:
        """Size in bytes of a good image, or what is wrong with it."""
        hit = self._cache.get(path)
        if hit is not None:
            return hit
        result = self._check(path)
        self.checked += 1
        if len(self._cache) >= self._cache_size:
            del self._cache[next(iter(self._cache))]
        self._cache[path] = result
        return result

    def _check(self, path: str) -> int | str:
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                head = f.read(16)
        except FileNotFoundError:
            return f"image not found: {path}"
        except IsADirectoryError:
            return f"image path is a directory: {path}"
        except PermissionError:
            return f"image cannot be read (permission denied): {path}"
        except OSError as exc:
            return f"image cannot be read ({exc.strerror or exc}): {path}"
        mime = sniff_mime(head)
        if mime is None:
            return f"{_describe(path, head)}: {path}"
        if mime not in ACCEPTED_INPUT_TYPES:
            return f"image type {mime} is not accepted (use PNG, JPEG or WEBP): {path}"
        if size > self.limit:
            return (
                f"image is {human_size(size)}, over the {human_size(self.limit)} "
                f"inline request limit: {path}"
            )
        return size


def _describe(path: str, head: bytes) -> str:
    """Name what a rejected reference file is, so the fix is obvious: a
    BMP/TIFF/HEIC export needs converting, a text file is the wrong path."""
    from PIL import Image, UnidentifiedImageError  # only on this failure path

    try:
        with Image.open(path) as image:
            if image.format:
                return f"image type {image.format} is not accepted (use PNG, JPEG or WEBP)"
    except (OSError, UnidentifiedImageError, ValueError):
        pass
    if not head:
        found = "the file is empty"
    else:
        try:
            found = f"looks like text: {head.decode('utf-8')[:12]!r}"
        except UnicodeDecodeError:
            found = f"starts with bytes {head[:8].hex(' ')}"
    return f"not an image ({found}); expected PNG, JPEG or WEBP"


@dataclass(frozen=True, slots=True)
class ChainNode:
    file_index: int
    line: int
    refs: tuple[str, ...]


def find_cycles(edges: dict[str, ChainNode]) -> list[list[str]]:
    """Each cycle of `@id` references once, as the ids around it.

    Iterative, so a chain of a million jobs cannot hit the recursion limit.
    Only jobs with references are nodes; a reference to any other job ends a
    path, since that job depends on nothing.
    """
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    cycles: list[list[str]] = []
    for root in edges:
        if root in state:
            continue
        path: list[str] = [root]
        stack: list[Iterator[str]] = [iter(edges[root].refs)]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            if nxt not in edges or state.get(nxt) == 2:
                continue
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
                continue
            state[nxt] = 1
            path.append(nxt)
            stack.append(iter(edges[nxt].refs))
    return cycles


class ProblemSink:
    """Keeps the first `cap` problems and counts the rest, so a garbage
    million-line file costs a bounded amount of memory to report on."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.kept: list[InputProblem] = []
        self.dropped = 0
        self.first_dropped_file = ""

    def __len__(self) -> int:
        return len(self.kept) + self.dropped

    def add(self, problem: InputProblem) -> None:
        if len(self.kept) < self.cap:
            self.kept.append(problem)
            return
        if not self.dropped:
            self.first_dropped_file = problem.file
        self.dropped += 1

    def extend(self, problems: Iterable[InputProblem]) -> None:
        for p in problems:
            self.add(p)


# --------------------------------------------------------------------------- messages


def duplicate_problem(
    job_id: str, seen: Seen, names: list[str], name: str, line: int
) -> InputProblem:
    """The problem for a second use of an id; `names` maps file indexes to names."""
    where = (
        f"line {seen.line}"
        if names[seen.file_index] == name
        else (f"{names[seen.file_index]}:{seen.line}")
    )
    if seen.exact:
        msg = f"duplicate id '{job_id}' (first on {where})"
    else:
        msg = (
            f"id '{job_id}' differs only in letter case from the id on {where}; their images "
            "would overwrite each other on case-insensitive disks (macOS, Windows)"
        )
    return InputProblem(name, line, "id", msg)


def image_problems(
    paths: tuple[str, ...], images: ImageChecker, name: str, line: int
) -> list[InputProblem]:
    """Each bad reference image of one row, or the row's total over the limit."""
    problems = []
    total = 0
    for path in paths:
        if path.startswith("@"):
            continue
        result = images.check(path)
        if isinstance(result, str):
            problems.append(InputProblem(name, line, "images", result))
        else:
            total += result
    if not problems and total > images.limit:
        msg = (
            f"reference images total {human_size(total)}, over the "
            f"{human_size(images.limit)} inline request limit"
        )
        problems.append(InputProblem(name, line, "images", msg))
    return problems


def chain_problems(
    chains: dict[str, ChainNode], orphans: list[ChainNode], ids: IdTable, names: list[str]
) -> list[InputProblem]:
    """References to ids no row has, and cycles; known only once every row is read."""
    problems = []
    for node in [*chains.values(), *orphans]:
        for ref in node.refs:
            if ref not in ids:
                msg = f"'@{ref}' refers to job id '{ref}', which is not in the job files"
                problems.append(InputProblem(names[node.file_index], node.line, "images", msg))
    for cycle in find_cycles(chains):
        node = chains[cycle[0]]
        msg = "chained edits form a cycle: " + " → ".join(f"@{c}" for c in cycle)
        problems.append(InputProblem(names[node.file_index], node.line, "images", msg))
    return problems
