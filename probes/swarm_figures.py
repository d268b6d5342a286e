"""The figures of a swarm run, from what each rank recorded: pure arithmetic, no torch, no I/O.

Per strategy (variant "ddp" or "diloco"), in SI units with every sample kept:

- `swarm_tokens_per_s`: the swarm's tokens per second, one sample per step (DDP) or outer round
  (DiLoCo): the global batch's tokens over that interval's wall time.
- `swarm_step_s`: wall seconds per optimizer step (DDP) or per inner step (DiLoCo: the round's time
  over H), the slowest rank's, since a synchronous swarm moves at its pace.
- `swarm_comm_s`: seconds of one sync. DDP hides its all-reduce inside the backward pass, so its
  figure is the same all-reduce (fp16, in DDP's buckets) timed alone beside training; DiLoCo's is
  the pseudo-gradient ring of every outer step. The slowest rank's, per sync.
- `swarm_utilisation`: compute over wall time, the ranks' mean, per H steps (see `utilisations`).
- `swarm_loss`: the held-out loss at the end (nats/token), with the whole curve against tokens and
  training seconds in its parameters, beside the language's floor.
- per rank (variant "ddp rank 1"): `swarm_compute_s` (seconds of a step without communication),
  `swarm_sync_bytes` (what its network interface sent per sync, against the ring's 2(n-1)/n of the
  payload), and `swarm_tokens_per_s` of its own share, carrying its energy where a meter exists.
- `swarm_token_factor` (DiLoCo, when both ran): tokens DiLoCo needed to reach a loss over the
  tokens synchronous training needed (see `token_factor`), resampled over the held-out sequences.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probes.measurement import Energy, Measurement, Unavailable

PROBE = "swarm"
#: Resamples of the held-out sequences behind the token factor's spread.
BOOTSTRAP_RESAMPLES = 200
#: The final loss is reported as the means of this many equal groups of held-out sequences.
LOSS_GROUPS = 8


def ring_bytes(payload_bytes: float, world: int) -> float:
    """What a ring all-reduce sends per rank: 2(n-1)/n of the payload (Patarasuk and Yuan 2009)."""
    return 2 * (world - 1) / world * payload_bytes


def slowest(by_rank: Sequence[Sequence[float]]) -> list[float]:
    """Per index, the largest of the ranks' values (over the indices every rank reached)."""
    return [max(values) for values in zip(*by_rank)]


def tokens_to_reach(tokens: Sequence[float], losses: Sequence[float], level: float) -> float | None:
    """Tokens at which the curve first falls to `level`, interpolated linearly between evaluations;
    None if it never does."""
    for i, loss in enumerate(losses):
        if loss <= level:
            if i == 0:
                return float(tokens[0])
            before = losses[i - 1]
            share = (before - level) / (before - loss)
            return float(tokens[i - 1] + share * (tokens[i] - tokens[i - 1]))
    return None


@dataclass(frozen=True)
class TokenFactor:
    """DiLoCo's tokens over synchronous training's, to the same loss."""

    factor: float
    level: float
    ddp_tokens: float
    diloco_tokens: float
    #: "ddp final": the loss synchronous training ended at, which DiLoCo reached; "diloco final":
    #: DiLoCo ended above it, so both are read at DiLoCo's own final loss instead.
    level_from: str


def token_factor(ddp_tokens: Sequence[float], ddp_loss: Sequence[float], diloco_tokens: Sequence[float],
                 diloco_loss: Sequence[float]) -> TokenFactor | None:
    """The tokens DiLoCo needed to reach the loss synchronous training (DDP) reached, over DDP's.

    The level is DDP's final loss when DiLoCo got there; when it did not, DiLoCo's final loss, which
    DDP passed on its way (so the factor is read on the stretch of loss both runs covered). None when
    either run never fell below the loss both started from.
    """
    start = min(ddp_loss[0], diloco_loss[0])
    level_from = "ddp final" if diloco_loss[-1] <= ddp_loss[-1] else "diloco final"
    level = max(ddp_loss[-1], diloco_loss[-1])
    if level >= start:
        return None
    ddp = tokens_to_reach(ddp_tokens, ddp_loss, level)
    diloco = tokens_to_reach(diloco_tokens, diloco_loss, level)
    assert ddp is not None and diloco is not None  # each curve ends at or below the level
    return TokenFactor(diloco / ddp, level, ddp, diloco, level_from)


