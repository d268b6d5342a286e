"""Run the chosen probes on the chosen devices and assemble one run document.

Nothing is stored here: the caller saves the finished document in one transaction, so a run
interrupted with Ctrl-C leaves nothing behind. Any other error costs only the probe it happened
in: it is recorded as unavailable with its message, and the other probes' figures are kept.

Each per-device probe runs with its device made the current one (probes.devices.device_context),
so CUDA events, streams and allocations without an explicit device land on the GPU being probed.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version

import torch

from bench.document import RunDocument, RunInfo, new_run_id, utc_now
from bench.errors import FlopwattError
from bench.hardware import find_card, peak_flops
from probes import DEFAULT_PROBES, KNOWN_PROBES, PER_DEVICE_PROBES, collective, compute, memory, network, training
from probes.background import CpuWatch
from probes.devices import device_context
from probes.energy import EnergyMeter, NullMeter, measure_idle, meter_for
from probes.inventory import Device, Host, describe_host, list_devices, read_cpu_info, resolve_devices
from probes.measurement import (
    Measurement,
    ProbeError,
    ProbeResult,
    ProgressCallback,
    Unavailable,
    error_reason,
    no_progress,
)


@dataclass(frozen=True)
class NetworkOptions:
    """Where and how to test the link (network) and whom to all-reduce with (collective)."""

    server: str | None = None
    iperf3: str | None = None
    streams: int = 1
    seconds: int = 5
    rank: int | None = None
    world: int | None = None
    master: str | None = None


@dataclass(frozen=True)
class ProbeRequest:
    """What `flopwatt probe` was asked to do."""

    device: str = "auto"
    only: tuple[str, ...] = DEFAULT_PROBES
    quick: bool = False
    #: Allow a CPU energy estimate from TDP and load when RAPL can't be read (always labelled).
    estimate_cpu_power: bool = False
    network: NetworkOptions = NetworkOptions()
    command: str = "probe"

    def __post_init__(self) -> None:
        if "network" in self.only and not self.network.server:
            raise FlopwattError("--only network needs --server HOST[:PORT] (run `flopwatt serve-network` on the other end)")

    @staticmethod
    def parse_only(text: str | None) -> tuple[str, ...]:
        """`--only compute,memory` -> ("compute", "memory"); an unknown name is a user error."""
        if not text:
            return DEFAULT_PROBES
        wanted = {n.strip().lower() for n in text.split(",") if n.strip()}
        unknown = ", ".join(sorted(wanted - set(KNOWN_PROBES))) or (text if not wanted else "")
        if unknown:
            raise FlopwattError(f"--only: unknown probe {unknown!r} (choose from {', '.join(KNOWN_PROBES)})")
        return tuple(n for n in KNOWN_PROBES if n in wanted)  # in run order: training reads compute's figure


def inventory(device_spec: str = "auto") -> tuple[Host, list[Device], list[Unavailable]]:
    """The host, the devices `device_spec` selects, and the accelerators that are missing (with why).

    A device that was asked for by name but cannot be probed (no kernels for it in this torch) is
    an error naming the fix, since nothing would be left to measure.
    """
    device_ids = resolve_devices(device_spec)
    cpu = read_cpu_info()
    devices, missing = list_devices(cpu)
    chosen = [d for d in devices if d.id in device_ids]
    if not chosen:
        reasons = "; ".join(u.reason for u in missing if u.device in device_ids) or "no such device"
        raise FlopwattError(f"--device {device_spec}: {reasons}")
    return describe_host(cpu), chosen, missing


def run_document(
    command: str, started: datetime, host: Host, devices: list[Device], result: ProbeResult
) -> RunDocument:
    """A finished run: what was measured on which machine, with datasheet peaks attached."""
    return RunDocument(
        run=RunInfo(
            id=new_run_id(), started_at=started, finished_at=utc_now(), tool_version=version("flopwatt"), command=command
        ),
        host=host,
        devices=devices,
        measurements=[with_datasheet_peak(m, devices) for m in result.measurements],
        unavailable=result.unavailable,
    )


@dataclass
class ProbeRun:
    """A finished run, and the probes that failed for a reason the user should hear about."""

    document: RunDocument
    failures: list[str]


def run_probes(request: ProbeRequest, progress: ProgressCallback = no_progress) -> ProbeRun:
    """Inventory the machine, measure idle power, run every probe, return the run.

    A probe that fails, for the user's reason (unreachable server, a rank that never joins) or
    any other (a CUDA error, out of memory), is listed as unavailable and in `failures`; the other
    probes' figures are kept. Only KeyboardInterrupt ends the run.
    """
    started = utc_now()
    progress("inventory", 0.0)
    host, chosen, missing = inventory(request.device)
    result = ProbeResult(unavailable=missing)
    failures: list[str] = []
    meters = {d.id: meter_for(d.id, estimate_cpu_power=request.estimate_cpu_power) for d in chosen}
    try:
        if any(p in PER_DEVICE_PROBES for p in request.only):
            progress("idle power", 0.0)
            result.extend(_idle_baselines(meters, seconds=3.0 if request.quick else 5.0))
        tasks = [
            (probe, d)
            for probe in request.only
            for d in (chosen if probe in PER_DEVICE_PROBES else [_collective_device(chosen)])
        ]
        for index, (probe, device) in enumerate(tasks):

            def report(step: str, fraction: float, index: int = index) -> None:
                progress(step, (index + min(max(fraction, 0.0), 1.0)) / len(tasks))

            try:
                watch = CpuWatch()
                meter = meters[device.id]
                with device_context(device.id) if probe in PER_DEVICE_PROBES else nullcontext():
                    found = _run_probe(probe, device, request, host.llc_bytes, meter, result.measurements, report)
                result.extend(with_machine_load(found, watch.shares()))
            except ProbeError as exc:
                failures.append(str(exc))
                result.unavailable.append(Unavailable(probe=probe, device=device.id, reason=str(exc)))
            except Exception as exc:  # a CUDA error, out of memory, a bug: this probe's figures only
                reason = error_reason(exc)
                failures.append(f"{probe} on {device.id} failed: {reason}; the other figures were kept")
                result.unavailable.append(Unavailable(probe=probe, device=device.id, reason=reason))
    finally:
        for meter in meters.values():
            meter.close()
    progress("done", 1.0)
    return ProbeRun(run_document(request.command, started, host, chosen, result), failures)


def _collective_device(devices: list[Device]) -> Device:
    """The device a once-per-run probe uses: the first GPU (NCCL), else the CPU (gloo)."""
    return next((d for d in devices if d.kind in ("cuda", "rocm")), devices[0])


def _idle_baselines(meters: dict[str, EnergyMeter], seconds: float) -> ProbeResult:
    """Idle power per device before any load, so later figures can be given above idle."""
    result = ProbeResult()
    for device, meter in meters.items():
        if isinstance(meter, NullMeter):
            result.unavailable.append(Unavailable(probe="power", metric="idle_power", device=device, reason=meter.reason))
            continue
        idle = measure_idle(meter, seconds)
        if isinstance(idle, Measurement):
            meter.set_idle_watts(idle.value)
            result.measurements.append(idle)
        else:
            result.unavailable.append(idle)
    return result


def _run_probe(
    probe: str,
    device: Device,
    request: ProbeRequest,
    llc_bytes: int | None,
    meter: EnergyMeter,
    so_far: list[Measurement],
    progress: ProgressCallback,
) -> ProbeResult:
    # The cache repeats must outrun: the host's last level on a CPU, the GPU's own L2 on a GPU.
    cache = llc_bytes if device.kind == "cpu" else device.extra.get("l2_cache_bytes")
    if probe == "compute":
        return compute.measure_matmul(
            device.id, device.kind, quick=request.quick, llc_bytes=cache, meter=meter, progress=progress
        )
    if probe == "memory":
        return memory.measure_memory(
            device.id,
            device.kind,
            quick=request.quick,
            llc_bytes=cache,
            memory_bytes=device.memory_bytes,
            meter=meter,
            progress=progress,
        )
    if probe == "training":
        dtype = training.training_dtype(torch.device(device.id))
        card = find_card(device.name) if device.kind != "cpu" else None
        matmul = [
            m.value
            for m in so_far
            if m.metric == "matmul_flops" and m.device == device.id and m.dtype == dtype and m.variant == "burst"
        ]
        return training.measure_training(
            device.id,
            quick=request.quick,
            peak_flops=peak_flops(card, dtype) if card else None,
            measured_matmul_flops=matmul[0] if matmul else None,
            meter=meter,
            progress=progress,
        )
    net = request.network
    if probe == "network":
        assert net.server is not None  # checked by ProbeRequest
        return network.measure_network(
            net.server, streams=net.streams, seconds=net.seconds, iperf3=net.iperf3, progress=progress
        )
    if probe == "collective":
        return collective.measure_collective(
            rank=net.rank, world=net.world, master=net.master, device=device.id, quick=request.quick, progress=progress
        )
    raise AssertionError(f"no probe named {probe}")


def with_machine_load(result: ProbeResult, shares: dict[str, float]) -> ProbeResult:
    """Each figure carries what else used the CPU while its probe ran (probes.background)."""
    result.measurements = [m.model_copy(update={"params": {**m.params, **shares}}) for m in result.measurements]
    return result


def with_datasheet_peak(m: Measurement, devices: list[Device]) -> Measurement:
    """Attach the datasheet limit of the measured device, where bench/hardware.py knows the card."""
    device = next((d for d in devices if d.id == m.device), None)
    card = find_card(device.name) if device and device.kind != "cpu" else None
    if card is None:
        return m
    if m.metric == "matmul_flops" and m.dtype:
        peak, source = peak_flops(card, m.dtype), card.source("flops")
    elif m.metric in ("mem_copy_bandwidth", "mem_triad_bandwidth"):
        peak, source = card.memory_bandwidth, card.source("bandwidth")
    elif m.metric in ("h2d_bandwidth", "d2h_bandwidth"):
        peak, source = (card.pcie.bandwidth if card.pcie else None), card.source("pcie")
    else:
        return m
    if peak is None:
        return m
    return m.model_copy(update={"peak": peak, "peak_source": f"{card.name}: {source}"})
