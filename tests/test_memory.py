"""The memory probe on the CPU: array sizes past the cache and bytes counted as STREAM counts them."""

from __future__ import annotations

import pytest

from probes.memory import MiB, array_bytes, measure_memory


def test_arrays_are_at_least_four_times_the_last_level_cache() -> None:
    assert array_bytes("cpu", llc_bytes=64 * MiB, memory_bytes=64 * 1024 * MiB) == 256 * MiB
    assert array_bytes("cpu", llc_bytes=None, memory_bytes=None) == 128 * MiB
    # never more than 1/16 of memory, so a small machine is not pushed into swap
    assert array_bytes("cpu", llc_bytes=1024 * MiB, memory_bytes=8 * 1024 * MiB) == 512 * MiB


def test_copy_and_triad_count_read_plus_written_bytes() -> None:
    result = measure_memory("cpu", "cpu", quick=True, llc_bytes=8 * MiB)
    copy = next(m for m in result.measurements if m.metric == "mem_copy_bandwidth")
    triad = next(m for m in result.measurements if m.metric == "mem_triad_bandwidth")
    per_array = copy.params["bytes_per_array"]
    assert per_array >= 4 * 8 * MiB
    assert copy.params["bytes_moved_per_call"] == 2 * per_array
    assert triad.params["bytes_moved_per_call"] == 3 * per_array
    for m in (copy, triad):
        assert m.unit == "B/s" and m.n >= 3
        # a CPU moves between 100 MB/s and 10 TB/s; outside that the timing or byte count is wrong
        assert 1e8 < m.value < 1e13
    assert not [m for m in result.measurements if m.metric in ("h2d_bandwidth", "d2h_bandwidth")]


def test_gpu_arrays_are_bigger() -> None:
    assert array_bytes("cuda", llc_bytes=50 * MiB, memory_bytes=80 * 1024 * MiB) == 512 * MiB


@pytest.mark.parametrize("kind", ["cpu", "cuda"])
def test_array_size_is_whole_mebibytes(kind: str) -> None:
    assert array_bytes(kind, llc_bytes=33_000_001, memory_bytes=None) % MiB == 0
