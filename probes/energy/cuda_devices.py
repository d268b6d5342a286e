"""Which physical GPU CUDA calls cuda:N, asked of the CUDA driver without creating a context.

CUDA numbers GPUs fastest first (CUDA_DEVICE_ORDER=FASTEST_FIRST, its default), NVML by PCI bus:
on a PC with two different cards, say an RTX 4090 in the second slot and an RTX 3060 in the first,
cuda:0 is NVML's GPU 1. Once torch has initialised CUDA, its device properties give the UUID
(probes.energy.nvml uses that); `flopwatt monitor` runs without torch, so it asks the CUDA driver
API for each device's PCI bus id (cuInit, cuDeviceGetCount, cuDeviceGet, cuDeviceGetPCIBusId, all
in libcuda.so.1 / nvcuda.dll since CUDA 2.x), which NVML looks up by bus id. cuInit loads the
driver and counts the GPUs; it creates no context and allocates nothing on them. The driver
applies CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER itself, so the list is this process's view.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

CUDA_SUCCESS = 0
CUDA_ERROR_NO_DEVICE = 100
#: "0000:00:00.0" and its NUL are 13 bytes, the least cuDeviceGetPCIBusId accepts.
_BUS_ID_BYTES = 16


def load_cuda_driver() -> Any | None:
    """The CUDA driver library, or None where there is none (no NVIDIA driver, macOS)."""
    if sys.platform == "darwin":
        return None
    try:
        return ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")
    except OSError:
        return None


def _declare(lib: Any) -> None:
    """Give ctypes the C signatures (cuda.h: CUresult is an int enum, CUdevice an int)."""
    lib.cuInit.argtypes, lib.cuInit.restype = [ctypes.c_uint], ctypes.c_int
    lib.cuDeviceGetCount.argtypes, lib.cuDeviceGetCount.restype = [ctypes.POINTER(ctypes.c_int)], ctypes.c_int
    lib.cuDeviceGet.argtypes, lib.cuDeviceGet.restype = [ctypes.POINTER(ctypes.c_int), ctypes.c_int], ctypes.c_int
    lib.cuDeviceGetPCIBusId.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    lib.cuDeviceGetPCIBusId.restype = ctypes.c_int


def cuda_pci_bus_ids(driver: Any = None) -> list[str] | None:
    """The PCI bus id ("0000:01:00.0") of every GPU CUDA shows this process, in CUDA's order.

    [] when CUDA sees no GPU; None when there is no CUDA driver to ask or it fails, and the caller
    has to assume an order. `driver` replaces the system's library (tests).
    """
    lib = driver if driver is not None else load_cuda_driver()
    if lib is None:
        return None
    try:
        _declare(lib)
    except AttributeError:  # a library without the driver API
        return None
    status = lib.cuInit(0)
    if status == CUDA_ERROR_NO_DEVICE:
        return []
    count = ctypes.c_int()
    if status != CUDA_SUCCESS or lib.cuDeviceGetCount(ctypes.byref(count)) != CUDA_SUCCESS:
        return None
    bus_ids = []
    for ordinal in range(count.value):
        device = ctypes.c_int()
        buffer = ctypes.create_string_buffer(_BUS_ID_BYTES)
        if lib.cuDeviceGet(ctypes.byref(device), ordinal) != CUDA_SUCCESS:
            return None
        if lib.cuDeviceGetPCIBusId(buffer, _BUS_ID_BYTES, device) != CUDA_SUCCESS:
            return None
        bus_ids.append(buffer.value.decode())
    return bus_ids
