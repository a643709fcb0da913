"""history: a job's earlier images, kept beside the current one when it is redone.

In: a file of the output folder (`images/<id>.png`). Out: its history names,
`<name>.vN.<ext>` in the same folder (`images/<id>.v1.png`, v1 the oldest),
and the move of the current file to the next free one. `run --redo rejected`
moves; `batchgen review` lists them beside the new image.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from batchgen.output.storage import Output, as_output

#: More earlier versions than this of one image are not looked for.
MAX_VERSIONS = 999


def history_name(path: str, n: int) -> str:
    """`images/a.png`, 2 -> `images/a.v2.png` (a path relative to OUT, posix)."""
    p = PurePosixPath(path)
    return str(p.with_name(f"{p.stem}.v{n}{p.suffix}"))


def history(out: Path | Output, path: str) -> list[str]:
    """The earlier versions of `path` (relative to `out`), oldest first: v1, v2, …
    up to the first one missing (one stat each, no listing of a folder that may
    hold thousands of images)."""
    output = as_output(out)
    found: list[str] = []
    for n in range(1, MAX_VERSIONS + 1):
        name = history_name(path, n)
        if not output.exists(name):
            break
        found.append(name)
    return found


def move_to_history(out: Path | Output, path: str) -> str | None:
    """Move `path` to its next history name; None when it is not there (already
    moved by a run that was stopped before it could say so: never moved twice).
    The move is `atomic.move` in a folder; an object store's copy and delete."""
    output = as_output(out)
    if not output.exists(path):
        return None
    target = history_name(path, len(history(output, path)) + 1)
    output.move(path, target)
    return target
