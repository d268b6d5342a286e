"""Training-step probe: what a real training step gets on this machine (metrics `train_*`).

A matmul's FLOP/s is not what training gets: layer norms, softmax, the optimizer and the
framework's own overhead all cost time. This probe trains a small GPT-style decoder (forward,
backward, AdamW step) and reports tokens/s, model FLOPs utilisation (MFU) against a datasheet
peak and against this run's measured matmul peak, the peak memory of a step, and the largest
model this device can train.

Precision: bf16 autocast on GPUs with bf16 tensor cores (CUDA 8.0+, ROCm where torch says so),
fp16 autocast with a GradScaler on CUDA 7.x, fp32 elsewhere (CPU, MPS, and pre-Volta CUDA,
whose fp16 runs slower than fp32 on consumer cards). Weights, gradients and AdamW states stay
fp32 (mixed precision in the sense of Micikevicius et al. 2018).

Gradients stay allocated between steps (`zero_grad(set_to_none=False)`), as in frameworks with a
persistent gradient buffer (Megatron-LM, DDP buckets), so a step holds 16 bytes per parameter
(4 weight + 4 gradient + 8 AdamW) plus activations: the ZeRO paper's accounting (Rajbhandari
et al. 2020) for fp32 states.

Sources of the formulas (each restated in the function that uses it):
- FLOPs per token: Chowdhery et al. 2022 (PaLM), appendix B; Narayanan et al. 2021, eq. 3
  without recomputation. Also nanoGPT's `estimate_mfu`.
- Activation memory: the per-tensor method of Korthikanti et al. 2022 ("Reducing Activation
  Recomputation in Large Transformer Models", section 4.1), applied to what this model's
  kernels actually save (fused attention keeps no s x s matrix, there is no dropout).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import psutil
import torch
import torch.nn.functional as F
from torch import nn

from probes.devices import cuda_budget, release, spilled_to_host
from probes.energy import EnergyMeter
from probes.measurement import Energy, Measurement, ProbeError, ProbeResult, ProgressCallback, Unavailable, no_progress
from probes.timing import DeviceTimer, Timing, energy_of, synchronize

PROBE = "training"

#: Fraction of the host's available memory the CPU memory model may plan for. The rest covers
#: what the model does not count: freed blocks malloc keeps, BLAS/oneDNN scratch, the OS. On the
#: project's Linux test host a step's peak RSS exceeded the allocator's peak by 30-100 MB: 10-11%
#: of a 0.3-0.9 GB model, 3% at 1-3 GB, 1% at 4 GB (tests/test_training.py checks the margin).
CPU_USABLE_FRACTION = 0.9

#: The family searched for `train_max_params`: GPT-3/Llama-shaped, width 128 per layer (GPT-3 6.7B,
#: 13B and 175B all have d_model / n_layer = 128), 128-wide heads, a GPT-2-sized vocabulary,
#: sequence 1024, micro-batch 1 (the least a step can hold; gradient accumulation does the rest).
MAX_PARAMS_WIDTH_PER_LAYER = 128
MAX_PARAMS_HEAD_DIM = 128
MAX_PARAMS_SEQ_LEN = 1024
MAX_PARAMS_VOCAB = 50304
#: How far above the memory model's prediction the GPU search tries real steps.
MAX_PARAMS_EXTRA_TRIES = 3


@dataclass(frozen=True)
class GPTConfig:
    """A decoder-only transformer and the micro-batch it trains on.

    Pre-norm blocks (LayerNorm, causal self-attention, LayerNorm, 4x GELU MLP), learned
    positions, untied input embedding and output head, no biases in linear layers, no dropout.
    """

    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    seq_len: int = 256
    vocab_size: int = 8192
    batch_size: int = 4

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise ProbeError(f"training config: {name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ProbeError(f"training config: n_embd {self.n_embd} is not divisible by n_head {self.n_head}")

    @property
    def n_params(self) -> int:
        """Every parameter of the model `GPT(self)` builds."""
        d = self.n_embd
        per_layer = 12 * d * d + 4 * d  # qkv 3d², out d², MLP 8d²; two LayerNorms (weight, bias)
        return self.n_layer * per_layer + 2 * self.vocab_size * d + self.seq_len * d + 2 * d

    @property
    def matmul_params(self) -> int:
        """Weights that take part in a matmul: the blocks' linears and the output head.

        The embeddings are table lookups and cost no FLOPs; LayerNorm weights are elementwise.
        """
        return 12 * self.n_layer * self.n_embd**2 + self.vocab_size * self.n_embd

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def describe(self) -> str:
        return (
            f"GPT {self.n_layer} layers x {self.n_embd} wide ({self.n_params / 1e6:,.1f}M params, "
            f"seq {self.seq_len}, batch {self.batch_size})"
        )


def default_config(kind: str) -> GPTConfig:
    """A model that takes a few seconds per probe on a laptop CPU, GPT-2 small on a GPU."""
    if kind == "cpu":
        return GPTConfig()
    return GPTConfig(n_layer=12, n_embd=768, n_head=12, seq_len=1024, vocab_size=50304, batch_size=8)


def max_params_config(n_layer: int) -> GPTConfig:
    """One member of the family `train_max_params` searches (see MAX_PARAMS_*)."""
    width = MAX_PARAMS_WIDTH_PER_LAYER * n_layer
    return GPTConfig(
        n_layer=n_layer,
        n_embd=width,
        n_head=width // MAX_PARAMS_HEAD_DIM,
        seq_len=MAX_PARAMS_SEQ_LEN,
        vocab_size=MAX_PARAMS_VOCAB,
        batch_size=1,
    )


def model_flops_per_token(cfg: GPTConfig) -> int:
    """Model FLOPs of one training token (forward + backward), the numerator of MFU.

    6·N + 12·L·s·d, with N the matmul weights (`GPTConfig.matmul_params`): a forward pass does
    2 FLOPs per weight per token and the backward twice that (gradients of inputs and of
    weights), hence 6·N. Attention adds, per layer and token, the scores q·kᵀ and their product
    with v, 2·2·s·d forward, tripled for training: 12·L·s·d, counted over the full s x s matrix
    as PaLM's appendix B does (its 12·L·H·Q·T with H·Q = d, T = s), so MFUs compare with published
    ones. Narayanan et al. 2021 eq. 3 without recomputation, 72·B·s·L·d²·(1 + s/6d + V/12Ld)
    per step, is the same count divided by B·s tokens. Recomputation is never counted: MFU
    measures model FLOPs, not the hardware's.
    """
    return 6 * cfg.matmul_params + 12 * cfg.n_layer * cfg.seq_len * cfg.n_embd


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes at the peak of a training step, by what holds them."""

    weights: int
    gradients: int
    optimizer: int
    #: Low-precision copies of the matmul weights autocast keeps from forward to backward.
    cast_weights: int
    #: Tensors the forward saves for the backward.
    activations: int
    #: The largest set of working buffers alive on top of the above (loss or head gradients).
    transient: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.cast_weights + self.activations + self.transient


