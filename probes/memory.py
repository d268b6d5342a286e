"""Memory bandwidth: device copy and triad, and on a GPU the host<->device link.

Bytes are counted as STREAM does: copy moves 2 arrays (one read, one write), triad
a = b + s*c moves 3 (two reads, one write). Write-allocate traffic is not counted, so the
figures compare directly with STREAM and likwid-bench's copy and stream kernels. Arrays are at
least 4x the last-level cache so repeats run from memory, not cache. They hold float64, except on
MPS, which has no float64: float32 there, the same bytes (the byte count is what is reported).

An error in one part (copy and triad, or one host-link variant) becomes that part's `unavailable`
entries with the error; the other parts still run.
"""

from __future__ import annotations

import torch

from probes.devices import release
from probes.energy import EnergyMeter
from probes.measurement import Energy, Measurement, ProbeResult, ProgressCallback, Unavailable, error_reason, no_progress
from probes.timing import DeviceTimer, Timing, energy_of

PROBE = "memory"
MiB = 1024**2
TRIAD_SCALAR = 3.0
HOST_LINK_BYTES = 256 * MiB
#: Each timed block lasts about this long (host link: longer, its copies are slower to start), and
#: a figure's blocks stop after MAX_S once three are taken.
BLOCK_S, HOST_LINK_BLOCK_S, MAX_S = 0.02, 0.05, 5.0


