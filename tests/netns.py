"""Real links for tests: Linux network namespaces as hosts, a bridge as the switch, tbf as the uplink.

A `Lab` builds what two (or N) home PCs on a shared network look like, entirely on this machine:

    host 0 ns            switch ns                 host 1 ns
    eth0 10.231.0.1 ──veth── p0 ─┐
                                 br0
    eth0 10.231.0.2 ──veth── p1 ─┘

Every host is its own network namespace with loopback up, so programs bound inside see only the lab;
nothing is added to the machine's own namespace, and no traffic leaves the lab. A host's uplink
(what it sends) is shaped on its own eth0, its downlink (what it receives) on its switch port, both
with `tc … tbf` (netem is not available everywhere; tbf is). `Host.cut()` deletes the veth pair, as
if a cable were pulled mid-test.

Use it as a context manager (or through a fixture that does): on exit, even after a failure, it kills
every process it started and every process still living in its namespaces, then deletes them.
Names carry this process's id, so parallel runs never collide, and a lab left behind by a killed run
is removed by the next one.

    with Lab(hosts=2) as lab:
        server = lab.hosts[1].popen("iperf3", "-s")
        lab.hosts[0].shape_uplink(25e6)
        with lab.hosts[0].entered():      # this thread now lives in host 0's namespace
            ...                           # sockets and subprocesses made here use its links
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

_NETNS_DIR = Path("/run/netns")
_PREFIX = "fwt"
_CLONE_NEWNET = 0x40000000
_counter = itertools.count()


def netns_unavailable() -> str | None:
    """Why namespace tests cannot run here (not root, no iproute2/tc), or None when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"needs `{tool}` (iproute2)"
    return None


#: Marks a test (or, as `pytestmark`, a module) that builds namespaces: tests/conftest.py skips it where
#: netns_unavailable() says why not, and fails it under CI.
uses_netns = pytest.mark.netns


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


def _setns(fd: int) -> None:
    """Move the calling thread (not the process) into the network namespace open at fd."""
    if hasattr(os, "setns"):  # Python >= 3.12
        os.setns(fd, _CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _kill_namespace_processes(name: str) -> None:
    """Kill, by pid, whatever still runs inside namespace `name` (only lab namespaces get here)."""
    pids = _ip("netns", "pids", name, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def _remove_stale_labs() -> None:
    """Delete lab namespaces whose creating process is gone (a run killed before its cleanup)."""
    if not _NETNS_DIR.is_dir():
        return
    for entry in _NETNS_DIR.iterdir():
        parts = entry.name.split("-")
        if not parts[0].startswith(_PREFIX) or not parts[0][len(_PREFIX) :].isdigit():
            continue
        owner = int(parts[0][len(_PREFIX) :])
        if owner == os.getpid() or Path(f"/proc/{owner}").exists():
            continue
        _kill_namespace_processes(entry.name)
        _ip("netns", "del", entry.name, check=False)


@dataclass
class Host:
    """One machine of the lab: a namespace with eth0 on the lab's switch."""

    lab: Lab
    index: int
    name: str
    address: str
    #: The switch-side end of this host's veth pair (in the switch namespace).
    port: str
    interface: str = "eth0"

    def command(self, *args: str) -> list[str]:
        """The argv that runs `args` inside this host."""
        return ["ip", "netns", "exec", self.name, *args]

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command inside this host and wait for it."""
        return subprocess.run(
            self.command(*args), check=check, capture_output=True, text=True, timeout=timeout
        )

    def popen(self, *args: str, **kwargs: object) -> subprocess.Popen[str]:
        """Start a command inside this host (output piped unless told otherwise); killed on lab exit."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc: subprocess.Popen[str] = subprocess.Popen(self.command(*args), text=True, **kwargs)  # type: ignore[call-overload]
        self.lab.processes.append(proc)
        return proc

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run the block with the calling thread inside this host's network namespace.

        Sockets opened and subprocesses started in the block belong to the host, so in-process code
        (a probe, with its exceptions) can be tested on the lab's links. Other threads are unaffected.
        """
        with open("/proc/thread-self/ns/net", "rb") as home, open(_NETNS_DIR / self.name, "rb") as ns:
            _setns(ns.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())

    def shape_uplink(self, rate_bit_s: float, *, latency_s: float = 0.4) -> None:
        """Limit what this host sends to `rate_bit_s` (tbf on its eth0)."""
        _tbf(self.name, self.interface, rate_bit_s, latency_s)

    def shape_downlink(self, rate_bit_s: float, *, latency_s: float = 0.4) -> None:
        """Limit what this host receives to `rate_bit_s` (tbf on its switch port)."""
        _tbf(self.lab.switch, self.port, rate_bit_s, latency_s)

    def cut(self) -> None:
        """Pull the cable: delete this host's veth pair, with its address and routes."""
        _ip("-n", self.lab.switch, "link", "del", self.port)


def _tbf(namespace: str, device: str, rate_bit_s: float, latency_s: float) -> None:
    # The bucket must hold a full frame and, at higher rates, about a millisecond of traffic so that
    # timer granularity does not cap the rate below the one asked for.
    burst = max(4000, int(rate_bit_s / 8 * 1e-3))
    subprocess.run(
        ["tc", "-n", namespace, "qdisc", "replace", "dev", device, "root", "tbf",
         "rate", f"{int(rate_bit_s)}bit", "burst", str(burst), "latency", f"{int(latency_s * 1000)}ms"],
        check=True, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


class Lab:
    """N hosts on one switch, built on construction, torn down by `close()` (or the with block)."""

    def __init__(self, hosts: int = 2, *, subnet: str = "10.231.0") -> None:
        if not 1 <= hosts <= 250:
            raise ValueError("a lab has 1 to 250 hosts")
        self.tag = f"{_PREFIX}{os.getpid()}-{next(_counter)}"
        self.subnet = subnet
        self.hosts: list[Host] = []
        self.processes: list[subprocess.Popen[str]] = []
        self.namespaces: list[str] = []
        _remove_stale_labs()
        try:
            self._build(hosts)
        except BaseException:
            self.close()
            raise

    @property
    def switch(self) -> str:
        return f"{self.tag}-sw"

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _build(self, hosts: int) -> None:
        self._add_namespace(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i in range(hosts):
            host = Host(self, i, f"{self.tag}-h{i}", f"{self.subnet}.{i + 1}", port=f"p{i}")
            self._add_namespace(host.name)
            _ip("-n", self.switch, "link", "add", host.port, "type", "veth",
                "peer", "name", host.interface, "netns", host.name)  # fmt: skip
            _ip("-n", self.switch, "link", "set", host.port, "master", "br0", "up")
            _ip("-n", host.name, "addr", "add", f"{host.address}/24", "dev", host.interface)
            _ip("-n", host.name, "link", "set", host.interface, "up")
            self.hosts.append(host)

    def close(self) -> None:
        """Kill what the lab started and what still runs in it, then delete its namespaces."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for name in self.namespaces:
            _kill_namespace_processes(name)
            _ip("netns", "del", name, check=False)
        self.namespaces.clear()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
