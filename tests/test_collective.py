"""The collective probe between real processes on real (namespace) links, and its faults.

What a shaped link should give (nccl-tests, doc/PERFORMANCE.md): a ring all-reduce of S bytes over
n ranks sends 2(n-1)/n * S bytes out of every rank: n-1 reduce-scatter chunks of S/n, then n-1
all-gather chunks. With one rank's uplink limited to a TCP goodput of G B/s, the all-reduce takes
t = 2(n-1)/n * S / G, so algbw = S/t = G * n / (2(n-1)), and busbw = algbw * 2(n-1)/n = G whatever
n is. G is the tbf rate in bytes times 1448/1514: the TCP payload of a full frame (MTU 1500,
timestamps on) over the bytes tbf counts for it (the frame with its 14-byte Ethernet header).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from netns import Host, Lab, uses_netns
from probes import collective
from probes.collective import Rendezvous, busbw_factor, measure_collective, rank_device, resolve_rendezvous
from probes.measurement import ProbeError, ProbeResult

MiB = 1024 * 1024
GOODPUT = 1448 / 1514
RANK_SCRIPT = """
import json, sys
from probes.collective import measure_collective
from probes.measurement import ProbeError
try:
    result = measure_collective(**json.loads(sys.argv[1]))
except ProbeError as exc:
    sys.exit(str(exc))
