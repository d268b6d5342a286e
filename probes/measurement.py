"""The typed result every probe returns: the measurement contract of DESIGN.md.

A probe measures one thing and returns a `ProbeResult`: measurements (raw samples plus the
parameters that produced them) and the things it could not measure, each with a reason.
Figures are in SI base units (FLOP/s, B/s, bit/s, s, W, J); humanising is the report's job.

The summary statistics (value = median, min, max, n) are derived from the samples, never
stored apart from them, so a document cannot carry a median that its samples contradict.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

#: metric -> unit. The names `--json`, the database and the server share: add, never rename.
METRICS: dict[str, str] = {
    "matmul_flops": "FLOP/s",
    "mem_copy_bandwidth": "B/s",
    "mem_triad_bandwidth": "B/s",
    "h2d_bandwidth": "B/s",
    "d2h_bandwidth": "B/s",
    "net_upload": "bit/s",
    "net_download": "bit/s",
    "net_rtt": "s",
    "allreduce_busbw": "B/s",
    "allreduce_latency": "s",
    "train_tokens_per_s": "tokens/s",
    "train_mfu": "ratio",
    "train_max_params": "params",
    "idle_power": "W",
    "command_energy": "J",
    "swarm_tokens_per_s": "tokens/s",
    "swarm_step_s": "s",
    "swarm_compute_s": "s",
    "swarm_comm_s": "s",
    "swarm_sync_bytes": "B",
    "swarm_utilisation": "ratio",
    "swarm_loss": "nat",
    "swarm_token_factor": "ratio",
}

EnergyMethod = Literal["nvml-counter", "nvml-polling", "rapl", "estimated", "unavailable"]

#: Called by probes to report progress: (what is running now, fraction of this probe done 0..1).
ProgressCallback = Callable[[str, float], None]


def no_progress(_step: str, _fraction: float) -> None:
    """The default progress callback: report nothing."""


class ProbeError(Exception):
    """A probe could not run for a reason the user can act on (bad host, missing tool...).

    The message is one line, shown as is at the CLI (exit code 2).
    """


def error_reason(exc: BaseException) -> str:
    """An unexpected error as one line for an `unavailable` reason: its type and first line.

    CUDA errors carry a C++ trace and "compile with TORCH_USE_CUDA_DSA" advice on later lines.
    """
    lines = str(exc).strip().splitlines()
    first = lines[0].strip() if lines else ""
    return f"{type(exc).__name__}: {first}"[:300] if first else type(exc).__name__


class _Figures(BaseModel):
    """Strict about unknown fields, but derived (computed) fields in the input are recomputed, not read.

    A document printed by `show --json` carries value, min, max, n...; reading it back must accept
    them without trusting them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_derived(cls, data: Any) -> Any:
        if isinstance(data, dict):
            derived = cls.__pydantic_computed_fields__  # the class's own dict: model_computed_fields is a slow descriptor
            return {k: v for k, v in data.items() if k not in derived}
        return data


class Energy(_Figures):
    """Energy spent over one measurement window, and how it was obtained.

    When the platform gives no figure, `method` is "unavailable" and `unavailable_reason`
    says why; the numeric fields are then None, never guessed.
    """

    method: EnergyMethod
    joules: float | None = Field(default=None, ge=0)
    watts_avg: float | None = Field(default=None, ge=0)
    watts_peak: float | None = Field(default=None, ge=0)
    seconds: float | None = Field(default=None, ge=0)
    #: Average idle power of the same device, measured before probing, to report "above idle".
    idle_watts: float | None = Field(default=None, ge=0)
    unavailable_reason: str | None = None
    #: What limited the window: clocks (Hz), temperature (C), power limit (W), throttle reasons.
    telemetry: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _figure_or_reason(self) -> Energy:
        if self.method == "unavailable":
            if not self.unavailable_reason:
                raise ValueError("an unavailable energy figure needs unavailable_reason")
            if self.joules is not None:
                raise ValueError("an unavailable energy figure cannot carry joules")
        elif self.joules is None or self.seconds is None:
            raise ValueError(f"energy measured by {self.method} needs joules and seconds")
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def joules_above_idle(self) -> float | None:
        if self.joules is None or self.idle_watts is None or self.seconds is None:
            return None
        return max(0.0, self.joules - self.idle_watts * self.seconds)


def _finite(values: list[float], what: str) -> list[float]:
    for v in values:
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{what} must be finite and non-negative, got {v!r}")
    return values


class Measurement(_Figures):
    """One figure with every sample it was derived from and the parameters that produced it."""

    probe: str
    metric: str
    unit: str
    #: One figure per repeat, in `unit`. The reported value is their median.
    samples: list[float] = Field(min_length=1)
    dtype: str | None = None
    #: The device it ran on: "cpu", "cuda:0", "mps", or a link such as "net:HOST".
    device: str | None = None
    #: Distinguishes figures of the same metric: "burst"/"sustained", "pinned"/"pageable"...
    variant: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    energy: Energy | None = None
    #: The datasheet limit for this figure in the same unit, where one is known.
    peak: float | None = Field(default=None, gt=0)
    peak_source: str | None = None

    @field_validator("samples")
    @classmethod
    def _samples_finite(cls, v: list[float]) -> list[float]:
        return _finite(v, "samples")

    @model_validator(mode="after")
    def _known_metric(self) -> Measurement:
        expected = METRICS.get(self.metric)
        if expected is None:
            raise ValueError(f"unknown metric {self.metric!r}")
        if self.unit != expected:
            raise ValueError(f"metric {self.metric} is in {expected}, not {self.unit!r}")
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def value(self) -> float:
        return statistics.median(self.samples)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def min(self) -> float:
        return min(self.samples)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def max(self) -> float:
        return max(self.samples)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def n(self) -> int:
        return len(self.samples)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def peak_fraction(self) -> float | None:
        return self.value / self.peak if self.peak else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def efficiency(self) -> float | None:
        """Figure per watt (FLOP/J, B/J, tokens/J) from the window's average power."""
        if self.energy is None or not self.energy.watts_avg:
            return None
        return self.value / self.energy.watts_avg

    @property
    def key(self) -> tuple[str, str | None, str | None, str | None]:
        """What makes two measurements comparable across runs."""
        return (self.metric, self.variant, self.dtype, self.device)


class Unavailable(BaseModel):
    """Something a probe could not measure on this machine, and why (never a guessed number)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    probe: str
    reason: str
    device: str | None = None
    metric: str | None = None
    dtype: str | None = None


class ProbeResult(BaseModel):
    """What one probe returns."""

    measurements: list[Measurement] = Field(default_factory=list)
    unavailable: list[Unavailable] = Field(default_factory=list)

    def extend(self, other: ProbeResult) -> None:
        self.measurements.extend(other.measurements)
        self.unavailable.extend(other.unavailable)
