"""Which device is current, and how much of its memory a probe may plan for.

Two things every GPU probe needs right before it starts:

- The probed device must be the *current* one. `torch.cuda.Event.record()` and anything else
  called without an explicit device use the current device, which stays cuda:0 unless it is set;
  on a machine with two GPUs the events for cuda:1 would otherwise time cuda:0's idle stream.
- A budget that sees PyTorch's caching allocator. `torch.cuda.mem_get_info` is the driver's view
  (cudaMemGetInfo): blocks torch has freed but keeps cached count as used. A probe that runs after
  another would see only part of the card. The budget is therefore the driver's free bytes plus
  what the allocator holds without using (reserved − allocated), after handing the cache back.
"""

from __future__ import annotations

import gc
from contextlib import AbstractContextManager, nullcontext

import torch


def device_context(device: torch.device | str) -> AbstractContextManager[object]:
    """`with device_context(dev):` makes `dev` the current CUDA device; a no-op on cpu and mps."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.device(dev)
    return nullcontext()


def release(device: torch.device | str) -> None:
    """Hand every freed block back to the driver, so the next budget and the next probe see it."""
    dev = torch.device(device)
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    elif dev.type == "mps":
        torch.mps.empty_cache()


def usable_cuda_bytes(free: int, reserved: int, allocated: int) -> int:
    """Bytes a new allocation can get: the driver's free memory plus the allocator's cached, unused blocks."""
    return free + max(0, reserved - allocated)


def cuda_budget(device: torch.device | str) -> int:
    """Usable bytes on a CUDA (or ROCm) device right now, counting torch's own cache as usable."""
    dev = torch.device(device)
    free, _total = torch.cuda.mem_get_info(dev)
    return usable_cuda_bytes(free, torch.cuda.memory_reserved(dev), torch.cuda.memory_allocated(dev))


def spilled_to_host(peak_reserved: int, start_reserved: int, start_free: int) -> bool:
    """Whether this process held more than the card could give it: the memory went to system RAM.

    Windows drivers since 536.40 ("CUDA sysmem fallback", on by default) page CUDA allocations into
    system RAM instead of failing, so a model too big for the card still "fits" and trains at PCIe
    speed. On the card alone, the most torch can reserve is what it held at the start plus what
    the driver had free then; past that, memory came from somewhere else.
    """
    return peak_reserved > start_reserved + start_free