print(result.model_dump_json())
"""


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- without a network -------------------------------------------------------------------------


def test_busbw_factor_is_nccl_tests_allreduce_correction() -> None:
    assert [busbw_factor(n) for n in (2, 3, 4, 8)] == [1.0, 4 / 3, 1.5, 1.75]


class ScriptedSweep(collective._Sweep):
    """All-reduces that take known times: the first one made (the communicator's creation) 3 s,
    then 1 ms + 1 ns per byte. Records the size of every buffer reduced."""

    def __init__(self, world: int) -> None:
        super().__init__(group=None, rv=Rendezvous(rank=0, world=world, host="10.0.0.1", port=29500), device=torch.device("cpu"))
        self.reduced: list[int] = []

    def allreduce(self, buffer: torch.Tensor) -> float:
        self.reduced.append(buffer.numel() * buffer.element_size())
        return 3.0 if len(self.reduced) == 1 else 1e-3 + buffer.numel() * buffer.element_size() * 1e-9


def test_the_first_all_reduce_is_untimed_and_the_figures_are_exact() -> None:
    """Without the warm-up, the 3 s of communicator creation would end the sweep at its first size."""
    sweep = ScriptedSweep(world=4)
    result = collective._run(sweep, [1024, 4096], budget_s=0.0, limit_s=2.0, min_iterations=3, max_iterations=100,
                             backend="nccl", progress=lambda *_: None)  # fmt: skip
    assert sweep.reduced == [4] + [1024] * 4 + [4096] * 4  # warm-up, then per size one untimed + 3 timed
    assert result.unavailable == []
    by_size = {m.params["bytes"]: m for m in result.measurements if m.metric == "allreduce_busbw"}
    for nbytes, t in ((1024, 1e-3 + 1024e-9), (4096, 1e-3 + 4096e-9)):
        m = by_size[nbytes]
        assert m.samples == [nbytes / t * 1.5] * 3  # busbw = algbw * 2(n-1)/n, n = 4
        assert (m.params["algbw_B_s"], m.params["time_s"], m.params["iterations"]) == (nbytes / t, t, 3)
        assert m.params["busbw_factor"] == 1.5 and m.variant == f"{nbytes}B"
    [latency] = [m for m in result.measurements if m.metric == "allreduce_latency"]
    assert latency.samples == [1e-3 + 1024e-9] * 3 and latency.params["bytes"] == 1024
    assert latency.params["timer"] == "host clock around synchronize(), slowest rank"


def test_each_size_takes_as_many_all_reduces_as_fit_its_budget() -> None:
    """0.1 s over 1.001024 ms (1 KiB) fits 99.9: 100 of them; 0.1 s over 5.096 ms (4 MiB) 19.6: 20."""
    sweep = ScriptedSweep(world=2)
    result = collective._run(sweep, [1024, 4 * MiB], budget_s=0.1, limit_s=2.0, min_iterations=3, max_iterations=1000,
                             backend="gloo", progress=lambda *_: None)  # fmt: skip
    iterations = [m.params["iterations"] for m in result.measurements if m.metric == "allreduce_busbw"]
    assert iterations == [100, 20]


class BrokenSweep(ScriptedSweep):
    def allreduce(self, buffer: torch.Tensor) -> float:
        raise RuntimeError("Connection closed by peer [10.0.0.2]:35012\nmore detail")


def test_a_first_all_reduce_that_fails_names_the_rank_and_the_first_line_of_the_cause() -> None:
    with pytest.raises(ProbeError) as err:
        collective._run(BrokenSweep(world=2), [1024], budget_s=0.0, limit_s=2.0, min_iterations=3, max_iterations=100,
                        backend="gloo", progress=lambda *_: None)  # fmt: skip
    assert str(err.value) == ("collective: the first all-reduce failed on rank 0 (a rank left or a link dropped): "
                              "Connection closed by peer [10.0.0.2]:35012")


def test_the_sweep_reports_its_progress_by_sizes_done() -> None:
    done: list[float] = []
    collective._run(ScriptedSweep(world=2), [1024, 4096, 16384, 65536], budget_s=0.0, limit_s=2.0, min_iterations=3,
                    max_iterations=100, backend="gloo", progress=lambda _, fraction: done.append(fraction))  # fmt: skip
    assert done == [0.0, 0.25, 0.5, 0.75]


def test_a_size_over_the_limit_skips_it_and_every_larger_one_naming_the_last() -> None:
    sweep = ScriptedSweep(world=2)  # all-reduces of 1 ms + 1 ns a byte: 4 MiB takes 5.19 ms
    result = collective._run(sweep, [1024, 4 * MiB, 16 * MiB], budget_s=0.0, limit_s=0.005, min_iterations=3,
                             max_iterations=100, backend="gloo", progress=lambda *_: None)  # fmt: skip
    assert [m.params["bytes"] for m in result.measurements if m.metric == "allreduce_busbw"] == [1024]
    [skipped] = result.unavailable
    assert skipped.reason == (f"sizes {4 * MiB} to {16 * MiB} B skipped: one all-reduce of {4 * MiB} B took 0.00519 s, "
                              "over the 0.005 s allowed per operation")


@pytest.mark.parametrize("sizes", [[0], [1024, 6]])
def test_sizes_must_be_positive_multiples_of_a_float32(sizes: list[int]) -> None:
    with pytest.raises(ProbeError, match="^collective: message sizes must be positive multiples of 4 bytes"):
        measure_collective(rank=0, world=2, master="127.0.0.1:1", sizes=sizes)


def test_an_error_is_cut_to_its_first_sentence_without_the_source_location() -> None:
    located = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:598] Connection closed by peer. Retry\nmore")
    assert collective.error_gist(located) == "Connection closed by peer"
    assert collective.error_gist(RuntimeError()) == "RuntimeError"  # no message: its type


def test_nccl_needs_both_cuda_tensors_and_nccl_before_any_rendezvous(monkeypatch: pytest.MonkeyPatch) -> None:
    for available, device in ((False, "cuda:0"), (False, "cpu"), (True, "cpu")):
        monkeypatch.setattr(dist, "is_nccl_available", lambda answer=available: answer)
        with pytest.raises(ProbeError, match="^collective: nccl needs CUDA tensors and a torch built with NCCL"):
            measure_collective(rank=0, world=2, master="127.0.0.1:1", device=device, backend="nccl")


def test_the_process_group_waits_ten_times_the_operation_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The warm-up of the size that ends the sweep may take a few times the limit (sizes grow 2-4x)."""
    waited: list[float] = []

    def process_group(store: object, rv: object, backend: str, dev: object, timeout_s: float) -> None:
        waited.append(timeout_s)
        raise ProbeError("stop here")

    monkeypatch.setattr(collective, "join_store", lambda *_, **__: dist.HashStore())
    monkeypatch.setattr(collective, "_process_group", process_group)
    for timeout_s, limit_s in ((5.0, 3.0), (60.0, 3.0)):
        with pytest.raises(ProbeError, match="stop here"):
            measure_collective(rank=0, world=2, master="127.0.0.1:1", timeout_s=timeout_s, op_limit_s=limit_s)
    with pytest.raises(ProbeError, match="stop here"):  # the defaults: 10 s a full sweep's operation
        measure_collective(rank=0, world=2, master="127.0.0.1:1", sizes=[4])  # one float32 is a size
    with pytest.raises(ProbeError, match="stop here"):  # 60 s to join; --quick allows 2 s an operation
        measure_collective(rank=0, world=2, master="127.0.0.1:1", quick=True)
    assert waited == [30.0, 60.0, 100.0, 60.0]


def test_ranks_that_met_but_cannot_connect_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    class RefusingGloo:
        _Options = dist.ProcessGroupGloo._Options
        create_device = dist.ProcessGroupGloo.create_device

        def __init__(self, *_: object) -> None:
            raise RuntimeError("[../gloo/transport/tcp/pair.cc:144] Connection refused. Is the peer up?")

    monkeypatch.setattr(dist, "ProcessGroupGloo", RefusingGloo)
    rv = Rendezvous(rank=1, world=2, host="127.0.0.1", port=29500)
    with pytest.raises(ProbeError) as err:
        collective._process_group(None, rv, "gloo", torch.device("cpu"), 5.0)  # type: ignore[arg-type]
    assert str(err.value) == ("collective: ranks met at 127.0.0.1:29500 but rank 1 could not connect to the others: "
                              "Connection refused")


def test_a_backend_read_from_text_takes_the_gloo_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """measure_collective's backend is its caller's string: RANK_SCRIPT below reads it from JSON on argv,
    which is not the interned literal, and it must still make a gloo group. gloo's group is a stand-in
    that records how it was made (a real one would wait for a peer)."""
    made: list[tuple[object, int, int, timedelta]] = []

    class RecordingGloo:
        _Options = dist.ProcessGroupGloo._Options
        create_device = dist.ProcessGroupGloo.create_device

        def __init__(self, store: object, rank: int, world: int, options: dist.ProcessGroupGloo._Options) -> None:
            made.append((store, rank, world, options._timeout))

    monkeypatch.setattr(dist, "ProcessGroupGloo", RecordingGloo)
    store = dist.HashStore()
    rv = Rendezvous(rank=1, world=2, host="127.0.0.1", port=29500)
    group = collective._process_group(store, rv, json.loads('"gloo"'), torch.device("cpu"), 5.0)
    assert isinstance(group, RecordingGloo)
    assert made == [(store, 1, 2, timedelta(seconds=5))]


def test_under_torchrun_each_local_rank_takes_its_own_gpu() -> None:
    assert rank_device("cuda:0", {"LOCAL_RANK": "3"}) == torch.device("cuda", 3)
    assert rank_device("cuda", {"LOCAL_RANK": "1"}) == torch.device("cuda", 1)
    assert rank_device("cuda:2", {}) == torch.device("cuda", 2)
    assert rank_device("cuda", {}) == torch.device("cuda", 0)
    assert rank_device("cpu", {"LOCAL_RANK": "3"}) == torch.device("cpu")
    assert rank_device("mps", {"LOCAL_RANK": "1"}) == torch.device("mps")  # one Apple GPU, whatever the rank


@pytest.mark.parametrize(("device", "note"), [("cuda:0", collective.NO_NCCL), ("cpu", None)])
def test_without_nccl_a_gpu_rank_all_reduces_cpu_tensors_over_gloo(
    monkeypatch: pytest.MonkeyPatch, device: str, note: str | None
) -> None:
    """Windows' torch has no NCCL (fed here): a GPU rank still runs, on CPU tensors, and says so; a CPU
    rank, which never needed NCCL, runs the same way and is told nothing."""
    monkeypatch.setattr(dist, "is_nccl_available", lambda: False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    master = f"127.0.0.1:{_free_loopback_port()}"
    options = {"world": 2, "master": master, "device": device, "sizes": [1024], "timeout_s": 30}
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(measure_collective, rank=1, **options)
        result = measure_collective(rank=0, **options)
        assert other.result().measurements == []
    assert [m.metric for m in result.measurements] == ["allreduce_busbw", "allreduce_latency"]
    assert {m.device for m in result.measurements} == {"cpu"}
    assert {m.params["backend"] for m in result.measurements} == {"gloo"}
    assert {m.params.get("backend_note") for m in result.measurements} == {note}


def _two_ranks_on_loopback(**options: object) -> ProbeResult:
    """Rank 1 in a thread, rank 0 here, on loopback; rank 0's result."""
    master = f"127.0.0.1:{_free_loopback_port()}"
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(measure_collective, rank=1, world=2, master=master, timeout_s=30, **options)
        result = measure_collective(rank=0, world=2, master=master, timeout_s=30, **options)
        assert other.result().measurements == []
    return result


@pytest.mark.parametrize(("quick", "budget_s", "limit_s"), [(True, 0.3, 2.0), (False, 1.0, 10.0)])
def test_each_figure_records_the_sweeps_time_budget_and_limit(quick: bool, budget_s: float, limit_s: float) -> None:
    """--quick spends 0.3 s per size and allows 2 s per all-reduce; a full sweep 1 s and 10 s."""
    result = _two_ranks_on_loopback(quick=quick, sizes=[1024])
    assert {(m.params["size_budget_s"], m.params["op_limit_s"]) for m in result.measurements} == {(budget_s, limit_s)}


def test_at_most_100_all_reduces_per_size_by_default() -> None:
    result = _two_ranks_on_loopback(sizes=[1024], size_budget_s=1e9)
    assert [m.params["iterations"] for m in result.measurements] == [100, 100]  # busbw and latency


def test_the_sweeps_sizes_are_nccl_tests_range_and_a_quick_quarter_of_it() -> None:
    assert collective.DEFAULT_SIZES == tuple(1024 * 2**k for k in range(19))  # 1 KiB to 256 MiB
    assert collective.QUICK_SIZES == (1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)


def test_a_master_that_does_not_resolve_is_named_with_the_resolvers_words(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: object, **__: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    rv = Rendezvous(rank=1, world=2, host="nowhere.invalid", port=29500)
    with pytest.raises(ProbeError) as err:
        collective.local_address(rv)
    assert str(err.value) == "collective: no route from rank 1 to master nowhere.invalid:29500: Name or service not known"


def test_rendezvous_from_torchrun_environment() -> None:
    env = {"RANK": "3", "WORLD_SIZE": "4", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    rv = resolve_rendezvous(None, None, None, env)
    assert (rv.rank, rv.world, rv.master) == (3, 4, "10.0.0.1:29500")
    assert resolve_rendezvous(0, 2, "h:65535", {}).port == 65535  # the highest port is a port
    explicit = resolve_rendezvous(0, 2, "[fe80::1]:1234", env)
    assert (explicit.rank, explicit.world, explicit.host, explicit.port) == (0, 2, "fe80::1", 1234)


@pytest.mark.parametrize(
    ("rank", "world", "master", "message"),
    [
        (None, 2, "h:1", "no rank: pass --rank R or set RANK"),
        (0, None, "h:1", "no world: pass --world N or set WORLD_SIZE"),
        (0, 2, None, "no master: pass --master HOST:PORT or set MASTER_ADDR and MASTER_PORT"),
        (0, 2, "h", "bad master 'h': expected HOST:PORT"),
        (0, 2, ":29500", "bad master ':29500': expected HOST:PORT"),
        (0, 2, "h:70000", "bad master port 70000"),
        (0, 1, "h:1", "needs at least 2 ranks"),
        (2, 2, "h:1", r"rank 2 is outside world 2 \(0\.\.1\)$"),
        (3, 2, "h:1", r"rank 3 is outside world 2 \(0\.\.1\)$"),
    ],
)
def test_rendezvous_errors_say_what_is_missing(rank: int | None, world: int | None, master: str | None, message: str) -> None:
    with pytest.raises(ProbeError, match=f"^collective: {message}"):
        resolve_rendezvous(rank, world, master, {})


def test_rank_that_never_joins_times_out_naming_the_master() -> None:
    master = f"127.0.0.1:{_free_loopback_port()}"
    with pytest.raises(ProbeError) as err:
        measure_collective(rank=0, world=2, master=master, timeout_s=2)
    assert str(err.value) == (
        f"collective: only 1 of 2 ranks joined master {master} within 2 s; "
        f"start the missing ranks with --world 2 --master {master}"
    )


def test_unreachable_master_times_out_naming_it() -> None:
    master = f"127.0.0.1:{_free_loopback_port()}"
    with pytest.raises(ProbeError, match=f"^collective: rank 1 could not reach the master {master} within 1 s: "):
        measure_collective(rank=1, world=2, master=master, timeout_s=1)


def test_sizes_slower_than_the_limit_are_reported_unavailable() -> None:
    """Two ranks as threads on loopback: 1 KiB passes a 20 ms limit, 64 MiB cannot."""
    master = f"127.0.0.1:{_free_loopback_port()}"
    options = {"world": 2, "master": master, "sizes": [1024, 64 * MiB], "op_limit_s": 0.02, "timeout_s": 30}
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(measure_collective, rank=1, **options)
        result = measure_collective(rank=0, **options)
        assert other.result().measurements == []
    assert [m.params["bytes"] for m in result.measurements if m.metric == "allreduce_busbw"] == [1024]
    (skipped,) = result.unavailable
    assert skipped.metric == "allreduce_busbw"
    assert skipped.reason.startswith(f"sizes {64 * MiB} to {64 * MiB} B skipped: one all-reduce of {64 * MiB} B took ")


def test_rank_lost_mid_sweep_discards_partial_samples() -> None:
    master = f"127.0.0.1:{_free_loopback_port()}"
    options = {"world": 2, "master": master, "sizes": [1024, 4 * MiB], "size_budget_s": 30, "timeout_s": 30}
    other = subprocess.Popen(
        [sys.executable, "-c", RANK_SCRIPT, json.dumps({"rank": 1, **options})],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def leave_at_the_second_size(step: str, _fraction: float) -> None:
        if step.endswith(f"{4 * MiB} B"):
            other.kill()
            other.wait()

    try:
        with pytest.raises(ProbeError) as err:
            measure_collective(rank=0, progress=leave_at_the_second_size, **options)
    finally:
        other.kill()
        other.wait()
    message = str(err.value)
    assert message.startswith(f"collective: all-reduce of {4 * MiB} B failed on rank 0 (a rank left or a link dropped): ")
    assert message.endswith("; partial samples discarded") and "\n" not in message


# -- on namespace links ------------------------------------------------------------------------


def _start_rank(host: Host, env: dict[str, str] | None = None, **options: object) -> subprocess.Popen[str]:
    return host.popen(sys.executable, "-c", RANK_SCRIPT, json.dumps(options), env={**os.environ, **(env or {})})


def _finish(proc: subprocess.Popen[str]) -> ProbeResult:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    return ProbeResult.model_validate_json(out)


@uses_netns
@pytest.mark.parametrize("world", [2, 3])
def test_busbw_over_a_shaped_uplink_follows_the_nccl_tests_formula(world: int) -> None:
    rate = 100e6
    goodput = rate / 8 * GOODPUT
    big = 4 * MiB
    with Lab(hosts=world) as lab:
        lab.hosts[0].shape_uplink(rate)
        master = f"{lab.hosts[0].address}:29500"
        options = {"world": world, "sizes": [1024, big], "size_budget_s": 0.5, "timeout_s": 60}
        rank0 = _start_rank(lab.hosts[0], rank=0, master=master, **options)
        # The other ranks meet the way torchrun starts them: from the environment alone.
        others = [
            _start_rank(
                host, {"RANK": str(i), "WORLD_SIZE": str(world), "MASTER_ADDR": lab.hosts[0].address, "MASTER_PORT": "29500"},
                sizes=options["sizes"], size_budget_s=0.5, timeout_s=60,
            )  # fmt: skip
            for i, host in enumerate(lab.hosts[1:], start=1)
        ]
        result = _finish(rank0)
        assert all(_finish(proc).measurements == [] for proc in others)  # only rank 0 reports

    by_size = {m.params["bytes"]: m for m in result.measurements if m.metric == "allreduce_busbw"}
    assert set(by_size) == {1024, big}
    large = by_size[big]
    assert large.params["world"] == world and large.params["backend"] == "gloo" and large.n >= 3
    assert large.value == pytest.approx(goodput, rel=0.15)
    assert large.params["algbw_B_s"] == pytest.approx(goodput * world / (2 * (world - 1)), rel=0.15)
    (latency,) = [m for m in result.measurements if m.metric == "allreduce_latency"]
    assert latency.params["bytes"] == 1024 and 0 < latency.value < 0.1


@pytest.mark.parametrize(("probe", "word"), [({}, "collective"), ({"probe": "swarm"}, "swarm")])
def test_a_master_the_route_refuses_is_named_with_the_probes_word(probe: dict[str, str], word: str) -> None:
    """The error of the UDP connect itself (here a real one: Linux refuses a connect to the broadcast
    address without SO_BROADCAST; a machine without a default route fails there too) is worded for the
    probe, not for the socket that was open when it came."""
    rv = Rendezvous(rank=1, world=2, host="255.255.255.255", port=29500)
    with pytest.raises(ProbeError) as err:
        collective.local_address(rv, **probe)
    assert str(err.value) == f"{word}: no route from rank 1 to master 255.255.255.255:29500: Permission denied"


def test_an_error_gist_is_at_most_200_characters() -> None:
    one_sentence = RuntimeError("Connection reset by peer " + "x" * 300)
    assert collective.error_gist(one_sentence) == "Connection reset by peer " + "x" * 175


class Joined(Exception):
    """Raised where the ranks would meet: the checks before it passed."""


def test_nccl_with_cuda_tensors_and_nccl_passes_the_backend_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The validation logic only (no NCCL, no GPU here): with NCCL reported available, nccl on cuda:0
    goes on to the rendezvous, where a stand-in stops it, hosting the store as rank 0."""
    joined: list[bool] = []

    def join_store(rv: Rendezvous, timeout_s: float, *, hosts: bool) -> None:
        joined.append(hosts)
        raise Joined

    monkeypatch.setattr(dist, "is_nccl_available", lambda: True)
    monkeypatch.setattr(collective, "join_store", join_store)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    with pytest.raises(Joined):
        measure_collective(rank=0, world=2, master="127.0.0.1:1", device="cuda:0", backend="nccl")
    assert joined == [True]


@pytest.mark.parametrize(("device", "gloo", "refused"), [("cpu", False, True), ("cuda:0", True, True), ("cpu", True, False)])
def test_gloo_needs_cpu_tensors_and_gloo(monkeypatch: pytest.MonkeyPatch, device: str, gloo: bool, refused: bool) -> None:
    """gloo's availability is fed (this torch has it): refused without it or on CUDA tensors, else on to
    the rendezvous."""

    def join_store(*_: object, **__: object) -> None:
        raise Joined

    monkeypatch.setattr(dist, "is_gloo_available", lambda: gloo)
    monkeypatch.setattr(collective, "join_store", join_store)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    expected = pytest.raises(ProbeError, match=r"^collective: gloo here runs on CPU tensors \(this torch must be built with gloo\)$")
    with expected if refused else pytest.raises(Joined):
        measure_collective(rank=0, world=2, master="127.0.0.1:1", device=device, backend="gloo")


@pytest.mark.parametrize("env", [{"MASTER_ADDR": "10.0.0.1"}, {"MASTER_PORT": "29500"},
                                 {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "port"}])
def test_torchruns_master_needs_both_its_address_and_a_numeric_port(env: dict[str, str]) -> None:
    with pytest.raises(ProbeError, match=r"^collective: no master: pass --master HOST:PORT or set MASTER_ADDR and "
                                         r"MASTER_PORT$"):
        resolve_rendezvous(0, 2, None, env)


@pytest.mark.parametrize("text", [
    # torch 2.13 on Linux, recorded here binding a second TCPStore master to a port in use:
    "The server socket has failed to listen on any local network address. port: 55669, useIpv6: false, code: -98, "
    "name: EADDRINUSE, message: address already in use",
    # older torch (c10d socket.cpp's bind messages with strerror, as users reported them on torchrun):
    "The server socket has failed to listen on any local network address. The server socket has failed to bind to "
    "[::]:29500 (errno: 98 - Address already in use). The server socket has failed to bind to 0.0.0.0:29500 (errno: "
    "98 - Address already in use).",
])
def test_a_port_in_use_is_named_whichever_way_torch_words_it(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """The words torch uses for EADDRINUSE have changed between versions; either form reads as the
    port in use (the store is fed the error: this is the message logic, not a socket)."""

    def in_use(*args: object, **kwargs: object) -> None:
        raise RuntimeError(text)  # DistNetworkError, torch's newer class for it, is a RuntimeError

    monkeypatch.setattr(dist, "TCPStore", in_use)
    rv = Rendezvous(rank=0, world=2, host="127.0.0.1", port=29500)
    with pytest.raises(ProbeError, match=r"^collective: port 29500 is already in use on the master "
                                         r"\(127\.0\.0\.1:29500\); pick another$"):
        collective.join_store(rv, 1.0, hosts=True)
