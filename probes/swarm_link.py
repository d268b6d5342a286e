"""How the ranks of `flopwatt swarm` find each other, talk, and notice that one of them is gone.

The rendezvous is the collective probe's (`--rank R --world N --master HOST:PORT`, or torchrun's
variables): a TCPStore on the master, then an NCCL process group where every rank trains on an NVIDIA
GPU, else gloo (CPUs, or machines of different kinds; a GPU rank's tensors then cross the host). gloo then connects every pair of ranks directly, each
listening on a port it picks at random: behind NAT that takes a VPN such as WireGuard, since no port
forwarding can name a random port. Before gloo does, every rank tries a TCP connection to every other
on a port picked the same way, so that a pair that cannot connect is named, host and port, in one
line (gloo's own error names neither).

A rank that drops out must end the run everywhere within a bounded time, and rank 0 must still
store what was measured. A process that dies closes its sockets, so the peers blocked on it fail at
once; a machine that vanishes (power, cable) is noticed when the next collective passes `timeout_s`.
But a rank blocked on a *live* peer that has itself failed would wait for that timeout, so:

- every rank posts what it measured to the store on the master (`Board.post`) at the end of each
  strategy, and when it fails;
- a rank that fails writes the cause to the store's "failed" key; a watchdog thread on every other
  rank sees it within half a second and posts that rank's measurements for it, even while its main
  thread is stuck in a collective;
- rank 0 then waits a few seconds for every rank's post: the ranks that posted nothing are the lost
  ones, named in the stored run. Then the ranks exit, which frees any peer still blocked on them.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psutil
import torch
import torch.distributed as dist

from probes import collective
from probes.measurement import ProbeError

#: What a user must open when ranks cannot reach each other (README, "flopwatt swarm").
PEER_ADVICE = (
    "gloo connects every pair of ranks directly, each listening on a random TCP port, so port forwarding "
    "cannot cover it: put the machines on one network or join them over a VPN such as WireGuard"
)
#: How long one rank tries to open a connection to another before calling it unreachable.
PEER_CHECK_S = 10.0
_BOARD = "flopwatt/swarm/board/"
_GROUP = "flopwatt/swarm/group/"
_FAILED = "failed"
WATCH_INTERVAL_S = 0.5


def rendezvous(rank: int | None, world: int | None, master: str | None, env: Mapping[str, str]) -> collective.Rendezvous:
    """The collective probe's rendezvous rules, its messages worded for `swarm`."""
    return collective.resolve_rendezvous(rank, world, master, env, probe="swarm")


def _group(store: dist.Store, rv: collective.Rendezvous, backend: str, device: torch.device, address: str,
           timeout_s: float) -> dist.ProcessGroup:
    """A gloo or NCCL process group, usable by DDP and by `send`/`recv`."""
    prefixed = dist.PrefixStore(_GROUP, store)
    timeout = timedelta(seconds=timeout_s)
    try:
        if backend == "nccl":
            torch.cuda.set_device(device)
            options = dist.ProcessGroupNCCL.Options()
            options._timeout = timeout
            made: Any = dist.ProcessGroupNCCL(prefixed, rv.rank, rv.world, options)
            kind, home = dist.ProcessGroup.BackendType.NCCL, device
        else:
            options = dist.ProcessGroupGloo._Options()
            options._devices = [dist.ProcessGroupGloo.create_device(hostname=address)]
            options._timeout = timeout
            made = dist.ProcessGroupGloo(prefixed, rv.rank, rv.world, options)
            kind, home = dist.ProcessGroup.BackendType.GLOO, torch.device("cpu")
    except RuntimeError as exc:
        peer = re.search(r"\[([^\]]+)\]:(\d+)", str(exc))
        where = f"its peer at {peer[1]}:{peer[2]}" if peer else "one of its peers"
        raise ProbeError(
            f"swarm: rank {rv.rank} reached the master {rv.master} but not {where} within {timeout_s:g} s "
            f"({collective.error_gist(exc)}); {PEER_ADVICE}"
        ) from exc
    # DDP takes a ProcessGroup, not a bare backend: wrap it as init_process_group does.
    group = dist.ProcessGroup(prefixed, rv.rank, rv.world)
    group._register_backend(home, kind, made)
    if backend == "gloo" and device.type == "cuda":
        group._register_backend(device, kind, made)  # gloo all-reduces CUDA tensors through the host
    group._set_default_backend(kind)
    return group