def training_memory(cfg: GPTConfig, dtype: str) -> MemoryEstimate:
    """Peak bytes of one training step of `GPT(cfg)` with AdamW, for compute dtype `dtype`.

    `dtype` is "fp32" (no autocast) or "bf16"/"fp16" (autocast; weights, gradients and AdamW
    states stay fp32). Persistent: 4 + 4 + 8 bytes per parameter (weights, gradients, AdamW's
    two moments; ZeRO paper's accounting), plus under autocast 2 bytes per matmul weight for the
    cast copies that autocast caches and the backward reads.

    Activations, counted tensor by tensor as Korthikanti et al. 2022 do (section 4.1), with
    a = bytes of the compute dtype, f = 4 (LayerNorm inputs and the residual stream stay fp32
    under autocast), b = batch, s = sequence, d = width, h = heads, V = vocabulary. Per layer:
    LayerNorm inputs 2f·bsd, inputs of the four linears (a·bsd each for qkv, output and MLP-in,
    4a·bsd for MLP-out, the GELU's output), q, k, v 3a·bsd, the GELU input 4a·bsd: (2f + 14a)·bsd;
    plus LayerNorm means and reciprocal deviations 16·bs and the attention's log-sum-exp 4·bhs.
    The fused attention kernels save no s x s matrix (Korthikanti's 5·a·s²·b term is gone) and
    return their output already in the layout the output projection reads, so it is saved once.
    After the blocks: final LayerNorm input f·bsd and output a·bsd, the fp32 log-softmax 4·bsV
    (cross entropy runs in fp32 under autocast), and the token ids.

    The transient term is the largest of three moments of the backward, each on top of what is
    still saved then: the loss gradient (two fp32 bs x V buffers), the output head's gradients
    (its input and weight gradients, and under autocast the fp32 copy of the weight gradient),
    and the last MLP's (residual gradient, 4d-wide input gradient, 4d² weight gradient).
    Checked against the CPU allocator's peak in tests/test_training.py.
    """
    a = _DTYPE_BYTES[dtype]
    f = 4
    cast = 0 if dtype == "fp32" else 4
    b, s, d, h, V, L = cfg.batch_size, cfg.seq_len, cfg.n_embd, cfg.n_head, cfg.vocab_size, cfg.n_layer
    bs, bsd = b * s, b * s * d
    per_layer = (2 * f + 14 * a) * bsd + 16 * bs + 4 * b * h * s
    log_softmax = 4 * bs * V
    token_ids = 8 * (2 * bs + s)  # inputs and targets (int64), position ids
    activations = L * per_layer + (f + a) * bsd + 8 * bs + log_softmax + token_ids
    loss_grad = 2 * 4 * bs * V
    head_grad = -log_softmax + a * bsd + a * V * d + max(a * bs * V, cast * V * d)
    mlp_grad = -log_softmax - a * bsd + 4 * a * bsd + 4 * a * d * d + cast * 4 * d * d
    params = cfg.n_params
    return MemoryEstimate(
        weights=4 * params,
        gradients=4 * params,
        optimizer=8 * params,
        cast_weights=0 if dtype == "fp32" else a * cfg.matmul_params,
        activations=activations,
        transient=max(loss_grad, head_grad, mlp_grad),
    )


_DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class _Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        d = cfg.n_embd
        self.n_head = cfg.n_head
        self.ln_1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp_in = nn.Linear(d, 4 * d, bias=False)
        self.mlp_out = nn.Linear(4 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(self.ln_1(x)).view(b, s, 3, self.n_head, d // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_out(y.transpose(1, 2).reshape(b, s, d))
        return x + self.mlp_out(F.gelu(self.mlp_in(self.ln_2(x))))


class GPT(nn.Module):
    """The decoder `GPTConfig` describes; `forward` returns the mean next-token loss only.

    Returning only the loss lets the logits be freed as soon as the log-softmax has them.
    Parameters are created empty on `device` and initialised once (GPT-2's scheme), instead of
    torch's default initialisation followed by ours: it halves the build time of a large model.
    """

    def __init__(self, cfg: GPTConfig, device: torch.device | str = "cpu") -> None:
        super().__init__()
        with torch.device("meta"):
            self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.n_embd)
            self.position_embedding = nn.Embedding(cfg.seq_len, cfg.n_embd)
            self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layer))
            self.ln_f = nn.LayerNorm(cfg.n_embd)
            self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.to_empty(device=device)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    p.normal_(std=0.02)  # keeps the first losses near ln V
                elif name.endswith("weight"):
                    p.fill_(1.0)  # LayerNorm scale
                else:
                    p.zero_()  # LayerNorm shift

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.token_embedding(tokens) + self.position_embedding(positions)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def training_dtype(device: torch.device) -> str:
    """The compute dtype a training step uses on this device (see the module docstring)."""
    if device.type == "cuda":
        if torch.version.hip:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        major, _ = torch.cuda.get_device_capability(device)
        return "bf16" if major >= 8 else "fp16" if major >= 7 else "fp32"
    return "fp32"


def adamw(model: nn.Module) -> tuple[torch.optim.Optimizer, str]:
    """AdamW, fused where this torch supports it on this device (no per-step temporaries)."""
    try:
        return torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=True), "AdamW fused"
    except (RuntimeError, ValueError):  # torch < 2.4 has no fused CPU kernel
        return torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, foreach=False), "AdamW"


