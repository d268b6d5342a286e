"""The model and its memory: shape, FLOPs per token, bytes per GPU (docs/projection.md "Model", "Memory").

Every input figure elsewhere is a `Figure`: a value and where it came from ("measured in run 3f2a…",
"datasheet: …", "assumed: …", "option --uplink").
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Literal

from bench.errors import FlopwattError
from bench.hardware import normalize_dtype

HOUR = 3600.0
DAY = 86400.0
YEAR = 365.25 * DAY

Recompute = Literal["selective", "full"]


@dataclass(frozen=True)
class Figure:
    """A number and where it came from."""

    value: float
    source: str


#: The lowest utilisation (MFU) taken: below it a projection's step counts overflow a float, and
#: nothing real trains at a millionth of its peak.
MIN_MFU = 1e-6


def check(value: float, what: str, low: float, high: float, *, low_inclusive: bool = False) -> float:
    """Reject zero, negative, non-finite and absurd inputs with a message naming the field."""
    if not math.isfinite(value) or value < low or (value == low and not low_inclusive) or value > high:
        bound = f"{'>=' if low_inclusive else '>'} {low:g} and <= {high:g}"
        shortest = repr(float(value)).removesuffix(".0")  # every digit it takes: 1e9 + 1 is not 1e+09
        raise FlopwattError(f"{what} must be {bound}, got {shortest}")
    return value


@dataclass(frozen=True)
class ModelSpec:
    """A dense decoder-only transformer, as far as cost is concerned.

    `params` is the published count where there is one (it includes embeddings and GQA savings that
    12·L·h² misses); the shape drives activation memory, attention FLOPs and message sizes.
    """

    name: str
    params: float
    layers: int
    width: int
    heads: int
    seq: int
    vocab: int
    #: Tokens per optimizer step (global batch). Published where known.
    batch_tokens: float
    source: str
    #: Input embedding and output head share one matrix (Llama 3.2 1B and 3B do).
    tied_embeddings: bool = False

    @property
    def flops_per_token(self) -> float:
        """Training FLOPs per token: 6N + 12·L·h·s (PaLM, Chowdhery et al. 2022, appendix B)."""
        return 6 * self.params + 12 * self.layers * self.width * self.seq

    @property
    def embedding_params(self) -> float:
        """Input embedding plus output head, V·h each unless tied."""
        return self.vocab * self.width * (1 if self.tied_embeddings else 2)

    @property
    def layer_params(self) -> float:
        """Parameters of one transformer layer: what is not embedding, shared evenly."""
        return max(0.0, self.params - self.embedding_params) / self.layers


def _preset(name: str, params: float, layers: int, width: int, heads: int, seq: int, vocab: int,
            batch_tokens: float, source: str, tied: bool = False) -> ModelSpec:
    return ModelSpec(name, params, layers, width, heads, seq, vocab, batch_tokens, source, tied)


#: The presets the CLI accepts for --params, each a published architecture.
PRESETS: Mapping[str, ModelSpec] = MappingProxyType({
    "125M": _preset("125M", 125e6, 12, 768, 12, 2048, 50257, 0.5e6,
                    "GPT-3 Small (Brown et al. 2020, Table 2.1)", tied=True),
    "1B": _preset("1B", 1.24e9, 16, 2048, 32, 8192, 128256, 1e6,
                  "Llama 3.2 1B (Meta model card); batch assumed 1M tokens", tied=True),
    "3B": _preset("3B", 3.21e9, 28, 3072, 24, 8192, 128256, 2e6,
                  "Llama 3.2 3B (Meta model card); batch assumed 2M tokens", tied=True),
    "7B": _preset("7B", 6.74e9, 32, 4096, 32, 4096, 32000, 4e6,
                  "Llama 2 7B (Touvron et al. 2023, Table 1: 4M-token batch)"),
    "13B": _preset("13B", 13.0e9, 40, 5120, 40, 4096, 32000, 4e6,
                   "Llama 2 13B (Touvron et al. 2023, Table 1)"),
    "70B": _preset("70B", 69.0e9, 80, 8192, 64, 4096, 32000, 4e6,
                   "Llama 2 70B (Touvron et al. 2023, Table 1; GQA)"),
    "405B": _preset("405B", 405e9, 126, 16384, 128, 8192, 128256, 16e6,
                    "Llama 3.1 405B (Llama 3 Herd of Models, 2024: Table 3, 16M-token batch)"),
})

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12, "p": 1e15}
_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbgtp]?)\s*$", re.IGNORECASE)


def parse_quantity(text: str | float, what: str) -> float:
    """"7B" -> 7e9, "140B" -> 1.4e11, "1.5T" -> 1.5e12, "2e9" -> 2e9; FlopwattError names `what`."""
    if isinstance(text, (int, float)):
        return float(text)
    match = _QUANTITY.match(text)
    if not match:
        raise FlopwattError(f"{what}: cannot read {text!r} (write e.g. 7B, 140B, 1.5T or 2e9)")
    return float(match.group(1)) * _SUFFIX[match.group(2).lower()]


def model_spec(params: str | float | None = None, *, layers: int | None = None, width: int | None = None,
               heads: int | None = None, seq: int | None = None, vocab: int | None = None,
               batch_tokens: float | None = None) -> ModelSpec:
    """A model from a preset name, a parameter count, or a shape; explicit shape fields override.

    A bare parameter count gets a Llama-like shape: width = 128·layers (Llama 2 7B/13B), so
    12·L·h² = N gives L = (N / (12·128²))^(1/3) (docs/projection.md, "Model").
    """
    key = params.strip().upper() if isinstance(params, str) else None
    if key in PRESETS:
        base = PRESETS[key]
    elif params is None and layers is not None and width is not None:
        check(layers, "layers", 1, 10_000, low_inclusive=True)
        check(width, "width", 1, 1e6, low_inclusive=True)
        n = 12 * layers * width**2 + (vocab or 32000) * width
        base = ModelSpec(f"{n / 1e9:.3g}B", n, layers, width, heads or max(1, width // 128), seq or 4096,
                         vocab or 32000, 4e6, "shape given; params = 12·L·h² + V·h")
    elif params is None:
        raise FlopwattError("model: give --params (a count or one of " + ", ".join(PRESETS) + ") or a shape")
    else:
        n = check(parse_quantity(params, "params"), "params", 1e6, 1e14)
        lay = max(2, round((n / (12 * 128**2)) ** (1 / 3)))
        wid = max(128, round(math.sqrt(n / (12 * lay)) / 128) * 128)
        base = ModelSpec(f"{n / 1e9:.3g}B", n, lay, wid, wid // 128, 4096, 32000,
                         4e6 if n >= 1e9 else 0.5e6,
                         "parameter count given; Llama-like shape derived (width = 128 x layers)")
    given = {"layers": layers, "width": width, "heads": heads, "seq": seq, "vocab": vocab, "batch_tokens": batch_tokens}
    spec = replace(base, **{k: v for k, v in given.items() if v is not None})
    check(spec.layers, "layers", 1, 10_000, low_inclusive=True)
    check(spec.width, "width", 1, 1e6, low_inclusive=True)
    check(spec.heads, "heads", 1, spec.width, low_inclusive=True)
    check(spec.seq, "sequence length", 1, 1e7, low_inclusive=True)
    check(spec.vocab, "vocabulary", 1, 1e7, low_inclusive=True)
    check(spec.batch_tokens, "batch tokens", 0, 1e10)
    check(spec.params, "params", 1e6, 1e14)
    return spec


# ------------------------------------------------------------------------------------------------
# Memory (Transformer Math 101; Korthikanti et al. 2022; Rajbhandari et al. 2020; Dettmers et al. 2022)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryOptions:
    """How a run fits a model on a card, each with its memory and speed cost (docs: "Memory")."""

    #: Cross-entropy in chunks (Liger-Kernel's fused linear cross-entropy, Hsu et al. 2024): no full
    #: fp32 logits. On by default, as practitioners train.
    chunked_cross_entropy: bool = True
    #: Adam's two moments in 8 bits (Dettmers et al. 2022, bitsandbytes): 2 bytes/param instead of 8.
    optimizer_8bit: bool = False
    #: Optimizer state and step on the host (ZeRO-Offload, Ren et al. 2021): 0 optimizer bytes on the
    #: GPU, 12 per param in host RAM, gradients down and weights up over PCIe each step.
    offload_optimizer: bool = False


def memory_advice(options: MemoryOptions, *more: str) -> str:
    """'try --a, --b or --c': the memory-saving options not already on, then `more` (never empty)."""
    tries = [flag for flag, on in (("--optimizer-8bit", options.optimizer_8bit),
                                   ("--offload-optimizer", options.offload_optimizer)) if not on] + list(more)
    return "try " + (f"{', '.join(tries[:-1])} or {tries[-1]}" if len(tries) > 1 else tries[0])


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU, and what lives in host RAM."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    logits: float
    recompute: Recompute
    #: Sequences per micro-batch these activations are for.
    micro_batch: int = 1
    #: Optimizer state held in host RAM (offload), per GPU.
    host_optimizer: float = 0.0

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.logits


def logits_bytes(model: ModelSpec, tokens: float, chunked: bool) -> float:
    """fp32 logits of `tokens` tokens: 4·T·V bytes, or one chunk of them as Liger-Kernel chunks:
    next_pow2(ceil(T / ceil(V/h))) tokens at a time (liger_kernel/ops/fused_linear_cross_entropy.py)."""
    if not chunked:
        return 4 * tokens * model.vocab
    chunk = 2 ** math.ceil(math.log2(max(1.0, math.ceil(tokens / math.ceil(model.vocab / model.width)))))
    return 4 * min(tokens, chunk) * model.vocab


def state_bytes_per_param(dtype: str, options: MemoryOptions = MemoryOptions()) -> tuple[float, float, float]:
    """(weights, gradients, optimizer) bytes per parameter on the GPU.

    Mixed precision with Adam: 2 + 2 + 12 (fp32 master, momentum, variance); fp32 training: 4 + 4 + 8.
    8-bit Adam keeps the master copy and two 1-byte moments: 12 -> 6 (fp32: 8 -> 2). Offload: 0.
    """
    wide = normalize_dtype(dtype) in ("fp32", "tf32", "fp64")
    w, g, o = (4.0, 4.0, 8.0) if wide else (2.0, 2.0, 12.0)
    if options.optimizer_8bit:
        o -= 6.0
    return w, g, (0.0 if options.offload_optimizer else o)


def memory_per_gpu(model: ModelSpec, dtype: str, *, state_shards: float = 1, optimizer_shards: float = 1,
                   tp: int = 1, layers_in_flight: float | None = None, recompute: Recompute = "selective",
                   micro_batch: int = 1, options: MemoryOptions = MemoryOptions(),
                   logits: bool = True) -> Memory:
    """Weights, gradients, Adam state and activations for micro-batches of `micro_batch` sequences.

    Activations per layer per sequence: 34·s·h bytes at 16 bits with flash/selective recomputation
    (Korthikanti et al. 2022, eq. 2 without the 5as/h term), or 2·s·h stored plus one layer's 34·s·h
    with full recomputation; fp32 doubles them. Tensor parallelism with sequence parallelism
    divides activations by tp. `state_shards` divides weights and gradients (ZeRO-3 / FSDP or a
    pipeline stage's share); `optimizer_shards` the optimizer state (ZeRO-1 and up).
    """
    w, g, o = state_bytes_per_param(dtype, options)
    wide = normalize_dtype(dtype) in ("fp32", "tf32", "fp64")
    scale = 2.0 if wide else 1.0
    sh = model.seq * model.width * micro_batch
    layers = model.layers if layers_in_flight is None else layers_in_flight
    act = 34 * sh * scale * layers if recompute == "selective" else 2 * sh * scale * layers + 34 * sh * scale
    out = logits_bytes(model, model.seq * micro_batch, options.chunked_cross_entropy) / tp if logits else 0.0
    n = model.params
    host = (12.0 if not wide else 8.0) * n / optimizer_shards if options.offload_optimizer else 0.0
    return Memory(w * n / state_shards, g * n / state_shards, o * n / optimizer_shards, act / tp, out, recompute,
                  micro_batch, host)


def fit(model: ModelSpec, dtype: str, budget: float, **kw: object) -> Memory | None:
    """Selective recomputation if it fits, else full recomputation, else None."""
    for mode in ("selective", "full"):
        mem = memory_per_gpu(model, dtype, recompute=mode, **kw)  # type: ignore[arg-type]
        if mem.total <= budget:
            return mem
    return None


def largest_micro_batch(model: ModelSpec, dtype: str, budget: float, most: int, **kw: object) -> Memory | None:
    """The most sequences per micro-batch (up to `most`) that fit `budget`, selective recomputation
    before full: as practitioners size micro-batches, so gradient accumulation only makes up the rest."""
    for mode in ("selective", "full"):
        def at(micro: int, mode: str = mode) -> Memory:
            return memory_per_gpu(model, dtype, recompute=mode, micro_batch=micro, **kw)  # type: ignore[arg-type]

        if at(1).total > budget:
            continue
        lo, hi = 1, max(1, int(most))
        while lo < hi:  # memory grows with the micro-batch: bisect for the largest that fits
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if at(mid).total <= budget else (lo, mid - 1)
        return at(lo)
    return None


def recompute_factor(memory: Memory) -> float:
    """Full recomputation runs the forward pass twice: 8N instead of 6N FLOPs per token."""
    return 8 / 6 if memory.recompute == "full" else 1.0
