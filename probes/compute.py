"""Dense matmul FLOP/s per dtype (metric `matmul_flops`), in two regimes.

- burst: a sweep over shapes, keeping the best (one fixed size underestimates: mamf-finder's
  lesson), each shape timed in blocks after a warm-up;
- sustained: a steady window of at least 10 s at the best shape, where a gaming card's power
  and thermal limits show.

Every shape's product is checked against a float64 reference on a slice of rows, so a broken
kernel (or a dtype silently falling back to garbage) never posts a figure.
"""

from __future__ import annotations

import math
import statistics
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import psutil
import torch

from probes.energy import EnergyMeter
from probes.inventory import torch_blas
from probes.measurement import Energy, Measurement, ProbeResult, ProgressCallback, Unavailable, no_progress
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

#: Relative error (Frobenius norm) allowed against the float64 product of the same operands.
#: A correct kernel is 10-100x below these; a broken one is near 1.
CHECK_TOLERANCE: dict[str, float] = {
    "fp64": 1e-10,
    "fp32": 1e-3,
    "tf32": 5e-3,
    "fp16": 5e-3,
    "bf16": 2e-2,
    "fp8": 2e-2,
}
CHECK_ROWS = 16


@dataclass(frozen=True)
class MatmulPlan:
    """How hard to look: shapes to sweep and the time allowed."""

    sizes: list[int]
    sweep_budget_s: float  # per dtype
    blocks: int
    block_s: float
    sustained_s: float
    sustain_all_dtypes: bool

    @staticmethod
    def for_device(kind: str, quick: bool) -> MatmulPlan:
        if kind == "cpu":
            sizes = [256, 512, 1024, 2048, 3072] if quick else [256, 512, 1024, 1536, 2048, 3072, 4096, 6144]
            return MatmulPlan(sizes, 6.0 if quick else 30.0, 7 if quick else 15, 0.05, 10.0, not quick)
        sizes = [1024, 2048, 4096, 8192] if quick else [1024, 2048, 3072, 4096, 6144, 8192, 10240, 12288, 16384]
        return MatmulPlan(sizes, 4.0 if quick else 20.0, 10 if quick else 30, 0.05, 10.0, not quick)


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
        if (major, minor) < (8, 9) or not hasattr(torch, "_scaled_mm"):
            reasons["fp8"] = f"FP8 matmul needs compute capability 8.9+ and torch._scaled_mm, this GPU is {major}.{minor}"
    elif not torch.cuda.is_bf16_supported():
        reasons["bf16"] = "torch reports no bf16 support on this GPU"
    keep = [d for d in wanted if d not in reasons]
    skipped = [Unavailable(probe=PROBE, metric="matmul_flops", device=str(device), dtype=d, reason=r) for d, r in reasons.items()]
    return keep, skipped


