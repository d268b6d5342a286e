"""Dense matmul FLOP/s per dtype (metric `matmul_flops`), in two regimes.

- burst: a sweep over shapes, keeping the best (one fixed size underestimates: mamf-finder's
  lesson), each shape timed in blocks after a warm-up;
- sustained: a steady window at the best shape, 10 s (60 s for the headline dtype of a full GPU
  probe), long enough to leave the boost clock and settle on the power limit. It is not claimed
  to be thermal steady state: an air-cooled card keeps warming for minutes (mamf-finder's MSMF
  settles the clock first). Each sustained figure says which window it had (`window_s`, `regime`).

Every shape's product is checked against a float64 reference on a slice of rows (on the CPU for
MPS, which has no float64), so a broken kernel (or a dtype silently falling back to garbage) never
posts a figure. Whatever else goes wrong with one dtype (out of memory, a cuBLAS error, a kernel
this torch build lacks) becomes that dtype's `unavailable` entry with the error; the other dtypes
still run. The device must be the current one (probes.devices.device_context: the runner does it).
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import psutil
import torch
from torch.torch_version import TorchVersion

from probes.devices import cuda_budget, release
from probes.energy import EnergyMeter
from probes.inventory import torch_blas
from probes.measurement import (
    Energy,
    Measurement,
    ProbeResult,
    ProgressCallback,
    Unavailable,
    error_reason,
    no_progress,
)
from probes.timing import DeviceTimer, Timing, energy_of, synchronize

PROBE = "compute"

TORCH_DTYPES: dict[str, torch.dtype] = {
    "fp64": torch.float64,
    "fp32": torch.float32,
    "tf32": torch.float32,  # fp32 storage, tensor-core math with a 10-bit mantissa
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp8": torch.float8_e4m3fn,
}

#: dtypes worth probing per device kind (others are absent or emulated there).
DTYPES_BY_KIND: dict[str, list[str]] = {
    "cpu": ["fp64", "fp32", "bf16"],
    "cuda": ["fp64", "fp32", "tf32", "fp16", "bf16", "fp8"],
    "rocm": ["fp64", "fp32", "fp16", "bf16"],
    "mps": ["fp32", "fp16", "bf16"],
}

#: The dtype whose figure heads the table, and gets a sustained window even in quick mode.
HEADLINE_DTYPE: dict[str, str] = {"cpu": "fp32", "cuda": "bf16", "rocm": "bf16", "mps": "fp16"}

#: Relative error (Frobenius norm) allowed against the float64 product of the same operands. A
#: broken kernel is near 1 (an all-zero product is exactly 1). For random operands a correct tf32,
#: fp16, bf16 or fp8 product is 10-100x below its tolerance (TF32 ~3e-4: both operands rounded to a
#: 10-bit mantissa; the others ~2e-4 to ~2e-3: the output rounded to its format). fp64 and fp32 sit
#: far below theirs (fp32 summed in order over 16384 terms: ~2e-6), which are set under the error of
#: the next precision down, so a product silently computed there fails: fp32 operands in an fp64
#: product (~6e-8), TF32 tensor-core math in an fp32 one (~3e-4).
CHECK_TOLERANCE: dict[str, float] = {
    "fp64": 1e-10,
    "fp32": 1e-4,
    "tf32": 5e-3,
    "fp16": 5e-3,
    "bf16": 2e-2,
    "fp8": 2e-2,
}
CHECK_ROWS = 16
#: The float64 reference is computed a slice of B's columns at a time, at most this many bytes of
#: float64 B each, instead of a float64 copy of all of B (2 GiB at 16384 x 16384).
CHECK_CHUNK_BYTES = 64 * 1024**2

#: Longest one matmul call may run on Windows: the display driver resets a GPU whose kernel runs
#: past ~2 s (TDR, Microsoft's default TdrDelay), which ends the run with a sticky CUDA error.
WINDOWS_MAX_CALL_S = 0.5


@dataclass(frozen=True)
class MatmulPlan:
    """How hard to look: shapes to sweep and the time allowed."""

    sizes: list[int]
    sweep_budget_s: float  # per dtype
    blocks: int
    block_s: float
    sustained_s: float
    sustain_all_dtypes: bool
    #: The headline dtype's sustained window (None: the same as the others').
    headline_sustained_s: float | None = None
    #: Most seconds one call may take; larger shapes are skipped (None: no cap).
    max_call_s: float | None = None
    warmup_s: float = 0.2

    @staticmethod
    def for_device(kind: str, quick: bool, platform: str = sys.platform) -> MatmulPlan:
        if kind == "cpu":
            sizes = [256, 512, 1024, 2048, 3072] if quick else [256, 512, 1024, 1536, 2048, 3072, 4096, 6144]
            return MatmulPlan(sizes, 6.0 if quick else 30.0, 7 if quick else 15, 0.05, 10.0, not quick)
        sizes = [1024, 2048, 4096, 8192] if quick else [1024, 2048, 3072, 4096, 6144, 8192, 10240, 12288, 16384]
        return MatmulPlan(
            sizes,
            4.0 if quick else 25.0,  # nine shapes of warm-up + 30 blocks of >= 0.05 s fit on a fast card
            10 if quick else 30,
            0.05,
            10.0,
            not quick,
            headline_sustained_s=10.0 if quick else 60.0,
            max_call_s=WINDOWS_MAX_CALL_S if platform == "win32" else None,
        )

    def window_s(self, headline: bool) -> float:
        return self.headline_sustained_s if headline and self.headline_sustained_s else self.sustained_s

    def shape_s(self, call_s: float) -> float:
        """Seconds `DeviceTimer.measure` spends on a shape whose call takes `call_s`: warm-up and blocks."""
        return max(self.warmup_s, 2 * call_s) + self.blocks * max(self.block_s, call_s)


def sustained_regime(window_s: float) -> str:
    """What a sustained window of `window_s` shows, said with the figure."""
    return (
        f"{window_s:.0f} s back to back: past the boost clock, at the power limit; "
        "not thermal steady state (an air-cooled card keeps warming for minutes)"
    )


def supported_dtypes(device: torch.device, kind: str) -> tuple[list[str], list[Unavailable]]:
    """The dtypes this device runs natively, and the others with the reason."""
    wanted = DTYPES_BY_KIND[kind]
    if kind not in ("cuda", "rocm"):
        return wanted, []
    major, minor = torch.cuda.get_device_capability(device)
    reasons: dict[str, str] = {}
    if kind == "cuda":
        if major < 8:
            reasons["tf32"] = f"TF32 needs compute capability 8.0+, this GPU is {major}.{minor}"
            reasons["bf16"] = f"bf16 tensor cores need compute capability 8.0+, this GPU is {major}.{minor}"
        if (major, minor) < (8, 9):
            reasons["fp8"] = f"FP8 matmul needs compute capability 8.9+, this GPU is {major}.{minor}"
        else:
            problem = fp8_problem(torch.__version__, lambda: _fp8_trial(device))
            if problem:
                reasons["fp8"] = problem
    elif not torch.cuda.is_bf16_supported():
        reasons["bf16"] = "torch reports no bf16 support on this GPU"
    keep = [d for d in wanted if d not in reasons]
    skipped = [Unavailable(probe=PROBE, metric="matmul_flops", device=str(device), dtype=d, reason=r) for d, r in reasons.items()]
    return keep, skipped


def fp8_problem(torch_version: str, trial: Callable[[], object]) -> str | None:
    """Why this torch can't time FP8 matmuls here, or None: a version gate, then a one-off 16x16 product.

    torch 2.3 and 2.4 have `torch._scaled_mm` but it returns `(out, amax)` there (mamf-finder:
    "float8 dtypes require torch>=2.5"); the trial catches whatever else a build or driver lacks.
    """
    if not hasattr(torch, "_scaled_mm"):
        return f"FP8 matmul needs torch._scaled_mm, which torch {torch_version} lacks"
    if TorchVersion(torch_version) < "2.5":
        return f"FP8 matmul needs torch >= 2.5 (torch {torch_version}'s _scaled_mm returns (out, amax))"
    try:
        out = trial()
    except Exception as exc:  # any failure of the trial means no FP8 figure, never a lost run
        return f"FP8 trial product failed: {error_reason(exc)}"
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (16, 16):
        return f"FP8 trial product returned {type(out).__name__}, not a 16x16 tensor"
    return None


def _fp8_trial(device: torch.device) -> object:
    a = torch.randn(16, 16, device=device).to(torch.float8_e4m3fn)
    b = torch.randn(16, 16, device=device).to(torch.float8_e4m3fn).t()
    one = torch.ones((), device=device)
    return torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)


@contextmanager
def float32_precision(dtype: str) -> Iterator[None]:
    """fp32 means IEEE fp32 math; tf32 lets cuBLAS use TF32 tensor cores."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if dtype == "tf32" else "highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def check_device(device: torch.device) -> torch.device:
    """Where the float64 reference product is computed: the device itself, or the CPU for MPS (no float64)."""
    return torch.device("cpu") if device.type == "mps" else device


