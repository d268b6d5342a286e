"""Swarm probe: train for real across machines with DDP and DiLoCo, and measure what the projection assumes.

Every rank runs `measure_swarm` with the same options. The ranks meet (probes.swarm_link), agree on a
model the slowest of them steps in about `step_s` (probes.swarm_train.size_model), then train it
for `minutes` of training time per strategy on the same generated language
(probes.swarm_language), recording as they go. Rank 0 gathers every rank's records through the
master's store and turns them into figures (probes.swarm_figures); the other ranks return nothing.

A rank that fails, or drops out, ends the run on every rank (probes.swarm_link says how); rank 0
then returns the figures of what completed and names the lost ranks, and the run is stored as
aborted. Ctrl-C on rank 0 returns nothing; on another rank it is that rank dropping out.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from probes.collective import error_gist
from probes.energy import EnergyMeter, meter_for
from probes.inventory import read_cpu_info
from probes.measurement import ProbeError, ProbeResult, ProgressCallback, Unavailable, no_progress
from probes.swarm_figures import PROBE, Context, Curve, factor_figure, strategy_figures
from probes.swarm_language import Language
from probes.swarm_link import WATCH_INTERVAL_S, Link, Watchdog, join
from probes.swarm_ring import BITS
from probes.swarm_train import SEQ_LEN, Record, Run, Setup, Stopped, compute_dtype, diloco_payload_bytes, ladder, size_model
from probes.swarm_train import train_ddp, train_diloco

STRATEGIES = ("ddp", "diloco")
#: How long rank 0 waits, after a failure, for the surviving ranks' records (their watchdogs post them).
GRACE_S = 5.0 + 2 * WATCH_INTERVAL_S
TINY_ALLREDUCES = 10


@dataclass
class SwarmResult:
    """Rank 0's figures (empty elsewhere), and why the run ended early, if it did."""

    result: ProbeResult
    aborted: str | None = None


