"""`make gpu-check`: the CUDA paths on a real NVIDIA card, against peers on the same card.

- bf16 matmul: the probe's burst figure against a plain torch sweep written here (CUDA events,
  no flopwatt code) and, where CuPy is installed, CuPy's fp16 matmul (CuPy has no bf16);
- device copy: the probe's figure against a plain torch copy loop and CuPy's copyto;
- each as a fraction of the card's datasheet peak (bench/hardware.py).

Prints JSON and writes it to results/gpu-check-<time>.json for docs/measurements.md.
"""

from __future__ import annotations

import json
import statistics
import sys
from datetime import datetime, timezone

import torch

from bench.hardware import find_card, peak_flops
from bench.store import PROJECT_ROOT
from probes.compute import measure_matmul
from probes.inventory import cuda_device
from probes.memory import array_bytes, measure_memory

SHAPES = [4096, 6144, 8192, 12288, 16384]


def _events_median(fn, repeats: int = 20, calls: int = 10) -> float:  # type: ignore[no-untyped-def]
    """Median seconds per call over `repeats` blocks of `calls`, after a warm-up."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / calls)
    return statistics.median(times)


def torch_matmul_sweep(dtype: torch.dtype) -> dict:
    flops = {n: _torch_square_matmul(n, dtype) for n in SHAPES}
    best = max(flops, key=flops.__getitem__)
    return {"flops": flops[best], "n": best}


def _torch_square_matmul(n: int, dtype: torch.dtype) -> float:
    """FLOP/s of one n×n×n product; the operands are freed when this returns."""
    a, b = torch.randn(n, n, device="cuda", dtype=dtype), torch.randn(n, n, device="cuda", dtype=dtype)
    out = torch.empty(n, n, device="cuda", dtype=dtype)
    return 2 * n**3 / _events_median(lambda: torch.matmul(a, b, out=out))


def cupy_matmul_sweep() -> dict | None:
    try:
        import cupy as cp
    except ImportError:
        return None
    flops = {n: _cupy_square_matmul(cp, n) for n in SHAPES}
    best = max(flops, key=flops.__getitem__)
    return {"flops": flops[best], "n": best, "dtype": "fp16 (CuPy has no bf16)"}


def _cupy_square_matmul(cp, n: int) -> float:  # type: ignore[no-untyped-def]
    a = cp.random.standard_normal((n, n), dtype=cp.float32).astype(cp.float16)
    b = cp.random.standard_normal((n, n), dtype=cp.float32).astype(cp.float16)
    out = cp.empty((n, n), dtype=cp.float16)
    return 2 * n**3 / _events_median(lambda: cp.matmul(a, b, out=out))


def copy_peers(nbytes: int) -> dict:
    elements = nbytes // 8
    a = torch.rand(elements, device="cuda", dtype=torch.float64)
    b = torch.empty_like(a)
    peers = {"torch_copy": 2 * nbytes / _events_median(lambda: b.copy_(a))}
    try:
        import cupy as cp

        x = cp.random.random(elements)
        y = cp.empty_like(x)
        peers["cupy_copyto"] = 2 * nbytes / _events_median(lambda: cp.copyto(y, x))
    except ImportError:
        peers["cupy_copyto"] = None
    return peers


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("gpu-check needs an NVIDIA GPU and a CUDA build of torch")
    device = cuda_device(0)
    card = find_card(device.name)
    compute = measure_matmul("cuda:0", "cuda", quick=False, dtypes=["bf16"])
    burst = next(m for m in compute.measurements if m.variant == "burst")
    sustained = next(m for m in compute.measurements if m.variant == "sustained")
    memory = measure_memory("cuda:0", "cuda", quick=False, llc_bytes=device.extra.get("l2_cache_bytes"), memory_bytes=device.memory_bytes)
    copy = next(m for m in memory.measurements if m.metric == "mem_copy_bandwidth")
    torch_peer = torch_matmul_sweep(torch.bfloat16)
    cupy_peer = cupy_matmul_sweep()
    copies = copy_peers(array_bytes("cuda", device.extra.get("l2_cache_bytes"), device.memory_bytes))
    bf16_peak = peak_flops(card, "bf16") if card else None
    result = {
        "date": datetime.now(timezone.utc).isoformat(),
        "device": device.model_dump(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "bf16_matmul": {
            "probe_burst": burst.value,
            "probe_burst_shape": [burst.params["m"], burst.params["n"], burst.params["k"]],
            "probe_sustained": sustained.value,
            "torch_sweep": torch_peer,
            "cupy_fp16_sweep": cupy_peer,
            "ratio_probe_to_torch": burst.value / torch_peer["flops"],
            "datasheet_peak": bf16_peak,
            "probe_fraction_of_peak": burst.value / bf16_peak if bf16_peak else None,
        },
        "device_copy": {
            "probe": copy.value,
            **copies,
            "ratio_probe_to_torch": copy.value / copies["torch_copy"],
            "datasheet_bandwidth": card.memory_bandwidth if card else None,
            "probe_fraction_of_peak": copy.value / card.memory_bandwidth if card else None,
        },
        "host_link": {m.metric + " " + (m.variant or ""): m.value for m in memory.measurements if m.metric in ("h2d_bandwidth", "d2h_bandwidth")},
        "unavailable": [u.model_dump() for u in compute.unavailable + memory.unavailable],
    }
    text = json.dumps(result, indent=2, default=str)
    print(text)
    path = PROJECT_ROOT / "results" / f"gpu-check-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)


if __name__ == "__main__":
    main()
