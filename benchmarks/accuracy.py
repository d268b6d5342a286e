"""Is the probe right? Its CPU figures against peers measured in the same run on the same cores.

- matmul fp32/fp64: the probe's best against numpy's matmul over the same shapes and threads
  (target >= 0.97x), and both as a fraction of likwid-bench's peakflops kernels;
- copy and triad: against likwid-bench copy and stream (the STREAM triad) with the same threads
  and array size (target within +-5%);
- repeatability: the headline figures of 5 consecutive `flopwatt probe --quick` runs (target
  max/min - 1 under 3%), beside the spread of numpy and likwid-bench measured after each run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.speed_bench import timed_probe
from probes.compute import MatmulPlan, measure_matmul
from probes.inventory import last_level_cache_bytes
from probes.memory import measure_memory

_NUMPY_PEER = r"""
import json, statistics, sys, time
import numpy as np
shapes, dtype, repeats = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(0)
best = {"flops": 0.0}
for m, n, k in shapes:
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    c = np.empty((m, n), dtype)
    warm_until = time.perf_counter() + 0.2
    while time.perf_counter() < warm_until:
        t = time.perf_counter()
        np.matmul(a, b, out=c)
        one_call = time.perf_counter() - t
    calls = max(1, int(0.1 / one_call) + 1)  # blocks of >= 0.1 s, as the probe's sweep uses
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(calls):
            np.matmul(a, b, out=c)
        samples.append(2.0 * m * n * k * calls / (time.perf_counter() - t))
    if statistics.median(samples) > best["flops"]:
        best = {"flops": statistics.median(samples), "shape": [m, n, k]}
