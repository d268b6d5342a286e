"""Which meter a device gets: the best sensor the platform offers, or a NullMeter that says why.

Kept apart from probes.energy.meter, which holds the base classes: the vendor modules (nvml, rapl)
import those, and this module imports the vendor modules, so the imports run one way only.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from probes.energy.meter import EnergyMeter, NullMeter
from probes.energy.nvml import NvmlMeter, visible_cuda_devices
from probes.energy.rapl import cpu_meter


def meter_for(
    device: str,
    *,
    estimate_cpu_power: bool = False,
    cpu_tdp_w: float | None = None,
    powercap_root: Path | None = None,
    nvml: Any = None,
    cuda: Any = None,
) -> EnergyMeter:
    """The best meter this platform offers for `device` ("cpu", "cuda:N", "mps").

    Never raises for a missing sensor: it returns a NullMeter that says why. `nvml` replaces the
    pynvml module and `cuda` the CUDA driver library (tests); `powercap_root` the RAPL sysfs root; `cpu_tdp_w` feeds the estimate that
    `estimate_cpu_power` allows when RAPL is unreadable.
    """
    if device == "cpu":
        return cpu_meter(root=powercap_root, estimate=estimate_cpu_power, tdp_w=cpu_tdp_w)
    if device.startswith("cuda:") and device[5:].isdigit():
        return NvmlMeter.open(int(device[5:]), nvml=nvml, cuda=cuda)
    if device == "mps":
        return NullMeter(
            device,
            "Apple GPUs report power only through powermetrics, which needs root; flopwatt does not read it",
        )
    raise ValueError(f"unknown device {device!r} (expected cpu, cuda:N or mps)")


def meters_for_host(
    *,
    estimate_cpu_power: bool = False,
    cpu_tdp_w: float | None = None,
    powercap_root: Path | None = None,
    nvml: Any = None,
    cuda: Any = None,
) -> list[EnergyMeter]:
    """A meter for the CPU and for every NVIDIA GPU this process may use (for `flopwatt monitor`)."""
    meters = [meter_for("cpu", estimate_cpu_power=estimate_cpu_power, cpu_tdp_w=cpu_tdp_w, powercap_root=powercap_root)]
    meters += [meter_for(d, nvml=nvml, cuda=cuda) for d in visible_cuda_devices(nvml, cuda=cuda)]
    if sys.platform == "darwin":
        meters.append(meter_for("mps"))
    return meters
