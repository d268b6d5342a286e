"""`make gpu-check`: the first thing to run on a machine with an NVIDIA GPU.

Everything flopwatt does on the card, each against a peer measured in the same run on the same card:

- inventory: every GPU as the probe sees it (kernels in this torch build, PCIe link, power limit);
- matmul: the probe's burst and sustained figure in bf16 (fp16 on a card without bf16) against
  torch.utils.benchmark and a plain CUDA-event loop over mamf-finder's quick shapes
  (`--m_range 0 20480 256 --n 4096 --k 4096`, every fourth m) and the probe's own squares;
- memory: the probe's copy against a plain torch copy, its host link (pinned and pageable) against
  plain host copies;
- energy: one load window read four ways: flopwatt's meter, NVML's energy counter read directly,
  NVML power polled at 20 Hz and integrated, and nvidia-smi's power.draw;
- probe: `flopwatt probe --quick --device cuda:0` end to end (every dtype, the runner, the store),
  and its training figure against a plain training loop;
- second GPU: on a machine with several, the last one's bf16 burst against a peer on that GPU
  (the probe once timed every GPU but the first on the wrong stream);
- collective: on a machine with several GPUs, `flopwatt probe --only collective` as torchrun starts
  it, one rank per GPU (each on cuda:$LOCAL_RANK), over NCCL.

At most 8 minutes on an H100/H200: a section that would pass the budget is skipped, with the
reason. One section's error is recorded and the others still run. Everything goes to one file,
results/gpu-check-<time>.json. Without CUDA it runs its own logic on the CPU at small sizes
("cpu smoke", not GPU figures), says what it skipped and why, and exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.utils.benchmark

from bench.document import RunDocument
from bench.hardware import find_card, peak_flops
from bench.store import PROJECT_ROOT
from benchmarks.training_bench import plain_loop_tokens_per_s
from probes.compute import MatmulPlan, measure_matmul
from probes.devices import device_context, release
from probes.energy import meter_for
from probes.inventory import cuda_device, list_devices, read_cpu_info
from probes.measurement import error_reason
from probes.memory import HOST_LINK_BYTES, array_bytes, measure_memory
from probes.training import GPTConfig

BUDGET_S = 480.0
#: mamf-finder's quick run, `--m_range 0 20480 256 --n 4096 --k 4096`, every fourth m.
MAMF_SHAPES = [(m, 4096, 4096) for m in range(1024, 20481, 1024)]
SQUARES = [4096, 8192, 12288, 16384]
ENERGY_WINDOW_S = 10.0
#: What the CPU smoke run uses instead, so it finishes in well under a minute on two cores.
SMOKE_SHAPES = [(256, 256, 256), (512, 256, 256)]
SMOKE_PLAN = MatmulPlan(sizes=[128, 256], sweep_budget_s=5.0, blocks=3, block_s=0.02, sustained_s=0.5, sustain_all_dtypes=False)
SMOKE_PROBE_ARGS = ["--quick", "--device", "cpu", "--only", "training"]
NO_GPU_NOTE = "CPU smoke run: checks this script's logic at small sizes; not a GPU figure"


@dataclass
class Context:
    """The device under test and what earlier sections found."""

    device: torch.device
    smoke: bool
    why_no_gpu: str = ""
    found: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "cpu" if self.smoke else "cuda"


# -- peers: plain timing, no flopwatt code -------------------------------------------------------


def benchmark_s(fn: Callable[[], object], min_run_time: float = 0.2) -> float:
    """torch.utils.benchmark's median seconds per call (it synchronises the device around its blocks)."""
    return torch.utils.benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median


def event_loop_s(fn: Callable[[], object], device: torch.device, blocks: int = 5, block_s: float = 0.05) -> float:
    """Median seconds per call from CUDA events on the device's stream, blocks of about `block_s`."""
    stream = torch.cuda.current_stream(device)

    def timed(calls: int) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        for _ in range(calls):
            fn()
        end.record(stream)
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / calls

    for _ in range(10):
        fn()
    calls = max(1, math.ceil(block_s / timed(1)))
    return statistics.median(timed(calls) for _ in range(blocks))


