"""A run: plan what is left, pace and send it through a bounded pool, settle each job."""
