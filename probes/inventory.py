"""What the machine is: host facts and the compute devices torch can see.

Everything here is read, never measured. NVML adds what torch does not know about NVIDIA cards
(PCIe link, power limit, driver); where NVML is missing the fields stay empty.

A GPU this torch build has no kernels for (an RTX 50-series card under a CUDA 12.6 build) is
listed as unavailable, with the install line that fixes it, before any probe runs: its first
kernel would fail with "no kernel image is available for execution on the device".

torch is imported inside the functions that ask it something: the run document's models (Host,
Device) live here, and the results server, which reads and writes documents, never needs torch
(importing it took 2 of a server worker's 3.7 s start here).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import cpuinfo
import psutil
from pydantic import BaseModel, ConfigDict, Field

from probes.measurement import ProbeError, Unavailable

DeviceKind = Literal["cpu", "cuda", "rocm", "mps"]

#: DMI vendor/product strings that mean a virtual machine.
_VM_MARKERS = ("kvm", "qemu", "vmware", "virtualbox", "xen", "hyper-v", "bochs", "amazon ec2", "google compute")
CPU0_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")
DMI = Path("/sys/class/dmi/id")


def wheel_index(major: int, minor: int) -> str:
    """The CUDA wheel index with kernels for a GPU of compute capability major.minor.

    torch 2.13's CUDA 13 builds cover sm_75 (Turing, RTX 20) to sm_120 (Blackwell, RTX 50); CUDA 13
    dropped the older GPUs, which the CUDA 12.6 builds still cover (sm_50 to sm_90). Source: torch
    2.13's own table of its release builds, PYTORCH_RELEASES_CODE_CC in torch/cuda/__init__.py.
    """
    tag = "cu126" if (major, minor) < (7, 5) else "cu130"
    return f"https://download.pytorch.org/whl/{tag}"


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


def last_level_cache_bytes(cpu: dict[str, Any] | None = None, sysfs: Path = CPU0_CACHE) -> int | None:
    """The largest cache of the CPU, total across cores sharing it.

    Linux sysfs is read first: py-cpuinfo reports the per-core L2 as "l3" on some VMs.
    """
    sizes = []
    for index in sysfs.glob("index*"):
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


def _virtualization(flags: list[str], dmi: Path = DMI) -> tuple[bool | None, str]:
    """Whether we run in a VM: DMI strings on Linux, else the CPUID hypervisor bit."""
    for name in ("sys_vendor", "product_name"):
        try:
            text = (dmi / name).read_text().strip()
        except OSError:
            continue
        if any(marker in text.lower() for marker in _VM_MARKERS):
            return True, f"DMI {name}: {text}"
    if "hypervisor" in flags:
        return True, "CPUID hypervisor bit set"
    if flags:
        return False, "no hypervisor bit"
    return None, "unknown (no CPU flags)"


def torch_blas(config: str | None = None) -> str:
    """The BLAS torch was built with (mkl, openblas, accelerate...), from its build config."""
    if config is None:
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
        for index in range(torch.cuda.device_count()):
            gpu = cuda_device(index)
            missing = None if gpu.kind == "rocm" else missing_kernels(gpu, torch.cuda.get_arch_list(), torch.__version__)
            if missing:
                unavailable.append(Unavailable(probe="inventory", device=gpu.id, reason=missing))
            else:
                devices.append(gpu)
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


def kernel_runs_on(arch: str, major: int, minor: int) -> bool:
    """Whether code built for `arch` (torch.cuda.get_arch_list's "sm_86", "sm_90a", "compute_90")
    runs on a GPU of compute capability major.minor.

    CUDA's rules: a cubin runs on its own major version at the same or a later minor (sm_80 code on
    an 8.6 card); one built for an "a" target only on exactly that capability; PTX ("compute_")
    is compiled by the driver for any later capability.
    """
    kind, _, version = arch.partition("_")
    exact = version.endswith("a")
    digits = version.rstrip("af")
    if not digits.isdigit():
        return False
    code = (int(digits) // 10, int(digits) % 10)
    if kind == "compute":
        return (major, minor) >= code
    if exact:
        return (major, minor) == code
    return major == code[0] and minor >= code[1]


def missing_kernels(gpu: Device, arch_list: list[str], torch_version: str) -> str | None:
    """Why this torch build cannot run kernels on `gpu`, with the fix; None when it can.

    An empty list (a build that does not say) is given the benefit of the doubt.
    """
    if not arch_list or not gpu.compute_capability:
        return None
    major, minor = (int(x) for x in gpu.compute_capability.split("."))
    if any(kernel_runs_on(arch, major, minor) for arch in arch_list):
        return None
    return (
        f"torch {torch_version} has no kernels for {gpu.name} (sm_{major}{minor}; it was built for "
        f"{' '.join(arch_list)}): install a build that has them, "
        f"pip install torch --index-url {wheel_index(major, minor)}"
    )


def cpu_device(cpu: dict[str, Any]) -> Device:
    return Device(
        id="cpu",
        kind="cpu",
        name=cpu.get("brand_raw", "") or platform.processor() or "CPU",
        memory_bytes=psutil.virtual_memory().total,
        extra={"logical_cores": os.cpu_count(), "llc_bytes": last_level_cache_bytes(cpu)},
    )


def mps_device(cpu: dict[str, Any], displays_json: Callable[[], str | None] | None = None) -> Device:
    """The Apple GPU, named by chip and GPU core count ("Apple M1 Max GPU (32-core)"): MPS names it by
    chip alone, and a 24-core and a 32-core M1 Max differ by a third. Without the count the name stays
    the chip's, which matches no reference card rather than the wrong one."""
    name = f"{cpu.get('brand_raw', 'Apple')} GPU"
    cores = apple_gpu_cores((displays_json or system_profiler_displays)())
    if cores is None:
        return Device(id="mps", kind="mps", name=name, memory_bytes=psutil.virtual_memory().total)
    return Device(id="mps", kind="mps", name=f"{name} ({cores}-core)", memory_bytes=psutil.virtual_memory().total,
                  extra={"gpu_cores": cores})


