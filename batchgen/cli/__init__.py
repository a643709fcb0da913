"""The command line: argv in, a call into the engine and an exit code out.

Internal: not part of batchgen's public API (that is `batchgen.run`, `batchgen.arun`,
`RunConfig` and the names in `batchgen.__all__`); it may change in any release.
"""
