"""search_index: each chunk's searchable text in, `report-data/<generation>/search.js` out.

The gallery's search keeps a job when every term of the query (split on
whitespace, lowercased) is a substring of its id and its clipped prompt.
Without an index, a rare term meant loading every chunk file of a million-job
gallery (200 files, 9 s) to find the few cards that match. This index maps
each **trigram** (three characters) of the lowercased text to the chunks
that hold it: a chunk can only hold a match when it holds every trigram of
every term, so the page loads only those. It is a bound, never a verdict:
the page still scans the chunks it loads.

Why trigrams of words: a term has no whitespace, so it lies inside one
whitespace-separated word of a row, and its trigrams are trigrams of that
word; a chunk's distinct words are far fewer than its characters (ids and
prompts repeat words), which keeps the work to about 1 s per million jobs.
The file is loaded on the first search only, not when the page opens.

Each trigram's chunks are written as a list of chunk numbers when few, else
as a hexadecimal bitmask (bit k: chunk k). Memory is bounded: once
`MAX_GRAMS` distinct trigrams are known (prompts in scripts with many
characters, at a million jobs), new ones are no longer recorded and the
index says it is incomplete; the trigrams it holds still name every chunk
that has them, and the page treats a trigram it does not hold as "anywhere"
instead of "nowhere".
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TextIO

#: Distinct trigrams recorded (~30 MB while building, a few MB of file at most).
MAX_GRAMS = 200_000
#: A trigram in at most this many chunks is written as their numbers, else as a bitmask.
LIST_MAX = 8


def chunk_grams(texts: Iterable[str]) -> set[str]:
    """The trigrams of the lowercased words of `texts` (id and prompt of each row)."""
    words = set(" ".join(texts).lower().split())
    return {w[i : i + 3] for w in words for i in range(len(w) - 2)}


class SearchIndex:
    """Trigram → chunks, built a chunk at a time as the gallery's rows stream."""

    def __init__(self) -> None:
        self._masks: dict[str, int] = {}
        self.chunks = 0
        #: False once a trigram was left out for want of room.
        self.complete = True

    def add_chunk(self, k: int, texts: Iterable[str]) -> None:
        masks, bit = self._masks, 1 << k
        for gram in chunk_grams(texts):
            mask = masks.get(gram)
            if mask is not None:
                masks[gram] = mask | bit
            elif len(masks) < MAX_GRAMS:
                masks[gram] = bit
            else:  # a trigram first seen now may be in earlier chunks' rows too: unknown
                self.complete = False
        self.chunks = max(self.chunks, k + 1)

    def write(self, fh: TextIO, name: str) -> None:
        """`BATCHGEN_CHUNK(name, {"chunks", "complete", "grams"})` into `fh`."""
        grams: dict[str, list[int] | str] = {}
        for gram, mask in self._masks.items():
            if mask.bit_count() <= LIST_MAX:
                grams[gram] = [k for k in range(mask.bit_length()) if mask >> k & 1]
            else:
                grams[gram] = format(mask, "x")
        doc = {"chunks": self.chunks, "complete": self.complete, "grams": grams}
        text = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
        fh.write(f"BATCHGEN_CHUNK({json.dumps(name)},{text});\n")
