"""Collective probe: all-reduce bandwidth and latency between N processes or machines.

Every rank runs this probe (`--rank R --world N --master HOST:PORT`, or under torchrun, which sets
RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT). They meet through a torch.distributed TCPStore on the
master, build a gloo (CPU tensors) or NCCL (CUDA tensors) process group and all-reduce float32
buffers of growing size. Only rank 0 reports; the others return an empty result.

Figures follow nccl-tests (doc/PERFORMANCE.md): for a message of S bytes taking t seconds,
algbw = S / t and busbw = algbw * 2(n-1)/n. The factor is what an all-reduce must move across each
rank's link per byte of message (n-1 partial sums out and n-1 results back, spread over n links),
so busbw is comparable with the link's own bandwidth whatever the number of ranks.

Sizes grow until one all-reduce takes longer than `op_limit_s`: on a 25 Mbit/s home uplink a
single 256 MiB all-reduce takes about 90 s, and the sizes skipped are reported as unavailable
with that reason rather than left to run for an hour.

Before the sweep, one untimed all-reduce: NCCL creates its communicator lazily, at the first
collective (bootstrap, topology search, across machines socket setup: often 1-5 s), which the
sweep would otherwise take for a slow link. Under torchrun each rank uses cuda:$LOCAL_RANK, so the
ranks of one machine never share a GPU (NCCL refuses that). A torch without NCCL (every Windows
build) all-reduces CPU tensors over gloo instead, and the figures say so in `backend_note`.

Each operation is timed on the host around `synchronize()`, as a user of a training loop sees it:
latency therefore includes the synchronisation (about 10-30 us on a GPU), which nccl-tests'
device-event timing of many back-to-back operations leaves out. Fine for home links measured in
milliseconds; on NVLink it overstates small-message latency (`timer` in the figures' params).
"""

from __future__ import annotations

import math
import os
import re
import socket
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from probes.measurement import Measurement, ProbeError, ProbeResult, ProgressCallback, Unavailable, no_progress
from probes.timing import synchronize

PROBE = "collective"
KiB = 1024
#: 1 KiB to 256 MiB, doubling (nccl-tests' `-b 1K -e 256M -f 2`).
DEFAULT_SIZES: tuple[int, ...] = tuple(2**k for k in range(10, 29))
#: 1 KiB to 16 MiB, quadrupling.
QUICK_SIZES: tuple[int, ...] = tuple(4**k * KiB for k in range(8))
_ELEMENT = 4  # float32
_STORE_PREFIX = "flopwatt/collective"
TIMER = "host clock around synchronize(), slowest rank"


def busbw_factor(world: int) -> float:
    """nccl-tests' all-reduce correction from algorithm to bus bandwidth: 2(n-1)/n."""
    return 2 * (world - 1) / world


