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
from probes.timing import DeviceTimer, Timing
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
    ("call", "message"),
    [
        (lambda: GPTConfig(n_embd=100, n_head=3), "training config: n_embd 100 is not divisible by n_head 3"),
        (lambda: GPTConfig(n_layer=0), "training config: n_layer must be a positive integer, got 0"),
        (lambda: measure_training("gpu", config=TINY), "training: unsupported device 'gpu' (use cpu, cuda, cuda:N or mps)"),
        (
            lambda: measure_training("cpu", config=TINY, peak_flops=0.0),
            "training: peak_flops must be a positive number of FLOP/s, got 0.0",
        ),
        (
            lambda: measure_training("cpu", config=TINY, measured_matmul_flops=float("nan")),
            "training: measured_matmul_flops must be a positive number of FLOP/s, got nan",
        ),
    ],
)
def test_bad_arguments_are_probe_errors(call, message: str) -> None:
    with pytest.raises(ProbeError, match=f"^{re.escape(message)}$"):
        call()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_is_reported_unavailable() -> None:
    result = measure_training("cuda", config=TINY)
    assert result.measurements == []
    assert [u.device for u in result.unavailable] == ["cuda"] and "CUDA" in result.unavailable[0].reason


# -- figures pinned exactly ---------------------------------------------------------------------


def test_flops_per_token_worked_by_hand() -> None:
    """TINY: matmul weights 12 * 2 * 64^2 + 256 * 64 = 114,688; 6N = 688,128; 12 L s d = 49,152."""
    assert TINY.matmul_params == 114_688
    assert model_flops_per_token(TINY) == 737_280


def test_memory_model_worked_by_hand() -> None:
    """TINY in fp32 (a = f = 4, b = 2, s = 32, d = 64, h = 4, V = 256, L = 2), term by term.

    per layer (2f + 14a) bsd + 16 bs + 4 bhs = 64 * 4096 + 1024 + 1024 = 264,192;
    activations 2 * 264,192 + (f + a) bsd + 8 bs + 4 bsV + 8 (2 bs + s) = 628,480;
    transient: the loss gradient 2 * 4 bsV = 131,072 (head 81,920, MLP 49,152);
    parameters 133,760: 4 + 4 + 8 bytes each.
    """
    fp32 = training_memory(TINY, "fp32")
    assert TINY.n_params == 133_760
    assert (fp32.weights, fp32.gradients, fp32.optimizer) == (535_040, 535_040, 1_070_080)
    assert (fp32.cast_weights, fp32.activations, fp32.transient) == (0, 628_480, 131_072)
    assert fp32.total == 2_899_712
    bf16 = training_memory(TINY, "bf16")
    assert bf16.cast_weights == 2 * 114_688  # a bf16 copy of every matmul weight
    # (2f + 14a) bsd with a = 2: 36 * 4096 + 2048 = 149,504 a layer; + 6 bsd + 512 + 65,536 + 1,280
    assert bf16.activations == 2 * 149_504 + 6 * 4096 + 512 + 65_536 + 1_280


def test_the_max_params_family_and_its_description() -> None:
    """The search's member of 3 layers: 128 wide a layer, heads of 128, seq 1024, GPT-2's 50,304
    tokens, one sequence a step; described in millions of parameters."""
    cfg = max_params_config(3)
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.seq_len, cfg.vocab_size, cfg.batch_size) == (3, 384, 3, 1024, 50304, 1)
    assert TINY.describe() == "GPT 2 layers x 64 wide (0.1M params, seq 32, batch 2)"  # 133,760 parameters


@pytest.mark.parametrize(
    ("cfg", "dtype", "transient"),
    [
        # bf16 (a = 2, cast = 4), b = 1, s = 4, d = 64, V = 1024: the head's moment, its fp32 weight-gradient
        # copy the larger half: -4bsV + a bsd + aVd + max(a bs V, cast V d) = -16,384 + 512 + 131,072 + 262,144
        # (loss 8 bsV = 32,768; MLP -16,384 - 512 + 4a bsd + 4a d^2 + 4 cast d^2 = 83,456)
        (GPTConfig(n_layer=1, n_embd=64, n_head=4, seq_len=4, vocab_size=1024, batch_size=1), "bf16", 377_344),
        # fp32 (cast = 0), s = 2, V = 256: the head again, its logits' gradient a bs V the larger half:
        # -2,048 + 512 + 65,536 + 2,048 (loss 4,096; MLP -2,048 - 512 + 2,048 + 65,536 = 65,024)
        (GPTConfig(n_layer=1, n_embd=64, n_head=4, seq_len=2, vocab_size=256, batch_size=1), "fp32", 66_048),
        # bf16, s = 2, V = 64: the last MLP's moment, -512 - 256 + 1,024 + 32,768 + 65,536
        # (loss 1,024; head -512 + 256 + 8,192 + 16,384 = 24,320)
        (GPTConfig(n_layer=1, n_embd=64, n_head=4, seq_len=2, vocab_size=64, batch_size=1), "bf16", 98_560),
    ],
)
def test_each_moment_of_the_backward_can_be_the_peak(cfg: GPTConfig, dtype: str, transient: int) -> None:
    assert training_memory(cfg, dtype).transient == transient


