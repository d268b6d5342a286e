"""The memory probe on the CPU: array sizes past the cache, bytes counted as STREAM counts them,
figures that are exactly bytes over seconds, and parts that fail alone.

The figures are pinned with the timer replaced by one that runs the real copy once and reports a
known time per call; the host link runs on the CPU too (its "device" tensor then lives in host
memory), which also shows a pinned copy failing, as it does without CUDA, while pageable works.
"""

from __future__ import annotations

import pytest
import torch

from probes import memory
from probes.memory import MiB, array_bytes, array_dtype, measure_memory
from probes.timing import DeviceTimer, Timing

SECONDS_PER_CALL = 1e-3


@pytest.fixture
def known_seconds(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Every timed figure takes SECONDS_PER_CALL a call; returns what each measure() was asked."""
    asked: list[dict] = []

    def measure(self: DeviceTimer, fn, *, blocks: int, **options: object) -> Timing:  # type: ignore[no-untyped-def]
        asked.append({"blocks": blocks, **options})
        fn()
        return Timing([SECONDS_PER_CALL] * blocks, calls_per_block=5, warmup_calls=2, elapsed_s=0.1)

    monkeypatch.setattr(DeviceTimer, "measure", measure)
    return asked


@pytest.mark.parametrize(("quick", "blocks"), [(True, 10), (False, 30)])
def test_copy_and_triad_take_blocks_of_20_ms_for_at_most_5_s_and_say_so(known_seconds: list[dict], quick: bool,
                                                                         blocks: int) -> None:
    steps: list[tuple[str, float]] = []
    result = measure_memory("cpu", "cpu", quick=quick, llc_bytes=8 * MiB, progress=lambda s, f: steps.append((s, f)))
    assert known_seconds == [{"blocks": blocks, "block_s": 0.02, "max_s": 5.0}] * 2
    assert [(m.params["block_s"], m.params["max_s"]) for m in result.measurements] == [(0.02, 5.0)] * 2
    assert steps == [("memory on cpu: copy", 0.0), ("memory on cpu: triad", 0.4), ("memory on cpu: done", 1.0)]


@pytest.mark.usefixtures("known_seconds")
def test_a_gpu_reports_its_host_link_step_between_triad_and_done(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU path's progress, on the CPU with the host-link test left out."""
    monkeypatch.setattr(memory, "_host_link", lambda *_: memory.ProbeResult())
    steps: list[float] = []
    measure_memory("cpu", "cuda", quick=True, memory_bytes=64 * MiB, progress=lambda _, f: steps.append(f))
    assert steps == [0.0, 0.4, 0.7, 1.0]


@pytest.mark.parametrize(("quick", "blocks"), [(True, 10), (False, 20)])
def test_host_copies_take_blocks_of_50_ms_for_at_most_5_s_and_say_so(known_seconds: list[dict], quick: bool,
                                                                     blocks: int) -> None:
    result = memory._host_link(torch.device("cpu"), DeviceTimer(torch.device("cpu")), quick=quick)
    assert known_seconds == [{"blocks": blocks, "block_s": 0.05, "max_s": 5.0}] * 2  # pageable h2d, d2h
    assert [(m.params["block_s"], m.params["max_s"]) for m in result.measurements] == [(0.05, 5.0)] * 2


def test_arrays_are_at_least_four_times_the_last_level_cache() -> None:
    assert array_bytes("cpu", llc_bytes=64 * MiB, memory_bytes=64 * 1024 * MiB) == 256 * MiB
    assert array_bytes("cpu", llc_bytes=None, memory_bytes=None) == 128 * MiB
    # never more than 1/16 of memory, so a small machine is not pushed into swap
    assert array_bytes("cpu", llc_bytes=1024 * MiB, memory_bytes=8 * 1024 * MiB) == 512 * MiB


def test_gpu_arrays_are_bigger() -> None:
    assert array_bytes("cuda", llc_bytes=50 * MiB, memory_bytes=80 * 1024 * MiB) == 512 * MiB
    assert array_bytes("cuda", llc_bytes=200 * MiB, memory_bytes=80 * 1024 * MiB) == 800 * MiB
    assert array_bytes("cuda", llc_bytes=72 * MiB, memory_bytes=6 * 1024 * MiB) == 384 * MiB  # 1/16 of a 6 GB card


@pytest.mark.parametrize("kind", ["cpu", "cuda"])
def test_array_size_is_whole_mebibytes(kind: str) -> None:
    assert array_bytes(kind, llc_bytes=33_000_001, memory_bytes=None) % MiB == 0


@pytest.mark.usefixtures("known_seconds")
def test_copy_moves_two_arrays_and_triad_three_per_call() -> None:
    result = measure_memory("cpu", "cpu", quick=True, llc_bytes=8 * MiB)
    copy = next(m for m in result.measurements if m.metric == "mem_copy_bandwidth")
    triad = next(m for m in result.measurements if m.metric == "mem_triad_bandwidth")
    per_array = 128 * MiB  # max(4 x 8 MiB, the 128 MiB floor)
    assert copy.params["bytes_per_array"] == per_array and copy.params["dtype"] == "fp64"
    assert copy.params["bytes_moved_per_call"] == 2 * per_array
    assert triad.params["bytes_moved_per_call"] == 3 * per_array
    assert copy.samples == [2 * per_array / SECONDS_PER_CALL] * 10  # quick: 10 blocks
    assert copy.value == 268_435_456_000.0  # 256 MiB in 1 ms
    assert triad.value == 402_653_184_000.0  # 384 MiB in 1 ms
    assert copy.params["calls_per_block"] == 5
    assert result.unavailable == [] and {m.metric for m in result.measurements} == {"mem_copy_bandwidth", "mem_triad_bandwidth"}


def test_copy_and_triad_on_real_memory_are_checked_and_repeated() -> None:
    result = measure_memory("cpu", "cpu", quick=True, llc_bytes=8 * MiB)
    for m in result.measurements:
        assert m.unit == "B/s" and m.n >= 3 and m.device == "cpu" and m.params["threads"] == torch.get_num_threads()


def test_mps_arrays_are_float32_and_count_the_same_bytes() -> None:
    assert array_dtype("mps") == torch.float32
    assert array_dtype("cuda") == array_dtype("cpu") == array_dtype("xpu") == torch.float64


@pytest.mark.usefixtures("known_seconds")
def test_float32_arrays_move_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """What MPS runs, here on the CPU: twice the elements, the same bytes and the same figure."""
    monkeypatch.setattr(memory, "array_dtype", lambda device_type: torch.float32)
    result = measure_memory("cpu", "cpu", quick=True, llc_bytes=8 * MiB)
    copy = next(m for m in result.measurements if m.metric == "mem_copy_bandwidth")
    assert copy.params["dtype"] == "fp32" and copy.params["bytes_per_array"] == 128 * MiB
    assert copy.value == 268_435_456_000.0


@pytest.mark.usefixtures("known_seconds")
def test_host_link_is_bytes_over_seconds_and_a_failed_pin_costs_only_its_variant() -> None:
    """Without CUDA, pinning raises (as it can on a machine out of page-locked memory)."""
    result = memory._host_link(torch.device("cpu"), DeviceTimer(torch.device("cpu")), quick=True)
    by_key = {(m.metric, m.variant): m for m in result.measurements}
    assert set(by_key) == {("h2d_bandwidth", "pageable"), ("d2h_bandwidth", "pageable")}
    for m in by_key.values():
        assert m.params["bytes"] == m.params["bytes_moved_per_call"] == 256 * MiB
        assert m.samples == [256 * MiB / SECONDS_PER_CALL] * 10
    assert sorted(u.metric for u in result.unavailable) == ["d2h_bandwidth", "h2d_bandwidth"]
    assert all(u.reason.startswith("pinned: RuntimeError: pin_memory=True requires") for u in result.unavailable)


@pytest.mark.usefixtures("known_seconds")
def test_out_of_memory_in_copy_and_triad_keeps_the_host_link(monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(*_: object) -> list:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB (GPU 0; 5.80 GiB total capacity)")

    monkeypatch.setattr(memory, "_copy_and_triad", out_of_memory)
    result = measure_memory("cpu", "cuda", quick=True)  # a GPU's kind: the host link runs too
    assert {(m.metric, m.variant) for m in result.measurements} == {("h2d_bandwidth", "pageable"), ("d2h_bandwidth", "pageable")}
    lost = {u.metric: u.reason for u in result.unavailable if u.metric.startswith("mem_")}
    assert lost == dict.fromkeys(
        ("mem_copy_bandwidth", "mem_triad_bandwidth"),
        "OutOfMemoryError: CUDA out of memory. Tried to allocate 512.00 MiB (GPU 0; 5.80 GiB total capacity)",
    )


def test_mps_arrays_are_float32_for_the_device_type_torch_gives() -> None:
    """Metal has no float64: a device torch names "mps" (its .type is a fresh string, not the literal
    in the code) gets float32 arrays; the dtype choice only, no Apple GPU needed to make the device."""
    assert array_dtype(torch.device("mps").type) == torch.float32
    assert array_dtype(torch.device("cpu").type) == torch.float64


@pytest.mark.usefixtures("known_seconds")
def test_a_cpu_records_torchs_threads_for_a_kind_read_by_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kind given as text built at run time is not the interned literal: a CPU's figures still carry
    torch's thread count (fed: 3, not this machine's)."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    result = measure_memory("cpu", "gpu,cpu".split(",")[1], quick=True, llc_bytes=8 * MiB)
    assert [m.params["threads"] for m in result.measurements] == [3, 3]