def _device(spec: str) -> torch.device:
    if spec == "auto":
        spec = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ProbeError(f"swarm: unsupported device {spec!r} (the swarm trains on cpu, cuda or cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ProbeError("swarm: CUDA is not available to this torch; use --device cpu")
        device = torch.device("cuda", device.index or 0)
    return device


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return str(read_cpu_info().get("brand_raw") or platform.processor() or "cpu")


def check_options(strategies: Sequence[str], minutes: float, h: int, bits: int, step_s: float,
                  timeout_s: float = 120.0, max_params: float = 25e6) -> None:
    """One line naming the option, before anyone waits on a rendezvous."""
    if not strategies or any(s not in STRATEGIES for s in strategies):
        raise ProbeError(f"swarm: strategy must be ddp, diloco or both, got {','.join(strategies) or 'nothing'}")
    if not (math.isfinite(minutes) and 0 < minutes <= 24 * 60):
        raise ProbeError(f"swarm: --minutes must be above 0 and at most 1440, got {minutes:g}")
    if h < 1:
        raise ProbeError(f"swarm: --diloco-h must be at least 1, got {h}")
    if bits not in BITS:
        raise ProbeError(f"swarm: --bits must be 16 or 8, got {bits}")
    if bits == 8 and "diloco" not in strategies:
        raise ProbeError("swarm: --bits 8 sets DiLoCo's pseudo-gradients; DDP always sends fp16 gradients")
    if not (math.isfinite(step_s) and 0 < step_s <= 600):
        raise ProbeError(f"swarm: --step-seconds must be above 0 and at most 600, got {step_s:g}")
    if not (math.isfinite(timeout_s) and 1 <= timeout_s <= 3600):
        raise ProbeError(f"swarm: --timeout must be 1 to 3600 seconds, got {timeout_s:g}")
    ladder(Language().vocab, max_params)  # refuses a cap below the smallest model


def measure_swarm(
    *,
    rank: int | None = None,
    world: int | None = None,
    master: str | None = None,
    strategies: Sequence[str] = STRATEGIES,
    minutes: float = 5.0,
    h: int = 16,
    bits: int = 16,
    device: str = "auto",
    step_s: float = 1.0,
    max_params: float = 25e6,
    timeout_s: float = 120.0,
    progress: ProgressCallback = no_progress,
) -> SwarmResult:
    """Train with each of `strategies` for `minutes` of training time; rank 0 returns the figures.

    `h`: DiLoCo's inner steps per outer step, and how often both strategies are evaluated.
    `bits`: DiLoCo's pseudo-gradient on the wire (16 or 8). `timeout_s`: how long to wait for the
    ranks to join, and for any one collective before its peer counts as lost.
    """
    check_options(strategies, minutes, h, bits, step_s, timeout_s, max_params)
    dev = _device(device)
    progress("swarm: joining the other ranks", 0.0)
    link = join(rank, world, master, dev, timeout_s)
    stop = threading.Event()
    filling: dict[str, Record] = {}

    def on_failure(_cause: str) -> None:
        stop.set()
        if link.rank != 0:  # rank 0 keeps its own record; the others post theirs before they go
            for key, record in list(filling.items()):
                link.board.post(key, record.snapshot())

    watchdog = Watchdog(link.store, on_failure)
    try:
        return _train_all(link, list(strategies), minutes * 60, h, bits, step_s, max_params, timeout_s, stop,
                          filling, progress)
    finally:
        watchdog.stop()
        link.close()


def _train_all(link: Link, strategies: list[str], budget_s: float, h: int, bits: int, step_s: float,
               max_params: float, timeout_s: float, stop: threading.Event, filling: dict[str, Record],
               progress: ProgressCallback) -> SwarmResult:
    language = Language()
    dtype = compute_dtype(link.device)
    try:
        cfg, size_times = size_model(link, language, step_s, max_params, dtype, progress)
        latency = _tiny_allreduce(link)
    except RuntimeError as exc:
        raise ProbeError(f"swarm: rank {link.rank} lost contact with the others while sizing the model: "
                         f"{error_gist(exc)}; nothing was measured") from exc
    setup = Setup(language, cfg, dtype, budget_s, h, bits, cfg.tokens_per_step * link.world)
    meter = meter_for(str(link.device))
    name = _device_name(link.device)
    curves: dict[str, Curve] = {}
    records: dict[str, dict[int, dict]] = {}
    aborted = None
    try:
        for strategy in strategies:
            record = Record(strategy=strategy, device=str(link.device), device_name=name,
                            sync_bytes_unavailable=link.nic.unavailable)
            key = f"{strategy}/{link.rank}"
            filling.clear()
            filling[key] = record
            curve = Curve()
            run = Run(strategy, link, setup, record, curve.add, progress, stop)
            try:
                _train_metered(run, meter, train_ddp if strategy == "ddp" else train_diloco)
            except KeyboardInterrupt:
                with contextlib.suppress(ProbeError):  # a master already gone changes nothing here
                    _report_failure(link, f"rank {link.rank} was stopped (Ctrl-C)", key, record)
                raise
            except (RuntimeError, Stopped) as exc:
                cause = _cause(link, exc)
                _report_failure(link, cause, key, record)
                if link.rank != 0:
                    raise ProbeError(f"swarm: the run stopped during {strategy} ({cause}); "
                                     "rank 0 stores what was measured") from None
                found = link.board.collect([f"{strategy}/{r}" for r in range(1, link.world)], GRACE_S)
                lost = [r for r in range(1, link.world) if f"{strategy}/{r}" not in found]
                records[strategy] = {0: record.snapshot(), **{int(k.split("/")[1]): v for k, v in found.items()}}
                curves[strategy] = curve
                aborted = _lost_line(lost, strategy, run, cause)
                break
            link.board.post(key, record.snapshot())
            if link.rank == 0:
                found = link.board.collect([f"{strategy}/{r}" for r in range(link.world)], timeout_s)
                records[strategy] = {int(k.split("/")[1]): v for k, v in found.items()}
                curves[strategy] = curve
                silent = [r for r in range(link.world) if r not in records[strategy]]
                if silent:
                    aborted = _lost_line(silent, strategy, run, f"no record within {timeout_s:g} s of the end")
                    break
    finally:
        meter.close()
    if link.rank != 0:
        return SwarmResult(ProbeResult())
    extra = {**asdict(cfg), "dtype": dtype, "budget_s": budget_s, "backend": link.backend,
             "tiny_allreduce_s": latency, "rtt_estimate_s": latency / (link.world - 1),
             "step_target_s": step_s, "sizing_step_s": size_times, "language": asdict(language)}
    floor = {"loss_floor": language.loss_floor(SEQ_LEN), "entropy_rate": language.entropy_rate(),
             "bigram_entropy": language.bigram_entropy(), "uniform_loss": math.log(language.vocab)}
    return SwarmResult(_figures(link.world, setup, records, curves, extra, floor, aborted), aborted)


def _train_metered(run: Run, meter: EnergyMeter, train: Callable[[Run], None]) -> None:
    """Train, with this rank's energy over the strategy's whole window (evaluations included)."""
    sync = run.sync_device
    meter.begin_window(sync)
    try:
        train(run)
    finally:
        run.record.set(energy=meter.end_window(sync).energy.model_dump(mode="json"))


def _cause(link: Link, exc: BaseException) -> str:
    """What went wrong: the first failure any rank reported, else this rank's own error."""
    try:
        reported = link.board.failure()
    except ProbeError:
        reported = None
    if reported:
        return reported
    if isinstance(exc, Stopped):
        return "another rank failed"
    return f"rank {link.rank}: {error_gist(exc)}"


def _report_failure(link: Link, cause: str, key: str, record: Record) -> None:
    """Tell every rank (through the store) and leave this rank's record; a lost master is the error."""
    link.board.fail(cause)
    link.board.post(key, record.snapshot())


def _lost_line(lost: list[int], strategy: str, run: Run, cause: str) -> str:
    who = f"rank {', '.join(map(str, lost))} dropped out" if lost else "the run stopped"
    return (f"{who} during {strategy}, after {run.clock:.0f} s of training at step {run.step} ({cause}); "
            f"{strategy}'s figures cover the steps before")


def _tiny_allreduce(link: Link) -> float:
    """Median seconds of an 8-byte all-reduce: the latency a sync pays whatever its size."""
    cell = torch.ones(2, device=link.comm_device)
    link.group.barrier().wait()
    times = []
    for _ in range(TINY_ALLREDUCES):
        start = time.perf_counter()
        link.group.allreduce([cell]).wait()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _figures(world: int, setup: Setup, records: dict[str, dict[int, dict]], curves: dict[str, Curve],
             extra: dict, floor: dict, aborted: str | None) -> ProbeResult:
    result = ProbeResult()
    contexts = {}
    for strategy, by_rank in records.items():
        payload = 2 * setup.cfg.n_params if strategy == "ddp" else diloco_payload_bytes(setup.cfg.n_params, world, setup.bits)
        ctx = Context(strategy, world, setup.h, 16 if strategy == "ddp" else setup.bits, setup.dtype,
                      setup.tokens_per_step, setup.cfg.n_params, payload, extra)
        contexts[strategy] = ctx
        measurements, unavailable = strategy_figures(ctx, by_rank, curves[strategy], floor)
        result.measurements += measurements
        result.unavailable += unavailable
    if "ddp" in curves and "diloco" in curves:
        found = factor_figure(contexts["diloco"], curves["ddp"], curves["diloco"])
        (result.unavailable if isinstance(found, Unavailable) else result.measurements).append(found)
    if aborted:
        result.unavailable.append(Unavailable(probe=PROBE, reason=aborted))
    return result