STEP_SECONDS = 0.5


@pytest.fixture
def known_step_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every timed block reports 0.5 s per step, after running one real step."""

    def measure(self, fn, *, blocks: int, **_: object) -> Timing:  # type: ignore[no-untyped-def]
        fn()
        return Timing([STEP_SECONDS] * blocks, calls_per_block=1, warmup_calls=2, elapsed_s=blocks * STEP_SECONDS)

    monkeypatch.setattr(DeviceTimer, "measure", measure)


@pytest.mark.usefixtures("known_step_time")
def test_tokens_per_second_and_mfu_are_exact() -> None:
    result = measure_training("cpu", config=TINY, quick=True, peak_flops=1e12, measured_matmul_flops=5e11)
    by_key = {(m.metric, m.variant): m for m in result.measurements}
    tps = by_key[("train_tokens_per_s", None)]
    assert tps.samples == [128.0] * 3  # 2 x 32 tokens a step, 0.5 s a step; quick: 3 blocks
    assert tps.params["model_flops_per_s"] == 128 * 737_280
    assert by_key[("train_mfu", "datasheet")].samples == [128 * 737_280 / 1e12] * 3
    assert by_key[("train_mfu", "measured-matmul")].samples == [128 * 737_280 / 5e11] * 3
    assert by_key[("train_mfu", "measured-matmul")].params["matmul_flops"] == 5e11


# -- GPU branches, with torch.cuda's memory queries fed numbers -----------------------------------


@pytest.mark.parametrize(
    ("message", "oom"),
    [
        ("CUDA out of memory. Tried to allocate 10.01 GiB (GPU 0; 14.75 GiB total capacity; 10.12 GiB already allocated)", True),
        ("CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`", True),
        ("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`", True),
        ("cuDNN error: CUDNN_STATUS_ALLOC_FAILED", True),
        ("MPS backend out of memory (MPS allocated: 17.17 GB, other allocations: 1.23 GB, max allowed: 18.13 GB)", True),
        ("[enforce fail at alloc_cpu.cpp:117] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to allocate 4096000000000 bytes", True),
        ("CUDA error: no kernel image is available for execution on the device", False),
        ("CUDA error: an illegal memory access was encountered", False),
    ],
)
def test_out_of_memory_in_every_spelling(message: str, oom: bool) -> None:
    """The messages as torch, cuBLAS and cuDNN raise them (from user reports: pytorch/pytorch#20123,
    EleutherAI/lm-evaluation-harness#1689, and torch's own allocators)."""
    assert training._is_oom(RuntimeError(message)) is oom


def test_the_typed_cuda_error_is_out_of_memory() -> None:
    assert training._is_oom(torch.OutOfMemoryError("Tried to allocate 2.00 MiB"))


def _fake_card(monkeypatch: pytest.MonkeyPatch, *, free: int, reserved: int, allocated: int, peak_reserved: int) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 24 * 10**9))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: reserved)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: allocated)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: peak_reserved)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 7 * 10**9)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)


def test_the_gpu_budget_counts_torchs_cached_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_card(monkeypatch, free=2 * 10**9, reserved=5 * 10**9, allocated=10**9, peak_reserved=0)
    budget = training._budget(torch.device("cuda", 0))
    assert budget.usable == budget.available == 6 * 10**9
    assert budget.source == "torch.cuda.mem_get_info free bytes + torch's cached, unused bytes"


@pytest.mark.parametrize(("peak_reserved", "fits"), [(21 * 10**9, True), (21 * 10**9 + 1, False)])
def test_a_max_params_try_that_spilled_into_system_ram_has_failed(
    monkeypatch: pytest.MonkeyPatch, peak_reserved: int, fits: bool
) -> None:
    """Windows' sysmem fallback: the steps "fit" by paging. Torch held 1 GB and the card had 20 GB free."""
    _fake_card(monkeypatch, free=20 * 10**9, reserved=10**9, allocated=10**9, peak_reserved=peak_reserved)
    steps: list[str] = []

    class Steps:
        def __init__(self, cfg: GPTConfig, device: torch.device, dtype: str) -> None:
            assert device == torch.device("cuda", 0)

        def __call__(self) -> None:
            steps.append("step")

    monkeypatch.setattr(training, "Trainer", Steps)
    monkeypatch.setattr(training, "synchronize", lambda device: None)
    peak = training._one_step_peak(max_params_config(2), torch.device("cuda", 0), "bf16")
    assert steps == ["step", "step"]
    assert peak == (7 * 10**9 if fits else None)
