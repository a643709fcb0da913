"""`SimConfig`: everything that shapes the simulator's behaviour, validated.

One frozen record feeds `make_app`, `Simulator`, `SimulatorThread` and the
``batchgen sim serve`` command alike, so the three ways of running the
simulator cannot drift apart. Specs given as text (latency, fault kinds) are
checked here, at construction, so a typo fails before any request is served.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from batchgen.models import DEFAULT_MODEL
from batchgen.sim.faults import Latency, SpecError, check_faults, validate_kind

#: `small_images=True` divides the model's sizes by this: 1:1 becomes 16×16.
SMALL_IMAGE_DIVISOR = 64


@dataclass(frozen=True)
class SimConfig:
    """How the simulated Gemini image API behaves.

    Quotas: ``rpm`` is a sliding window of ``quota_window_s`` seconds (60 by
    default, shorter in tests); ``rpd`` a fixed window of ``quota_day_s``.
    ``quota_scope`` is ``"project"`` (all keys share one quota, like the real
    API) or ``"key"``. Faults: ``faults`` maps a kind (see `faults.KINDS`) to a
    probability; draws are a hash of ``seed``, the prompt and its occurrence
    number, so a seeded run is reproducible.
    """

    host: str = "127.0.0.1"
    port: int = 0
    #: Require this key (or one of `api_keys`); None and () accept any key.
    api_key: str | None = None
    api_keys: tuple[str, ...] = ()
    models: tuple[str, ...] = (DEFAULT_MODEL,)
    #: Seconds, or "uniform:LOW:HIGH", "lognormal:MEDIAN:SIGMA", or a `Latency`.
    latency: str | float | Latency = 0.0
    rpm: int | None = None
    rpd: int | None = None
    quota_window_s: float = 60.0
    quota_day_s: float = 86400.0
    quota_scope: str = "project"
    #: Beyond this many requests in flight, answer 503 overloaded at once.
    max_concurrent: int | None = None
    faults: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    #: Prompt substring -> kinds to answer in order, then normal answers.
    script: Mapping[str, Sequence[str]] | None = None
    #: Multiply the model's pixel sizes (1.0 = realistic 1024×1024 for 1:1).
    size_scale: float = 1.0
    #: Shorthand for tiny images (1:1 -> 16×16), for tests and benchmarks.
    small_images: bool = False
    #: Random pixels so files weigh like real ones (~1 MB at full size).
    noise: bool = False
    #: Random RGB pixels, stored: 3 bytes a pixel (12.6 MB at 2048 px), as heavy
    #: as a real answer can be.
    rgb_noise: bool = False
    #: With noise: serve one of this many pre-built images per size (0: a new one
    #: per request). A 2K or 4K noisy PNG takes the simulator ~0.1 s to make.
    noise_pool: int = 0
    #: Add a short text part to answers that asked for TEXT (the default).
    text_part: bool = True
    hang_seconds: float = 3600.0
    #: Pause between bytes of a ``slow`` answer.
    slow_interval_s: float = 0.5
    #: Base64 characters in a ``huge`` answer's image.
    huge_size: int = 30_000_000
    max_body_bytes: int = 20 * 1024 * 1024
    #: retryDelay of a forced ``429`` / ``daily``.
    retry_delay_s: float = 1.0
    daily_retry_delay_s: float = 6 * 3600.0
    redirect_url: str = "http://127.0.0.2:1/elsewhere"
    #: One JSON line per request (never the key itself, only a fingerprint).
    log_path: str | os.PathLike[str] | None = None
    #: Grace given to in-flight requests on stop before they are cancelled.
    shutdown_timeout_s: float = 1.0
    #: Bound on remembered timestamps and distinct prompts in `SimStats`.
    stats_cap: int = 100_000
    #: How many `RequestRecord`s `SimStats.recent` keeps.
    recent_cap: int = 1000
    #: A model catalogue file merged over the built-in one (as ``--models FILE``):
    #: the simulator serves the models it describes.
    models_file: str | os.PathLike[str] | None = None
    #: Simulated seconds per real second for files, batches and the flex tier
    #: (86400: a simulated day per second); see `batchgen.sim.clock`.
    time_scale: float = 1.0
    #: Where uploaded and result files are kept; None: a temporary folder
    #: removed when the simulator stops.
    files_dir: str | os.PathLike[str] | None = None
    #: The most bytes one upload may declare or send (the API's 2 GB).
    file_max_bytes: int = 2 * 1024**3
    #: A batch whose input file is larger than this is refused at create.
    batch_max_input_bytes: int = 2 * 1024**3
    #: Batches pending or running at once; one more is a 429.
    batch_max_concurrent: int = 100
    #: Simulated seconds a batch spends PENDING, then RUNNING (its lines
    #: finish evenly over that time) before it SUCCEEDS.
    batch_pending_s: float = 60.0
    batch_running_s: float = 600.0
    #: ``"failed"`` or ``"expired"``: how every batch ends (without it, a
    #: ``[[sim:failed]]`` / ``[[sim:expired]]`` in the display name decides).
    batch_outcome: str | None = None
    #: The flex tier's latency in simulated seconds (a spec as `latency`) and
    #: the share of flex requests shed with 429 or 503.
    flex_latency: str | float | Latency = "lognormal:180:0.6"
    flex_shed_rate: float = 0.1

    def __post_init__(self) -> None:
        Latency.parse(self.latency)
        check_faults(self.faults)
        for kinds in (self.script or {}).values():
            for kind in kinds:
                validate_kind(kind)
        if self.quota_scope not in ("project", "key"):
            raise SpecError(f"quota_scope must be 'project' or 'key', not {self.quota_scope!r}")
        for name in ("rpm", "rpd", "max_concurrent"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise SpecError(f"{name} must not be negative")
        if self.size_scale <= 0 or self.quota_window_s <= 0 or self.quota_day_s <= 0:
            raise SpecError("size_scale and quota windows must be positive")
        if self.noise_pool < 0:
            raise SpecError("noise_pool must be 0 or more")
        self._check_slow_things()

    def _check_slow_things(self) -> None:
        """Files, batches and flex: the knobs added with them."""
        Latency.parse(self.flex_latency)
        if self.time_scale <= 0:
            raise SpecError("time_scale must be positive")
        if self.batch_outcome not in (None, "failed", "expired"):
            raise SpecError(
                f"batch_outcome must be 'failed' or 'expired', not {self.batch_outcome!r}"
            )
        if not 0.0 <= self.flex_shed_rate <= 1.0:
            raise SpecError("flex_shed_rate must be within [0, 1]")
        if min(self.batch_pending_s, self.batch_running_s) < 0 or self.batch_max_concurrent < 0:
            raise SpecError("batch timings and limits must not be negative")

    @property
    def latency_model(self) -> Latency:
        return Latency.parse(self.latency)

    @property
    def scale(self) -> float:
        return 1.0 / SMALL_IMAGE_DIVISOR if self.small_images else self.size_scale

    @property
    def accepted_keys(self) -> frozenset[str]:
        keys = set(self.api_keys)
        if self.api_key is not None:
            keys.add(self.api_key)
        return frozenset(keys)
