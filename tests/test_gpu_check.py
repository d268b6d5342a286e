"""`make gpu-check` on a machine without a GPU: it runs end to end, says what it skipped and why,
and its own arithmetic (peers, ratios, nvidia-smi parsing, the budget) is right.

Nothing here stands for a GPU figure: the CUDA sections are checked to be skipped, with the reason.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check
from benchmarks.gpu_check import Context, best_peer, parse_smi_power, run_sections, trapezoid_joules
from probes.inventory import _no_cuda_reason


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: gpu-check would run the GPU sections")
def test_without_a_gpu_it_runs_the_cpu_smoke_checks_and_says_what_it_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(gpu_check, "SMOKE_PROBE_ARGS", ["--quick", "--device", "cpu", "--only", "memory"])
    assert gpu_check.main(["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    why = _no_cuda_reason()  # "torch 2.13.0+cpu is a CPU-only build (install a CUDA or ROCm build ...)" here
    assert out.startswith(f"gpu-check: no CUDA device ({why}); running the CPU smoke checks only\n")
    [written] = tmp_path.glob("gpu-check-*.json")
    assert f"gpu-check: wrote {written}" in out
    report = json.loads(written.read_text())
    assert report["mode"] == gpu_check.NO_GPU_NOTE
    sections = report["sections"]
    assert list(sections) == ["inventory", "matmul", "memory", "energy", "probe", "second_gpu", "collective"]
    assert not [name for name, s in sections.items() if "error" in s]
    assert sections["energy"]["skipped"] == f"NVML and nvidia-smi read NVIDIA GPUs: {why}"
    assert sections["second_gpu"]["skipped"] == sections["collective"]["skipped"] == f"needs two GPUs: {why}"
    matmul = sections["matmul"]
    assert matmul["dtype"] == "fp32" and matmul["probe_burst"] > 0
    assert matmul["ratio_probe_burst_to_best_peer"] == matmul["probe_burst"] / matmul["best_peer"]["flops"]
    assert [[p["m"], p["n"], p["k"]] for p in matmul["peers"]] == [list(s) for s in gpu_check.SMOKE_SHAPES]
    memory = sections["memory"]
    assert memory["ratio_probe_copy_to_best_peer"] == memory["probe_copy"] / memory["peers"]["benchmark_copy"]
    assert memory["host_link"] == "skipped: a host<->device link needs a GPU"
    probe = sections["probe"]
    assert probe["exit_code"] == 0 and {f["metric"] for f in probe["figures"]} == {"mem_copy_bandwidth", "mem_triad_bandwidth"}


def test_nvidia_smi_power_lines_are_parsed_and_unsupported_ones_skipped() -> None:
    # `--query-gpu=timestamp,power.draw --format=csv,noheader,nounits`; the 131.17 W is a GTX 1080
    # under load (Cyclenerd/ethereum_nvidia_miner#51); a card without the reading prints [N/A].
    lines = ["2018/03/08 12:00:00.100, 131.17", "2018/03/08 12:00:00.200, [N/A]", "", "2018/03/08 12:00:00.300, 131.13"]
    assert parse_smi_power(lines) == [
        (datetime(2018, 3, 8, 12, 0, 0, 100_000), 131.17),
        (datetime(2018, 3, 8, 12, 0, 0, 300_000), 131.13),
    ]


def test_polled_power_integrates_by_the_trapezoid_rule() -> None:
    assert trapezoid_joules([(0.0, 100.0), (1.0, 200.0), (3.0, 200.0)]) == 150.0 + 400.0
    assert trapezoid_joules([(0.0, 100.0)]) == 0.0


def test_the_best_peer_is_the_fastest_of_any_timer_and_shape() -> None:
    rows = [
        {"m": 1024, "n": 4096, "k": 4096, "benchmark_flops": 5e14, "event_loop_flops": 6e14},
        {"m": 2048, "n": 4096, "k": 4096, "benchmark_flops": 7e14, "event_loop_flops": 6.5e14},
    ]
    assert best_peer(rows) == {"flops": 7e14, "timer": "benchmark", "shape": [2048, 4096, 4096]}


def test_a_card_without_bf16_is_checked_in_fp16(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = Context(torch.device("cuda", 0), smoke=False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # RTX 20-series
    assert gpu_check.headline_dtype(gpu) == "fp16"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert gpu_check.headline_dtype(gpu) == "bf16"
    assert gpu_check.headline_dtype(Context(torch.device("cpu"), smoke=True)) == "fp32"


def test_sections_past_the_budget_are_skipped_and_a_failing_one_keeps_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []

    def works(ctx: Context) -> dict:
        ran.append("works")
        return {"figure": 1.0}

    def fails(ctx: Context) -> dict:
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore detail")

    monkeypatch.setattr(gpu_check, "SECTIONS", [("fails", 1.0, fails), ("works", 1.0, works), ("long", 100.0, works)])
    results = run_sections(Context(torch.device("cpu"), smoke=True), budget_s=10.0)
    assert results["fails"]["error"] == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert results["works"]["figure"] == 1.0 and ran == ["works"]
    assert results["long"]["skipped"].endswith("this section takes up to 100 s of the 10 s budget")