def matmul_peers(shapes: list[tuple[int, int, int]], dtype: torch.dtype, ctx: Context) -> list[dict]:
    """FLOP/s of torch.matmul at each shape, by each peer timer (one operand set, made here)."""
    rows = []
    for m, n, k in shapes:
        a = torch.randn(m, k, device=ctx.device, dtype=dtype)
        b = torch.randn(k, n, device=ctx.device, dtype=dtype)
        out = torch.empty(m, n, device=ctx.device, dtype=dtype)

        def product(a: torch.Tensor = a, b: torch.Tensor = b, out: torch.Tensor = out) -> None:
            torch.matmul(a, b, out=out)

        row = {"m": m, "n": n, "k": k, "benchmark_flops": 2 * m * n * k / benchmark_s(product)}
        if not ctx.smoke:
            row["event_loop_flops"] = 2 * m * n * k / event_loop_s(product, ctx.device)
        rows.append(row)
        del a, b, out
    return rows


def best_peer(rows: list[dict]) -> dict:
    """The fastest figure any peer reached, with its shape and timer."""
    figures = [
        (row[key], key.removesuffix("_flops"), [row["m"], row["n"], row["k"]])
        for row in rows
        for key in row
        if key.endswith("_flops")
    ]
    flops, timer, shape = max(figures)
    return {"flops": flops, "timer": timer, "shape": shape}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


# -- sections --------------------------------------------------------------------------------------


def inventory_section(ctx: Context) -> dict:
    devices, missing = list_devices(read_cpu_info())
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "arch_list": torch.cuda.get_arch_list() if torch.cuda.is_available() else [],
        "devices": [d.model_dump() for d in devices],
        "unavailable": [u.model_dump() for u in missing],
    }


def headline_dtype(ctx: Context) -> str:
    """bf16 where the card has it; fp16 on pre-Ampere cards (issue 12 item 15); fp32 on the CPU."""
    if ctx.smoke:
        return "fp32"
    major, _ = torch.cuda.get_device_capability(ctx.device)
    return "bf16" if major >= 8 else "fp16"


def matmul_section(ctx: Context) -> dict:
    dtype = headline_dtype(ctx)
    name = ctx.found["name"]
    if ctx.smoke:
        probe = measure_matmul("cpu", "cpu", quick=True, dtypes=[dtype], plan=SMOKE_PLAN)
        shapes = SMOKE_SHAPES
    else:
        l2 = torch.cuda.get_device_properties(ctx.device).L2_cache_size
        meter = meter_for(str(ctx.device))
        try:
            probe = measure_matmul(str(ctx.device), "cuda", quick=False, dtypes=[dtype], llc_bytes=l2, meter=meter)
        finally:
            meter.close()
        shapes = MAMF_SHAPES + [(s, s, s) for s in SQUARES]
    figures = {m.variant: m for m in probe.measurements}
    burst, sustained = figures.get("burst"), figures.get("sustained")
    ctx.found["burst"] = {dtype: burst.value} if burst else {}
    peers = matmul_peers(shapes, compute_dtype(dtype), ctx)
    best = best_peer(peers)
    card = find_card(name) if not ctx.smoke else None
    peak = peak_flops(card, dtype) if card else None
    return {
        "dtype": dtype,
        "probe_burst": burst.value if burst else None,
        "probe_burst_shape": [burst.params[x] for x in "mnk"] if burst else None,
        "probe_sustained": sustained.value if sustained else None,
        "probe_sustained_window_s": sustained.params["window_s"] if sustained else None,
        "probe_burst_energy": burst.energy.model_dump() if burst and burst.energy else None,
        "best_peer": best,
        "ratio_probe_burst_to_best_peer": ratio(burst.value if burst else None, best["flops"]),
        "ratio_sustained_to_burst": ratio(sustained.value if sustained else None, burst.value if burst else None),
        "datasheet_peak": peak,
        "probe_fraction_of_peak": ratio(burst.value if burst else None, peak),
        "peer_fraction_of_peak": ratio(best["flops"], peak),
        "peers": peers,
        "unavailable": [u.model_dump() for u in probe.unavailable],
    }


def compute_dtype(dtype: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]


