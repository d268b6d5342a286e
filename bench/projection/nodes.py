"""The machines: a swarm node (one PC, or a server with several GPUs) and the datacenter around a GPU.

A node's figures come from a datasheet card (`node_from_card`) or a stored run (`node_from_run`),
each labelled; options replace them (`with_link`, `dataclasses.replace`). Defaults that are
assumptions say so in their label and in docs/projection.md ("The node", "Whole-machine power").
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bench.errors import FlopwattError
from bench.hardware import Card, find_card, get_card, normalize_dtype
from bench.projection.model import MIN_MFU, Figure, check

#: Training MFU assumed where nothing was measured: Llama 3.1 405B ran at 38-43% of BF16 peak on
#: 16k H100s (Llama 3 Herd of Models, Table 4); BLOOM at 50% (156 TFLOP/s of 312 on A100).
DEFAULT_MFU = 0.40
#: Training's share of *measured sustained* matmul, where a run measured matmul but not training:
#: 40% MFU over the ~75-85% of peak that cuBLAS sustains on A100/H100 (docs/projection.md).
DEFAULT_MATMUL_SHARE = 0.5
#: While waiting on the network a GPU (CUDA context up, clocks lowered) draws a share of board power.
DEFAULT_IDLE_SHARE = 0.2

# The rest of a desktop PC beside its card, at the wall (assumptions, docs "Whole-machine power"):
#: CPU feeding one GPU, board, RAM, fans, storage, and the PSU's conversion loss on the whole load
#: (~10 % at 500-600 W for an 80 Plus Gold unit): the review's 100-200 W beyond the card, midpoint.
HOST_ACTIVE_W = 150.0
#: The same PC with the GPU waiting: CPU near idle, board, RAM, fans, PSU loss.
HOST_IDLE_W = 60.0
#: Host RAM of a gaming PC without a run to read it from.
HOST_RAM_BYTES = 32 * 2**30
#: The most GPUs one node takes (--gpus-per-node).
MAX_GPUS_PER_NODE = 1024
#: Host memory bandwidth for a CPU optimizer step (dual-channel DDR4/DDR5 reaches 30-60 GB/s).
HOST_MEMORY_BW = 40e9
#: The rest of the PC's price (CPU, board, RAM, PSU, case, storage) beside its card.
HOST_PRICE_USD = 1000.0

#: Datacenter server power per GPU at full load, from NVIDIA's DGX datasheets and user guides:
#: DGX A100 6.5 kW max, DGX H100/H200 10.2 kW max, DGX B200 14.3 kW max, each for 8 GPUs.
DGX_SYSTEM_WATTS: Mapping[str, tuple[float, str]] = {
    "a100": (6500.0, "NVIDIA DGX A100 datasheet: 6.5 kW max system power, 8 GPUs"),
    "h100": (10200.0, "NVIDIA DGX H100 datasheet / user guide: 10.2 kW max system power, 8 GPUs"),
    "h200": (10200.0, "NVIDIA DGX H200 user guide: 10.2 kW max system power, 8 GPUs"),
    "b200": (14300.0, "NVIDIA DGX B200 user guide: 14.3 kW max system power, 8 GPUs"),
}


@dataclass(frozen=True)
class Node:
    """One machine of the swarm, every figure labelled.

    `flops`, `utilisation`, `memory_bytes`, `watts`, `idle_watts` and `price_usd` are per GPU; a node
    has `gpus` of them on one host (`host_*`) and one home link. The link figures are None until a
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
    gpus: int = 1
    #: Between the node's GPUs, per direction, B/s: NVLink where the card has it, else PCIe.
    intra_bw: Figure = Figure(16e9, "assumed: PCIe 4.0 x8 between GPUs")
    #: Host to GPU (optimizer offload), per direction, B/s.
    pcie_bw: Figure = Figure(16e9, "assumed: PCIe 4.0 x8")
    host_watts: Figure = Figure(HOST_ACTIVE_W, f"assumed: rest of the PC {HOST_ACTIVE_W:.0f} W while training")
    host_idle_watts: Figure = Figure(HOST_IDLE_W, f"assumed: rest of the PC {HOST_IDLE_W:.0f} W while waiting")
    host_ram_bytes: Figure = Figure(float(HOST_RAM_BYTES), "assumed: 32 GiB host RAM")
    host_memory_bw: Figure = Figure(HOST_MEMORY_BW, "assumed: 40 GB/s host memory")
    host_price_usd: Figure = Figure(HOST_PRICE_USD, "assumed: $1000 for the rest of the PC")
    #: Hours a day the node is online for the job.
    hours_per_day: Figure = Figure(24.0, "assumed: online all day")

    @property
    def training_flops(self) -> float:
        """One GPU's training FLOP/s."""
        return self.flops.value * self.utilisation.value

    @property
    def node_flops(self) -> float:
        return self.gpus * self.training_flops

    @property
    def active_watts(self) -> float:
        """The whole node while computing: its GPUs and the host."""
        return self.gpus * self.watts.value + self.host_watts.value

    @property
    def waiting_watts(self) -> float:
        """The whole node while waiting on the network."""
        return self.gpus * self.idle_watts.value + self.host_idle_watts.value


