"""The swarm's ring all-reduce, on real gloo between ranks that live on threads of this process.

Each rank gets its own gloo process group over loopback (the ranks meet through an in-process
HashStore); the sums are checked against float64 sums worked out here, the bytes against the ring's
2(n-1)/n of the payload, counted chunk by chunk.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from probes.swarm_figures import ring_bytes
from probes.swarm_ring import all_reduce_fp16, decode, encode, ring_all_reduce, wire_size
from probes.swarm_train import diloco_payload_bytes


def _group(store: dist.Store, rank: int, world: int) -> dist.ProcessGroup:
    options = dist.ProcessGroupGloo._Options()
    options._devices = [dist.ProcessGroupGloo.create_device(hostname="127.0.0.1")]
    options._timeout = timedelta(seconds=30)
    backend = dist.ProcessGroupGloo(store, rank, world, options)
    group = dist.ProcessGroup(store, rank, world)
    group._register_backend(torch.device("cpu"), dist.ProcessGroup.BackendType.GLOO, backend)
    group._set_default_backend(dist.ProcessGroup.BackendType.GLOO)
    return group


def _all_reduce(buffers: list[torch.Tensor], bits: int, backend: bool = False) -> tuple[list[torch.Tensor], list[int]]:
    """Every rank's buffer after the ring (or, with `backend`, gloo's fp16 all-reduce), and the bytes each sent."""
    world, store = len(buffers), dist.HashStore()
    results: dict[int, tuple[torch.Tensor, int]] = {}
    failures: list[BaseException] = []

    def rank_main(rank: int) -> None:
        try:
            flat, group = buffers[rank].clone(), _group(store, rank, world)
            if backend:
                all_reduce_fp16(flat, group, bucket_elements=100)
                results[rank] = (flat, 0)
            else:
                results[rank] = (flat, ring_all_reduce(flat, group, bits))
        except BaseException as exc:  # surfaced below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    return [results[r][0] for r in range(world)], [results[r][1] for r in range(world)]


def _buffers(world: int, size: int) -> list[torch.Tensor]:
    return [torch.randn(size, generator=torch.Generator().manual_seed(r)) * (1 + r) for r in range(world)]


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("bits", [16, 8])
def test_every_rank_ends_with_the_same_sum(world: int, bits: int) -> None:
    buffers = _buffers(world, 1001)  # 1001 values: chunks of unequal length
    out, _ = _all_reduce(buffers, bits)
    exact = torch.stack([b.double() for b in buffers]).sum(dim=0)
    # Each hop rounds the running sum once: fp16 keeps 11 bits, int8 halves a step of absmax/127.
    largest = max(float(torch.stack([b.double() for b in buffers[: k + 1]]).sum(0).abs().max()) for k in range(world))
    per_hop = largest * (2**-11 if bits == 16 else 0.5 / 127)
    assert float((out[0].double() - exact).abs().max()) <= world * per_hop
    assert all(torch.equal(out[0], other) for other in out[1:])  # bit for bit: replicas never drift


@pytest.mark.parametrize("world", [2, 3])
def test_the_backend_fp16_all_reduce_sums_in_buckets_alike_on_every_rank(world: int) -> None:
    buffers = _buffers(world, 1001)  # eleven buckets of 100 values, the last one short
    out, _ = _all_reduce(buffers, 16, backend=True)
    exact = torch.stack([b.double() for b in buffers]).sum(dim=0)
    largest = max(float(torch.stack([b.double() for b in buffers[: k + 1]]).sum(0).abs().max()) for k in range(world))
    assert float((out[0].double() - exact).abs().max()) <= world * largest * 2**-11
    assert all(torch.equal(out[0], other) for other in out[1:])


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("bits", [16, 8])
def test_the_ring_sends_two_n_minus_one_over_n_of_the_payload(world: int, bits: int) -> None:
    size = 1001
    _, sent = _all_reduce(_buffers(world, size), bits)
    chunk_lengths = [len(c) for c in torch.arange(size).tensor_split(world)]
    payload = sum(2 * n if bits == 16 else n + 4 for n in chunk_lengths)
    assert payload == diloco_payload_bytes(size, world, bits)
    # every chunk crosses n-1 links in the reduce-scatter and n-1 in the all-gather
    assert sum(sent) == 2 * (world - 1) * payload
    for rank, count in enumerate(sent):
        # rank r sends chunks r-s (reduce-scatter) and r+1-s (all-gather), s = 0..n-2
        mine = [(rank - s) % world for s in range(world - 1)] + [(rank + 1 - s) % world for s in range(world - 1)]
        assert count == sum(wire_size(chunk_lengths[c], bits) for c in mine)
        assert count == pytest.approx(ring_bytes(payload, world), rel=0.01)


def test_ring_bytes_is_two_n_minus_one_over_n() -> None:
    assert ring_bytes(1200.0, 2) == 1200.0
    assert ring_bytes(1200.0, 3) == 1600.0
    assert ring_bytes(1200.0, 4) == 1800.0


def test_eight_bit_values_travel_as_one_byte_each_with_their_scale() -> None:
    chunk = torch.tensor([0.5, -1.0, 0.25, 0.0])
    wire = encode(chunk, 8)
    assert wire.dtype == torch.int8 and wire.numel() == 4 + 4 == wire_size(4, 8)
    assert wire[4:].tolist() == [64, -127, 32, 0]  # round(x / (1/127))
    assert torch.allclose(decode(wire, 8), torch.tensor([64, -127, 32, 0]) / 127)
    assert encode(chunk, 16).numel() == 8 == wire_size(4, 16)
    assert torch.equal(decode(encode(chunk, 16), 16), chunk)  # these values are exact in fp16


def test_a_chunk_of_zeros_survives_eight_bits() -> None:
    assert torch.equal(decode(encode(torch.zeros(5), 8), 8), torch.zeros(5))
