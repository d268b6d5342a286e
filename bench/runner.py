"""Run the chosen probes on the chosen devices and assemble one run document.

Nothing is stored here: the caller saves the finished document in one transaction, so a run
interrupted with Ctrl-C leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version

from bench.document import RunDocument, RunInfo, new_run_id, utc_now
from bench.errors import FlopwattError
from bench.hardware import find_card, peak_flops
from probes import compute, memory
from probes.inventory import Device, describe_host, list_devices, read_cpu_info, resolve_devices
from probes.measurement import Measurement, ProbeResult, ProgressCallback, no_progress

#: Probes run when --only is not given.
DEFAULT_PROBES = ("compute", "memory")
KNOWN_PROBES = DEFAULT_PROBES


@dataclass(frozen=True)
class ProbeRequest:
    """What `flopwatt probe` was asked to do."""

    device: str = "auto"
    only: tuple[str, ...] = DEFAULT_PROBES
    quick: bool = False
    command: str = "probe"

    @staticmethod
    def parse_only(text: str | None) -> tuple[str, ...]:
        """`--only compute,memory` -> ("compute", "memory"); an unknown name is a user error."""
        if not text:
            return DEFAULT_PROBES
        names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
        unknown = [n for n in names if n not in KNOWN_PROBES]
        if unknown or not names:
            raise FlopwattError(f"--only: unknown probe {', '.join(unknown) or text!r} (choose from {', '.join(KNOWN_PROBES)})")
        return names


@dataclass
class _Task:
    probe: str
    device: Device
    run: Callable[[ProgressCallback], ProbeResult] = field(repr=False)


def run_probes(request: ProbeRequest, progress: ProgressCallback = no_progress) -> RunDocument:
    """Inventory the machine, run every (probe, device) task, and return the run document."""
    started = utc_now()
    progress("inventory", 0.0)
    device_ids = resolve_devices(request.device)
    cpu = read_cpu_info()
    host = describe_host(cpu)
    devices, unavailable = list_devices(cpu)
    chosen = [d for d in devices if d.id in device_ids]
    tasks = [task for probe in request.only for d in chosen for task in _tasks_for(probe, d, request, host.llc_bytes)]

    result = ProbeResult(unavailable=list(unavailable))
    for index, task in enumerate(tasks):

        def report(step: str, fraction: float, index: int = index) -> None:
            progress(step, (index + min(max(fraction, 0.0), 1.0)) / len(tasks))

        result.extend(task.run(report))
    progress("done", 1.0)

    return RunDocument(
        run=RunInfo(
            id=new_run_id(),
            started_at=started,
            finished_at=utc_now(),
            tool_version=version("flopwatt"),
            command=request.command,
        ),
        host=host,
        devices=chosen,
        measurements=[with_datasheet_peak(m, chosen) for m in result.measurements],
        unavailable=result.unavailable,
    )


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
        peak, source = card.pcie.bandwidth, card.source("pcie")
    else:
        return m
    if peak is None:
        return m
    return m.model_copy(update={"peak": peak, "peak_source": f"{card.name}: {source}"})


def _tasks_for(probe: str, device: Device, request: ProbeRequest, llc_bytes: int | None) -> list[_Task]:
    if probe == "compute":
        return [
            _Task(
                probe,
                device,
                lambda p: compute.measure_matmul(
                    device.id, device.kind, quick=request.quick, llc_bytes=llc_bytes, progress=p
                ),
            )
        ]
    if probe == "memory":
        return [
            _Task(
                probe,
                device,
                lambda p: memory.measure_memory(
                    device.id,
                    device.kind,
                    quick=request.quick,
                    llc_bytes=llc_bytes if device.kind == "cpu" else device.extra.get("l2_cache_bytes"),
                    memory_bytes=device.memory_bytes,
                    progress=p,
                ),
            )
        ]
    raise AssertionError(f"no tasks for probe {probe}")
