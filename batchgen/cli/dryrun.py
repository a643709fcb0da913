"""dryrun: a dry run's result in, what it would send and cost out, for people.

Kept apart from `cli/main.py` so that the command stays a thin wrapper: the
estimate is given at the run's own mode, then at every tier side by side, so
that a live user sees what ``--mode flex`` (and, later, Batch Mode) would save
before choosing.
"""

from __future__ import annotations

from batchgen.catalogue import Tier
from batchgen.config import RunConfig
from batchgen.engine.pricing import TierCosts
from batchgen.engine.runner import RunResult

#: How each tier is named beside the estimate, and what it trades for its price.
TIER_LINES: dict[Tier, str] = {
    Tier.STANDARD: "live",
    Tier.FLEX: "flex (--mode flex: half price, minutes of latency)",
    Tier.BATCH: "Batch Mode",
}


def print_dry_run(config: RunConfig, result: RunResult) -> None:
    p = result.plan
    print(
        f"{p.total} jobs: {p.new} new, {p.changed} changed, {p.retry} to retry, "
        f"{p.pending} pending, {p.done} already done"
        + "".join(f", {n} {k} (kept)" for k, n in p.final_kept.items())
    )
    to_run = p.to_run if config.limit is None else min(config.limit, p.to_run)
    allowance = 1.1
    print(
        f"would send {to_run} requests; estimated cost ${p.expected_cost:.2f} "
        f"(up to ${p.expected_cost * allowance:.2f} with a 10% allowance for retries); "
        "nothing was sent"
    )
    if result.tiers is not None:
        print(tier_line(result.tiers))
    for model, n in sorted(result.unpriced.items()):
        print(
            f"no price for {model} ({n} jobs, not in the estimate): it is not in the "
            "model catalogue; give one with --prices FILE or --models FILE"
        )
    if config.rpm is not None and to_run:
        print(
            f"at --rpm {config.rpm:g} it takes at least {_minutes(to_run / config.rpm)} "
            "(a lower bound: retries, 429s and slow answers add to it)"
        )


def tier_line(tiers: TierCosts) -> str:
    """ "by mode: live $0.40; flex (...) $0.20; Batch Mode: $0.20", a tier some
    model of the run does not offer saying which."""
    parts = []
    for tier, name in TIER_LINES.items():
        missing = tiers.missing.get(tier)
        if missing:
            parts.append(f"{name}: not offered by {', '.join(sorted(missing))}")
        else:
            parts.append(f"{name}: ${tiers.usd[tier]:.2f}")
    return "by mode: " + "; ".join(parts)


def _minutes(minutes: float) -> str:
    """A duration given in minutes, for people: "45 s", "12 min", "3 h 20 min"."""
    if minutes < 1:
        return f"{minutes * 60:.0f} s"
    if minutes < 120:
        return f"{minutes:.0f} min"
    return f"{int(minutes // 60)} h {minutes % 60:02.0f} min"
