"""Job sources: files of any format in, validated `Job`s out, every bad row named.

Internal: not part of batchgen's public API (that is `batchgen.run`, `batchgen.arun`,
`RunConfig` and the names in `batchgen.__all__`); it may change in any release.
"""