@dataclass
class Operands:
    """Several (a, b, out) sets, rotated between calls so repeats don't run from cache.

    `backend` "numpy" runs numpy's matmul on the same CPU memory (zero-copy views). FP8 products
    are scaled by `scale` (1.0), made once here rather than inside every timed call.
    """

    a: list[torch.Tensor]
    b: list[torch.Tensor]
    out: list[torch.Tensor]
    dtype: str
    turn: int = 0
    backend: str = "torch"
    scale: torch.Tensor | None = None

    @staticmethod
    def random(m: int, n: int, k: int, dtype: str, device: torch.device, sets: int) -> Operands:
        a, b, out = [], [], []
        for _ in range(sets):
            if dtype == "fp8":
                a.append(torch.randn(m, k, device=device).to(torch.float8_e4m3fn))
                # _scaled_mm wants its second operand column-major.
                b.append(torch.randn(n, k, device=device).to(torch.float8_e4m3fn).t())
                out.append(torch.empty(m, n, device=device, dtype=torch.bfloat16))
            else:
                t = TORCH_DTYPES[dtype]
                a.append(torch.randn(m, k, device=device, dtype=t))
                b.append(torch.randn(k, n, device=device, dtype=t))
                out.append(torch.empty(m, n, device=device, dtype=t))
        scale = torch.ones((), device=device) if dtype == "fp8" else None
        return Operands(a, b, out, dtype, scale=scale)

    def step(self) -> None:
        i = self.turn % len(self.a)
        self.turn += 1
        if self.backend == "numpy":
            np.matmul(self.a[i].numpy(), self.b[i].numpy(), out=self.out[i].numpy())
        elif self.dtype == "fp8":
            torch._scaled_mm(
                self.a[i], self.b[i], scale_a=self.scale, scale_b=self.scale, out_dtype=torch.bfloat16, out=self.out[i]
            )
        else:
            torch.matmul(self.a[i], self.b[i], out=self.out[i])

    def relative_error(self) -> float:
        """The last product against float64 on its first rows (the operands as stored), in column chunks."""
        i = (self.turn - 1) % len(self.a)
        where = check_device(self.a[i].device)
        rows = min(CHECK_ROWS, self.a[i].shape[0])
        a = self.a[i][:rows].to(where, torch.float64)
        k, n = self.b[i].shape
        cols = max(1, CHECK_CHUNK_BYTES // (8 * k))
        error = norm = 0.0
        for j in range(0, n, cols):
            want = a @ self.b[i][:, j : j + cols].to(where, torch.float64)
            got = self.out[i][:rows, j : j + cols].to(where, torch.float64)
            error += float((got - want).square().sum())
            norm += float(want.square().sum())
        return math.sqrt(error / norm) if norm else math.inf


def backends(dev: torch.device, dtype: str) -> list[str]:
    """The matmul libraries to try on `dev`. On a CPU torch's BLAS (MKL on x86) is not always the
    fastest installed (OpenBLAS beats it on some AMD parts), so numpy's is timed too and the best kept."""
    return ["torch", "numpy"] if dev.type == "cpu" and dtype in ("fp32", "fp64") else ["torch"]


def backend_library(backend: str) -> str:
    """Which BLAS the backend runs, for the record."""
    if backend == "numpy":
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"numpy {np.__version__} ({blas.get('name')} {blas.get('version')})"
    return f"torch {torch.__version__} ({torch_blas() or 'BLAS unknown'})"


def _set_bytes(m: int, n: int, k: int, dtype: str) -> int:
    """Bytes of one (a, b, out) set; FP8 products are written as bf16."""
    item = TORCH_DTYPES[dtype].itemsize
    out_item = torch.bfloat16.itemsize if dtype == "fp8" else item
    return item * (m * k + k * n) + out_item * m * n


def _operand_sets(m: int, n: int, k: int, dtype: str, llc_bytes: int | None) -> int:
    """Enough sets that a full rotation spans 4x the last-level cache (2 to 8 sets)."""
    return max(2, min(8, math.ceil(4 * (llc_bytes or 0) / _set_bytes(m, n, k, dtype))))


def operand_bytes(m: int, n: int, k: int, dtype: str, sets: int) -> int:
    """Device bytes one shape needs at its peak: the sets, the fp32 tensor FP8 operands are made
    from (one at a time), and the float64 reference check (A's rows, a chunk of B, and slack for
    the chunk's product and difference)."""
    staging = 4 * max(m, n) * k if dtype == "fp8" else 0
    check = 8 * CHECK_ROWS * k + 2 * CHECK_CHUNK_BYTES
    return sets * _set_bytes(m, n, k, dtype) + staging + check


def _fits(need: int, device: torch.device) -> bool:
    """Half the usable memory on a GPU (cuBLAS workspaces, fragmentation), a quarter of the host's."""
    if device.type == "cuda":
        return need < cuda_budget(device) * 0.5
    return need < psutil.virtual_memory().available * 0.25


def measure_matmul(
    device: str,
    kind: str,
    *,
    quick: bool,
    dtypes: list[str] | None = None,
    llc_bytes: int | None = None,
    plan: MatmulPlan | None = None,
    meter: EnergyMeter | None = None,
    progress: ProgressCallback = no_progress,
) -> ProbeResult:
    """Burst and sustained matmul FLOP/s for each supported dtype of one device.

    `llc_bytes` is the cache the operand rotation must outrun: the host's last-level cache on a
    CPU, the GPU's L2 on a GPU. With a `meter`, each figure carries the energy of its work: the
    burst shape re-run in a window long enough for the sensor, the sustained regime over its own
    window. An error in one dtype becomes its unavailable entry; KeyboardInterrupt still stops all.
    """
    dev = torch.device(device)
    plan = plan or MatmulPlan.for_device(kind, quick)
    result = ProbeResult()
    available, skipped = supported_dtypes(dev, kind)
    result.unavailable += skipped
    todo = [d for d in (dtypes or available) if d in available]
    timer = DeviceTimer(dev)
    for index, dtype in enumerate(todo):
        progress(f"matmul {dtype} on {device}: sweeping shapes", index / len(todo))
        def sustaining(window_s: float, index: int = index, dtype: str = dtype) -> None:
            progress(f"matmul {dtype} on {device}: sustained {window_s:.0f} s", (index + 0.5) / len(todo))

        try:
            with float32_precision(dtype):
                found = _measure_dtype(timer, dev, kind, dtype, plan, llc_bytes, meter, sustaining)
            result.extend(found)
        except Exception as exc:  # out of memory, a cuBLAS error, a kernel the build lacks: this dtype only
            result.unavailable.append(
                Unavailable(probe=PROBE, metric="matmul_flops", device=device, dtype=dtype, reason=error_reason(exc))
            )
        finally:
            release(dev)  # this dtype's operands are gone; hand their memory back before the next
    progress(f"matmul on {device}: done", 1.0)
    return result


def _measure_dtype(
    timer: DeviceTimer,
    dev: torch.device,
    kind: str,
    dtype: str,
    plan: MatmulPlan,
    llc_bytes: int | None,
    meter: EnergyMeter | None,
    sustaining: Callable[[float], None],
) -> ProbeResult:
    """Burst (the sweep's best shape) and, where planned, sustained figures of one dtype.

    `sustaining(window_s)` is told when the sustained window starts (for the progress bar).
    """
    device = str(dev)
    sweep = _sweep(timer, dev, dtype, plan, llc_bytes)
    result = ProbeResult(
        unavailable=[Unavailable(probe=PROBE, metric="matmul_flops", device=device, dtype=dtype, reason=r) for r in sweep.failures]
    )
    best = sweep.best
    if best is None:
        return result
    m, n, k = best.shape
    common = {
        "m": m,
        "n": n,
        "k": k,
        "threads": torch.get_num_threads() if kind == "cpu" else None,
        "operand_sets": len(best.operands.a),
        "backend": best.operands.backend,
        "backend_library": backend_library(best.operands.backend),
        "check_relative_error": best.error,
        "check_tolerance": CHECK_TOLERANCE[dtype],
    }
    flop = 2.0 * m * n * k
    burst_energy = energy_of(meter, best.operands.step, dev)
    burst_params = {**common, "sweep": sweep.rows, "sweep_stopped": sweep.stopped}
    result.measurements.append(_matmul_measurement(device, dtype, "burst", flop, best.timing, burst_params, burst_energy))
    headline = dtype == HEADLINE_DTYPE.get(kind)
    if plan.sustain_all_dtypes or headline:
        window_s = plan.window_s(headline)
        sustaining(window_s)
        sustained, sustained_energy = _sustained(timer, best.operands, window_s, meter)
        error = best.operands.relative_error()
        if error > CHECK_TOLERANCE[dtype]:
            result.unavailable.append(_check_failed(device, dtype, best.shape, error))
        else:
            params = {**common, "window_s": sustained.elapsed_s, "regime": sustained_regime(window_s), "check_relative_error": error}
            result.measurements.append(_matmul_measurement(device, dtype, "sustained", flop, sustained, params, sustained_energy))
    return result


def _sustained(timer: DeviceTimer, operands: Operands, window_s: float, meter: EnergyMeter | None) -> tuple[Timing, Energy | None]:
    """The steady window, timed and metered as one."""
    if meter is None:
        return timer.measure_window(operands.step, window_s=window_s, block_s=0.25), None
    with meter.window(sync=lambda: synchronize(timer.device)) as window:
        timing = timer.measure_window(operands.step, window_s=window_s, block_s=0.25)
    return timing, window.energy


def _matmul_measurement(
    device: str, dtype: str, variant: str, flop: float, timing: Timing, params: dict, energy: Energy | None
) -> Measurement:
    return Measurement(
        probe=PROBE,
        metric="matmul_flops",
        unit="FLOP/s",
        dtype=dtype,
        device=device,
        variant=variant,
        samples=[flop / s for s in timing.seconds_per_call],
        params={**params, "calls_per_block": timing.calls_per_block, "warmup_calls": timing.warmup_calls},
        energy=energy,
    )


def _check_failed(device: str, dtype: str, shape: tuple[int, int, int], error: float) -> Unavailable:
    return Unavailable(
        probe=PROBE,
        metric="matmul_flops",
        device=device,
        dtype=dtype,
        reason=f"result check failed at {shape}: relative error {error:.2e} > {CHECK_TOLERANCE[dtype]:.0e}",
    )


@dataclass(frozen=True)
class _Best:
    shape: tuple[int, int, int]
    timing: Timing
    operands: Operands
    error: float
    flops: float


@dataclass
class _SweepResult:
    best: _Best | None
    rows: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    #: Why the sweep ended before its largest size, if it did.
    stopped: str | None = None


def _sweep(timer: DeviceTimer, dev: torch.device, dtype: str, plan: MatmulPlan, llc_bytes: int | None) -> _SweepResult:
    """Time growing shapes (and, on a CPU, each BLAS) within the budget; keep the best verified one.

    A shape is skipped, and the sweep ends, when its predicted time would overrun the budget (the
    budget counts each shape's wall time: creation, warm-up, blocks and check), when one call
    would pass `plan.max_call_s`, or when its operands would not fit in memory.
    """
    sweep = _SweepResult(best=None)
    spent = 0.0
    last: tuple[int, float] | None = None  # (size, seconds per call) of the last shape timed
    tried = backends(dev, dtype)
    for size in plan.sizes:
        if last is not None:
            call_s = last[1] * (size / last[0]) ** 3
            if plan.max_call_s is not None and call_s > plan.max_call_s:
                sweep.stopped = (
                    f"sizes from {size} skipped: one call would take about {call_s:.2g} s, over the "
                    f"{plan.max_call_s:g} s a Windows display driver allows before it resets the GPU (TDR)"
                )
                break
            if spent + plan.shape_s(call_s) * len(tried) > plan.sweep_budget_s:
                sweep.stopped = f"sizes from {size} skipped: they would overrun the {plan.sweep_budget_s:g} s sweep budget"
                break
        sets = _operand_sets(size, size, size, dtype, llc_bytes)
        need = operand_bytes(size, size, size, dtype, sets)
        if not _fits(need, dev):
            sweep.stopped = f"sizes from {size} skipped: {need / 1e9:.2f} GB of operands would not fit in memory"
            break
        started = timer.clock()
        created = Operands.random(size, size, size, dtype, dev, sets)
        for backend in tried:
            operands = replace(created, backend=backend)
            timing = timer.measure(
                operands.step, block_s=plan.block_s, blocks=plan.blocks, max_s=plan.sweep_budget_s / 3, warmup_s=plan.warmup_s
            )
            error = operands.relative_error()
            # The median of the per-block figures, exactly as the measurement will report it.
            flops = statistics.median(2.0 * size**3 / s for s in timing.seconds_per_call)
            sweep.rows.append(
                {"m": size, "n": size, "k": size, "backend": backend, "median_flops": flops, "check_relative_error": error}
            )
            if error > CHECK_TOLERANCE[dtype]:
                sweep.failures.append(_check_failed(str(dev), dtype, (size, size, size), error).reason)
            elif sweep.best is None or flops > sweep.best.flops:
                sweep.best = _Best((size, size, size), timing, operands, error, flops)
            last = (size, 2.0 * size**3 / flops)
        del created, operands  # only the best shape's operands outlive its turn
        spent += timer.clock() - started
    if not sweep.rows:
        sweep.failures.append(f"no shape fits the time budget or memory (smallest tried {plan.sizes[0]})")
    return sweep