def array_bytes(kind: str, llc_bytes: int | None, memory_bytes: int | None) -> int:
    """Each array is >= 4x the last-level cache, at least 128 MiB (GPU: 512 MiB), at most 1/16 of memory."""
    floor = 128 * MiB if kind == "cpu" else 512 * MiB
    size = max(4 * (llc_bytes or 0), floor)
    if memory_bytes:
        size = min(size, memory_bytes // 16)
    return size // MiB * MiB


def array_dtype(device_type: str) -> torch.dtype:
    """float64 where the device has it; MPS (Metal) has none, and float32 arrays move the same bytes."""
    return torch.float32 if device_type == "mps" else torch.float64


def measure_memory(
    device: str,
    kind: str,
    *,
    quick: bool,
    llc_bytes: int | None = None,
    memory_bytes: int | None = None,
    meter: EnergyMeter | None = None,
    progress: ProgressCallback = no_progress,
) -> ProbeResult:
    """Copy and triad bandwidth of one device; host<->device too when it is a GPU.

    With a `meter`, copy and triad carry the energy of the same work in a window of >= 1 s.
    """
    dev = torch.device(device)
    timer = DeviceTimer(dev)
    dtype = array_dtype(dev.type)
    elements = array_bytes(kind, llc_bytes, memory_bytes) // dtype.itemsize
    blocks = 10 if quick else 30
    threads = torch.get_num_threads() if kind == "cpu" else None
    params = {"bytes_per_array": elements * dtype.itemsize, "dtype": _DTYPE_NAMES[dtype], "threads": threads,
              "block_s": BLOCK_S, "max_s": MAX_S}

    result = ProbeResult()
    try:
        result.measurements.extend(_copy_and_triad(device, dev, timer, dtype, elements, blocks, params, meter, progress))
    except Exception as exc:  # out of memory, a driver error: the host link may still work
        result.unavailable += [
            Unavailable(probe=PROBE, metric=metric, device=device, reason=error_reason(exc))
            for metric in ("mem_copy_bandwidth", "mem_triad_bandwidth")
        ]
    finally:
        release(dev)
    if kind in ("cuda", "rocm"):
        progress(f"memory on {device}: host<->device", 0.7)
        result.extend(_host_link(dev, timer, quick))
        release(dev)
    progress(f"memory on {device}: done", 1.0)
    return result


_DTYPE_NAMES = {torch.float64: "fp64", torch.float32: "fp32"}


def _copy_and_triad(
    device: str,
    dev: torch.device,
    timer: DeviceTimer,
    dtype: torch.dtype,
    elements: int,
    blocks: int,
    params: dict,
    meter: EnergyMeter | None,
    progress: ProgressCallback,
) -> list[Measurement]:
    """Copy (one read, one write) and triad (two reads, one write) over three arrays of `elements`.

    The arrays live only in this call, so a GPU has its memory back for the host-link test.
    """
    progress(f"memory on {device}: copy", 0.0)
    a = torch.rand(elements, dtype=dtype, device=dev)
    b = torch.rand(elements, dtype=dtype, device=dev)
    c = torch.rand(elements, dtype=dtype, device=dev)
    copy = timer.measure(lambda: b.copy_(a), block_s=BLOCK_S, blocks=blocks, max_s=MAX_S)
    copy_energy = energy_of(meter, lambda: b.copy_(a), dev)

    progress(f"memory on {device}: triad", 0.4)
    triad = timer.measure(lambda: torch.add(b, c, alpha=TRIAD_SCALAR, out=a), block_s=BLOCK_S, blocks=blocks, max_s=MAX_S)
    triad_energy = energy_of(meter, lambda: torch.add(b, c, alpha=TRIAD_SCALAR, out=a), dev)
    if not torch.allclose(a[:1024], b[:1024] + TRIAD_SCALAR * c[:1024]):
        raise AssertionError("triad produced a wrong result")  # a torch bug, not a user error
    nbytes = elements * dtype.itemsize
    return [
        _bandwidth("mem_copy_bandwidth", device, None, 2 * nbytes, copy, params, copy_energy),
        _bandwidth("mem_triad_bandwidth", device, None, 3 * nbytes, triad, params, triad_energy),
    ]


def _host_link(dev: torch.device, timer: DeviceTimer, quick: bool) -> ProbeResult:
    """Host->device and device->host over PCIe/NVLink-C2C, from pinned and pageable host memory.

    Each variant on its own: pinning can fail (no page-locked memory left) while pageable copies work.
    """
    result = ProbeResult()
    for pinned in (True, False):
        variant = "pinned" if pinned else "pageable"
        try:
            on_device = torch.empty(HOST_LINK_BYTES, dtype=torch.uint8, device=dev)
            result.measurements.extend(_host_copies(str(dev), on_device, timer, pinned, blocks=10 if quick else 20))
        except Exception as exc:
            result.unavailable += [
                Unavailable(probe=PROBE, metric=metric, device=str(dev), reason=f"{variant}: {error_reason(exc)}")
                for metric in ("h2d_bandwidth", "d2h_bandwidth")
            ]
    return result


def _host_copies(
    device: str, on_device: torch.Tensor, timer: DeviceTimer, pinned: bool, blocks: int
) -> list[Measurement]:
    nbytes = on_device.numel()
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned)
    host.random_(0, 255)
    variant = "pinned" if pinned else "pageable"
    params = {"bytes": nbytes, "pinned": pinned, "block_s": HOST_LINK_BLOCK_S, "max_s": MAX_S}
    h2d = timer.measure(lambda: on_device.copy_(host, non_blocking=pinned), block_s=HOST_LINK_BLOCK_S, blocks=blocks,
                        max_s=MAX_S)
    d2h = timer.measure(lambda: host.copy_(on_device, non_blocking=pinned), block_s=HOST_LINK_BLOCK_S, blocks=blocks,
                        max_s=MAX_S)
    return [
        _bandwidth("h2d_bandwidth", device, variant, nbytes, h2d, params),
        _bandwidth("d2h_bandwidth", device, variant, nbytes, d2h, params),
    ]


def _bandwidth(
    metric: str, device: str, variant: str | None, moved: int, timing: Timing, params: dict, energy: Energy | None = None
) -> Measurement:
    return Measurement(
        probe=PROBE,
        metric=metric,
        unit="B/s",
        device=device,
        variant=variant,
        samples=[moved / s for s in timing.seconds_per_call],
        params={**params, "bytes_moved_per_call": moved, "calls_per_block": timing.calls_per_block},
        energy=energy,
    )