def node_sources(node: Node) -> dict[str, str]:
    """Where each of the node's figures came from: figure -> label."""
    out = {"flops": node.flops.source, "utilisation": node.utilisation.source, "memory": node.memory_bytes.source,
           "watts": node.watts.source, "idle_watts": node.idle_watts.source, "host_watts": node.host_watts.source,
           "host_idle_watts": node.host_idle_watts.source, "host_ram": node.host_ram_bytes.source,
           "intra_bw": node.intra_bw.source, "hours_per_day": node.hours_per_day.source}
    for key in ("price_usd", "uplink_bps", "downlink_bps", "rtt_s"):
        fig: Figure | None = getattr(node, key)
        if fig is not None:
            out[key] = fig.source
    return out


def _card_flops(card: Card, dtype: str) -> Figure:
    """The card's matmul rate: the measured achievable figure bench/hardware.py carries (mamf-finder's
    table, chiefly), else the datasheet peak."""
    measured = card.achievable(dtype)
    if measured is not None:
        return Figure(measured.value, f"measured achievable {dtype} matmul ({measured.date}): {measured.source}")
    return Figure(card.peak[dtype], f"datasheet {dtype} peak: {card.source('flops')}")


def node_from_card(card: Card, *, utilisation: float | None = None, gpus: int = 1) -> Node:
    """A node of `gpus` x `card` with datasheet figures and the assumed host around them."""
    check(gpus, "gpus per node", 1, MAX_GPUS_PER_NODE, low_inclusive=True)
    missing = card.missing_datasheet()
    if missing:
        raise FlopwattError(f"card {card.key} has no datasheet {', '.join(missing)} to project from; "
                            "project a run measured on it instead (--run)")
    dtype = card.best_training_dtype
    src = card.source
    flops = _card_flops(card, dtype)
    if utilisation is not None:
        util = Figure(check(utilisation, "node MFU", MIN_MFU, 1, low_inclusive=True), "option --node-mfu")
    elif flops.source.startswith("measured"):
        util = Figure(DEFAULT_MATMUL_SHARE, f"assumed: training reaches {DEFAULT_MATMUL_SHARE:.0%} of achievable matmul")
    else:
        util = Figure(DEFAULT_MFU, "assumed: 40% MFU (Llama 3.1 405B reached 38-43%)")
    intra = Figure(card.nvlink_bandwidth / 2, f"NVLink per direction: {src('nvlink')}") if card.nvlink_bandwidth \
        else Figure(card.pcie.bandwidth, f"PCIe {card.pcie.generation}.0 x{card.pcie.lanes}: {src('pcie')}")
    node = Node(
        name=card.name if gpus == 1 else f"{gpus}x {card.name}",
        dtype=dtype,
        flops=flops,
        utilisation=util,
        memory_bytes=Figure(float(card.memory_bytes), f"datasheet: {src('memory')}"),
        watts=Figure(card.board_power_w, f"datasheet board power: {src('power')}"),
        idle_watts=Figure(card.board_power_w * DEFAULT_IDLE_SHARE,
                          f"assumed: {DEFAULT_IDLE_SHARE:.0%} of board power while waiting on the network"),
        price_usd=Figure(card.launch_price_usd, src("price")),
        gpus=gpus,
        intra_bw=intra,
        pcie_bw=Figure(card.pcie.bandwidth, f"PCIe {card.pcie.generation}.0 x{card.pcie.lanes}: {src('pcie')}"),
    )
    if not card.datacenter:
        return node
    # A datacenter card's host is its server's share: DGX power beyond the GPUs, 2 TB of RAM per 8 GPUs
    # (DGX H100 datasheet), and the server capital beyond the GPUs (the datacenter's x1.5, assumed).
    server = datacenter_watts_per_gpu(card)
    return replace(
        node,
        host_watts=Figure(gpus * (server.value - card.board_power_w), f"server share beyond the GPUs: {server.source}"),
        host_idle_watts=Figure(gpus * (server.value - card.board_power_w) / 2,
                               "assumed: half the server's share beyond the GPUs while waiting"),
        host_ram_bytes=Figure(gpus * 2 * 2**40 / 8, "DGX H100 datasheet: 2 TB system memory per 8 GPUs"),
        host_price_usd=Figure(gpus * card.launch_price_usd * 0.5, "assumed: server at half the GPUs' price"),
    )


