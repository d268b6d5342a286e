"""What training a model would take: colocated in a datacenter, or on a swarm of home machines.

Pure computation (no I/O, no module-level mutable state): the CLI builds the inputs, this module
returns numbers, the report draws them. Every formula is written down, with its source, in
docs/projection.md; the function that applies it names the section. All figures are SI: FLOP/s,
bytes, B/s for memory and datacenter fabrics, bit/s for home links, s, W, J, USD, kg CO2.

Every input figure is a `Figure`: a value and where it came from ("measured in run 3f2a…",
"datasheet: …", "assumed: …", "option --uplink"), so the report can say which numbers are
measurements and which are borrowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Literal

from bench.errors import FlopwattError
from bench.hardware import Card, find_card, get_card, normalize_dtype

Strategy = Literal["colocated", "ddp", "diloco", "pipeline"]
STRATEGIES: tuple[Strategy, ...] = ("colocated", "ddp", "diloco", "pipeline")
SWARM_STRATEGIES: tuple[Strategy, ...] = ("ddp", "diloco", "pipeline")

HOUR = 3600.0
DAY = 86400.0
YEAR = 365.25 * DAY


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """A number and where it came from."""

    value: float
    source: str


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

    @property
    def flops_per_token(self) -> float:
        """Training FLOPs per token: 6N + 12·L·h·s (PaLM, Chowdhery et al. 2022, appendix B)."""
        return 6 * self.params + 12 * self.layers * self.width * self.seq


def _preset(name: str, params: float, layers: int, width: int, heads: int, seq: int, vocab: int,
            batch_tokens: float, source: str) -> ModelSpec:
    return ModelSpec(name, params, layers, width, heads, seq, vocab, batch_tokens, source)


#: The presets the CLI accepts for --params, each a published architecture.
PRESETS: Mapping[str, ModelSpec] = MappingProxyType({
    "125M": _preset("125M", 125e6, 12, 768, 12, 2048, 50257, 0.5e6,
                    "GPT-3 Small (Brown et al. 2020, Table 2.1)"),
    "1B": _preset("1B", 1.24e9, 16, 2048, 32, 8192, 128256, 1e6,
                  "Llama 3.2 1B (Meta model card); batch assumed 1M tokens"),
    "3B": _preset("3B", 3.21e9, 28, 3072, 24, 8192, 128256, 2e6,
                  "Llama 3.2 3B (Meta model card); batch assumed 2M tokens"),
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


def _check(value: float, what: str, low: float, high: float, *, low_inclusive: bool = False) -> float:
    """Reject zero, negative, non-finite and absurd inputs with a message naming the field."""
    if not math.isfinite(value) or value < low or (value == low and not low_inclusive) or value > high:
        bound = f"{'>=' if low_inclusive else '>'} {low:g} and <= {high:g}"
        raise FlopwattError(f"{what} must be {bound}, got {value:g}")
    return value


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
        _check(layers, "layers", 1, 10_000, low_inclusive=True)
        _check(width, "width", 1, 1e6, low_inclusive=True)
        n = 12 * layers * width**2 + (vocab or 32000) * width
        base = ModelSpec(f"{n / 1e9:.3g}B", n, layers, width, heads or max(1, width // 128), seq or 4096,
                         vocab or 32000, 4e6, "shape given; params = 12·L·h² + V·h")
    elif params is None:
        raise FlopwattError("model: give --params (a count or one of " + ", ".join(PRESETS) + ") or a shape")
    else:
        n = _check(parse_quantity(params, "params"), "params", 1e6, 1e14)
        lay = max(2, round((n / (12 * 128**2)) ** (1 / 3)))
        wid = max(128, round(math.sqrt(n / (12 * lay)) / 128) * 128)
        base = ModelSpec(f"{n / 1e9:.3g}B", n, lay, wid, wid // 128, 4096, 32000,
                         4e6 if n >= 1e9 else 0.5e6,
                         "parameter count given; Llama-like shape derived (width = 128 x layers)")
    given = {"layers": layers, "width": width, "heads": heads, "seq": seq, "vocab": vocab, "batch_tokens": batch_tokens}
    spec = replace(base, **{k: v for k, v in given.items() if v is not None})
    _check(spec.layers, "layers", 1, 10_000, low_inclusive=True)
    _check(spec.width, "width", 1, 1e6, low_inclusive=True)
    _check(spec.heads, "heads", 1, spec.width, low_inclusive=True)
    _check(spec.seq, "sequence length", 1, 1e7, low_inclusive=True)
    _check(spec.vocab, "vocabulary", 1, 1e7, low_inclusive=True)
    _check(spec.batch_tokens, "batch tokens", 0, 1e10)
    _check(spec.params, "params", 1e6, 1e14)
    return spec


@dataclass(frozen=True)
class Node:
    """One machine of the swarm (or one GPU of the datacenter), every figure labelled.

    `flops` is what matmul reaches in `dtype` (a measured sustained rate, or a datasheet peak);
    `utilisation` is the share of it that training reaches. The link figures are None until a
    run or an option provides them; the swarm strategies need them.
    """

    name: str
    dtype: str
    flops: Figure
    utilisation: Figure
    memory_bytes: Figure
    watts: Figure
    idle_watts: Figure
    price_usd: Figure | None = None
    uplink_bps: Figure | None = None
    downlink_bps: Figure | None = None
    rtt_s: Figure | None = None

    @property
    def training_flops(self) -> float:
        return self.flops.value * self.utilisation.value


#: Training MFU assumed where nothing was measured: Llama 3.1 405B ran at 38-43% of BF16 peak on
#: 16k H100s (Llama 3 Herd of Models, Table 4); BLOOM at 50% (156 TFLOP/s of 312 on A100).
DEFAULT_MFU = 0.40
#: Training's share of *measured sustained* matmul, where a run measured matmul but not training:
#: 40% MFU over the ~75-85% of peak that cuBLAS sustains on A100/H100 (docs/projection.md).
DEFAULT_MATMUL_SHARE = 0.5
#: While waiting on the network a GPU idles at a fraction of board power (assumed where unmeasured).
DEFAULT_IDLE_SHARE = 0.2


def node_from_card(card: Card, *, utilisation: float | None = None) -> Node:
    """A node with datasheet figures: peak of the fastest training dtype, board power, launch price."""
    dtype = card.best_training_dtype
    src = card.source
    util = Figure(utilisation, "option") if utilisation is not None else \
        Figure(DEFAULT_MFU, "assumed: 40% MFU (Llama 3.1 405B reached 38-43%)")
    return Node(
        name=card.name,
        dtype=dtype,
        flops=Figure(card.peak[dtype], f"datasheet {dtype} peak: {src('flops')}"),
        utilisation=util,
        memory_bytes=Figure(float(card.memory_bytes), f"datasheet: {src('memory')}"),
        watts=Figure(card.board_power_w, f"datasheet board power: {src('power')}"),
        idle_watts=Figure(card.board_power_w * DEFAULT_IDLE_SHARE,
                          f"assumed: {DEFAULT_IDLE_SHARE:.0%} of board power while waiting on the network"),
        price_usd=Figure(card.launch_price_usd, src("price")),
    )


def with_link(node: Node, *, uplink_bps: float | None = None, downlink_bps: float | None = None,
              rtt_s: float | None = None, source: str = "option") -> Node:
    """The node with its home link replaced where a figure is given (options beat a run's measurements)."""
    def label(flag: str) -> str:
        return f"{source} {flag}" if source == "option" else source

    changes: dict[str, Figure] = {}
    if uplink_bps is not None:
        changes["uplink_bps"] = Figure(_check(uplink_bps, "uplink", 0, 1e13), label("--uplink"))
    if downlink_bps is not None:
        changes["downlink_bps"] = Figure(_check(downlink_bps, "downlink", 0, 1e13), label("--downlink"))
    if rtt_s is not None:
        changes["rtt_s"] = Figure(_check(rtt_s, "rtt", 0, 60, low_inclusive=True), label("--rtt"))
    return replace(node, **changes)


@dataclass(frozen=True)
class Fabric:
    """A datacenter's interconnect, per GPU and per direction, in B/s."""

    gpus_per_node: int
    intra_bw: float
    inter_bw: float
    source: str


def default_fabric(card: Card) -> Fabric:
    """An 8-GPU server: NVLink inside (PCIe without it), one RDMA NIC per GPU between servers.

    DGX A100 has 8x 200 Gb/s HDR HCAs, DGX H100/H200/B200 8x 400 Gb/s; a consumer card is assumed
    on PCIe with a 100 Gb/s NIC per server (docs/projection.md, "Datacenter fabric").
    """
    intra = card.nvlink_bandwidth / 2 if card.nvlink_bandwidth else card.pcie.bandwidth
    if card.datacenter:
        nic_bits = 400e9 if card.pcie.generation >= 5 else 200e9
        src = f"DGX-style server: 8 GPUs, NVLink {intra / 1e9:.0f} GB/s per direction, {nic_bits / 1e9:.0f} Gb/s NIC per GPU"
    else:
        nic_bits = 100e9 / 8
        src = f"assumed: 8 GPUs on PCIe {intra / 1e9:.0f} GB/s, one 100 Gb/s NIC per server"
    return Fabric(8, intra, nic_bits / 8, src)


@dataclass(frozen=True)
class Prices:
    """Money and carbon. Defaults are stated in docs/projection.md with their sources."""

    #: US industrial average 2024, about $0.08/kWh (EIA Electric Power Monthly, table 5.6.A).
    datacenter_usd_per_kwh: float = 0.08
    #: US residential average 2024, about $0.165/kWh (same table); much of Europe pays $0.25-0.40.
    home_usd_per_kwh: float = 0.165
    #: Large modern datacenters report 1.1-1.2 (Google 1.10, Meta 1.08); industry average 1.56 (Uptime 2024).
    pue: float = 1.2
    #: A home has no cooling plant charged to the GPU; its waste heat is the room's.
    home_pue: float = 1.0
    #: GPUs are commonly written off over 4-6 years; hyperscalers use 5-6 for servers.
    amortisation_years: float = 4.0
    #: Datacenter capital per GPU over the GPU's own price: the server, CPUs, NICs, switches and
    #: building around it (assumed; a DGX H100 with 8 GPUs was reported at about $300-400k).
    server_capex_factor: float = 1.5
    #: World average grid intensity ~ 480 gCO2/kWh (IEA/Ember 2023); France ~ 60, US ~ 370.
    grid_gco2_per_kwh: float = 480.0
    #: Count the swarm's own hardware at its price amortised over the job (machines people own
    #: still wear out); False counts only its power bill.
    charge_swarm_hardware: bool = True

    def validated(self) -> Prices:
        _check(self.datacenter_usd_per_kwh, "datacenter electricity price", 0, 10, low_inclusive=True)
        _check(self.home_usd_per_kwh, "home electricity price", 0, 10, low_inclusive=True)
        _check(self.pue, "PUE", 1, 5, low_inclusive=True)
        _check(self.home_pue, "home PUE", 1, 5, low_inclusive=True)
        _check(self.amortisation_years, "amortisation years", 0, 50)
        _check(self.server_capex_factor, "server capex factor", 1, 10, low_inclusive=True)
        _check(self.grid_gco2_per_kwh, "grid carbon intensity", 0, 5000, low_inclusive=True)
        return self


@dataclass(frozen=True)
class Settings:
    """Training choices, each a stated default (docs/projection.md)."""

    #: DiLoCo inner steps between outer syncs: 500 in Douillard et al. 2023.
    diloco_h: int = 500
    #: Bits per value of the DiLoCo pseudo-gradient all-reduce (OpenDiLoCo uses fp16; int8 works).
    diloco_bits: int = 8
    #: Tokens DiLoCo needs relative to synchronous training for the same loss (1.0: parity, as
    #: Douillard et al. 2023 report for 8 workers).
    diloco_token_factor: float = 1.0
    #: Bits per gradient value in the DDP all-reduce (bf16).
    grad_bits: int = 16
    #: Bits per activation value sent between SWARM pipeline stages (16; SWARM used 8-bit compression).
    activation_bits: int = 16
    #: Share of device memory a training process can use (CUDA context, allocator fragmentation).
    usable_memory: float = 0.9

    def validated(self) -> Settings:
        _check(self.diloco_h, "DiLoCo H (local steps)", 1, 1e7, low_inclusive=True)
        _check(self.diloco_bits, "DiLoCo precision bits", 1, 32, low_inclusive=True)
        _check(self.diloco_token_factor, "DiLoCo token factor", 0, 100)
        _check(self.grad_bits, "gradient bits", 1, 32, low_inclusive=True)
        _check(self.activation_bits, "activation bits", 1, 32, low_inclusive=True)
        _check(self.usable_memory, "usable memory share", 0, 1, low_inclusive=False)
        return self


# ------------------------------------------------------------------------------------------------
# Memory (Transformer Math 101; Korthikanti et al. 2022)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    recompute: Literal["selective", "full"]

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations


def memory_per_gpu(model: ModelSpec, dtype: str, *, state_shards: float = 1, optimizer_shards: float = 1,
                   tp: int = 1, layers_in_flight: float | None = None,
                   recompute: Literal["selective", "full"] = "selective") -> Memory:
    """Weights, gradients, Adam state and activations for micro-batches of one sequence.

    Mixed precision (bf16/fp16): 2 + 2 + 12 bytes/param (fp32 master, momentum, variance); fp32:
    4 + 4 + 8. Activations per layer per sequence: 34·s·h bytes at 16 bits with flash/selective
    recomputation (Korthikanti et al. 2022, eq. 2 without the 5as/h term), or 2·s·h stored plus
    one layer's 34·s·h with full recomputation; fp32 doubles them. Logits: 4·s·V bytes (fp32).
    Tensor parallelism with sequence parallelism divides activations by tp.
    """
    wide = normalize_dtype(dtype) in ("fp32", "tf32", "fp64")
    w, g, o = (4.0, 4.0, 8.0) if wide else (2.0, 2.0, 12.0)
    n = model.params
    scale = 2.0 if wide else 1.0
    sh = model.seq * model.width
    layers = model.layers if layers_in_flight is None else layers_in_flight
    if recompute == "selective":
        act = 34 * sh * scale * layers
    else:
        act = 2 * sh * scale * layers + 34 * sh * scale
    act = (act + 4 * model.seq * model.vocab) / tp
    return Memory(w * n / state_shards, g * n / state_shards, o * n / optimizer_shards, act, recompute)


# ------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Projection:
    """One strategy's answer. Figures are None when the strategy is not feasible."""

    strategy: Strategy
    feasible: bool
    reason: str
    hardware: str
    gpus: int
    tokens: float
    plan: str = ""
    steps: float | None = None
    step_s: float | None = None
    compute_s: float | None = None
    comm_s: float | None = None
    wall_clock_s: float | None = None
    gpu_hours: float | None = None
    energy_j: float | None = None
    energy_cost_usd: float | None = None
    hardware_cost_usd: float | None = None
    cost_usd: float | None = None
    co2_kg: float | None = None
    memory: Memory | None = None
    #: Where the inputs came from: figure -> label.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def energy_per_token_j(self) -> float | None:
        return self.energy_j / self.tokens if self.energy_j is not None else None

    def to_dict(self) -> dict[str, Any]:
        """The `--json` shape: flat figures plus memory per GPU in bytes."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("memory", "sources")}
        mem = self.memory
        out["memory_per_gpu_bytes"] = None if mem is None else {
            "weights": mem.weights, "gradients": mem.gradients, "optimizer": mem.optimizer,
            "activations": mem.activations, "total": mem.total, "recompute": mem.recompute,
        }
        out["sources"] = dict(self.sources)
        return out


def _infeasible(strategy: Strategy, reason: str, hardware: str, gpus: int, tokens: float,
                memory: Memory | None = None) -> Projection:
    return Projection(strategy, False, reason, hardware, gpus, tokens, memory=memory)


def _money(*, strategy: Strategy, hardware: str, gpus: int, tokens: float, plan: str, steps: float,
           step_s: float, compute_s: float, comm_s: float, active_w: float, idle_w: float,
           usd_per_kwh: float, pue: float, price_each: float | None, prices: Prices, memory: Memory,
           sources: Mapping[str, str], reason: str = "") -> Projection:
    """Turn a per-step time split into wall clock, energy, cost and CO2 (docs: "Energy, cost, CO2")."""
    wall = steps * step_s
    busy = steps * compute_s
    energy = gpus * (active_w * busy + idle_w * max(0.0, wall - busy)) * pue
    kwh = energy / 3.6e6
    energy_cost = kwh * usd_per_kwh
    hw_cost = 0.0 if price_each is None else gpus * price_each * wall / (prices.amortisation_years * YEAR)
    return Projection(
        strategy=strategy, feasible=True, reason=reason, hardware=hardware, gpus=gpus, tokens=tokens,
        plan=plan, steps=steps, step_s=step_s, compute_s=compute_s, comm_s=comm_s, wall_clock_s=wall,
        gpu_hours=gpus * wall / HOUR, energy_j=energy, energy_cost_usd=energy_cost, hardware_cost_usd=hw_cost,
        cost_usd=energy_cost + hw_cost, co2_kg=kwh * prices.grid_gco2_per_kwh / 1000, memory=memory,
        sources=MappingProxyType(dict(sources)),
    )


def node_sources(node: Node) -> dict[str, str]:
    """Where each of the node's figures came from: figure -> label."""
    out = {"flops": node.flops.source, "utilisation": node.utilisation.source,
           "memory": node.memory_bytes.source, "watts": node.watts.source, "idle_watts": node.idle_watts.source}
    for key in ("price_usd", "uplink_bps", "downlink_bps", "rtt_s"):
        fig: Figure | None = getattr(node, key)
        if fig is not None:
            out[key] = fig.source
    return out


# ------------------------------------------------------------------------------------------------
# Strategies
# ------------------------------------------------------------------------------------------------


def _fit(model: ModelSpec, dtype: str, budget: float, **kw: Any) -> Memory | None:
    """Selective recomputation if it fits, else full recomputation, else None."""
    for mode in ("selective", "full"):
        mem = memory_per_gpu(model, dtype, recompute=mode, **kw)  # type: ignore[arg-type]
        if mem.total <= budget:
            return mem
    return None


def _recompute_factor(memory: Memory) -> float:
    """Full recomputation runs the forward pass twice: 8N instead of 6N FLOPs per token."""
    return 8 / 6 if memory.recompute == "full" else 1.0


def _colocated_plan(model: ModelSpec, dtype: str, gpus: int, budget: float,
                    per_server: int) -> tuple[int, int, int, Memory] | None:
    """The smallest tp·pp (tp within a server, tp·pp dividing the GPU count) whose memory fits,
    selective recomputation before full. Stages may be uneven: the largest holds ceil(L/pp) layers;
    under 1F1B the first stage keeps min(pp, micro-batches) of them in flight (Narayanan et al. 2021)."""
    for mode in ("selective", "full"):
        found: tuple[int, int, int, Memory] | None = None
        for t in (1, 2, 4, 8):
            if t > min(gpus, per_server) or model.heads % t:
                continue
            # Weights and gradients alone (4 bytes/param, unsharded by ZeRO-1) bound pp from below.
            for p in range(max(1, math.ceil(4 * model.params / (t * budget))), min(model.layers, gpus // t) + 1):
                if found and (t * p, p) >= (found[0] * found[1], found[1]):
                    break
                if gpus % (t * p):
                    continue
                d = gpus // (t * p)
                stage_layers = math.ceil(model.layers / p)
                micro = max(1.0, model.batch_tokens / d / model.seq)
                mem = memory_per_gpu(model, dtype, state_shards=t * model.layers / stage_layers,
                                     optimizer_shards=t * d * model.layers / stage_layers, tp=t,
                                     layers_in_flight=min(p, micro) * stage_layers, recompute=mode)  # type: ignore[arg-type]
                if mem.total <= budget:
                    found = (t, p, d, mem)
                    break
        if found:
            return found
    return None


def colocated(model: ModelSpec, card: Card, gpus: int, tokens: float, *, mfu: float = DEFAULT_MFU,
              fabric: Fabric | None = None, prices: Prices = Prices(), settings: Settings = Settings()) -> Projection:
    """Datacenter training with tensor (within a server), pipeline and data parallelism.

    Picks the smallest tp·pp that fits memory (ZeRO-1 shards Adam state over the data-parallel
    replicas). Step time = max(compute at `mfu`, communication): the stated MFU already includes
    the well-overlapped communication of a tuned run, so only communication that cannot hide
    behind compute adds time (docs: "Colocated").
    """
    _check(gpus, "gpus", 1, 1e7, low_inclusive=True)
    _check(mfu, "utilisation", 0, 1, low_inclusive=False)
    fab = fabric or default_fabric(card)
    dtype = card.best_training_dtype
    hardware = f"{gpus} x {card.name}"
    budget = card.memory_bytes * settings.usable_memory
    plan = _colocated_plan(model, dtype, gpus, budget, fab.gpus_per_node)
    if plan is None:
        return _infeasible("colocated", f"does not fit {gpus} GPUs: no tp x pp split that divides {gpus} "
                           f"brings it under {budget / 2**30:.0f} GiB per GPU (a multiple of 8 GPUs helps)",
                           hardware, gpus, tokens)
    t, p, d, mem = plan
    tokens_per_replica = max(model.batch_tokens / d, model.seq)
    batch = tokens_per_replica * d
    steps = tokens / batch
    flops_step = batch * model.flops_per_token * _recompute_factor(mem)
    compute = flops_step / (gpus * card.peak[dtype] * mfu)
    # Data-parallel all-reduce of bf16 gradients (ring: 2(d-1)/d x bytes), over NVLink inside a
    # server, else limited by the server's NICs shared by its 8/t data-parallel ranks.
    grad_bytes = 2 * model.params / (t * p)
    spans = t * p * d > fab.gpus_per_node
    dp_bw = min(fab.intra_bw, fab.inter_bw * fab.gpus_per_node / t) if spans else fab.intra_bw
    dp = 2 * (d - 1) / d * grad_bytes / dp_bw if d > 1 else 0.0
    # Tensor parallel: 4 all-reduces of s·h activations per layer per sequence (Megatron), on NVLink.
    tp_bytes = 4 * (model.layers / p) * tokens_per_replica * model.width * 2 * 2 * (t - 1) / t
    tp_s = tp_bytes / fab.intra_bw
    # Pipeline: each boundary sends activations forward and gradients back, s·h·2 bytes per sequence.
    pp_s = 2 * tokens_per_replica * model.width * 2 / fab.inter_bw if p > 1 else 0.0
    comm = dp + tp_s + pp_s
    step = max(compute, comm)
    reason = "" if comm <= compute else "communication-bound: more GPUs than this batch can keep busy"
    price = Figure(card.launch_price_usd, card.source("price"))
    return _money(
        strategy="colocated", hardware=hardware, gpus=gpus, tokens=tokens,
        plan=f"tp={t} pp={p} dp={d:g}, {dtype}, {mem.recompute} recompute, MFU {mfu:.0%}",
        steps=steps, step_s=step, compute_s=compute, comm_s=comm, active_w=card.board_power_w,
        idle_w=card.board_power_w, usd_per_kwh=prices.datacenter_usd_per_kwh, pue=prices.pue,
        price_each=price.value * prices.server_capex_factor, prices=prices, memory=mem, reason=reason,
        sources={"flops": f"datasheet {dtype} peak: {card.source('flops')}", "utilisation": f"MFU {mfu:.0%}",
                 "watts": f"datasheet board power at full load: {card.source('power')}",
                 "price_usd": f"{price.source}; x{prices.server_capex_factor:g} for server and network",
                 "fabric": fab.source},
    )


def _link(node: Node) -> tuple[float, float, float]:
    missing = [name for name, fig in (("net_upload (--uplink)", node.uplink_bps),
                                      ("net_download (--downlink)", node.downlink_bps),
                                      ("net_rtt (--rtt)", node.rtt_s)) if fig is None]
    if missing:
        raise FlopwattError(f"{node.name}: the swarm strategies need its link; missing {', '.join(missing)}")
    assert node.uplink_bps and node.downlink_bps and node.rtt_s
    return node.uplink_bps.value, node.downlink_bps.value, node.rtt_s.value


def ring_allreduce_s(nbytes: float, n: int, uplink_bps: float, downlink_bps: float, rtt_s: float) -> float:
    """Ring all-reduce over home links: each node sends and receives 2(n-1)/n of the buffer, in
    2(n-1) steps each paying one one-way latency (Patarasuk & Yuan 2009; docs: "Ring all-reduce")."""
    if n <= 1:
        return 0.0
    moved = 2 * (n - 1) / n * nbytes * 8
    return max(moved / uplink_bps, moved / downlink_bps) + 2 * (n - 1) * rtt_s / 2


def _swarm_fit(model: ModelSpec, node: Node, settings: Settings) -> Memory | None:
    return _fit(model, node.dtype, node.memory_bytes.value * settings.usable_memory)


def _swarm_compute_s(model: ModelSpec, node: Node, tokens_per_node: float, mem: Memory) -> float:
    return tokens_per_node * model.flops_per_token * _recompute_factor(mem) / node.training_flops


def _swarm_result(strategy: Strategy, model: ModelSpec, node: Node, n: int, tokens: float, plan: str,
                  steps: float, step: float, compute: float, comm: float, mem: Memory, prices: Prices,
                  reason: str = "") -> Projection:
    price = node.price_usd.value if (node.price_usd and prices.charge_swarm_hardware) else None
    return _money(strategy=strategy, hardware=f"{n} x {node.name}", gpus=n, tokens=tokens, plan=plan, steps=steps,
                  step_s=step, compute_s=compute, comm_s=comm, active_w=node.watts.value,
                  idle_w=node.idle_watts.value, usd_per_kwh=prices.home_usd_per_kwh, pue=prices.home_pue,
                  price_each=price, prices=prices, memory=mem, sources=node_sources(node), reason=reason)


def _too_big(model: ModelSpec, node: Node, n: int, tokens: float, strategy: Strategy) -> Projection:
    need = memory_per_gpu(model, node.dtype, recompute="full")
    return _infeasible(strategy, f"model does not fit one node: needs {need.total / 2**30:.1f} GiB, "
                       f"{node.name} has {node.memory_bytes.value / 2**30:.1f} GiB (try pipeline)",
                       f"{n} x {node.name}", n, tokens, need)


def ddp(model: ModelSpec, node: Node, n: int, tokens: float, *, prices: Prices = Prices(),
        settings: Settings = Settings()) -> Projection:
    """Swarm data parallel: every node holds the whole model; gradients are ring-all-reduced each step.

    Each node works through batch/n tokens (gradient accumulation), then all-reduces. PyTorch DDP
    overlaps the all-reduce with the backward pass (2/3 of compute), so
    step = compute/3 + max(2·compute/3, all-reduce) (Li et al. 2020, PyTorch Distributed).
    """
    up, down, rtt = _link(node)
    mem = _swarm_fit(model, node, settings)
    if mem is None:
        return _too_big(model, node, n, tokens, "ddp")
    per_node = max(model.batch_tokens / n, model.seq)
    steps = tokens / (per_node * n)
    compute = _swarm_compute_s(model, node, per_node, mem)
    comm = ring_allreduce_s(model.params * settings.grad_bits / 8, n, up, down, rtt)
    step = compute / 3 + max(2 * compute / 3, comm)
    return _swarm_result("ddp", model, node, n, tokens,
                         f"{per_node:,.0f} tokens/node/step, {settings.grad_bits}-bit gradients, "
                         f"{mem.recompute} recompute", steps, step, compute, comm, mem, prices)


def diloco(model: ModelSpec, node: Node, n: int, tokens: float, *, prices: Prices = Prices(),
           settings: Settings = Settings()) -> Projection:
    """DiLoCo: H local AdamW steps, then an all-reduce of pseudo-gradients (Douillard et al. 2023).

    The outer all-reduce moves N·bits/8 bytes once per H inner steps and blocks them, so per inner
    step comm = all-reduce / H and step = compute + comm. The outer state (a copy of the weights
    and Nesterov momentum) lives in host RAM, touched once per round, as OpenDiLoCo does.
    """
    up, down, rtt = _link(node)
    mem = _swarm_fit(model, node, settings)
    if mem is None:
        return _too_big(model, node, n, tokens, "diloco")
    tokens = tokens * settings.diloco_token_factor
    per_node = max(model.batch_tokens / n, model.seq)
    steps = tokens / (per_node * n)
    compute = _swarm_compute_s(model, node, per_node, mem)
    comm = ring_allreduce_s(model.params * settings.diloco_bits / 8, n, up, down, rtt) / settings.diloco_h
    return _swarm_result("diloco", model, node, n, tokens,
                         f"H={settings.diloco_h}, {settings.diloco_bits}-bit pseudo-gradients, "
                         f"{per_node:,.0f} tokens/node/step", steps, compute + comm, compute, comm, mem, prices)


def pipeline(model: ModelSpec, node: Node, n: int, tokens: float, *, prices: Prices = Prices(),
             settings: Settings = Settings()) -> Projection:
    """SWARM-style pipeline (Ryabinin et al. 2023): layers split over k nodes, n//k pipelines.

    Per micro-batch (one sequence) a stage computes its L/k layers and sends s·h activations on
    and gradients back over its home link; with many micro-batches in flight the slower of the
    two sets the pace: step = (m + k - 1)·max(stage compute, stage transfer) + (k-1)·RTT, then the
    replicas of each stage all-reduce its N/k gradients (docs: "Pipeline").
    """
    up, down, rtt = _link(node)
    if _swarm_fit(model, node, settings) is not None:
        return _infeasible("pipeline", "model fits one node: no pipeline needed (see ddp, diloco)",
                           f"{n} x {node.name}", n, tokens)
    budget = node.memory_bytes.value * settings.usable_memory
    found = None
    # Every stage holds at least 16 bytes per parameter of its share: start at that bound.
    for k in range(max(2, math.ceil(16 * model.params / budget)), min(n, model.layers) + 1):
        stage_layers = math.ceil(model.layers / k)
        in_flight = min(k, math.ceil(max(model.batch_tokens / (n // k), model.seq) / model.seq))
        found = _fit(model, node.dtype, budget, state_shards=model.layers / stage_layers,
                     optimizer_shards=model.layers / stage_layers, layers_in_flight=in_flight * stage_layers)
        if found is not None:
            break
    if found is None:
        k_min = min(model.layers, math.ceil(16 * model.params / budget))
        return _infeasible("pipeline", f"not enough nodes: a stage may hold {budget / 2**30:.1f} GiB, so "
                           f"the model needs at least {k_min} nodes, there are {n}",
                           f"{n} x {node.name}", n, tokens)
    mem = found
    replicas = n // k
    used = replicas * k
    per_pipe = max(model.batch_tokens / replicas, model.seq)
    micro = math.ceil(per_pipe / model.seq)
    steps = tokens / (per_pipe * replicas)
    share = stage_layers / model.layers  # the largest stage sets the pace
    stage_compute = model.seq * model.flops_per_token * _recompute_factor(mem) * share / node.training_flops
    msg_bits = 2 * model.seq * model.width * settings.activation_bits
    stage_comm = max(msg_bits / up, msg_bits / down)
    allreduce = ring_allreduce_s(model.params * share * settings.grad_bits / 8, replicas, up, down, rtt)
    step = (micro + k - 1) * max(stage_compute, stage_comm) + (k - 1) * rtt + allreduce
    compute = micro * stage_compute
    comm = micro * stage_comm + (k - 1) * rtt + allreduce
    idle = f"; {n - used} nodes idle" if used < n else ""
    return _swarm_result("pipeline", model, node, used, tokens,
                         f"{k} stages x {replicas} pipelines, {micro} micro-batches/step{idle}",
                         steps, step, compute, comm, mem, prices)


# ------------------------------------------------------------------------------------------------
# Scenario: one question, every strategy
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """Train `model` on `tokens`: on `nodes` of `node` at home, or on `dc_gpus` of `dc_card`."""

    model: ModelSpec
    node: Node
    nodes: int
    tokens: float
    dc_card: Card
    dc_gpus: int
    strategies: tuple[Strategy, ...] = STRATEGIES
    prices: Prices = Prices()
    settings: Settings = Settings()
    mfu: float = DEFAULT_MFU


def default_tokens(model: ModelSpec) -> float:
    """Chinchilla-optimal: 20 tokens per parameter (Hoffmann et al. 2022)."""
    return 20 * model.params


def matched_dc_gpus(node: Node, nodes: int, card: Card) -> int:
    """Datacenter GPUs of `card` with the swarm's training FLOP/s, in whole 8-GPU servers."""
    dc = card.peak[card.best_training_dtype] * DEFAULT_MFU
    return max(8, 8 * math.ceil(nodes * node.training_flops / dc / 8))


def scenario(model: ModelSpec, node: Node, nodes: int, *, tokens: float | None = None, dc_card: Card | str = "h100",
             dc_gpus: int | None = None, strategy: str = "auto", prices: Prices = Prices(),
             settings: Settings = Settings(), mfu: float = DEFAULT_MFU) -> Scenario:
    """Validate inputs into a Scenario; defaults: Chinchilla tokens, a FLOP-matched H100 cluster."""
    _check(nodes, "gpus (nodes)", 1, 1e7, low_inclusive=True)
    tok = default_tokens(model) if tokens is None else _check(tokens, "tokens", 0, 1e16)
    card = get_card(dc_card) if isinstance(dc_card, str) else dc_card
    dc = matched_dc_gpus(node, nodes, card) if dc_gpus is None else int(_check(dc_gpus, "datacenter gpus", 1, 1e7,
                                                                               low_inclusive=True))
    if strategy == "auto":
        chosen: tuple[Strategy, ...] = STRATEGIES
    elif strategy in STRATEGIES:
        chosen = (strategy,)  # type: ignore[assignment]
    else:
        raise FlopwattError(f"strategy must be auto or one of {', '.join(STRATEGIES)}, got {strategy!r}")
    _check(mfu, "utilisation (MFU)", 0, 1)
    for fig, what in ((node.flops, "node FLOP/s"), (node.memory_bytes, "node memory"),
                      (node.utilisation, "node utilisation"), (node.watts, "node watts")):
        _check(fig.value, what, 0, 1e18)
    _check(node.utilisation.value, "node utilisation", 0, 1)
    return Scenario(model, node, int(nodes), tok, card, dc, chosen, prices.validated(), settings.validated(), mfu)


def project(sc: Scenario) -> list[Projection]:
    """Every chosen strategy, feasible or not (with the reason)."""
    out: list[Projection] = []
    for name in sc.strategies:
        if name == "colocated":
            out.append(colocated(sc.model, sc.dc_card, sc.dc_gpus, sc.tokens, mfu=sc.mfu,
                                 prices=sc.prices, settings=sc.settings))
        else:
            fn = {"ddp": ddp, "diloco": diloco, "pipeline": pipeline}[name]
            out.append(fn(sc.model, sc.node, sc.nodes, sc.tokens, prices=sc.prices, settings=sc.settings))
    return out


def sweep(sc: Scenario, counts: Iterable[int], *, match_datacenter: bool = False) -> list[tuple[int, list[Projection]]]:
    """The scenario at each swarm size. The datacenter stays as the scenario has it, or with
    `match_datacenter` is resized at each point to the swarm's training FLOP/s."""
    out = []
    for n in counts:
        _check(n, "node count", 1, 1e7, low_inclusive=True)
        point = replace(sc, nodes=int(n))
        if match_datacenter:
            point = replace(point, dc_gpus=matched_dc_gpus(sc.node, int(n), sc.dc_card))
        out.append((int(n), project(point)))
    return out


def best(results: Sequence[Projection], strategies: Sequence[Strategy] = SWARM_STRATEGIES) -> Projection | None:
    """The fastest feasible result among `strategies`."""
    ok = [r for r in results if r.feasible and r.strategy in strategies and r.wall_clock_s is not None]
    return min(ok, key=lambda r: r.wall_clock_s or math.inf) if ok else None


# ------------------------------------------------------------------------------------------------
# The seed claims
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claims:
    """The common claims of DESIGN.md, answered for this node and scenario."""

    #: How many of the node equal one reference GPU: key -> (by FLOP/s, by memory).
    nodes_per_reference: Mapping[str, tuple[float, float]]
    #: Reference bandwidth (bit/s) over the node's uplink: "hbm" (H200), "nvlink4", "nvlink5".
    link_ratios: Mapping[str, float]
    swarm_energy_per_token_j: float | None
    datacenter_energy_per_token_j: float | None
    swarm_power_bill_usd: float | None
    datacenter_purchase_usd: float
    datacenter_cost_usd: float | None
    notes: tuple[str, ...]

    @property
    def power_bill_exceeds_datacenter(self) -> bool | None:
        """Does the swarm's electricity for this job cost more than buying the datacenter's GPUs?"""
        if self.swarm_power_bill_usd is None:
            return None
        return self.swarm_power_bill_usd > self.datacenter_purchase_usd


def claims(sc: Scenario, results: Sequence[Projection]) -> Claims:
    """Answer the seed claims from the node's figures and the projections."""
    node = sc.node
    per_ref = {}
    for key in ("h100", "h200"):
        ref = get_card(key)
        dtype = ref.best_training_dtype
        per_ref[key] = (ref.peak[dtype] / node.flops.value, ref.memory_bytes / node.memory_bytes.value)
    ratios: dict[str, float] = {}
    notes = [f"node FLOP/s: {node.flops.source}; reference: datasheet {get_card('h200').best_training_dtype} peak"]
    if node.uplink_bps is not None:
        up = node.uplink_bps.value
        h200, b200 = get_card("h200"), get_card("b200")
        ratios["hbm"] = h200.memory_bandwidth * 8 / up
        ratios["nvlink4"] = (h200.nvlink_bandwidth or 0) / 2 * 8 / up
        ratios["nvlink5"] = (b200.nvlink_bandwidth or 0) / 2 * 8 / up
        notes.append("link ratios: H200 HBM 4.8 TB/s, NVLink 4 450 GB/s and NVLink 5 900 GB/s per direction, "
                     "over the node's uplink")
    swarm = best(results)
    dc = next((r for r in results if r.strategy == "colocated" and r.feasible), None)
    return Claims(
        nodes_per_reference=MappingProxyType(per_ref),
        link_ratios=MappingProxyType(ratios),
        swarm_energy_per_token_j=swarm.energy_per_token_j if swarm else None,
        datacenter_energy_per_token_j=dc.energy_per_token_j if dc else None,
        swarm_power_bill_usd=swarm.energy_cost_usd if swarm else None,
        datacenter_purchase_usd=sc.dc_gpus * sc.dc_card.launch_price_usd * sc.prices.server_capex_factor,
        datacenter_cost_usd=dc.cost_usd if dc else None,
        notes=tuple(notes),
    )


# ------------------------------------------------------------------------------------------------
# A node from a stored run document
# ------------------------------------------------------------------------------------------------

_DTYPE_ORDER = ("bf16", "fp16", "tf32", "fp32")


def _value(m: Mapping[str, Any]) -> float:
    v = m.get("value")
    if v is None:
        samples = m.get("samples") or []
        v = sorted(samples)[len(samples) // 2] if samples else None
    if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise FlopwattError(f"measurement {m.get('metric')!r} has no usable value")
    return float(v)


def node_from_run(doc: Mapping[str, Any], *, watts: float | None = None) -> Node:
    """A node from a run document (`flopwatt show RUN --json`): its measured figures, labelled.

    FLOP/s: the best matmul_flops on the best device (a GPU if there is one), "sustained" before
    "burst", the fastest of bf16/fp16/tf32/fp32. Training share: from train_tokens_per_s (6·N per
    token) or train_mfu where measured, else an assumed share of matmul. Watts: `watts` if given
    (a wall-meter reading, say), else the matmul window's average, else the datasheet board power of
    a known card. Link: net_upload/net_download/net_rtt.
    """
    run = doc.get("run") or {}
    run_id = str(run.get("id") or "?")
    label = f"measured in run {run_id[:8]}"
    devices = [d for d in doc.get("devices") or [] if isinstance(d, Mapping)]
    measurements = [m for m in doc.get("measurements") or [] if isinstance(m, Mapping)]
    matmuls = [m for m in measurements if m.get("metric") == "matmul_flops"
               and normalize_dtype(str(m.get("dtype") or "")) in _DTYPE_ORDER]
    if not matmuls:
        raise FlopwattError(f"run {run_id[:8]} has no matmul_flops measurement (run `flopwatt probe compute`)")
    gpu_ids = [d.get("id") for d in devices if d.get("kind") in ("cuda", "rocm", "mps")]
    on_gpu = [m for m in matmuls if m.get("device") in gpu_ids]
    pool = on_gpu or matmuls

    def rank(m: Mapping[str, Any]) -> tuple[int, float]:
        return (1 if m.get("variant") == "sustained" else 0, _value(m))

    sustained = [m for m in pool if m.get("variant") == "sustained"] or pool
    chosen = max(sustained, key=rank)
    device_id = chosen.get("device")
    device = next((d for d in devices if d.get("id") == device_id), {})
    dtype = normalize_dtype(str(chosen.get("dtype")))
    name = str(device.get("name") or device_id or "node")
    card = find_card(name)
    flops = Figure(_value(chosen), f"{label}: matmul {dtype} {chosen.get('variant') or ''}".rstrip())

    mem_bytes = device.get("memory_bytes")
    if device.get("kind") == "cpu" or device_id == "cpu":
        mem_bytes = mem_bytes or (doc.get("host") or {}).get("ram_bytes")
    if not mem_bytes or mem_bytes <= 0:
        raise FlopwattError(f"run {run_id[:8]}: device {name!r} has no memory_bytes in its inventory")
    memory = Figure(float(mem_bytes), f"{label}: inventory of {name}")

    util = _utilisation(measurements, device_id, flops.value, card, label)

    energy = chosen.get("energy") or {}
    if watts is not None:
        power = Figure(_check(watts, "node watts", 0, 100_000), "option --node-watts")
    elif energy.get("watts_avg"):
        power = Figure(float(energy["watts_avg"]), f"{label}: average power during matmul ({energy.get('method')})")
    elif card is not None:
        power = Figure(card.board_power_w, f"datasheet board power (run has no power figure): {card.source('power')}")
    else:
        raise FlopwattError(f"run {run_id[:8]} has no power figure for {name!r} (energy.watts_avg of matmul_flops) "
                            "and it is not a known card: give the node's power with --node-watts W")
    idle = next((m for m in measurements if m.get("metric") == "idle_power" and m.get("device") == device_id), None)
    idle_w = Figure(_value(idle), f"{label}: idle_power") if idle else \
        Figure(power.value * DEFAULT_IDLE_SHARE, f"assumed: {DEFAULT_IDLE_SHARE:.0%} of active power while waiting")

    def best_net(metric: str, pick: Any) -> Figure | None:
        ms = [m for m in measurements if m.get("metric") == metric]
        return Figure(pick(_value(m) for m in ms), f"{label}: {metric}") if ms else None

    return Node(
        name=name, dtype=dtype, flops=flops, utilisation=util, memory_bytes=memory, watts=power, idle_watts=idle_w,
        price_usd=Figure(card.launch_price_usd, card.source("price")) if card else None,
        uplink_bps=best_net("net_upload", max), downlink_bps=best_net("net_download", max),
        rtt_s=best_net("net_rtt", min),
    )


def _utilisation(measurements: Sequence[Mapping[str, Any]], device_id: Any, matmul: float, card: Card | None,
                 label: str) -> Figure:
    """Training's share of the chosen matmul rate: from the run's training probe where it ran, else assumed.

    The training probe's model is small, so its share understates what a large model reaches:
    a conservative figure, labelled as measured.
    """
    mine = [m for m in measurements if m.get("device") in (device_id, None)]
    for m in mine:
        if m.get("metric") != "train_tokens_per_s":
            continue
        params = m.get("params") or {}
        achieved = params.get("model_flops_per_s")
        if not isinstance(achieved, (int, float)):
            per_token = params.get("model_flops_per_token")
            if not isinstance(per_token, (int, float)):
                n = params.get("model_params") or params.get("params") or params.get("n_params")
                per_token = 6 * n if isinstance(n, (int, float)) else None
            achieved = per_token * _value(m) if per_token else None
        if achieved and achieved > 0:
            return Figure(min(1.0, achieved / matmul), f"{label}: train_tokens_per_s (model FLOP/s) over matmul")
    for m in mine:
        if m.get("metric") != "train_mfu":
            continue
        params = m.get("params") or {}
        dtype = normalize_dtype(str(m.get("dtype") or "bf16"))
        peak = params.get("matmul_flops") or params.get("peak_flops")
        if not isinstance(peak, (int, float)) and card is not None:
            peak = card.peak.get(dtype)
        if isinstance(peak, (int, float)) and peak > 0:
            return Figure(min(1.0, _value(m) * peak / matmul), f"{label}: train_mfu ({m.get('variant')}) over matmul")
    return Figure(DEFAULT_MATMUL_SHARE, f"assumed: training reaches {DEFAULT_MATMUL_SHARE:.0%} of sustained matmul")