@dataclass
class Curve:
    """Held-out loss during one strategy: per evaluation, its tokens, training seconds and the loss
    of every held-out sequence (the same sequences, in the same order, for both strategies)."""

    tokens: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    losses: list[list[float]] = field(default_factory=list)

    def add(self, tokens: float, seconds: float, losses: Sequence[float]) -> None:
        self.tokens.append(float(tokens))
        self.seconds.append(float(seconds))
        self.losses.append([float(x) for x in losses])

    def mean(self, columns: np.ndarray | None = None) -> list[float]:
        """Mean loss per evaluation, over all held-out sequences or the `columns` chosen."""
        table = np.asarray(self.losses, dtype=np.float64)
        return list((table if columns is None else table[:, columns]).mean(axis=1))


def bootstrap_token_factor(ddp: Curve, diloco: Curve, resamples: int = BOOTSTRAP_RESAMPLES,
                           seed: int = 0) -> list[float]:
    """The token factor over resamples of the held-out sequences (paired: the same draw for both curves).

    The spread it gives is the evaluation's: which sequences happened to be held out. Run-to-run
    training noise (another seed, another data order) is not in it.
    """
    sequences = len(ddp.losses[0])
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(resamples):
        columns = rng.integers(0, sequences, sequences)
        found = token_factor(ddp.tokens, ddp.mean(columns), diloco.tokens, diloco.mean(columns))
        if found is not None:
            out.append(found.factor)
    return out


