"""Deciding what the simulator answers: markers, random faults, latency.

Everything here is a pure function or a small object with an injectable clock
or random source, so the rules can be tested with plain data and the aiohttp
handlers in `app.py` only have to act on a decision.

Marker grammar (a contract other tests rely on)::

    prompt  := text ( "[[sim:" SPEC "]]" text )*
    SPEC    := KIND | KIND "x" N          N a positive integer

A marker without ``xN`` forces KIND on every request carrying the prompt. With
``xN`` it forces KIND on the first N such requests. Several markers form a
schedule read left to right: ``[[sim:503x1]][[sim:429x2]]`` answers 503, then
429 twice, then succeeds. A marker without ``xN`` ends the schedule (it applies
forever). Requests are counted per exact prompt text (markers included) per
simulator instance.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Every outcome a marker, a script or the fault table may force.
KINDS: frozenset[str] = frozenset(
    {
        "429",
        "429-nodelay",
        "daily",
        "500",
        "502",
        "503",
        "504",
        "400",
        "413",
        "401",
        "403",
        "badkey",
        "404",
        "reset",
        "hang",
        "truncate",
        "nonjson",
        "text",
        "empty",
        "noimage",
        "block",
        "block-prohibited",
        "imagesafety",
        "multi",
        "jpeg",
        "jpeg-as-png",
        "huge",
        "badb64",
        "notimage",
        "slow",
        "redirect",
        "ok",
    }
)

_MARKER_RE = re.compile(r"\[\[sim:([^\]]*)\]\]")
_SPEC_RE = re.compile(r"^(?P<kind>.+?)(?:x(?P<n>[0-9]+))?$")
_DELAY_RE = re.compile(r"^429-delay=(?P<s>[0-9]+(?:\.[0-9]+)?)$")


class SpecError(ValueError):
    """A marker, fault table or latency spec that does not parse."""


def validate_kind(kind: str) -> str:
    """Return `kind` if the simulator knows how to produce it, else raise."""
    if kind in KINDS or _DELAY_RE.match(kind):
        return kind
    raise SpecError(f"unknown simulator outcome kind {kind!r}")


def delay_of(kind: str) -> float | None:
    """The retryDelay a ``429-delay=S`` kind asks for, or None for other kinds."""
    match = _DELAY_RE.match(kind)
    return float(match["s"]) if match else None


@dataclass(frozen=True, slots=True)
class Marker:
    kind: str
    #: How many requests it covers; None means every request.
    count: int | None


def parse_markers(prompt: str) -> tuple[Marker, ...]:
    """All `[[sim:...]]` markers in a prompt, in order. Unknown kinds raise
    `SpecError` so that a typo in a test fails loudly instead of succeeding."""
    if "[[sim:" not in prompt:  # fast path: the hot loop sees no markers
        return ()
    markers = []
    for spec in _MARKER_RE.findall(prompt):
        match = _SPEC_RE.match(spec.strip())
        if match is None:
            raise SpecError(f"bad simulator marker [[sim:{spec}]]")
        count = int(match["n"]) if match["n"] is not None else None
        if count is not None and count <= 0:
            raise SpecError(f"marker count must be positive in [[sim:{spec}]]")
        markers.append(Marker(validate_kind(match["kind"]), count))
    return tuple(markers)


def forced_kind(markers: Sequence[Marker], index: int) -> str | None:
    """The kind the `index`-th (0-based) request of a prompt must get, if any.

    Markers are a schedule: each ``xN`` marker consumes N requests, a marker
    without a count captures all the rest. None means "answer normally"."""
    remaining = index
    for marker in markers:
        if marker.count is None:
            return marker.kind
        if remaining < marker.count:
            return marker.kind
        remaining -= marker.count
    return None


def scripted_kind(
    script: Mapping[str, Sequence[str]], prompt: str, consumed: Mapping[str, int]
) -> tuple[str, str] | None:
    """The next kind of the first script entry whose key occurs in `prompt`
    and still has kinds left, as ``(key, kind)``; the caller advances the
    entry's position in `consumed`."""
    for key, kinds in script.items():
        if key in prompt:
            position = consumed.get(key, 0)
            if position < len(kinds):
                return key, kinds[position]
    return None


# -- random faults ---------------------------------------------------------