def memory_section(ctx: Context) -> dict:
    dev = ctx.device
    l2 = None if ctx.smoke else torch.cuda.get_device_properties(dev).L2_cache_size
    memory_bytes = None if ctx.smoke else torch.cuda.get_device_properties(dev).total_memory
    meter = None if ctx.smoke else meter_for(str(dev))
    try:
        probe = measure_memory(str(dev), ctx.kind, quick=ctx.smoke, llc_bytes=l2, memory_bytes=memory_bytes, meter=meter)
    finally:
        if meter is not None:
            meter.close()
    figures = {(m.metric, m.variant): m for m in probe.measurements}
    copy = figures.get(("mem_copy_bandwidth", None))
    nbytes = copy.params["bytes_per_array"] if copy else array_bytes(ctx.kind, l2, memory_bytes)
    peers = copy_peers(nbytes, ctx)
    result = {
        "bytes_per_array": nbytes,
        "probe_copy": copy.value if copy else None,
        "probe_triad": figures[("mem_triad_bandwidth", None)].value if ("mem_triad_bandwidth", None) in figures else None,
        "peers": peers,
        "ratio_probe_copy_to_best_peer": ratio(copy.value if copy else None, max(peers.values())),
        "unavailable": [u.model_dump() for u in probe.unavailable],
    }
    if ctx.smoke:
        result["host_link"] = "skipped: a host<->device link needs a GPU"
        return result
    link = {}
    for pinned in (True, False):
        variant = "pinned" if pinned else "pageable"
        for direction, peer in host_copy_peers(pinned, dev).items():
            m = figures.get((f"{direction}_bandwidth", variant))
            probe_figure = m.value if m else None
            link[f"{direction} {variant}"] = {"probe": probe_figure, "peer": peer, "ratio": ratio(probe_figure, peer)}
    result["host_link"] = link
    return result


def copy_peers(nbytes: int, ctx: Context) -> dict[str, float]:
    """B/s of a plain `b.copy_(a)` of `nbytes` (read + write, as the probe counts), by each peer timer."""
    a = torch.rand(nbytes // 8, device=ctx.device, dtype=torch.float64)
    b = torch.empty_like(a)
    peers = {"benchmark_copy": 2 * nbytes / benchmark_s(lambda: b.copy_(a))}
    if not ctx.smoke:
        peers["event_loop_copy"] = 2 * nbytes / event_loop_s(lambda: b.copy_(a), ctx.device)
    return peers


def host_copy_peers(pinned: bool, device: torch.device) -> dict[str, float]:
    """B/s of plain host->device and device->host copies of the probe's size, from pinned or pageable memory."""
    host = torch.empty(HOST_LINK_BYTES, dtype=torch.uint8, pin_memory=pinned)
    on_device = torch.empty(HOST_LINK_BYTES, dtype=torch.uint8, device=device)
    return {
        "h2d": HOST_LINK_BYTES / benchmark_s(lambda: on_device.copy_(host, non_blocking=pinned)),
        "d2h": HOST_LINK_BYTES / benchmark_s(lambda: host.copy_(on_device, non_blocking=pinned)),
    }


def parse_smi_power(lines: list[str]) -> list[tuple[datetime, float]]:
    """(local time, W) from `nvidia-smi --query-gpu=timestamp,power.draw --format=csv,noheader,nounits`.

    A reading the card does not give prints as "[N/A]" or "[Not Supported]" and is skipped.
    """
    readings = []
    for line in lines:
        stamp, _, watts = line.strip().rpartition(",")
        watts = watts.strip()
        if not stamp or watts.startswith("["):
            continue
        readings.append((datetime.strptime(stamp.strip(), "%Y/%m/%d %H:%M:%S.%f"), float(watts)))
    return readings


def trapezoid_joules(samples: list[tuple[float, float]]) -> float:
    """Energy of (seconds, W) samples by the trapezoid rule."""
    return sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in zip(samples, samples[1:]))


