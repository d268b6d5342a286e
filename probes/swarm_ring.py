"""How DiLoCo's pseudo-gradients are summed over the ranks: 16-bit floats, or 8-bit integers.

16 bits: the backend's own all-reduce of an fp16 copy, in DDP-sized buckets all in flight at once
(`all_reduce_fp16`). gloo and NCCL run it as a ring, so each rank sends 2(n-1)/n of the buffer; on
tbf-shaped lab links it took 1.05-1.08x the ring's wire time, where one all-reduce of the whole
buffer stalls on a slow link (tests/swarm_worker.py measured 1.11-1.25x).

8 bits: no backend sums int8 values without overflow, so the ring is written out over point-to-point
messages (`ring_all_reduce`): the buffer is cut into n chunks; in n-1 reduce-scatter
steps each rank sends one chunk's running sum to the next rank and adds the one it receives from
the previous; in n-1 all-gather steps the finished chunks go round (Patarasuk and Yuan 2009). Each
rank sends 2(n-1) chunks, 2(n-1)/n of the buffer: exactly the ring's volume, which the call
returns so it can be set beside what the network interface counted.

On the wire a chunk is fp16 (`bits=16`) or int8 with one fp32 scale per chunk (`bits=8`, absmax
scaling: the largest magnitude maps to 127). Each hop decodes, adds in fp32 and encodes again, as
INTELLECT-1's int8 ring all-reduce does (Jaghouar et al. 2024, section 2.3). A finished chunk is
encoded once by the rank that owns it and forwarded byte for byte, and every rank, the owner too,
keeps the decoded copy: all ranks end with bit-identical sums, so DiLoCo's replicas never drift.
On gloo it is slower than the backend's own ring (1.2-1.4x the ring's wire time in the lab, where
the backend's took 1.05x; two ranks sending to each other at once sometimes take turns), which the
figures of a `--bits 8` run show as they are.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

BITS = (16, 8)
_SCALE_BYTES = 4


def encode(chunk: torch.Tensor, bits: int) -> torch.Tensor:
    """A float32 chunk as the bytes (int8) that travel: fp16 values, or the fp32 scale then int8 values."""
    if bits == 16:
        return chunk.to(torch.float16).view(torch.int8)
    scale = chunk.abs().max().clamp_min(torch.finfo(torch.float32).tiny) / 127
    values = torch.round(chunk / scale).clamp_(-127, 127).to(torch.int8)
    return torch.cat([scale.reshape(1).to(torch.float32).view(torch.int8), values])


def decode(wire: torch.Tensor, bits: int) -> torch.Tensor:
    """The float32 values `encode` sent."""
    if bits == 16:
        return wire.view(torch.float16).to(torch.float32)
    scale = wire[:_SCALE_BYTES].view(torch.float32)  # first, where a 4-byte view is aligned
    return wire[_SCALE_BYTES:].to(torch.float32) * scale


def wire_size(elements: int, bits: int) -> int:
    """Bytes of one encoded chunk of `elements` values."""
    return 2 * elements if bits == 16 else elements + _SCALE_BYTES


def all_reduce_fp16(flat: torch.Tensor, group: dist.ProcessGroup, bucket_elements: int) -> None:
    """Sum the 1-D float32 `flat` over the group's ranks in place, as fp16 on the wire, in buckets.

    Every rank ends with the same values: the backend's ring gathers each reduced bucket from one rank.
    """
    half = flat.to(torch.float16)
    works = [group.allreduce([bucket]) for bucket in half.split(bucket_elements)]
    for work in works:
        work.wait()
    flat.copy_(half)


def ring_all_reduce(flat: torch.Tensor, group: dist.ProcessGroup, bits: int) -> int:
    """Sum the 1-D float32 `flat` over the group's ranks in place; returns the bytes this rank sent."""
    if bits not in BITS:
        raise ValueError(f"bits must be one of {BITS}, got {bits}")
    world, rank = group.size(), group.rank()
    if world == 1:
        return 0
    chunks = list(flat.tensor_split(world))
    after, before = (rank + 1) % world, (rank - 1) % world
    sent = 0

    def exchange(outgoing: torch.Tensor, incoming_index: int, tag: int) -> torch.Tensor:
        nonlocal sent
        incoming = torch.empty(wire_size(chunks[incoming_index].numel(), bits), dtype=torch.int8, device=flat.device)
        works = [group.send([outgoing], after, tag), group.recv([incoming], before, tag)]
        for work in works:
            work.wait()
        sent += outgoing.numel()
        return incoming

    for step in range(world - 1):  # reduce-scatter: chunk (rank - step) leaves, (rank - step - 1) arrives
        arriving = (rank - step - 1) % world
        incoming = exchange(encode(chunks[(rank - step) % world], bits), arriving, step)
        chunks[arriving].add_(decode(incoming, bits))
    owned = (rank + 1) % world  # this rank now holds the whole sum of this chunk
    outgoing = encode(chunks[owned], bits)
    chunks[owned].copy_(decode(outgoing, bits))
    for step in range(world - 1):  # all-gather: forward each finished chunk unchanged
        arriving = (rank - step) % world
        outgoing = exchange(outgoing, arriving, world + step)
        chunks[arriving].copy_(decode(outgoing, bits))
    return sent