def with_link(node: Node, *, uplink_bps: float | None = None, downlink_bps: float | None = None,
              rtt_s: float | None = None, source: str = "option") -> Node:
    """The node with its home link replaced where a figure is given (options beat a run's measurements)."""
    def label(flag: str) -> str:
        return f"{source} {flag}" if source == "option" else source

    changes: dict[str, Figure] = {}
    if uplink_bps is not None:
        changes["uplink_bps"] = Figure(check(uplink_bps, "uplink", 0, 1e13), label("--uplink"))
    if downlink_bps is not None:
        changes["downlink_bps"] = Figure(check(downlink_bps, "downlink", 0, 1e13), label("--downlink"))
    if rtt_s is not None:
        changes["rtt_s"] = Figure(check(rtt_s, "rtt", 0, 60, low_inclusive=True), label("--rtt"))
    return replace(node, **changes)


def with_power(node: Node, *, node_watts: float | None = None, node_idle_watts: float | None = None,
               host_watts: float | None = None, host_idle_watts: float | None = None) -> Node:
    """The node with measured or stated power: a whole-node wall reading replaces GPUs and host alike."""
    changes: dict[str, Figure] = {}
    if host_watts is not None:
        changes["host_watts"] = Figure(check(host_watts, "host watts", 0, 1e5, low_inclusive=True), "option --host-watts")
    if host_idle_watts is not None:
        changes["host_idle_watts"] = Figure(check(host_idle_watts, "host idle watts", 0, 1e5, low_inclusive=True),
                                            "option --host-idle-watts")
    if node_watts is not None:
        w = check(node_watts, "node watts", 0, 1e6)
        changes["watts"] = Figure(w / node.gpus, "option --node-watts (the whole node, per GPU)")
        changes["host_watts"] = Figure(0.0, "included in --node-watts")
    if node_idle_watts is not None:
        w = check(node_idle_watts, "node idle watts", 0, 1e6, low_inclusive=True)
        changes["idle_watts"] = Figure(w / node.gpus, "option --node-idle-watts (the whole node, per GPU)")
        changes["host_idle_watts"] = Figure(0.0, "included in --node-idle-watts")
    return replace(node, **changes)


# ------------------------------------------------------------------------------------------------
# The datacenter around a GPU
# ------------------------------------------------------------------------------------------------


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
        nic_bits_per_gpu = 400e9 if card.pcie.generation >= 5 else 200e9
        link = "NVLink" if card.nvlink_bandwidth else f"PCIe {card.pcie.generation}.0"  # an L4 or L40S has no NVLink
        src = f"DGX-style server: 8 GPUs, {link} {intra / 1e9:.0f} GB/s per direction, " \
              f"{nic_bits_per_gpu / 1e9:.0f} Gb/s NIC per GPU"
    else:
        nic_bits_per_gpu = 100e9 / 8  # one 100 Gb/s NIC shared by the server's 8 GPUs
        src = f"assumed: 8 GPUs on PCIe {intra / 1e9:.0f} GB/s, one 100 Gb/s NIC per server"
    return Fabric(8, intra, nic_bits_per_gpu / 8, src)


def datacenter_watts_per_gpu(card: Card) -> Figure:
    """Server power per GPU (CPUs, NVSwitch, NICs, fans, PSUs included), before PUE."""
    if card.key in DGX_SYSTEM_WATTS:
        watts, source = DGX_SYSTEM_WATTS[card.key]
        return Figure(watts / 8, source + "; per GPU")
    h100_ratio = DGX_SYSTEM_WATTS["h100"][0] / 8 / get_card("h100").board_power_w
    return Figure(card.board_power_w * h100_ratio,
                  f"assumed: board power x {h100_ratio:.2f}, DGX H100's server-to-GPU power ratio")


# ------------------------------------------------------------------------------------------------
# A node from a stored run document
# ------------------------------------------------------------------------------------------------

_DTYPE_ORDER = ("bf16", "fp16", "tf32", "fp32")


def _value(m: Mapping[str, Any]) -> float:
    v = m.get("value")
    if v is None:
        samples = m.get("samples") or []
        v = statistics.median(samples) if samples else None  # as a Measurement derives its value
    if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise FlopwattError(f"measurement {m.get('metric')!r} has no usable value")
    return float(v)


