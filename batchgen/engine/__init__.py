"""A run: plan what is left, pace and send it through a bounded pool, settle each job.

Internal: not part of batchgen's public API (that is `batchgen.run`, `batchgen.arun`,
`RunConfig` and the names in `batchgen.__all__`); it may change in any release.
"""
