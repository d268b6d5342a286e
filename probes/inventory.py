"""What the machine is: host facts and the compute devices torch can see.

Everything here is read, never measured. NVML adds what torch does not know about NVIDIA cards
(PCIe link, power limit, driver); where NVML is missing the fields stay empty.

torch is imported inside the functions that ask it something: the run document's models (Host,
Device) live here, and the results server, which reads and writes documents, never needs torch
(importing it took 2 of a server worker's 3.7 s start here).
"""

from __future__ import annotations

import os
import platform
import socket
import sys
from pathlib import Path
from typing import Any, Literal

import cpuinfo
import psutil
from pydantic import BaseModel, ConfigDict, Field

from probes.measurement import ProbeError, Unavailable

DeviceKind = Literal["cpu", "cuda", "rocm", "mps"]

#: DMI vendor/product strings that mean a virtual machine.
_VM_MARKERS = ("kvm", "qemu", "vmware", "virtualbox", "xen", "hyper-v", "bochs", "amazon ec2", "google compute")


class Host(BaseModel):
    """The machine, as the inventory found it. Identifying fields stay local unless opted in."""

    model_config = ConfigDict(extra="forbid")

    hostname: str | None = None
    os: str
    os_release: str = ""
    arch: str = ""
    python: str
    torch: str | None = None
    cpu_model: str = ""
    cpu_vendor: str = ""
    cpu_flags: list[str] = Field(default_factory=list)
    physical_cores: int | None = None
    logical_cores: int | None = None
    ram_bytes: int | None = None
    llc_bytes: int | None = None
    #: BLAS library torch was built with, and torch's intra-op thread count.
    blas: str = ""
    threads: int | None = None
    cuda_runtime: str | None = None
    gpu_driver: str | None = None
    virtualized: bool | None = None
    virtualization_hint: str = ""


class Device(BaseModel):
    """One compute device of the host (the CPU counts as one)."""

    model_config = ConfigDict(extra="forbid")

    id: str  # "cpu", "cuda:0", "mps"
    kind: DeviceKind
    name: str
    memory_bytes: int | None = None
    sm_count: int | None = None
    compute_capability: str | None = None
    pcie_generation: int | None = None
    pcie_width: int | None = None
    power_limit_w: float | None = None
    #: Anything else worth keeping (L2 size, bus id, max link...).
    extra: dict[str, Any] = Field(default_factory=dict)


def read_cpu_info() -> dict[str, Any]:
    """py-cpuinfo's view of the CPU (portable to Windows and macOS; about a second to read)."""
    return cpuinfo.get_cpu_info()


def describe_host(cpu: dict[str, Any]) -> Host:
    import torch

    flags = sorted(cpu.get("flags", []))
    virtualized, hint = _virtualization(flags)
    return Host(
        hostname=socket.gethostname(),
        os=platform.system(),
        os_release=platform.release(),
        arch=platform.machine(),
        python=platform.python_version(),
        torch=torch.__version__,
        cpu_model=cpu.get("brand_raw", "") or platform.processor(),
        cpu_vendor=cpu.get("vendor_id_raw", ""),
        cpu_flags=flags,
        physical_cores=psutil.cpu_count(logical=False),
        logical_cores=psutil.cpu_count(logical=True),
        ram_bytes=psutil.virtual_memory().total,
        llc_bytes=last_level_cache_bytes(cpu),
        blas=torch_blas(),
        threads=torch.get_num_threads(),
        cuda_runtime=torch.version.cuda or getattr(torch.version, "hip", None),
        gpu_driver=_nvml_driver(),
        virtualized=virtualized,
        virtualization_hint=hint,
    )


def last_level_cache_bytes(cpu: dict[str, Any] | None = None) -> int | None:
    """The largest cache of the CPU, total across cores sharing it.

    Linux sysfs is read first: py-cpuinfo reports the per-core L2 as "l3" on some VMs.
    """
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        units = {"K": 1024, "M": 1024**2, "G": 1024**3}
        sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
    if sizes:
        return max(sizes)
    if cpu is not None:
        for key in ("l3_cache_size", "l2_cache_size"):
            if isinstance(cpu.get(key), int) and cpu[key] > 0:
                return int(cpu[key])
    return None


def _virtualization(flags: list[str]) -> tuple[bool | None, str]:
    """Whether we run in a VM: the CPUID hypervisor bit, else DMI strings on Linux."""
    for name in ("sys_vendor", "product_name"):
        try:
            text = Path("/sys/class/dmi/id", name).read_text().strip()
        except OSError:
            continue
        if any(marker in text.lower() for marker in _VM_MARKERS):
            return True, f"DMI {name}: {text}"
    if "hypervisor" in flags:
        return True, "CPUID hypervisor bit set"
    if flags:
        return False, "no hypervisor bit"
    return None, "unknown (no CPU flags)"


def torch_blas() -> str:
    """The BLAS torch was built with (mkl, openblas, accelerate...), from its build config."""
    import torch

    config = torch.__config__.show()
    for part in config.replace("\n", ",").split(","):
        if "BLAS_INFO=" in part:
            return part.split("=", 1)[1].strip()
    return ""