def system_profiler_displays(command: tuple[str, ...] = ("system_profiler", "SPDisplaysDataType", "-json")) -> str | None:
    """macOS's description of its GPUs as JSON, or None where the command is missing or fails."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout


def apple_gpu_cores(displays_json: str | None) -> int | None:
    """The GPU core count of the Apple GPU in `system_profiler SPDisplaysDataType -json` output
    (its "sppci_cores", a string such as "32"), or None where the output has none."""
    try:
        gpus = json.loads(displays_json or "{}").get("SPDisplaysDataType") or []
    except (json.JSONDecodeError, AttributeError):
        return None
    for gpu in gpus:
        if not isinstance(gpu, dict) or gpu.get("spdisplays_vendor") != "sppci_vendor_Apple":
            continue
        cores = gpu.get("sppci_cores")
        if isinstance(cores, str) and cores.isdigit():
            return int(cores)
    return None


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


def _with_nvml_facts(device: Device, props: Any, nvml: Any = None) -> Device:
    """PCIe link and power limit, which only NVML knows (`nvml`: pynvml, or a stand-in in tests).

    The PCIe fields are the link's maximum generation and width for this card in this slot: an
    idle GeForce card drops its link to Gen1 to save power, so the current link, read at
    inventory time, says 1 on a Gen4 card (kept in `extra` as pcie_current_*).
    """
    nvml = nvml or _nvml()
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
    read: dict[str, Any] = {}
    for name, call in (
        ("pcie_generation", "nvmlDeviceGetMaxPcieLinkGeneration"),  # what this card and slot allow
        ("pcie_width", "nvmlDeviceGetMaxPcieLinkWidth"),
        ("pcie_current_generation", "nvmlDeviceGetCurrPcieLinkGeneration"),
        ("pcie_current_width", "nvmlDeviceGetCurrPcieLinkWidth"),
        ("power_limit_mw", "nvmlDeviceGetEnforcedPowerLimit"),
    ):
        try:
            read[name] = int(getattr(nvml, call)(handle))
        except (nvml.NVMLError, AttributeError):
            continue
    facts: dict[str, Any] = {k: read[k] for k in ("pcie_generation", "pcie_width") if k in read}
    if "power_limit_mw" in read:
        facts["power_limit_w"] = read["power_limit_mw"] / 1000  # NVML gives mW
    extra = {**device.extra, **{k: read[k] for k in ("pcie_current_generation", "pcie_current_width") if k in read}}
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