def parse_faults(text: str) -> dict[str, float]:
    """Parse ``429=0.02,500=0.01,reset=0.01`` into a rate table."""
    table: dict[str, float] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        kind, sep, rate = item.partition("=")
        if kind.startswith("429-delay") and rate and "=" in rate:
            # "429-delay=2.5=0.1": the kind itself contains "="
            extra, _, rate = rate.rpartition("=")
            kind = f"{kind}={extra}"
        if not sep:
            raise SpecError(f"fault {item!r} needs a rate, e.g. 500=0.01")
        try:
            value = float(rate)
        except ValueError:
            raise SpecError(f"fault rate {rate!r} is not a number") from None
        table[validate_kind(kind.strip())] = value
    check_faults(table)
    return table


def check_faults(table: Mapping[str, float]) -> None:
    """Rates must be probabilities that sum to at most 1."""
    for kind, rate in table.items():
        validate_kind(kind)
        if not 0.0 <= rate <= 1.0:
            raise SpecError(f"fault rate for {kind} must be within [0, 1], got {rate}")
    if sum(table.values()) > 1.0 + 1e-9:
        raise SpecError("fault rates add up to more than 1")


#: How `--fault-rate R` spreads R over kinds (fractions sum to 1).
DEFAULT_FAULT_MIX: dict[str, float] = {
    "429": 0.4,
    "500": 0.15,
    "503": 0.2,
    "504": 0.1,
    "reset": 0.1,
    "truncate": 0.05,
}


def spread_fault_rate(rate: float) -> dict[str, float]:
    """A rate table for an overall fault rate, using `DEFAULT_FAULT_MIX`."""
    return {kind: rate * share for kind, share in DEFAULT_FAULT_MIX.items()}


def fault_draw(seed: int, prompt: str, occurrence: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, prompt, occurrence).

    Hashing instead of drawing from one shared generator keeps the outcome of
    "the 3rd request for prompt P" the same whatever order concurrent clients
    arrive in, so a seeded run is reproducible even with many workers."""
    digest = hashlib.blake2b(f"{seed}\x00{occurrence}\x00{prompt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def pick_fault(table: Mapping[str, float], draw: float) -> str | None:
    """Map a uniform draw onto the rate table (in insertion order)."""
    edge = 0.0
    for kind, rate in table.items():
        edge += rate
        if draw < edge:
            return kind
    return None


# -- latency ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Latency:
    """A service-time distribution: ``fixed``, ``uniform`` or ``lognormal``.

    ``lognormal`` takes the median and sigma of the underlying normal, so
    ``lognormal:8:0.5`` has half of the answers under 8 s and a long tail, the
    shape image generation latency has in practice."""

    kind: str = "fixed"
    a: float = 0.0
    b: float = 0.0

    @classmethod
    def parse(cls, spec: str | float | Latency) -> Latency:
        if isinstance(spec, Latency):
            return spec
        if isinstance(spec, int | float):
            return cls("fixed", float(spec))
        parts = spec.strip().split(":")
        try:
            values = [float(p) for p in parts[1:]]
            if len(parts) == 1:
                return cls._checked("fixed", float(parts[0]), 0.0)
            if parts[0] == "fixed" and len(values) == 1:
                return cls._checked("fixed", values[0], 0.0)
            if parts[0] == "uniform" and len(values) == 2:
                return cls._checked("uniform", values[0], values[1])
            if parts[0] == "lognormal" and len(values) == 2:
                return cls._checked("lognormal", values[0], values[1])
        except ValueError:
            pass
        raise SpecError(
            f"bad latency {spec!r}; use SECONDS, uniform:LOW:HIGH or lognormal:MEDIAN:SIGMA"
        )

    @classmethod
    def _checked(cls, kind: str, a: float, b: float) -> Latency:
        if a < 0 or b < 0 or (kind == "uniform" and b < a):
            raise SpecError(f"bad {kind} latency parameters {a}, {b}")
        return cls(kind, a, b)

    @property
    def is_zero(self) -> bool:
        return self.kind == "fixed" and self.a == 0.0

    def sample(self, rng: random.Random) -> float:
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        if self.kind == "lognormal":
            if self.a == 0.0:
                return 0.0
            return math.exp(math.log(self.a) + self.b * rng.gauss(0.0, 1.0))
        return self.a


def format_delay(seconds: float) -> str:
    """Render a protobuf Duration the way Google does: ``17s``, ``3.5s``,
    ``45.837906927s`` (nanosecond precision, no trailing zeros)."""
    seconds = max(0.0, seconds)
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"