def _nvml() -> Any | None:
    """The initialised pynvml module, or None when there is no NVIDIA driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # NVML raises its own error types, or the library is absent: no driver.
        return None


def _nvml_driver() -> str | None:
    nvml = _nvml()
    if nvml is None:
        return None
    try:
        driver = nvml.nvmlSystemGetDriverVersion()
        return driver.decode() if isinstance(driver, bytes) else str(driver)
    except nvml.NVMLError:
        return None


def list_devices(cpu: dict[str, Any]) -> tuple[list[Device], list[Unavailable]]:
    """Every device torch can use here, the CPU first, and the accelerators it can't, with why.

    `cpu` is py-cpuinfo's dictionary, read once by the caller (it takes about a second).
    """
    import torch

    devices = [cpu_device(cpu)]
    unavailable: list[Unavailable] = []
    if torch.cuda.is_available():
        devices += [cuda_device(i) for i in range(torch.cuda.device_count())]
    else:
        unavailable.append(Unavailable(probe="inventory", device="cuda", reason=_no_cuda_reason()))
    if torch.backends.mps.is_available():
        devices.append(mps_device(cpu))
    elif sys.platform == "darwin":
        unavailable.append(Unavailable(probe="inventory", device="mps", reason="torch reports MPS unavailable"))
    return devices, unavailable


def _no_cuda_reason() -> str:
    import torch

    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return f"torch {torch.__version__} is a CPU-only build (install a CUDA or ROCm build to probe a GPU)"
    return "torch has GPU support but finds no GPU (driver missing, or CUDA_VISIBLE_DEVICES hides them)"


def cpu_device(cpu: dict[str, Any]) -> Device:
    return Device(
        id="cpu",
        kind="cpu",
        name=cpu.get("brand_raw", "") or platform.processor() or "CPU",
        memory_bytes=psutil.virtual_memory().total,
        extra={"logical_cores": os.cpu_count(), "llc_bytes": last_level_cache_bytes(cpu)},
    )


def mps_device(cpu: dict[str, Any]) -> Device:
    return Device(
        id="mps", kind="mps", name=f"{cpu.get('brand_raw', 'Apple')} GPU", memory_bytes=psutil.virtual_memory().total
    )


def cuda_device(index: int) -> Device:
    import torch

    props = torch.cuda.get_device_properties(index)
    kind: DeviceKind = "rocm" if getattr(torch.version, "hip", None) else "cuda"
    device = Device(
        id=f"cuda:{index}",
        kind=kind,
        name=props.name,
        memory_bytes=props.total_memory,
        sm_count=props.multi_processor_count,
        compute_capability=f"{props.major}.{props.minor}",
        extra={"l2_cache_bytes": getattr(props, "L2_cache_size", None)},
    )
    return _with_nvml_facts(device, props) if kind == "cuda" else device


def _with_nvml_facts(device: Device, props: Any) -> Device:
    """PCIe link and power limit, which only NVML knows."""
    nvml = _nvml()
    if nvml is None:
        return device
    try:
        uuid = str(getattr(props, "uuid", ""))
        handle = (
            nvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
            if uuid
            else nvml.nvmlDeviceGetHandleByIndex(int(device.id.split(":")[1]))
        )
    except nvml.NVMLError:
        return device
    facts: dict[str, Any] = {}
    for field, call, scale in (
        ("pcie_generation", "nvmlDeviceGetCurrPcieLinkGeneration", 1),
        ("pcie_width", "nvmlDeviceGetCurrPcieLinkWidth", 1),
        ("power_limit_w", "nvmlDeviceGetEnforcedPowerLimit", 1e-3),  # NVML gives mW
    ):
        try:
            facts[field] = getattr(nvml, call)(handle) * scale
        except (nvml.NVMLError, AttributeError):
            continue
    extra = dict(device.extra)
    for name, call in (
        ("pcie_max_generation", "nvmlDeviceGetMaxPcieLinkGeneration"),
        ("pcie_max_width", "nvmlDeviceGetMaxPcieLinkWidth"),
    ):
        try:
            extra[name] = getattr(nvml, call)(handle)
        except (nvml.NVMLError, AttributeError):
            continue
    if "pcie_generation" in facts:
        facts["pcie_generation"] = int(facts["pcie_generation"])
    if "pcie_width" in facts:
        facts["pcie_width"] = int(facts["pcie_width"])
    return device.model_copy(update={**facts, "extra": extra})


def resolve_devices(spec: str) -> list[str]:
    """Turn `--device auto|cpu|cuda|cuda:N|mps` into device ids; a device that isn't there is an error.

    `auto` means every GPU torch can use plus the CPU, which is always probed.
    """
    import torch

    spec = spec.strip().lower()
    if spec == "auto":
        found = ["cpu"]
        if torch.cuda.is_available():
            found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        if torch.backends.mps.is_available():
            found.append("mps")
        return found
    if spec == "cpu":
        return ["cpu"]
    if spec == "mps":
        if not torch.backends.mps.is_available():
            raise ProbeError("--device mps: torch reports no Apple GPU (MPS) on this machine")
        return ["mps"]
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ProbeError(f"--device {spec}: {_no_cuda_reason()}")
        count = torch.cuda.device_count()
        if spec == "cuda":
            return [f"cuda:{i}" for i in range(count)]
        index_text = spec.split(":", 1)[1]
        if not index_text.isdigit():
            raise ProbeError(f"--device {spec}: the GPU index must be a number, e.g. cuda:0")
        if int(index_text) >= count:
            raise ProbeError(f"--device {spec}: there is no GPU {index_text}; this machine has {count} (0..{count - 1})")
        return [f"cuda:{int(index_text)}"]
    raise ProbeError(f"--device {spec!r} is not one of auto, cpu, cuda, cuda:N, mps")