class PowerPoller:
    """NVML's power reading (mW) every 50 ms on a thread, with perf_counter times."""

    def __init__(self, nvml, handle) -> None:  # type: ignore[no-untyped-def]
        self.nvml, self.handle = nvml, handle
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000))
            self._stop.wait(0.05)

    def __enter__(self) -> PowerPoller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def energy_section(ctx: Context) -> dict:
    if ctx.smoke:
        return {"skipped": f"NVML and nvidia-smi read NVIDIA GPUs: {ctx.why_no_gpu}"}
    import pynvml

    dev = ctx.device
    uuid = f"GPU-{torch.cuda.get_device_properties(dev).uuid}"
    dtype = compute_dtype(headline_dtype(ctx))
    a, b = (torch.randn(8192, 8192, device=dev, dtype=dtype) for _ in range(2))
    meter = meter_for(str(dev))
    pynvml.nvmlInit()
    smi_path = shutil.which("nvidia-smi")
    try:
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
        query = [smi_path, "--query-gpu=timestamp,power.draw", "--format=csv,noheader,nounits", "-lms", "100", "-i", uuid]
        reader = subprocess.Popen(query, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) if smi_path else None
        time.sleep(1.0)  # nvidia-smi's first line comes after its start-up
        torch.cuda.synchronize(dev)
        counter0, t0, wall0 = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle), time.perf_counter(), datetime.now()
        with PowerPoller(pynvml, handle) as poller, meter.window(sync=lambda: torch.cuda.synchronize(dev)) as window:
            while time.perf_counter() - t0 < ENERGY_WINDOW_S:
                for _ in range(10):
                    torch.matmul(a, b)
                torch.cuda.synchronize(dev)
        counter1, t1, wall1 = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle), time.perf_counter(), datetime.now()
        lines = []
        if reader is not None:
            reader.terminate()
            lines = reader.communicate(timeout=10)[0].splitlines()
    finally:
        pynvml.nvmlShutdown()
        meter.close()
    seconds = t1 - t0
    counter_w = (counter1 - counter0) / 1000 / seconds  # mJ
    polled = [(t, w) for t, w in poller.samples if t0 <= t <= t1]
    polled_w = trapezoid_joules(polled) / (polled[-1][0] - polled[0][0]) if len(polled) > 1 else None
    smi = [w for stamp, w in parse_smi_power(lines) if wall0 <= stamp <= wall1]
    smi_w = statistics.mean(smi) if smi else None
    energy = window.energy
    return {
        "window_s": seconds,
        "flopwatt_meter": energy.model_dump(),
        "nvml_counter_w": counter_w,
        "nvml_polled_w": polled_w,
        "nvml_polled_samples": len(polled),
        "nvidia_smi_w": smi_w,
        "nvidia_smi_samples": len(smi) if reader is not None else "nvidia-smi not found",
        "ratio_meter_to_counter": ratio(energy.watts_avg, counter_w),
        "ratio_polled_to_counter": ratio(polled_w, counter_w),
        "ratio_smi_to_counter": ratio(smi_w, counter_w),
    }


def probe_section(ctx: Context) -> dict:
    """`flopwatt probe` in a fresh process, into a throwaway database; its training figure against a plain loop."""
    args = SMOKE_PROBE_ARGS if ctx.smoke else ["--quick", "--device", str(ctx.device)]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "FLOPWATT_DB": f"sqlite:///{Path(tmp) / 'check.db'}"}
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "bench", "probe", *args, "--json"], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
    result: dict = {"args": args, "exit_code": done.returncode, "wall_s": wall, "stderr_tail": done.stderr[-2000:]}
    if not done.stdout.strip():
        return result
    doc = RunDocument.model_validate_json(done.stdout)
    result["figures"] = [
        {"metric": m.metric, "variant": m.variant, "dtype": m.dtype, "device": m.device, "value": m.value,
         "spread": [m.min, m.max], "peak_fraction": m.peak_fraction}
        for m in doc.measurements
    ]  # fmt: skip
    result["unavailable"] = [u.model_dump() for u in doc.unavailable]
    tps = next((m for m in doc.measurements if m.metric == "train_tokens_per_s" and m.device == str(ctx.device)), None)
    if tps is not None:
        ran = GPTConfig(**{k: tps.params[k] for k in GPTConfig.__dataclass_fields__})
        peer = plain_loop_tokens_per_s(ran, ctx.device, tps.dtype, warmup=2 if ctx.smoke else 5, steps=5 if ctx.smoke else 20)
        result["training"] = {"probe_tokens_per_s": tps.value, "plain_loop_tokens_per_s": peer, "ratio": tps.value / peer}
    return result


def second_gpu_section(ctx: Context) -> dict:
    if ctx.smoke:
        return {"skipped": f"needs two GPUs: {ctx.why_no_gpu}"}
    count = torch.cuda.device_count()
    if count < 2:
        return {"skipped": f"this machine has {count} GPU"}
    last = torch.device("cuda", count - 1)
    dtype = headline_dtype(Context(last, smoke=False))
    with device_context(last):
        probe = measure_matmul(str(last), "cuda", quick=True, dtypes=[dtype])
        burst = next(m for m in probe.measurements if m.variant == "burst")
        shape = (burst.params["m"], burst.params["n"], burst.params["k"])
        peer = best_peer(matmul_peers([shape], compute_dtype(dtype), Context(last, smoke=False)))
    return {
        "device": str(last),
        "name": torch.cuda.get_device_name(last),
        "dtype": dtype,
        "probe_burst": burst.value,
        "peer_same_shape": peer,
        "ratio_probe_to_peer": burst.value / peer["flops"],
        "ratio_to_first_gpu": ratio(burst.value, ctx.found.get("burst", {}).get(dtype)),
    }


