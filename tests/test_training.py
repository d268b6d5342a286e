"""The training-step probe on the CPU: FLOP count, memory model, measurements, bad input.

Everything runs real torch steps on tiny models. The FLOP count is checked against torch's own
counter; the memory model against the CPU allocator's peak during real steps (torch's profiler
allocation events, the CPU's max_memory_allocated) and, on Linux, against the peak RSS of a
fresh process, which is what running out of host memory is about.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import textwrap
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from probes import training
from probes.measurement import ProbeError
from probes.training import (
    CPU_USABLE_FRACTION,
    GPT,
    GPTConfig,
    Trainer,
    cpu_step_peak_bytes,
    largest_fitting,
    max_params_config,
    measure_training,
    model_flops_per_token,
    training_memory,
)

CPU = torch.device("cpu")
TINY = GPTConfig(n_layer=2, n_embd=64, n_head=4, seq_len=32, vocab_size=256, batch_size=2)


@pytest.mark.parametrize(
    "cfg",
    [
        TINY,
        # long sequence: attention is a third of the FLOPs, so a wrong attention term shows
        GPTConfig(n_layer=3, n_embd=32, n_head=2, seq_len=256, vocab_size=64, batch_size=1),
    ],
)
def test_flops_per_token_matches_torch_flop_counter(cfg: GPTConfig) -> None:
    model = GPT(cfg)
    tokens = torch.randint(cfg.vocab_size, (cfg.batch_size, cfg.seq_len))
    # The CPU's fused attention kernel has no formula in FlopCounterMode (it would count 0);
    # the math backend runs attention as two counted bmm's, the full s x s product, like ours.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(tokens, tokens).backward()
    counted = counter.get_total_flops()
    ops = {str(op) for op in counter.get_flop_counts()["Global"]}
    assert "aten.bmm" in ops, "attention was not counted: the comparison would be vacuous"
    predicted = model_flops_per_token(cfg) * cfg.tokens_per_step
    assert abs(predicted - counted) / counted < 0.05


@pytest.mark.parametrize(
    "cfg",
    [
        GPTConfig(n_layer=2, n_embd=128, n_head=4, seq_len=128, vocab_size=2048, batch_size=4),  # loss gradient peak
        GPTConfig(n_layer=2, n_embd=512, n_head=4, seq_len=16, vocab_size=4096, batch_size=1),  # head gradient peak
        GPTConfig(n_layer=1, n_embd=256, n_head=4, seq_len=128, vocab_size=256, batch_size=4),  # MLP gradient peak
    ],
)
def test_memory_model_matches_allocator_peak_of_real_steps(cfg: GPTConfig) -> None:
    trainer = Trainer(cfg, CPU, "fp32")
    trainer()
    trainer()  # from here on, gradients and AdamW states are allocated
    measured = cpu_step_peak_bytes(trainer)
    predicted = training_memory(cfg, "fp32").total
    # The issue asks for 10%. Each transient term moves the total by less than that, and the
    # model tracks the allocator to about 0.1% here, so 2% is what lets a wrong term show.
    assert abs(predicted - measured) / measured < 0.02


_RSS_SCRIPT = textwrap.dedent(
    """
    import json, re, sys, torch
    from probes.training import GPTConfig, Trainer, training_memory

    def status(key):
        return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024

    warm = Trainer(GPTConfig(n_layer=1, n_embd=64, n_head=1, seq_len=16, vocab_size=64, batch_size=1), torch.device("cpu"), "fp32")
    warm(); warm(); del warm  # libraries, thread pools and kernels loaded before the baseline
    cfg = GPTConfig(**json.loads(sys.argv[1]))
    base = status("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")  # reset the RSS high-water mark
    trainer = Trainer(cfg, torch.device("cpu"), "fp32")
    trainer(); trainer()
    print(json.dumps({"rss_growth": status("VmHWM") - base, "model": training_memory(cfg, "fp32").total}))
    """
)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
def test_cpu_margin_covers_the_peak_rss_of_real_steps() -> None:
    """The RSS high-water growth of real steps lies between the model and model / CPU_USABLE_FRACTION.

    A fresh process, so memory freed by earlier tests cannot hide the growth. About 1 GB of
    state, where the fixed overhead of malloc and BLAS is a few per cent.
    """
    cfg = GPTConfig(n_layer=4, n_embd=1024, n_head=8, seq_len=16, vocab_size=8192, batch_size=1)
    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, json.dumps(asdict(cfg))],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0.95 * figures["model"] <= figures["rss_growth"] <= figures["model"] / CPU_USABLE_FRACTION


def test_a_step_updates_every_parameter_and_keeps_gradients_allocated() -> None:
    """What the memory model assumes: gradients stay allocated (zeroed) and AdamW holds two moments."""
    trainer = Trainer(TINY, CPU, "fp32")
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer()
    after = list(trainer.model.parameters())
    assert all(not torch.equal(b, a) for b, a in zip(before, after))
    assert all(p.grad is not None and not p.grad.any() for p in after)
    moments = [t for state in trainer.optimizer.state.values() for k, t in state.items() if k.startswith("exp_avg")]
    assert len(moments) == 2 * len(after)
    assert trainer.state_bytes() >= 16 * TINY.n_params


def test_n_params_matches_the_built_model() -> None:
    cfg = GPTConfig(n_layer=3, n_embd=96, n_head=3, seq_len=48, vocab_size=300, batch_size=1)
    assert cfg.n_params == sum(p.numel() for p in GPT(cfg).parameters())


def test_probe_returns_well_formed_measurements() -> None:
    seen: list[tuple[str, float]] = []
    result = measure_training(
        "cpu",
        config=TINY,
        quick=True,
        peak_flops=1e12,
        measured_matmul_flops=5e11,
        progress=lambda step, fraction: seen.append((step, fraction)),
    )
    assert result.unavailable == []
    by_key = {(m.metric, m.variant): m for m in result.measurements}
    assert set(by_key) == {
        ("train_tokens_per_s", None),
        ("train_mfu", "datasheet"),
        ("train_mfu", "measured-matmul"),
        ("train_max_params", None),
    }
    tps = by_key[("train_tokens_per_s", None)]
    assert tps.n >= 3 and tps.min > 0 and tps.dtype == "fp32" and tps.device == "cpu"
    for key in ("n_layer", "n_embd", "n_head", "seq_len", "vocab_size", "batch_size"):
        assert tps.params[key] == getattr(TINY, key)
    assert tps.params["model_flops_per_token"] == model_flops_per_token(TINY)
    assert abs(tps.params["peak_memory_bytes"] - tps.params["memory_model_bytes"]) < 0.1 * tps.params["peak_memory_bytes"]

    datasheet = by_key[("train_mfu", "datasheet")]
    measured = by_key[("train_mfu", "measured-matmul")]
    assert datasheet.n == tps.n
    assert math.isclose(datasheet.value, tps.value * model_flops_per_token(TINY) / 1e12)
    assert math.isclose(measured.value, 2 * datasheet.value)

    largest = by_key[("train_max_params", None)]
    n_layer = largest.params["n_layer"]
    assert largest.value == max_params_config(n_layer).n_params > TINY.n_params
    usable = largest.params["memory_usable_bytes"]
    assert largest.params["memory_model_bytes"] <= usable < training_memory(max_params_config(n_layer + 1), "fp32").total
    assert largest.params["method"] == "memory-model"

    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0


def test_mfu_without_any_peak_is_unavailable_with_a_reason() -> None:
    result = measure_training("cpu", config=TINY, quick=True)
    assert "train_mfu" not in {m.metric for m in result.measurements}
    [missing] = [u for u in result.unavailable if u.metric == "train_mfu"]
    assert "peak" in missing.reason


def test_an_mfu_above_one_is_refused_with_its_cause() -> None:
    """A matmul figure measured under load (here: 1 MFLOP/s) would make training look faster than the hardware."""
    result = measure_training("cpu", config=TINY, quick=True, peak_flops=1e15, measured_matmul_flops=1e6)
    assert {(m.metric, m.variant) for m in result.measurements if m.metric == "train_mfu"} == {("train_mfu", "datasheet")}
    [refused] = [u for u in result.unavailable if u.metric == "train_mfu"]
    assert refused.reason.startswith("measured-matmul MFU came out at") and "background_cpu" in refused.reason


def test_micro_batch_is_halved_until_the_step_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Host memory is the one thing faked: enough for batch 2 of this config, not batch 4."""
    cfg = GPTConfig(n_layer=2, n_embd=64, n_head=4, seq_len=64, vocab_size=4096, batch_size=8)
    usable = (training_memory(replace(cfg, batch_size=2), "fp32").total + training_memory(replace(cfg, batch_size=4), "fp32").total) // 2
    fake = SimpleNamespace(available=int(usable / CPU_USABLE_FRACTION) + 1)
    monkeypatch.setattr(training.psutil, "virtual_memory", lambda: fake)
    result = measure_training("cpu", config=cfg, quick=True)
    [tps] = [m for m in result.measurements if m.metric == "train_tokens_per_s"]
    assert (tps.params["batch_size"], tps.params["requested_batch_size"]) == (2, 8)