@contextmanager
def float32_precision(dtype: str) -> Iterator[None]:
    """fp32 means IEEE fp32 math; tf32 lets cuBLAS use TF32 tensor cores."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if dtype == "tf32" else "highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


@dataclass
class Operands:
    """Several (a, b, out) sets, rotated between calls so repeats don't run from cache.

    `backend` "numpy" runs numpy's matmul on the same CPU memory (zero-copy views).
    """

    a: list[torch.Tensor]
    b: list[torch.Tensor]
    out: list[torch.Tensor]
    dtype: str
    turn: int = 0
    backend: str = "torch"

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
        return Operands(a, b, out, dtype)

    def step(self) -> None:
        i = self.turn % len(self.a)
        self.turn += 1
        if self.backend == "numpy":
            np.matmul(self.a[i].numpy(), self.b[i].numpy(), out=self.out[i].numpy())
        elif self.dtype == "fp8":
            one = torch.ones((), device=self.a[i].device)
            self.out[i] = torch._scaled_mm(self.a[i], self.b[i], scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
        else:
            torch.matmul(self.a[i], self.b[i], out=self.out[i])

    def relative_error(self) -> float:
        """Compare the last product with float64 on the first rows (the operands as stored)."""
        i = (self.turn - 1) % len(self.a)
        rows = min(CHECK_ROWS, self.a[i].shape[0])
        got = self.out[i][:rows].double()
        want = self.a[i][:rows].double() @ self.b[i].double()
        return float(torch.linalg.norm(got - want) / torch.linalg.norm(want))


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


def _operand_sets(m: int, n: int, k: int, dtype: str, llc_bytes: int | None) -> int:
    """Enough sets that a full rotation spans 4x the last-level cache (2 to 8 sets)."""
    size = TORCH_DTYPES[dtype].itemsize * (m * k + k * n + m * n)
    return max(2, min(8, math.ceil(4 * (llc_bytes or 0) / size)))


def _fits(m: int, n: int, k: int, dtype: str, sets: int, device: torch.device) -> bool:
    need = TORCH_DTYPES[dtype].itemsize * (m * k + k * n + m * n) * sets
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return need < free * 0.5
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

    With a `meter`, each figure carries the energy of its work: the burst shape re-run in a
    window long enough for the sensor, the sustained regime over its own window.
    """
    dev = torch.device(device)
    plan = plan or MatmulPlan.for_device(kind, quick)
    result = ProbeResult()
    available, skipped = supported_dtypes(dev, kind)
    result.unavailable += skipped
    todo = [d for d in (dtypes or available) if d in available]
    threads = torch.get_num_threads() if kind == "cpu" else None
    timer = DeviceTimer(dev)
    for index, dtype in enumerate(todo):
        progress(f"matmul {dtype} on {device}: sweeping shapes", index / len(todo))
        with float32_precision(dtype):
            best, sweep, failures = _sweep(timer, dev, dtype, plan, llc_bytes)
            result.unavailable += [
                Unavailable(probe=PROBE, metric="matmul_flops", device=device, dtype=dtype, reason=r) for r in failures
            ]
            if best is None:
                continue
            shape, timing, operands, error = best
            common = {
                "m": shape[0],
                "n": shape[1],
                "k": shape[2],
                "threads": threads,
                "operand_sets": len(operands.a),
                "backend": operands.backend,
                "backend_library": backend_library(operands.backend),
                "check_relative_error": error,
                "check_tolerance": CHECK_TOLERANCE[dtype],
            }
            flop = 2.0 * shape[0] * shape[1] * shape[2]
            burst_energy = energy_of(meter, operands.step, dev)
            result.measurements.append(
                _matmul_measurement(device, dtype, "burst", flop, timing, {**common, "sweep": sweep}, burst_energy)
            )
            if plan.sustain_all_dtypes or dtype == HEADLINE_DTYPE.get(kind):
                progress(f"matmul {dtype} on {device}: sustained {plan.sustained_s:.0f} s", (index + 0.5) / len(todo))
                sustained, sustained_energy = _sustained(timer, operands, plan, meter)
                error = operands.relative_error()
                if error > CHECK_TOLERANCE[dtype]:
                    result.unavailable.append(_check_failed(device, dtype, shape, error))
                else:
                    params = {**common, "window_s": sustained.elapsed_s, "check_relative_error": error}
                    result.measurements.append(
                        _matmul_measurement(device, dtype, "sustained", flop, sustained, params, sustained_energy)
                    )
            del operands
    progress(f"matmul on {device}: done", 1.0)
    return result


def _sustained(
    timer: DeviceTimer, operands: Operands, plan: MatmulPlan, meter: EnergyMeter | None
) -> tuple[Timing, Energy | None]:
    """The steady window, timed and metered as one."""
    if meter is None:
        return timer.measure_window(operands.step, window_s=plan.sustained_s, block_s=0.25), None
    with meter.window(sync=lambda: synchronize(timer.device)) as window:
        timing = timer.measure_window(operands.step, window_s=plan.sustained_s, block_s=0.25)
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


def _sweep(
    timer: DeviceTimer, dev: torch.device, dtype: str, plan: MatmulPlan, llc_bytes: int | None
) -> tuple[tuple[tuple[int, int, int], Timing, Operands, float] | None, list[dict], list[str]]:
    """Time growing shapes (and, on a CPU, each BLAS) within the budget; return the best verified one."""
    best = None
    best_median = 0.0
    sweep: list[dict] = []
    failures: list[str] = []
    spent = 0.0
    last_call_s = None
    last_size = None
    tried = backends(dev, dtype)
    for size in plan.sizes:
        shape = (size, size, size)
        if last_call_s is not None and last_size is not None:
            predicted = last_call_s * (size / last_size) ** 3 * (plan.blocks + 3) * len(tried)
            if spent + predicted > plan.sweep_budget_s:
                break
        sets = _operand_sets(*shape, dtype, llc_bytes)
        if not _fits(*shape, dtype, sets, dev):
            break
        created = Operands.random(*shape, dtype, dev, sets)
        for backend in tried:
            operands = Operands(created.a, created.b, created.out, dtype, backend=backend)
            timing = timer.measure(operands.step, block_s=plan.block_s, blocks=plan.blocks, max_s=plan.sweep_budget_s / 3)
            spent += timing.elapsed_s
            error = operands.relative_error()
            # The median of the per-block figures, exactly as the measurement will report it.
            flops = statistics.median(2.0 * size**3 / s for s in timing.seconds_per_call)
            row = {"m": size, "n": size, "k": size, "backend": backend, "median_flops": flops, "check_relative_error": error}
            sweep.append(row)
            if error > CHECK_TOLERANCE[dtype]:
                failures.append(_check_failed(str(dev), dtype, shape, error).reason)
            elif flops > best_median:
                best_median = flops
                best = (shape, timing, operands, error)
            last_call_s, last_size = 2.0 * size**3 / flops, size
    if not sweep:
        failures.append(f"no shape fits the time budget or memory (smallest tried {plan.sizes[0]})")
    return best, sweep, failures