def collective_section(ctx: Context) -> dict:
    """One `flopwatt probe --only collective --quick` per GPU, with the variables torchrun sets."""
    count = 0 if ctx.smoke else torch.cuda.device_count()
    if count < 2:
        return {"skipped": f"needs two GPUs: {ctx.why_no_gpu or f'this machine has {count}'}"}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        ranks = []
        for rank in range(count):
            torchrun = {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": count, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
            env = {**os.environ, **{k: str(v) for k, v in torchrun.items()}, "FLOPWATT_DB": f"sqlite:///{Path(tmp) / f'rank{rank}.db'}"}
            command = [sys.executable, "-m", "bench", "probe", "--only", "collective", "--quick", "--json"]
            ranks.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outputs = [rank.communicate(timeout=300) for rank in ranks]
    result: dict = {
        "world": count,
        "exit_codes": [rank.returncode for rank in ranks],
        "stderr_tails": [err[-500:] for _, err in outputs],
    }
    if outputs[0][0].strip():
        doc = RunDocument.model_validate_json(outputs[0][0])
        result["figures"] = [
            {"metric": m.metric, "variant": m.variant, "device": m.device, "value": m.value, "n": m.n, "params": m.params}
            for m in doc.measurements
        ]
        result["unavailable"] = [u.model_dump() for u in doc.unavailable]
    return result


SECTIONS: list[tuple[str, float, Callable[[Context], dict]]] = [
    ("inventory", 5.0, inventory_section),
    ("matmul", 150.0, matmul_section),
    ("memory", 45.0, memory_section),
    ("energy", 25.0, energy_section),
    ("probe", 150.0, probe_section),
    ("second_gpu", 40.0, second_gpu_section),
    ("collective", 60.0, collective_section),
]


def run_sections(ctx: Context, budget_s: float) -> dict:
    """Each section in turn; one that would pass the budget is skipped, one that fails keeps its error."""
    results: dict = {}
    start = time.perf_counter()
    for name, expected_s, section in SECTIONS:
        spent = time.perf_counter() - start
        if spent + expected_s > budget_s:
            why = f"{spent:.0f} s spent; this section takes up to {expected_s:.0f} s of the {budget_s:.0f} s budget"
            results[name] = {"skipped": why}
            continue
        began = time.perf_counter()
        try:
            with device_context(ctx.device):
                results[name] = section(ctx)
        except Exception as exc:  # one section's failure is a finding; the others still run
            results[name] = {"error": error_reason(exc)}
        release(ctx.device)  # the next section (or the probe's own process) gets the whole card
        results[name]["section_s"] = time.perf_counter() - began
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "results", help="folder for the JSON file")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="stop starting sections after this many seconds")
    args = parser.parse_args(argv)
    smoke = not torch.cuda.is_available()
    if smoke:
        missing = list_devices(read_cpu_info())[1]
        why = next((u.reason for u in missing if u.device == "cuda"), "torch finds no CUDA device")
        ctx = Context(torch.device("cpu"), smoke=True, why_no_gpu=why)
        ctx.found["name"] = "cpu"
        print(f"gpu-check: no CUDA device ({why}); running the CPU smoke checks only", flush=True)
    else:
        ctx = Context(torch.device("cuda", 0), smoke=False)
        ctx.found["name"] = cuda_device(0).name
    report = {
        "started_at": datetime.now(timezone.utc).isoformat(),
        "machine": {"node": platform.node(), "os": platform.platform(), "python": platform.python_version()},
        "device": ctx.found["name"],
        "mode": NO_GPU_NOTE if smoke else "gpu",
        "budget_s": args.budget_s,
        "sections": run_sections(ctx, args.budget_s),
        "finished_at": datetime.now(timezone.utc).isoformat(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu-check-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    for name, section in report["sections"].items():
        state = f"skipped: {section['skipped']}" if "skipped" in section else "ok"
        state = f"FAILED: {section['error']}" if "error" in section else state
        print(f"  {name:<11} {state} ({section['section_s']:.0f} s)" if "section_s" in section else f"  {name:<11} {state}")
    print(f"gpu-check: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