class Trainer:
    """One model, its optimizer and a few random batches: calling it runs one training step.

    Several batches are rotated so repeats don't reuse the same token ids.
    """

    BATCHES = 4

    def __init__(self, cfg: GPTConfig, device: torch.device, dtype: str) -> None:
        self.device = device
        self.model = GPT(cfg, device)
        self.optimizer, self.optimizer_name = adamw(self.model)
        self.scaler = torch.amp.GradScaler(device.type) if dtype == "fp16" else None
        self.dtype = dtype
        shape = (self.BATCHES, cfg.batch_size, cfg.seq_len)
        self.tokens = torch.randint(cfg.vocab_size, shape, device=device)
        self.targets = torch.randint(cfg.vocab_size, shape, device=device)
        self.turn = 0

    def autocast(self) -> AbstractContextManager[object]:
        if self.dtype == "fp32":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_TORCH_DTYPES[self.dtype])

    def __call__(self) -> None:
        i = self.turn % self.BATCHES
        self.turn += 1
        with self.autocast():
            loss = self.model(self.tokens[i], self.targets[i])
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=False)

    def state_bytes(self) -> int:
        """Bytes held between steps: weights, gradients, optimizer states, token batches."""
        tensors = [*self.model.parameters(), self.tokens, self.targets]
        tensors += [p.grad for p in self.model.parameters() if p.grad is not None]
        tensors += [t for state in self.optimizer.state.values() for t in state.values() if torch.is_tensor(t)]
        return sum(t.nbytes for t in tensors)


def cpu_step_peak_bytes(trainer: Trainer) -> int:
    """Peak bytes the CPU allocator held during one step: the CPU's `max_memory_allocated`.

    Runs the step under torch's profiler with memory profiling and reads the allocator's
    running total from its allocation events, on top of what was held when the step began.
    It counts tensors, not the process: malloc's retained blocks and BLAS scratch show in the
    RSS but not here (see CPU_USABLE_FRACTION).
    """
    # Kineto logs every profiler start and stop to stderr, under the CLI's progress display.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    held = trainer.state_bytes()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        trainer()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    memory = [e["args"] for e in events if e.get("name") == "[memory]" and e["args"].get("Device Type") == 0]
    if not memory:
        return held
    start = memory[0]["Total Allocated"] - memory[0]["Bytes"]
    return held + max(0, max(m["Total Allocated"] for m in memory) - start)


def measure_training(
    device: str,
    *,
    config: GPTConfig | None = None,
    quick: bool = False,
    peak_flops: float | None = None,
    measured_matmul_flops: float | None = None,
    meter: EnergyMeter | None = None,
    progress: ProgressCallback = no_progress,
) -> ProbeResult:
    """Tokens/s, MFU and peak memory of training steps, and the largest trainable model.

    With a `meter`, tokens/s carries the energy of the same steps (so efficiency is tokens/J).

    `peak_flops` is the datasheet peak FLOP/s of this device in the dtype the step computes in
    (see `training_dtype`); `measured_matmul_flops` the same from this run's matmul probe. Each
    gives a `train_mfu` figure (variants "datasheet" and "measured-matmul"). The micro-batch is
    halved until a step fits; a model that does not fit at batch 1 raises ProbeError.
    """
    for key, peak in (("peak_flops", peak_flops), ("measured_matmul_flops", measured_matmul_flops)):
        if peak is not None and not (math.isfinite(peak) and peak > 0):
            raise ProbeError(f"training: {key} must be a positive number of FLOP/s, got {peak!r}")
    dev = _device(device)
    missing = _missing_device(dev)
    if missing:
        return ProbeResult(unavailable=[Unavailable(probe=PROBE, device=device, reason=missing)])
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    device = str(dev)
    kind = "rocm" if dev.type == "cuda" and torch.version.hip else dev.type
    dtype = training_dtype(dev)
    cfg = config or default_config(kind)
    try:
        progress(f"training on {device}: {cfg.describe()}", 0.0)
        release(dev)  # what earlier probes left in torch's cache would shrink the budget
        run, budget = _throughput(cfg, dev, kind, dtype, quick, meter, progress)
        progress(f"training on {device}: largest trainable model", 0.8)
        largest = _largest_trainable(dev, dtype)
    finally:
        release(dev)
    result = ProbeResult()
    for m in _throughput_measurements(run, budget, cfg, device, dtype, peak_flops, measured_matmul_flops):
        if m.metric == "train_mfu" and m.value > 1.0:
            result.unavailable.append(_impossible_mfu(m))
        else:
            result.measurements.append(m)
    if peak_flops is None and measured_matmul_flops is None:
        result.unavailable.append(
            Unavailable(probe=PROBE, metric="train_mfu", device=device, dtype=dtype, reason="no peak FLOP/s known for this device and dtype")
        )
    if isinstance(largest, Unavailable):
        result.unavailable.append(largest)
    else:
        result.measurements.append(largest)
    progress(f"training on {device}: done", 1.0)
    return result