@dataclass(frozen=True)
class Rendezvous:
    """Who this process is and where the ranks meet."""

    rank: int
    world: int
    host: str
    port: int

    @property
    def master(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def resolve_rendezvous(
    rank: int | None, world: int | None, master: str | None, env: Mapping[str, str], *, probe: str = PROBE
) -> Rendezvous:
    """Explicit options first, else torchrun's variables; ProbeError naming what is missing, worded for
    `probe` (the swarm meets by the same rules)."""
    if master is not None:
        host, colon, port_text = master.strip().rpartition(":")
        host = host.strip("[]")
        if not colon or not host or not port_text.isdigit():
            raise ProbeError(f"{probe}: bad master {master!r}: expected HOST:PORT")
    else:
        host, port_text = env.get("MASTER_ADDR", ""), env.get("MASTER_PORT", "")
        if not host or not port_text.isdigit():
            raise ProbeError(f"{probe}: no master: pass --master HOST:PORT or set MASTER_ADDR and MASTER_PORT")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ProbeError(f"{probe}: bad master port {port}: expected 1 to 65535")
    values: dict[str, int] = {}
    for name, given, variable, option in (("rank", rank, "RANK", "--rank R"), ("world", world, "WORLD_SIZE", "--world N")):
        if given is None:
            text = env.get(variable, "")
            if not text.isdigit():
                raise ProbeError(f"{probe}: no {name}: pass {option} or set {variable}")
            given = int(text)
        values[name] = given
    if values["world"] < 2:
        raise ProbeError(f"{probe}: needs at least 2 ranks, not world {values['world']}")
    if not 0 <= values["rank"] < values["world"]:
        raise ProbeError(f"{probe}: rank {values['rank']} is outside world {values['world']} (0..{values['world'] - 1})")
    return Rendezvous(values["rank"], values["world"], host, port)


def error_gist(exc: BaseException) -> str:
    """The gist of a torch.distributed error: its first sentence, without C++ source locations
    ("[/__w/pytorch/.../pair.cc:553]"), which mean nothing to a user and read as markup to rich."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"\[[^\]\s]*\.(?:cc|cpp|h|hpp):\d+\]\s*", "", text)
    text = re.sub(r"Got the following error when running the callback: \w+: ", "", text)  # DDP's future
    return text.split(". ")[0].rstrip(".")[:200]


def join_store(rv: Rendezvous, timeout_s: float, *, hosts: bool, probe: str = PROBE,
               unreachable_advice: str = "") -> dist.TCPStore:
    """Meet at the master's TCPStore: every rank checks in, and the rank that `hosts` it waits for all.

    torch's errors become one line naming what to do: the ranks still missing, a port in use, a
    master that cannot be reached (with `unreachable_advice`, or the cause when there is none).
    """
    try:
        return dist.TCPStore(rv.host, rv.port, rv.world, hosts, timeout=timedelta(seconds=timeout_s))
    except (RuntimeError, OSError) as exc:
        text = str(exc)
        joined = re.search(r"(\d+)/(\d+) clients joined", text)
        if joined:
            raise ProbeError(
                f"{probe}: only {joined[1]} of {rv.world} ranks joined master {rv.master} within {timeout_s:g} s; "
                f"start the missing ranks with --world {rv.world} --master {rv.master}"
            ) from exc
        if "EADDRINUSE" in text or "address already in use" in text.lower():  # torch's error name, or strerror's words
            raise ProbeError(f"{probe}: port {rv.port} is already in use on the master ({rv.master}); pick another") from exc
        if hosts:
            raise ProbeError(f"{probe}: cannot listen as master {rv.master}: {error_gist(exc)}") from exc
        raise ProbeError(
            f"{probe}: rank {rv.rank} could not reach the master {rv.master} within {timeout_s:g} s: "
            f"{unreachable_advice or error_gist(exc)}"
        ) from exc


def local_address(rv: Rendezvous, *, probe: str = PROBE) -> str:
    """The address this machine uses to reach the master: the one gloo must listen on.

    gloo's default resolves the hostname, which on many home PCs maps to 127.0.1.1 and would make
    peers dial their own loopback. A UDP connect picks the route and sends nothing.
    """
    try:
        family, _, _, _, address = socket.getaddrinfo(rv.host, rv.port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.connect(address)
            return str(udp.getsockname()[0])
    except OSError as exc:
        raise ProbeError(f"{probe}: no route from rank {rv.rank} to master {rv.master}: {exc.strerror or exc}") from exc


def _process_group(store: dist.Store, rv: Rendezvous, backend: str, device: torch.device, timeout_s: float) -> dist.ProcessGroup:
    try:
        if backend == "gloo":
            options = dist.ProcessGroupGloo._Options()
            options._devices = [dist.ProcessGroupGloo.create_device(hostname=local_address(rv))]
            options._timeout = timedelta(seconds=timeout_s)
            return dist.ProcessGroupGloo(store, rv.rank, rv.world, options)
        torch.cuda.set_device(device)
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timedelta(seconds=timeout_s)
        return dist.ProcessGroupNCCL(store, rv.rank, rv.world, options)
    except RuntimeError as exc:
        raise ProbeError(
            f"collective: ranks met at {rv.master} but rank {rv.rank} could not connect to the others: {error_gist(exc)}"
        ) from exc


class _Sweep:
    """The all-reduce loop every rank runs in step.

    A rank's own clock is not enough: its all-reduce can return while its last chunk still sits
    in socket buffers on its way to a peer, so one rank's times run fast by whatever was queued.
    After each timed all-reduce the ranks therefore exchange their times and keep the slowest
    (an 8-byte MAX all-reduce, not timed), which also lines them up for the next one, and gives
    every rank the same figures to decide on.
    """

    def __init__(self, group: dist.ProcessGroup, rv: Rendezvous, device: torch.device) -> None:
        self.group, self.rv, self.device = group, rv, device

    def _max(self, value: float) -> float:
        cell = torch.tensor([value], dtype=torch.float64, device=self.device)
        options = dist.AllreduceOptions()
        options.reduceOp = dist.ReduceOp.MAX
        self.group.allreduce([cell], options).wait()
        return float(cell.item())

    def warm_up(self) -> None:
        """One untimed all-reduce and time exchange: NCCL's communicator is made here, not in a timed one."""
        self.allreduce(torch.ones(1, device=self.device))

    def allreduce(self, buffer: torch.Tensor) -> float:
        """Seconds the slowest rank took for one all-reduce of `buffer`."""
        synchronize(self.device)
        start = time.perf_counter()
        self.group.allreduce([buffer]).wait()
        synchronize(self.device)
        elapsed = time.perf_counter() - start
        buffer.div_(self.rv.world)  # a sum grows n-fold each time; keep values finite over repeats
        return self._max(elapsed)


NO_NCCL = (
    "this torch has no NCCL (no Windows build does): gloo all-reduces CPU tensors instead, "
    "so the figures are the network's and the host's, not the GPU's"
)


def rank_device(device: str, env: Mapping[str, str]) -> torch.device:
    """The GPU this rank uses: cuda:$LOCAL_RANK under torchrun (one GPU per local rank), else `device`."""
    dev = torch.device(device)
    local_rank = env.get("LOCAL_RANK", "")
    if dev.type == "cuda" and local_rank.isdigit():
        return torch.device("cuda", int(local_rank))
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", 0)
    return dev


def measure_collective(
    *,
    rank: int | None = None,
    world: int | None = None,
    master: str | None = None,
    device: str = "cpu",
    backend: str | None = None,
    sizes: Sequence[int] | None = None,
    quick: bool = False,
    timeout_s: float = 60.0,
    size_budget_s: float | None = None,
    op_limit_s: float | None = None,
    min_iterations: int = 3,
    max_iterations: int = 100,
    progress: ProgressCallback = no_progress,
) -> ProbeResult:
    """All-reduce bus bandwidth per message size (`allreduce_busbw`, B/s) and latency (`allreduce_latency`, s).

    Each size runs one warm-up all-reduce, then as many timed ones as fit `size_budget_s`
    (within `min_iterations`..`max_iterations`); every timed all-reduce is one sample. A warm-up
    slower than `op_limit_s` ends the sweep. Ranks that
    do not all join within `timeout_s`, or a rank lost mid-sweep, raise ProbeError; only rank 0
    returns measurements.
    """
    rv = resolve_rendezvous(rank, world, master, os.environ)
    dev = rank_device(device, os.environ)
    note = None
    if backend is None and dev.type == "cuda" and not dist.is_nccl_available():
        dev, note = torch.device("cpu"), NO_NCCL
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if backend not in ("gloo", "nccl"):
        raise ProbeError(f"collective: unknown backend {backend!r}: use gloo (CPU tensors) or nccl (CUDA tensors)")
    if backend == "nccl" and (dev.type != "cuda" or not dist.is_nccl_available()):
        raise ProbeError("collective: nccl needs CUDA tensors and a torch built with NCCL; use --device cpu (gloo)")
    if backend == "gloo" and (dev.type != "cpu" or not dist.is_gloo_available()):
        raise ProbeError("collective: gloo here runs on CPU tensors (this torch must be built with gloo)")
    chosen = sorted(set(sizes or (QUICK_SIZES if quick else DEFAULT_SIZES)))
    if chosen[0] < _ELEMENT or any(size % _ELEMENT for size in chosen):
        raise ProbeError(f"collective: message sizes must be positive multiples of {_ELEMENT} bytes (float32)")
    budget = size_budget_s if size_budget_s is not None else (0.3 if quick else 1.0)
    limit = op_limit_s if op_limit_s is not None else (2.0 if quick else 10.0)

    progress(f"collective: rank {rv.rank} of {rv.world} joining {rv.master}", 0.0)
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # torchrun's agent hosts it
    store = dist.PrefixStore(_STORE_PREFIX, join_store(rv, timeout_s, hosts=rv.rank == 0 and not agent_store))
    # The warm-up of the size that ends the sweep may take a few times `limit` (sizes grow 2-4x).
    group = _process_group(store, rv, backend, dev, max(timeout_s, 10 * limit))
    result = _run(_Sweep(group, rv, dev), chosen, budget, limit, min_iterations, max_iterations, backend, progress, note)
    progress("collective: done", 1.0)
    return result if rv.rank == 0 else ProbeResult()


def _run(
    sweep: _Sweep, sizes: list[int], budget_s: float, limit_s: float, min_iterations: int, max_iterations: int,
    backend: str, progress: ProgressCallback, note: str | None = None,
) -> ProbeResult:
    """Every rank sees the same (slowest) times, so every rank takes the same decisions."""
    rv, result = sweep.rv, ProbeResult()
    factor = busbw_factor(rv.world)
    common = {"world": rv.world, "backend": backend, "master": rv.master, "op": "sum", "timer": TIMER,
              "size_budget_s": budget_s, "op_limit_s": limit_s}
    if note:
        common["backend_note"] = note
    try:
        sweep.warm_up()
    except RuntimeError as exc:
        raise ProbeError(
            f"collective: the first all-reduce failed on rank {rv.rank} (a rank left or a link dropped): {error_gist(exc)}"
        ) from exc
    for index, nbytes in enumerate(sizes):
        progress(f"collective: all-reduce {nbytes} B", index / len(sizes))
        try:
            buffer = torch.rand(nbytes // _ELEMENT, device=sweep.device) + 1.0  # random, never zero
            first = sweep.allreduce(buffer)
            if first > limit_s:
                reason = (
                    f"sizes {nbytes} to {sizes[-1]} B skipped: one all-reduce of {nbytes} B took {first:.3g} s, "
                    f"over the {limit_s:g} s allowed per operation"
                )
                result.unavailable.append(
                    Unavailable(probe=PROBE, metric="allreduce_busbw", device=str(sweep.device), dtype="float32", reason=reason)
                )
                break
            iterations = max(min_iterations, min(max_iterations, math.ceil(budget_s / first)))
            times = [sweep.allreduce(buffer) for _ in range(iterations)]
        except RuntimeError as exc:
            raise ProbeError(
                f"collective: all-reduce of {nbytes} B failed on rank {rv.rank} (a rank left or a link dropped): "
                f"{error_gist(exc)}; partial samples discarded"
            ) from exc
        median = statistics.median(times)
        result.measurements.append(
            Measurement(
                probe=PROBE, metric="allreduce_busbw", unit="B/s", dtype="float32", device=str(sweep.device),
                variant=f"{nbytes}B", samples=[nbytes / t * factor for t in times],
                params={
                    **common, "bytes": nbytes, "iterations": iterations, "busbw_factor": factor,
                    "algbw_B_s": nbytes / median, "time_s": median,
                },
            )  # fmt: skip
        )
        if index == 0:
            result.measurements.append(
                Measurement(
                    probe=PROBE, metric="allreduce_latency", unit="s", dtype="float32", device=str(sweep.device),
                    samples=times, params={**common, "bytes": nbytes, "iterations": iterations},
                )  # fmt: skip
            )
    return result