def utilisations(ctx: Context, records: Mapping[int, Mapping[str, Any]], wall: Sequence[float]) -> list[float]:
    """Compute over wall time, the ranks' mean, per evaluation interval (H steps).

    Each rank records its busy seconds per interval ("busy_s"): DiLoCo the sum of its H inner steps,
    DDP H times the median of the steps it timed alone right after the interval (it computes while it
    communicates). `wall` is the slowest rank's time per step (DDP) or per round (DiLoCo).
    """
    group = ctx.h if ctx.strategy == "ddp" else 1
    intervals = min(len(wall) // group, *(len(records[r]["busy_s"]) for r in records))
    return [statistics.fmean(records[r]["busy_s"][k] for r in records) / sum(wall[k * group:(k + 1) * group])
            for k in range(intervals)]


@dataclass(frozen=True)
class Context:
    """What every figure of one strategy shares: the swarm, the model, the settings."""

    strategy: str
    world: int
    h: int
    bits: int
    dtype: str
    #: Tokens of one global step (every rank's micro-batch) and the model's parameters.
    tokens_per_step: int
    params: int
    #: Bytes one sync puts in the all-reduce: 16-bit gradients (DDP), encoded pseudo-gradients (DiLoCo).
    payload_bytes: float
    #: Everything else worth keeping with each figure (model shape, budget, backend, latency...).
    extra: Mapping[str, Any]

    def params_dict(self, **more: Any) -> dict[str, Any]:
        return {"strategy": self.strategy, "world": self.world, "h": self.h, "bits": self.bits,
                "tokens_per_step": self.tokens_per_step, "model_params": self.params, **self.extra, **more}


def _m(ctx: Context, metric: str, unit: str, samples: Sequence[float], variant: str | None = None,
       device: str | None = None, energy: Energy | None = None, **params: Any) -> Measurement:
    return Measurement(probe=PROBE, metric=metric, unit=unit, samples=list(samples), dtype=ctx.dtype,
                       device=device, variant=variant or ctx.strategy, params=ctx.params_dict(**params),
                       energy=energy)


def strategy_figures(ctx: Context, records: Mapping[int, Mapping[str, Any]], curve: Curve,
                     floor: Mapping[str, float]) -> tuple[list[Measurement], list[Unavailable]]:
    """Every figure of one strategy from the records of the ranks that reported (see the module docstring).

    A record holds per-interval lists ("interval_s", "compute_s", "sync_s", "sync_bytes", ...) and
    the rank's "device", "tokens", "train_s" and "energy". Ranks are aligned interval by interval;
    a rank lost mid-run shortens every figure to what all reporting ranks completed.
    """
    ranks = sorted(records)
    intervals = min(len(records[r]["interval_s"]) for r in ranks)
    if intervals == 0:
        return [], [Unavailable(probe=PROBE, reason=f"{ctx.strategy}: no step completed on every rank")]
    per_interval = ctx.h if ctx.strategy == "diloco" else 1
    wall = slowest([records[r]["interval_s"][:intervals] for r in ranks])
    step = [w / per_interval for w in wall]
    out = [_m(ctx, "swarm_tokens_per_s", "tokens/s", [ctx.tokens_per_step * per_interval / w for w in wall],
              tokens=ctx.tokens_per_step * per_interval * intervals, train_s=sum(wall))]
    out += _loss(ctx, curve, floor)
    compute = {r: records[r]["compute_s"] for r in ranks}
    sync = slowest([records[r]["sync_s"] for r in ranks])
    if all(compute.values()) and sync:  # DDP times them beside training, at each evaluation
        if ctx.strategy == "diloco":  # a round waits for all H steps of its slowest rank: their mean, not median
            rounds = min(len(records[r]["busy_s"]) for r in ranks)
            step_compute = statistics.median(max(records[r]["busy_s"][k] for r in ranks) / ctx.h for k in range(rounds))
        else:  # a DDP step waits for its slowest rank
            step_compute = max(statistics.median(compute[r]) for r in ranks)
        comm = statistics.median(sync)
        exposed = statistics.median(step) - step_compute
        overlap = {"hidden_comm_share": 1 - exposed / comm} if ctx.strategy == "ddp" else {}
        ring = ring_bytes(ctx.payload_bytes, ctx.world)
        out += [
            _m(ctx, "swarm_step_s", "s", step, compute_s=step_compute, exposed_comm_s=exposed, **overlap),
            _m(ctx, "swarm_comm_s", "s", sync, payload_bytes=ctx.payload_bytes, ring_bytes=ring,
               effective_bps=8 * ring / comm,
               timed=("alone, beside training, in DDP's buckets" if ctx.strategy == "ddp" else "every outer step")),
        ]
        busy = utilisations(ctx, records, wall)
        if busy:
            out.append(_m(ctx, "swarm_utilisation", "ratio", busy))
    else:
        out.append(_m(ctx, "swarm_step_s", "s", step))
    unavailable: list[Unavailable] = []
    for r in ranks:
        rec = records[r]
        variant = f"{ctx.strategy} rank {r}"
        if rec["compute_s"]:
            out.append(_m(ctx, "swarm_compute_s", "s", rec["compute_s"], variant, rec["device"], rank=r,
                          device_name=rec["device_name"]))
        energy = Energy.model_validate(rec["energy"]) if rec.get("energy") else None
        if rec.get("train_s"):
            out.append(_m(ctx, "swarm_tokens_per_s", "tokens/s", [rec["tokens"] / rec["train_s"]], variant,
                          rec["device"], energy, rank=r, tokens=rec["tokens"], train_s=rec["train_s"]))
        if rec.get("sync_bytes"):
            out.append(_m(ctx, "swarm_sync_bytes", "B", rec["sync_bytes"], variant, rec["device"], rank=r,
                          payload_bytes=ctx.payload_bytes, ring_bytes=ring_bytes(ctx.payload_bytes, ctx.world),
                          counted="bytes sent by the network interface (psutil), headers included"))
        else:
            unavailable.append(Unavailable(probe=PROBE, metric="swarm_sync_bytes", device=rec["device"],
                                           reason=f"{variant}: {rec['sync_bytes_unavailable']}"))
    return out, unavailable


def _loss(ctx: Context, curve: Curve, floor: Mapping[str, float]) -> list[Measurement]:
    final = np.asarray(curve.losses[-1], dtype=np.float64)
    groups = [float(g.mean()) for g in np.array_split(final, LOSS_GROUPS) if g.size]
    return [_m(ctx, "swarm_loss", "nat", groups, curve_tokens=curve.tokens, curve_seconds=curve.seconds,
               curve_loss=curve.mean(), held_out_sequences=int(final.size), **floor)]


def factor_figure(ctx: Context, ddp: Curve, diloco: Curve) -> Measurement | Unavailable:
    """`swarm_token_factor` from the two curves, or why it cannot be given."""
    point = token_factor(ddp.tokens, ddp.mean(), diloco.tokens, diloco.mean())
    samples = bootstrap_token_factor(ddp, diloco)
    if point is None or not samples:
        return Unavailable(probe=PROBE, metric="swarm_token_factor",
                           reason="the held-out loss did not fall below where both runs started; train longer (--minutes)")
    low, high = np.percentile(samples, [5, 95])
    return _m(ctx, "swarm_token_factor", "ratio", samples, "diloco", factor=point.factor, level=point.level,
              level_from=point.level_from, ddp_tokens=point.ddp_tokens, diloco_tokens=point.diloco_tokens,
              percentile_5=float(low), percentile_95=float(high), resamples=len(samples),
              spread_covers="which sequences were held out; not run-to-run training noise")