def _impossible_mfu(m: Measurement) -> Unavailable:
    """Training cannot do more FLOP/s than the hardware: an MFU above 1 means the reference is wrong.

    Against this run's matmul, the likeliest cause is a matmul measured while something else ran
    (probes.background records it); against a datasheet, a card taken for a slower one.
    """
    cause = (
        "the run's matmul figure was measured while the machine was slower than during training "
        "(see the run's background_cpu); re-run on a quiet machine"
        if m.variant == "measured-matmul"
        else "the datasheet peak is below what training reached; the card may be misidentified"
    )
    reason = f"{m.variant} MFU came out at {m.value:.2f}: {cause}"
    return Unavailable(probe=PROBE, metric="train_mfu", device=m.device, dtype=m.dtype, reason=reason)


def _device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ProbeError(f"training: unsupported device {device!r} (use cpu, cuda, cuda:N or mps)")
    return dev


def _missing_device(dev: torch.device) -> str | None:
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available to torch"
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return f"no CUDA device {dev.index} (torch sees {torch.cuda.device_count()})"
    if dev.type == "mps" and not torch.backends.mps.is_available():
        return "MPS is not available to torch"
    return None


@dataclass(frozen=True)
class _Budget:
    """Memory a training step may plan for on a device, and where the figure comes from."""

    usable: int
    available: int
    source: str

    def params(self) -> dict[str, int | str]:
        return {"memory_available_bytes": self.available, "memory_usable_bytes": self.usable, "memory_source": self.source}


def _budget(dev: torch.device) -> _Budget:
    if dev.type == "cuda":
        usable = cuda_budget(dev)
        return _Budget(usable, usable, "torch.cuda.mem_get_info free bytes + torch's cached, unused bytes")
    available = psutil.virtual_memory().available
    usable = int(available * CPU_USABLE_FRACTION)
    return _Budget(usable, available, f"{CPU_USABLE_FRACTION:.0%} of psutil available memory")


#: How running out of memory reads when it is not torch.cuda.OutOfMemoryError: MPS and the CPU
#: allocator; cuBLAS and cuDNN when a handle or workspace cannot be allocated (a nearly full card
#: fails the backward thread's first cublasCreate with NOT_INITIALIZED).
_OOM_MESSAGES = (
    "out of memory",
    "cublas_status_alloc_failed",
    "cublas_status_not_initialized",
    "cudnn_status_alloc_failed",
    "can't allocate memory",
)


def _is_oom(exc: BaseException) -> bool:
    """CUDA's typed error, or the RuntimeError MPS, cuBLAS, cuDNN or the CPU allocator raise instead."""
    text = str(exc).lower()
    return isinstance(exc, torch.cuda.OutOfMemoryError) or any(m in text for m in _OOM_MESSAGES)


@dataclass(frozen=True)
class _CudaStart:
    """What the card gave this process when a try began, to tell a spill to system RAM afterwards."""

    reserved: int
    free: int

    @staticmethod
    def now(dev: torch.device) -> _CudaStart:
        torch.cuda.reset_peak_memory_stats(dev)
        return _CudaStart(torch.cuda.memory_reserved(dev), torch.cuda.mem_get_info(dev)[0])

    def spilled(self, dev: torch.device) -> bool:
        return spilled_to_host(torch.cuda.max_memory_reserved(dev), self.reserved, self.free)


@dataclass(frozen=True)
class _Run:
    cfg: GPTConfig
    timing: Timing
    peak_memory: int | None
    peak_memory_method: str
    optimizer: str
    energy: Energy | None


def _plan(kind: str, quick: bool) -> tuple[float, float, int, float]:
    """(warm-up s, block s, timed blocks, most seconds for them); DeviceTimer warms up >= 2 steps.

    On a CPU each block is one step. A GPU runs blocks of about 0.2 s, so the clock is read
    (and the device synchronised) between blocks only: steps run back to back as in training.
    """
    if kind == "cpu":
        return 0.0, 0.0, 3 if quick else 5, 5.0 if quick else 15.0
    return 0.5 if quick else 1.0, 0.2, 5 if quick else 10, 10.0


