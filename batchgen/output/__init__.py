"""Answers to files: the HTTP client, image checks, atomic writes, sizes, previews.

Internal: not part of batchgen's public API (that is `batchgen.run`, `batchgen.arun`,
`RunConfig` and the names in `batchgen.__all__`); it may change in any release.
"""