def node_from_run(doc: Mapping[str, Any], *, watts: float | None = None) -> Node:
    """A node from a run document (`flopwatt show RUN --json`): its measured figures, labelled.

    FLOP/s: the best matmul_flops on the best device (a GPU if there is one), "sustained" before
    "burst", the fastest of bf16/fp16/tf32/fp32. Training share: from train_tokens_per_s (6·N per
    token) or train_mfu where measured, else an assumed share of matmul. Watts: `watts` if given
    (a wall-meter reading of the whole node), else the matmul window's average, else the datasheet
    board power of a known card. Host: its RAM from the inventory, its idle CPU power from RAPL
    (idle_power on the CPU) plus the assumed rest, its memory bandwidth from mem_triad_bandwidth.
    Link: net_upload/net_download/net_rtt.
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
    # The sustained rate where the run has one (a training run is not a burst), then the fastest dtype.
    sustained = [m for m in pool if m.get("variant") == "sustained"] or pool
    chosen = max(sustained, key=_value)
    device_id = chosen.get("device")
    device = next((d for d in devices if d.get("id") == device_id), {})
    dtype = normalize_dtype(str(chosen.get("dtype")))
    name = str(device.get("name") or device_id or "node")
    card = find_card(name)
    flops = Figure(_value(chosen), f"{label}: matmul {dtype} {chosen.get('variant') or ''}".rstrip())
    host = doc.get("host") or {}

    mem_bytes = device.get("memory_bytes")
    if device.get("kind") == "cpu" or device_id == "cpu":
        mem_bytes = mem_bytes or host.get("ram_bytes")
    if not mem_bytes or mem_bytes <= 0:
        raise FlopwattError(f"run {run_id[:8]}: device {name!r} has no memory_bytes in its inventory")
    memory = Figure(float(mem_bytes), f"{label}: inventory of {name}")

    util = _utilisation(measurements, device_id, flops.value, card, label)

    energy = chosen.get("energy") or {}
    if watts is not None:
        power = Figure(check(watts, "node watts", 0, 1e6), "option --node-watts (the whole node)")
    elif energy.get("watts_avg"):
        power = Figure(float(energy["watts_avg"]), f"{label}: average power during matmul ({energy.get('method')})")
    elif card is not None and card.board_power_w is not None:
        power = Figure(card.board_power_w, f"datasheet board power (run has no power figure): {card.source('power')}")
    else:
        raise FlopwattError(f"run {run_id[:8]} has no power figure for {name!r} (energy.watts_avg of matmul_flops) "
                            "and it is not a known card: give the node's power with --node-watts W")
    idle = next((m for m in measurements if m.get("metric") == "idle_power" and m.get("device") == device_id), None)
    idle_w = Figure(_value(idle), f"{label}: idle_power") if idle else \
        Figure(power.value * DEFAULT_IDLE_SHARE, f"assumed: {DEFAULT_IDLE_SHARE:.0%} of active power while waiting")

    def best(metric: str, pick: Any, device: Any = None) -> Figure | None:
        ms = [m for m in measurements if m.get("metric") == metric and (device is None or m.get("device") == device)]
        return Figure(pick(_value(m) for m in ms), f"{label}: {metric}") if ms else None

    node = Node(
        name=name, dtype=dtype, flops=flops, utilisation=util, memory_bytes=memory, watts=power, idle_watts=idle_w,
        price_usd=Figure(card.launch_price_usd, card.source("price")) if card and card.launch_price_usd else None,
        uplink_bps=best("net_upload", max), downlink_bps=best("net_download", max), rtt_s=best("net_rtt", min),
    )
    if card is not None and card.pcie is not None:
        node = replace(node, pcie_bw=Figure(card.pcie.bandwidth, f"PCIe {card.pcie.generation}.0: {card.source('pcie')}"))
    if watts is not None:
        node = replace(node, host_watts=Figure(0.0, "included in --node-watts"))
    cpu_idle = best("idle_power", min, "cpu") if device_id != "cpu" else None
    if cpu_idle is not None:
        rest = HOST_IDLE_W / 2
        node = replace(node, host_idle_watts=Figure(cpu_idle.value + rest,
                                                    f"{label}: CPU idle_power (RAPL) + assumed {rest:.0f} W for the rest"))
    if host.get("ram_bytes"):
        node = replace(node, host_ram_bytes=Figure(float(host["ram_bytes"]), f"{label}: host RAM"))
    triad = best("mem_triad_bandwidth", max, "cpu")
    if triad is not None:
        node = replace(node, host_memory_bw=triad)
    return node


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