def test_model_that_cannot_fit_at_batch_one_is_a_probe_error_with_needed_and_had() -> None:
    huge = GPTConfig(n_layer=400, n_embd=16384, n_head=128, seq_len=2048, vocab_size=50304, batch_size=8)
    with pytest.raises(ProbeError) as caught:
        measure_training("cpu", config=huge, quick=True)
    message = str(caught.value)
    assert "\n" not in message and "batch 1" in message
    needed, had = (float(x) for x in re.findall(r"(\d+(?:\.\d+)?) GB", message)[:2])
    assert needed == pytest.approx(training_memory(replace(huge, batch_size=1), "fp32").total / 1e9, abs=0.01)
    assert 0 < had < needed


@pytest.mark.parametrize(
    ("predicted", "real", "expected", "most_tries"),
    [
        (10, 10, 10, 2),  # right: one up-step fails
        (10, 12, 12, 4),  # cautious model: climbs
        (10, 30, 13, 4),  # very cautious: climbs at most 3 steps, never runs away
        (10, 6, 6, 5),  # bold model: steps down until a step fits
        (3, 0, 0, 3),  # nothing fits
        (0, 2, 2, 3),  # the model says nothing fits: still tries from 1
    ],
)
def test_largest_fitting_searches_from_the_prediction(predicted: int, real: int, expected: int, most_tries: int) -> None:
    """The GPU search, with a device whose steps fit up to `real` layers standing in for CUDA."""
    tried: list[int] = []

    def fits(n: int) -> bool:
        tried.append(n)
        return n <= real

    assert largest_fitting(predicted, fits) == expected
    assert len(tried) == len(set(tried)) <= most_tries


def test_a_step_that_cannot_allocate_is_dropped_not_raised() -> None:
    """A real allocation failure (4 TB of embeddings) ends that try with None instead of raising."""
    impossible = GPTConfig(n_layer=1, n_embd=1024, n_head=8, seq_len=16, vocab_size=10**9, batch_size=1)
    assert training._try_throughput(impossible, CPU, "cpu", "fp32", True, None, lambda *_: None) is None


@pytest.mark.parametrize(
    "call",
    [
        lambda: GPTConfig(n_embd=100, n_head=3),
        lambda: GPTConfig(n_layer=0),
        lambda: measure_training("gpu", config=TINY),
        lambda: measure_training("cpu", config=TINY, peak_flops=0.0),
        lambda: measure_training("cpu", config=TINY, measured_matmul_flops=float("nan")),
    ],
)
def test_bad_arguments_are_probe_errors(call) -> None:
    with pytest.raises(ProbeError):
        call()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_is_reported_unavailable() -> None:
    result = measure_training("cuda", config=TINY)
    assert result.measurements == []
    assert [u.device for u in result.unavailable] == ["cuda"] and "CUDA" in result.unavailable[0].reason