def _throughput(
    cfg: GPTConfig, dev: torch.device, kind: str, dtype: str, quick: bool, meter: EnergyMeter | None, progress: ProgressCallback
) -> tuple[_Run, _Budget]:
    """Time steps at the largest micro-batch <= cfg's that fits, halving on out-of-memory."""
    budget = _budget(dev)
    while training_memory(cfg, dtype).total > budget.usable and cfg.batch_size > 1:
        cfg = replace(cfg, batch_size=cfg.batch_size // 2)
    while True:
        needed = training_memory(cfg, dtype).total
        if needed > budget.usable:
            raise ProbeError(
                f"training: {cfg.describe()} needs {needed / 1e9:.2f} GB at batch 1 (memory model), "
                f"{dev} has {budget.usable / 1e9:.2f} GB ({budget.source})"
            )
        run = _try_throughput(cfg, dev, kind, dtype, quick, meter, progress)
        if run is not None:
            return run, budget
        release(dev)
        if cfg.batch_size == 1:
            raise ProbeError(
                f"training: {cfg.describe()} ran out of memory (or spilled into system RAM) at batch 1: "
                f"the memory model says it needs {needed / 1e9:.2f} GB, {dev} had {budget.usable / 1e9:.2f} GB "
                f"({budget.source})"
            )
        cfg = replace(cfg, batch_size=cfg.batch_size // 2)


def _try_throughput(
    cfg: GPTConfig, dev: torch.device, kind: str, dtype: str, quick: bool, meter: EnergyMeter | None, progress: ProgressCallback
) -> _Run | None:
    """One timed run; None when the device ran out of memory, or spilled into system RAM (Windows)."""
    warmup_s, block_s, blocks, max_s = _plan(kind, quick)
    try:
        card = _CudaStart.now(dev) if dev.type == "cuda" else None
        trainer = Trainer(cfg, dev, dtype)
        done, fraction, start = 0, 0.0, time.perf_counter()

        def step() -> None:
            """One step, and progress by time against the plan (warm-up + blocks of >= 1 step)."""
            nonlocal done, fraction
            began = time.perf_counter()
            trainer()
            done += 1
            now = time.perf_counter()
            expected = warmup_s + (2 + blocks) * max(block_s, now - began)
            fraction = max(fraction, min(0.7, 0.7 * (now - start) / expected))
            progress(f"training on {dev}: step {done}", fraction)

        timing = DeviceTimer(dev).measure(step, block_s=block_s, blocks=blocks, max_s=max_s, warmup_s=warmup_s, min_blocks=3)
        synchronize(dev)
        if card is not None:
            if card.spilled(dev):
                return None  # paged over PCIe: the figure would be the bus's, not the card's
            peak, method = torch.cuda.max_memory_allocated(dev), "torch.cuda.max_memory_allocated"
        elif dev.type == "cpu":
            progress(f"training on {dev}: peak memory of one step", 0.75)
            peak, method = cpu_step_peak_bytes(trainer), "CPU allocator events (torch.profiler)"
        else:
            peak, method = None, "not measurable on mps"
        return _Run(cfg, timing, peak, method, trainer.optimizer_name, energy_of(meter, trainer, dev))
    except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is one
        if not _is_oom(exc):
            raise
        return None


def _throughput_measurements(
    run: _Run, budget: _Budget, requested: GPTConfig, device: str, dtype: str, peak_flops: float | None, measured_matmul_flops: float | None
) -> list[Measurement]:
    cfg = run.cfg
    flops_per_token = model_flops_per_token(cfg)
    tokens_per_s = [cfg.tokens_per_step / s for s in run.timing.seconds_per_call]
    params = {
        **asdict(cfg),
        "requested_batch_size": requested.batch_size,
        "tokens_per_step": cfg.tokens_per_step,
        "model_params": cfg.n_params,
        "model_flops_per_token": flops_per_token,
        "model_flops_per_s": flops_per_token * statistics.median(tokens_per_s),
        "peak_memory_bytes": run.peak_memory,
        "peak_memory_method": run.peak_memory_method,
        "memory_model_bytes": training_memory(cfg, dtype).total,
        **budget.params(),
        "optimizer": run.optimizer,
        "autocast": dtype != "fp32",
        "warmup_steps": run.timing.warmup_calls,
        "threads": torch.get_num_threads() if device == "cpu" else None,
    }
    out = [
        Measurement(
            probe=PROBE,
            metric="train_tokens_per_s",
            unit="tokens/s",
            dtype=dtype,
            device=device,
            samples=tokens_per_s,
            params=params,
            energy=run.energy,
        )
    ]
    for variant, peak, key in (("datasheet", peak_flops, "peak_flops"), ("measured-matmul", measured_matmul_flops, "matmul_flops")):
        if peak is not None:
            out.append(
                Measurement(
                    probe=PROBE,
                    metric="train_mfu",
                    unit="ratio",
                    dtype=dtype,
                    device=device,
                    variant=variant,
                    samples=[t * flops_per_token / peak for t in tokens_per_s],
                    params={**asdict(cfg), "model_flops_per_token": flops_per_token, key: peak},
                )
            )
    return out


def _largest_trainable(dev: torch.device, dtype: str) -> Measurement | Unavailable:
    """`train_max_params`: by real steps on a CUDA/ROCm GPU, by the memory model elsewhere.

    On the CPU running out of memory kills the process instead of raising, and MPS swaps
    before it fails, so only CUDA/ROCm can be probed by trying.
    """
    release(dev)  # the throughput run's model is freed but still cached by torch
    budget = _budget(dev)
    predicted = _largest_predicted(dtype, budget.usable)
    if dev.type != "cuda":
        if predicted == 0:
            return _nothing_fits(dev, dtype, budget)
        return _max_params_measurement(dev, dtype, max_params_config(predicted), "memory-model", budget, {})

    tries: dict[int, int | None] = {}

    def fits(n_layer: int) -> bool:
        tries[n_layer] = _one_step_peak(max_params_config(n_layer), dev, dtype)
        release(dev)
        return tries[n_layer] is not None

    n = largest_fitting(predicted, fits)
    if n == 0:
        return _nothing_fits(dev, dtype, budget)
    extra = {
        "peak_memory_bytes": tries[n],
        "predicted_n_layer": predicted,
        "tries": {str(k): v is not None for k, v in sorted(tries.items())},
    }
    return _max_params_measurement(dev, dtype, max_params_config(n), "real-step", budget, extra)


def largest_fitting(predicted: int, fits: Callable[[int], bool], extra_tries: int = MAX_PARAMS_EXTRA_TRIES) -> int:
    """The largest n that fits, searched from the memory model's prediction; 0 when none does.

    Goes up at most `extra_tries` steps while they fit (the model may be cautious), down as far
    as needed while they fail (it may be bold). Assumes fitting is monotonic in n; tries each n
    at most once, since on a GPU every try builds a model and runs real steps.
    """
    n = max(predicted, 1)
    if fits(n):
        for _ in range(extra_tries):
            if not fits(n + 1):
                break
            n += 1
        return n
    n -= 1
    while n >= 1 and not fits(n):
        n -= 1
    return n


def _largest_predicted(dtype: str, usable: int) -> int:
    """Most layers of the max-params family the memory model fits in `usable` bytes (0: none)."""
    n = 0
    while training_memory(max_params_config(n + 1), dtype).total <= usable:
        n += 1
    return n


def _one_step_peak(cfg: GPTConfig, dev: torch.device, dtype: str) -> int | None:
    """Peak bytes of two real steps (the first allocates gradients and AdamW states).

    None when they ran out of memory, or when they only ran by spilling into system RAM (Windows'
    sysmem fallback): that model does not fit the card.
    """
    card = _CudaStart.now(dev)
    try:
        trainer = Trainer(cfg, dev, dtype)
        trainer()
        trainer()
        synchronize(dev)
        if card.spilled(dev):
            return None
        return torch.cuda.max_memory_allocated(dev)
    except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is one
        if not _is_oom(exc):
            raise
        return None


def _max_params_measurement(dev: torch.device, dtype: str, cfg: GPTConfig, method: str, budget: _Budget, extra: dict) -> Measurement:
    return Measurement(
        probe=PROBE,
        metric="train_max_params",
        unit="params",
        dtype=dtype,
        device=str(dev),
        samples=[float(cfg.n_params)],
        params={
            **asdict(cfg),
            "method": method,
            "memory_model_bytes": training_memory(cfg, dtype).total,
            **budget.params(),
            **extra,
        },
    )


def _nothing_fits(dev: torch.device, dtype: str, budget: _Budget) -> Unavailable:
    smallest = max_params_config(1)
    needed = training_memory(smallest, dtype).total
    return Unavailable(
        probe=PROBE,
        metric="train_max_params",
        device=str(dev),
        dtype=dtype,
        reason=f"not even {smallest.describe()} fits: needs {needed / 1e9:.2f} GB, {budget.source}: {budget.usable / 1e9:.2f} GB",
    )