def _check_peers(board: Board, rv: collective.Rendezvous, address: str, timeout_s: float) -> None:
    """Every rank opens a TCP connection to every other, as gloo is about to: a pair that cannot
    connect is named (host and port) instead of surfacing as gloo's bare connect error."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.create_server((address, 0), family=family) as listener:
        listener.settimeout(0.2)
        done = threading.Event()

        def accept() -> None:
            while not done.is_set():
                try:
                    listener.accept()[0].close()
                except TimeoutError:
                    continue
                except OSError:
                    return

        threading.Thread(target=accept, name="flopwatt-swarm-peer-check", daemon=True).start()
        board.post(f"peer/{rv.rank}", [address, listener.getsockname()[1]])
        peers = board.collect([f"peer/{r}" for r in range(rv.world)], timeout_s)
        failed = []
        for key, (host, port) in sorted(peers.items()):
            rank = int(key.split("/")[1])
            if rank == rv.rank:
                continue
            try:
                socket.create_connection((host, port), timeout=min(timeout_s, PEER_CHECK_S)).close()
            except OSError as exc:
                where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                failed.append(f"rank {rank} at {where} ({exc.strerror or type(exc).__name__})")
        board.post(f"reach/{rv.rank}", failed)
        verdicts = board.collect([f"reach/{r}" for r in range(rv.world)], timeout_s + PEER_CHECK_S)
        board.post(f"read/{rv.rank}", True)
        if rv.rank == 0:  # the store leaves with rank 0: every rank must have read the verdicts first
            board.collect([f"read/{r}" for r in range(rv.world)], timeout_s)
        done.set()
    if failed:
        raise ProbeError(f"swarm: rank {rv.rank} reached the master {rv.master} but could not connect to "
                         f"{', '.join(failed)}; {PEER_ADVICE}")
    for key, others in sorted(verdicts.items()):
        if others:
            raise ProbeError(f"swarm: {key.replace('reach/', 'rank ')} could not connect to {others[0]}; {PEER_ADVICE}")


class Board:
    """Values the ranks leave for rank 0 in the master's store, as JSON under short keys.

    The store lives in rank 0's process: when it is gone, every call says so in one line.
    """

    def __init__(self, store: dist.Store, master: str) -> None:
        self.store = store
        self.master = master

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        try:
            yield
        except (RuntimeError, OSError) as exc:
            raise ProbeError(f"swarm: lost the master {self.master} (rank 0): {collective.error_gist(exc)}; "
                             "nothing is stored here (rank 0 stores the run)") from None

    def post(self, key: str, value: Any) -> None:
        with self._reaching():
            self.store.set(_BOARD + key, json.dumps(value))

    def fail(self, cause: str) -> None:
        """Record the first failure's cause; later ones keep it."""
        with self._reaching():
            self.store.compare_set(_BOARD + _FAILED, "", cause)

    def failure(self) -> str | None:
        key = _BOARD + _FAILED
        with self._reaching():
            return self.store.get(key).decode() if self.store.check([key]) else None

    def collect(self, keys: list[str], wait_s: float) -> dict[str, Any]:
        """Those of `keys` posted within `wait_s` (all of them, as soon as they are there)."""
        deadline = time.monotonic() + wait_s
        with self._reaching():
            while True:
                present = [k for k in keys if self.store.check([_BOARD + k])]
                if len(present) == len(keys) or time.monotonic() > deadline:
                    return {k: json.loads(self.store.get(_BOARD + k)) for k in present}
                time.sleep(0.05)


class Watchdog:
    """Calls `on_failure(cause)` once, from its own thread, when any rank reports a failure.

    It reads the store through its own connection (`clone`), so it works while the main thread is
    blocked in a collective. It stops quietly when the master is gone: the main thread hears of
    that from its own collectives.
    """

    def __init__(self, store: dist.TCPStore, on_failure: Callable[[str], None]) -> None:
        self._store = store.clone()
        self._on_failure = on_failure
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flopwatt-swarm-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        board = Board(self._store, "")
        while not self._stop.wait(WATCH_INTERVAL_S):
            try:
                cause = board.failure()
            except ProbeError:
                return
            if cause:
                self._on_failure(cause)
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class NicCounter:
    """Bytes sent by the network interface that carries this rank's traffic (psutil).

    It counts what really left the machine, headers and retransmissions included, and anything else
    the machine sent meanwhile. Where the ranks talk over loopback its counter is shared by every
    rank on the machine, so it is refused (`unavailable` says why).
    """

    def __init__(self, address: str) -> None:
        self.interface: str | None = None
        self.unavailable: str | None = None
        if ipaddress.ip_address(address.split("%")[0]).is_loopback:
            self.unavailable = "the ranks talk over loopback, whose byte counter every rank on this machine shares"
            return
        for name, addresses in psutil.net_if_addrs().items():
            if any(a.address.split("%")[0] == address for a in addresses):
                self.interface = name
                return
        self.unavailable = f"no network interface holds {address} (psutil.net_if_addrs)"

    def sent(self) -> int | None:
        if self.interface is None:
            return None
        counters = psutil.net_io_counters(pernic=True).get(self.interface)
        return counters.bytes_sent if counters else None


@dataclass
class Link:
    """This rank's connection to the swarm."""

    rank: int
    world: int
    master: str
    store: dist.TCPStore
    group: dist.ProcessGroup
    board: Board
    nic: NicCounter
    #: Where this rank trains, and where its messages must be (CUDA for NCCL, the CPU for gloo).
    device: torch.device
    backend: str

    @property
    def comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def close(self) -> None:
        """Release the group (its sockets close, and free any peer still waiting, when the process exits)."""
        self.group.shutdown()


def join(rank: int | None, world: int | None, master: str | None, device: torch.device, timeout_s: float) -> Link:
    """Meet the other ranks (see the module docstring); ProbeError naming the host and port that failed."""
    rv = rendezvous(rank, world, master, os.environ)
    address = collective.local_address(rv, probe="swarm")
    store = collective.join_store(rv, timeout_s, hosts=rv.rank == 0, probe="swarm", unreachable_advice=(
        f"start rank 0 first and let TCP port {rv.port} in on it (behind NAT: forward that port, or join over a "
        "VPN such as WireGuard)"))
    board = Board(store, rv.master)
    _check_peers(board, rv, address, timeout_s)
    board.post(f"device/{rv.rank}", device.type)
    kinds = board.collect([f"device/{r}" for r in range(rv.world)], timeout_s)
    backend = "nccl" if len(kinds) == rv.world and set(kinds.values()) == {"cuda"} else "gloo"
    group = _group(store, rv, backend, device, address, timeout_s)
    return Link(rv.rank, rv.world, rv.master, store, group, board, NicCounter(address), device, backend)