config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
best["blas"] = f"{config.get('name')} {config.get('version')}"
print(json.dumps(best))
"""


def numpy_matmul(shapes: list[list[int]], dtype: str, threads: int, repeats: int) -> dict:
    """numpy's best median FLOP/s over `shapes`, in a fresh process limited to `threads` threads.

    OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset for the peer, so numpy runs its best kernel.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env.update({"OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    out = subprocess.run(
        [sys.executable, "-c", _NUMPY_PEER, json.dumps(shapes), dtype, str(repeats)],
        env=env, capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    return json.loads(out.stdout)


def likwid(test: str, size_bytes: int, threads: int) -> float | None:
    """likwid-bench's figure for `test` (MByte/s or MFlops/s, converted to B/s or FLOP/s)."""
    if shutil.which("likwid-bench") is None:
        return None
    work = f"S0:{max(1, size_bytes // 1000)}kB:{threads}"
    out = subprocess.run(["likwid-bench", "-t", test, "-w", work], capture_output=True, text=True, timeout=600)
    key = "MFlops/s" if test.startswith("peakflops") else "MByte/s"
    match = re.search(rf"^{re.escape(key)}:\s+([\d.]+)", out.stdout, re.MULTILINE)
    return float(match.group(1)) * 1e6 if match else None


def matmul_accuracy(threads: int) -> list[dict]:
    """Probe and numpy alternate three times over the same shapes; each side keeps its best median.

    Best, not median, of the rounds, for the reason given in memory_accuracy.
    """
    rows = []
    plan = MatmulPlan(
        sizes=[512, 1024, 1536, 2048, 3072], sweep_budget_s=30.0, blocks=9, block_s=0.1, sustained_s=0.0,
        sustain_all_dtypes=False,
    )  # fmt: skip
    peak = {"fp64": likwid("peakflops_avx_fma", 24_000 * threads, threads), "fp32": likwid("peakflops_sp_avx_fma", 24_000 * threads, threads)}
    for dtype, np_dtype in (("fp32", "float32"), ("fp64", "float64")):
        probe_best, numpy_best, shapes = 0.0, 0.0, []
        for _ in range(3):  # interleaved rounds, so a noisy neighbour hurts both sides alike
            result = measure_matmul("cpu", "cpu", quick=False, dtypes=[dtype], plan=plan)
            burst = next(m for m in result.measurements if m.variant == "burst")
            shapes = [[r["m"], r["n"], r["k"]] for r in burst.params["sweep"]]
            probe_best = max(probe_best, burst.value)
            numpy_best = max(numpy_best, numpy_matmul(shapes, np_dtype, threads, plan.blocks)["flops"])
        rows.append(
            {
                "figure": f"matmul {dtype}",
                "probe": probe_best,
                "peer": numpy_best,
                "peer_name": "numpy matmul (same shapes, threads)",
                "ratio": probe_best / numpy_best,
                "target": ">= 0.97",
                "pass": probe_best / numpy_best >= 0.97,
                "shapes": shapes,
                "likwid_peakflops": peak[dtype],
                "probe_fraction_of_likwid_peak": probe_best / peak[dtype] if peak[dtype] else None,
                "numpy_fraction_of_likwid_peak": numpy_best / peak[dtype] if peak[dtype] else None,
            }
        )
    return rows


def memory_accuracy(threads: int, rounds: int = 5) -> list[dict]:
    """copy and triad against likwid-bench copy and stream, same array size and threads.

    The two sides alternate for `rounds` rounds and each keeps its best round: on a shared
    machine interference only ever slows a round down, so the best is the least disturbed.
    """
    llc = last_level_cache_bytes()
    probe: dict[str, list[float]] = {"mem_copy_bandwidth": [], "mem_triad_bandwidth": []}
    peer: dict[str, list[float]] = {"mem_copy_bandwidth": [], "mem_triad_bandwidth": []}
    per_array = 0
    for _ in range(rounds):
        result = measure_memory("cpu", "cpu", quick=False, llc_bytes=llc)
        for m in result.measurements:
            probe[m.metric].append(m.value)
            per_array = m.params["bytes_per_array"]
        peer["mem_copy_bandwidth"].append(likwid("copy", 2 * per_array, threads) or 0.0)
        peer["mem_triad_bandwidth"].append(likwid("stream", 3 * per_array, threads) or 0.0)
    rows = []
    for metric, test in (("mem_copy_bandwidth", "copy"), ("mem_triad_bandwidth", "stream")):
        p, q = max(probe[metric]), max(peer[metric])
        rows.append(
            {
                "figure": metric,
                "probe": p,
                "peer": q or None,
                "peer_name": f"likwid-bench {test} ({per_array} B per array, {threads} threads)",
                "ratio": p / q if q else None,
                "target": "0.95 .. 1.05",
                "pass": bool(q) and 0.95 <= p / q <= 1.05,
                "rounds": {"probe": probe[metric], "peer": peer[metric]},
            }
        )
    return rows


def repeatability(threads: int, runs: int = 5) -> dict:
    """Headline figures of consecutive `flopwatt probe --quick` runs, as a user would run them.

    After each run its peers measure the same thing once (numpy over the run's matmul shapes,
    likwid-bench copy and stream at its array size), so the probe's spread can be read against
    the spread the machine itself shows in the same minutes. Each run's machine load (the most
    any of its probes saw of other processes and of steal) says whether the guest itself was busy.
    """
    figures: dict[str, list[float]] = {}
    peers: dict[str, list[float]] = {}
    load: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            _, doc = timed_probe(["--quick"], f"sqlite:///{Path(tmp) / 'repeat.db'}")
            # what else ran in this guest meanwhile (probes.background): near zero means the spread is the host's
            for share in ("background_cpu", "steal_cpu"):
                load.setdefault(share, []).append(max(m.params.get(share, 0.0) for m in doc.measurements))
            for m in doc.measurements:
                if m.device != "cpu" or (m.metric == "matmul_flops" and m.dtype != "fp32"):
                    continue
                name = " ".join(x for x in (m.metric, m.dtype, m.variant) if x)
                figures.setdefault(name, []).append(m.value)
                if m.metric == "matmul_flops" and m.variant == "burst":
                    shapes = [[r["m"], r["n"], r["k"]] for r in m.params["sweep"]]
                    peers.setdefault(name, []).append(numpy_matmul(shapes, "float32", threads, 5)["flops"])
                elif m.metric in ("mem_copy_bandwidth", "mem_triad_bandwidth"):
                    test, arrays = ("copy", 2) if m.metric == "mem_copy_bandwidth" else ("stream", 3)
                    peers.setdefault(name, []).append(likwid(test, arrays * m.params["bytes_per_array"], threads) or 0.0)
    spread = {name: max(v) / min(v) - 1 for name, v in figures.items()}
    peer_spread = {name: max(v) / min(v) - 1 for name, v in peers.items() if min(v) > 0}
    return {
        "runs": runs,
        "figures": figures,
        "spread": spread,
        "peers": {"matmul": "numpy matmul over the run's shapes", "memory": "likwid-bench copy / stream", "runs": peers},
        "peer_spread": peer_spread,
        "machine_load_per_run": load,
        "target": "< 0.03",
        "pass": all(s < 0.03 for s in spread.values()),
    }


def run() -> dict:
    threads = torch.get_num_threads()
    return {
        "matmul": matmul_accuracy(threads),
        "memory": memory_accuracy(threads),
        "repeatability": repeatability(threads),
    }
