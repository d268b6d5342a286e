"""Network probe: upload, download and round-trip time to another machine, by driving iperf3.

iperf3 is the peer everyone already trusts and every platform packages, so the probe runs the iperf3
program (`--json`) against any plain `iperf3 -s` (or `flopwatt serve-network`, which wraps one)
rather than reimplementing it. Three short tests run one after the other:

1. idle RTT: a trickle (500 kbit/s, small writes) that queues nothing, sampling the kernel's smoothed
   TCP RTT every 0.1 s;
2. upload (client -> server): samples are the *receiver's* per-interval rates, read from the
   server's report, because the sender's count includes what still sits in its socket buffer;
3. download (`-R`, server -> client): the client is the receiver, its intervals are the samples.

The upload's sender-side RTT is kept as well, as `net_rtt` variant "loaded": the queueing delay
(bufferbloat) a training job would add to every exchange while it saturates the link.

Nothing here opens a bare TCP connection to the server to time it: an iperf3 (3.12) server takes
such a connection for a client that failed, logs an error and resets, and connections arriving
meanwhile are reset. Durations are whole seconds: iperf3 reads `-t 0.5` as 0, "run forever".
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probes.measurement import (
    Measurement,
    ProbeError,
    ProbeResult,
    ProgressCallback,
    Unavailable,
    no_progress,
)

PROBE = "network"
DEFAULT_PORT = 5201

INSTALL_HINT = (
    "install iperf3: Debian/Ubuntu `sudo apt install iperf3`, macOS `brew install iperf3`, "
    "Windows `choco install iperf3` or `scoop install iperf3` (or unzip a build from iperf.fr); "
    "or pass --iperf3 PATH"
)

_IDLE_RATE = "500K"
_IDLE_BLOCK = "1400"
_IDLE_INTERVAL_S = 0.1
#: Seconds allowed beyond a test's own duration (connection set-up, result exchange) before the
#: run is declared lost and iperf3 is killed.
_GRACE_S = 5.0
_BUSY = "server is busy"
_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Server:
    """Where to test against: a host and a TCP port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_server(text: str, default_port: int = DEFAULT_PORT) -> Server:
    """Read HOST, HOST:PORT, [IPv6] or [IPv6]:PORT; a bare IPv6 address takes the default port."""
    bad = ProbeError(f"network: bad server {text!r}: expected HOST or HOST:PORT with a port from 1 to 65535")
    text = text.strip()
    port_text: str | None = None
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")) or not _is_ipv6(host):
            raise bad
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:
        host = text
        if not _is_ipv6(host):
            raise bad
    else:
        host, colon, rest = text.partition(":")
        port_text = rest if colon else None
        if not _HOST_RE.match(host):
            raise bad
    if port_text is not None and not port_text.isdigit():
        raise bad
    port = int(port_text) if port_text is not None else default_port
    if not 1 <= port <= 65535:
        raise bad
    return Server(host, port)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Iperf3:
    """An iperf3 program and the options its version understands."""

    path: str
    version: str
    options: frozenset[str]


def find_iperf3(path: str | None = None) -> Iperf3:
    """The iperf3 to drive: `path` if given, else the one on PATH; ProbeError saying how to install it."""
    if path is not None:
        if not (Path(path).is_file() and shutil.which(path)):
            raise ProbeError(f"network: {path} is not an executable iperf3; {INSTALL_HINT}")
        exe = path
    else:
        found = shutil.which("iperf3")
        if found is None:
            raise ProbeError(f"network: iperf3 not found on PATH; {INSTALL_HINT}")
        exe = found
    try:
        version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
        helptext = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProbeError(f"network: cannot run {exe}: {exc}") from exc
    match = re.search(r"iperf (\d+\.\d+(?:\.\d+)?)", version.stdout + version.stderr)
    if match is None:
        raise ProbeError(f"network: {exe} does not look like iperf3 (`--version` printed no iperf 3.x)")
    options = frozenset(re.findall(r"--[a-z][a-z-]+", helptext.stdout + helptext.stderr))
    return Iperf3(exe, match.group(1), options)


def _resolve(server: Server) -> None:
    """Fail early with a clear line when the name does not resolve (iperf3 says only 'try again')."""
    try:
        socket.getaddrinfo(server.host, server.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ProbeError(f"network: cannot resolve host {server.host!r}: {exc.strerror}") from exc


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _Busy(Exception):
    """The server is running someone else's test (retried, then reported)."""


def _run_iperf3(
    tool: Iperf3, server: Server, args: list[str], duration_s: float, what: str, *, connect_timeout_s: float,
    stall_timeout_s: float, bind: str | None,
) -> dict[str, Any]:
    """One client run; its JSON document, or ProbeError naming the server and what failed."""
    argv = [tool.path, "-c", server.host, "-p", str(server.port), "--json", *args]
    if bind:
        argv += ["-B", bind]
    if "--connect-timeout" in tool.options:
        argv += ["--connect-timeout", str(int(connect_timeout_s * 1000))]
    receiving = "-R" in args
    if receiving and "--rcv-timeout" in tool.options:
        argv += ["--rcv-timeout", str(int(stall_timeout_s * 1000))]
    if not receiving and "--snd-timeout" in tool.options:
        argv += ["--snd-timeout", str(int(stall_timeout_s * 1000))]
    limit = duration_s + connect_timeout_s + stall_timeout_s + _GRACE_S
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired as exc:
        raise ProbeError(
            f"network: {what} with {server} did not finish within {limit:.0f} s (link lost?); partial samples discarded"
        ) from exc
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError:
        detail = _one_line(proc.stderr or proc.stdout)[-300:]
        raise ProbeError(f"network: {what} with {server}: iperf3 failed (exit {proc.returncode}): {detail}") from None
    error = doc.get("error")
    if error:
        error = _one_line(str(error))
        if _BUSY in error:
            raise _Busy(error)
        if error.startswith("unable to connect to server"):
            reason = error.partition(":")[2].strip() or error
            hint = ""
            if "refused" in reason.lower():
                hint = " (is `flopwatt serve-network` or `iperf3 -s` running there?)"
            elif "timed out" in reason.lower():
                hint = " (host down, unreachable or firewalled)"
            raise ProbeError(f"network: cannot connect to {server}: {reason}{hint}")
        raise ProbeError(f"network: {what} with {server} failed mid-test: {error}; partial samples discarded")
    if proc.returncode != 0:
        raise ProbeError(f"network: {what} with {server}: iperf3 exit {proc.returncode}: {_one_line(proc.stderr)[-300:]}")
    return doc


def _run_with_retries(run: Callable[[], dict[str, Any]], server: Server, busy_retries: int, wait_s: float) -> dict[str, Any]:
    """Retry a busy server a few times: it serves one test at a time and may be finishing ours."""
    for attempt in range(busy_retries + 1):
        try:
            return run()
        except _Busy:
            if attempt == busy_retries:
                break
            time.sleep(wait_s)
    raise ProbeError(f"network: iperf3 server {server} is busy running a test for someone else; try again later")


def _interval_rates(intervals: list[dict[str, Any]]) -> tuple[list[float], float]:
    """bit/s of each whole, non-omitted interval (iperf3 may end with a sliver that says nothing),
    and the interval length."""
    sums = [interval.get("sum", {}) for interval in intervals]
    sums = [total for total in sums if not total.get("omitted") and total.get("seconds")]
    if not sums:
        return [], 0.0
    longest = max(float(total["seconds"]) for total in sums)
    return [float(t["bits_per_second"]) for t in sums if float(t["seconds"]) >= longest / 2], longest


_TEXT_LINE = re.compile(
    r"^\[\s*(?P<id>\d+|SUM)\]\s+(?P<start>[\d.]+)-(?P<end>[\d.]+)\s+sec\s+[\d.]+\s+\w?Bytes\s+"
    r"(?P<rate>[\d.]+)\s+(?P<prefix>[KMGT]?)bits/sec"
)
_PREFIX = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def _server_text_rates(text: str, streams: int) -> tuple[list[float], float]:
    """Receiver rates from a plain `iperf3 -s` report: its per-interval lines, not the summary.

    iperf3 prints 3 significant figures with decimal bit/s prefixes, at an interval the server
    chooses (1 s unless it was started otherwise). Returns the rates and that interval.
    """
    rows: list[tuple[float, float]] = []
    for line in text.splitlines():
        match = _TEXT_LINE.match(line.strip())
        if match is None or line.rstrip().endswith(("sender", "receiver")):
            continue
        if (match["id"] == "SUM") != (streams > 1):
            continue
        seconds = float(match["end"]) - float(match["start"])
        rows.append((seconds, float(match["rate"]) * _PREFIX[match["prefix"]]))
    if not rows:
        return [], 0.0
    longest = max(seconds for seconds, _ in rows)
    return [rate for seconds, rate in rows if seconds >= longest / 2], longest


def _stream_rtts(intervals: list[dict[str, Any]]) -> list[float]:
    """Smoothed TCP RTT (s) of every sending stream in every interval, where the platform reports it."""
    return [
        stream["rtt"] / 1e6
        for interval in intervals
        for stream in interval.get("streams", [])
        if stream.get("sender") and stream.get("rtt")
    ]


def _throughput(doc: dict[str, Any], metric: str, server: Server, tool: Iperf3, streams: int) -> Measurement:
    """net_upload or net_download from one run, sampled where the bytes arrived.

    Upload: the server's report (JSON if it runs with -J, else its text); download: the client's
    own intervals. Without per-interval figures, the receiver's total is the one sample.
    `samples_from` in the params says which.
    """
    rates, interval, source = [], 0.0, "receiver intervals"
    if metric == "net_download":
        rates, interval = _interval_rates(doc.get("intervals", []))
    else:
        server_json = doc.get("server_output_json")
        if isinstance(server_json, dict):
            rates, interval = _interval_rates(server_json.get("intervals", []))
            source = "receiver intervals (server JSON)"
        if not rates:
            rates, interval = _server_text_rates(str(doc.get("server_output_text", "")), streams)
            source = "receiver intervals (server text)"
    end = doc["end"]
    if not rates:
        rates, interval, source = [float(end["sum_received"]["bits_per_second"])], 0.0, "receiver total"
    start = doc.get("start", {}).get("test_start", {})
    cpu = end.get("cpu_utilization_percent", {})
    return Measurement(
        probe=PROBE, metric=metric, unit="bit/s", samples=rates, device=f"net:{server.host}",
        params={
            "server": server.host, "port": server.port, "protocol": start.get("protocol", "TCP"),
            "streams": start.get("num_streams"), "seconds": start.get("duration"),
            "samples_from": source, "interval_s": interval or None,
            "mean_bit_s": end["sum_received"]["bits_per_second"], "bytes_received": end["sum_received"]["bytes"],
            "retransmits": end.get("sum_sent", {}).get("retransmits"),
            "local_cpu_percent": cpu.get("host_total"), "remote_cpu_percent": cpu.get("remote_total"),
            "iperf3": tool.version,
        },
    )  # fmt: skip


def _rtt(samples: list[float], server: Server, variant: str, method: str, **extra: Any) -> Measurement:
    return Measurement(
        probe=PROBE, metric="net_rtt", unit="s", samples=samples, device=f"net:{server.host}", variant=variant,
        params={"server": server.host, "port": server.port, "samples": len(samples), "method": method, **extra},
    )  # fmt: skip


def measure_network(
    server: str,
    *,
    port: int = DEFAULT_PORT,
    streams: int = 1,
    seconds: int = 5,
    iperf3: str | None = None,
    progress: ProgressCallback = no_progress,
    bind: str | None = None,
    rtt_seconds: int = 1,
    connect_timeout_s: float = 5.0,
    stall_timeout_s: float = 5.0,
    busy_retries: int = 2,
) -> ProbeResult:
    """Upload, download (bit/s) and RTT (s) between this machine and an iperf3 server.

    `server` is HOST or HOST:PORT (a port there wins over `port`). Each direction runs `seconds`
    with `streams` parallel TCP streams. A failure (unresolvable, unreachable, refused, busy, link
    lost mid-test) raises ProbeError with one line naming the server; nothing partial is returned.
    """
    if not 1 <= streams <= 128:
        raise ProbeError(f"network: --streams must be 1 to 128, not {streams}")
    for name, value in (("--seconds", seconds), ("RTT seconds", rtt_seconds)):
        if value != int(value) or not 1 <= value <= 3600:
            raise ProbeError(f"network: {name} must be a whole number of seconds from 1 to 3600, not {value}")
    target = parse_server(server, port)
    tool = find_iperf3(iperf3)
    _resolve(target)

    def run(args: list[str], duration: float, what: str) -> dict[str, Any]:
        return _run_with_retries(
            lambda: _run_iperf3(
                tool, target, args, duration, what, connect_timeout_s=connect_timeout_s,
                stall_timeout_s=stall_timeout_s, bind=bind,
            ),
            target, busy_retries, wait_s=1.0,
        )  # fmt: skip

    result = ProbeResult()
    progress(f"network: idle RTT to {target}", 0.0)
    idle_args = ["-t", str(int(rtt_seconds)), "-b", _IDLE_RATE, "-l", _IDLE_BLOCK, "-i", f"{_IDLE_INTERVAL_S:g}"]
    idle = run(idle_args, rtt_seconds, "idle RTT test")
    if idle_rtts := _stream_rtts(idle.get("intervals", [])):
        kernel = idle["end"]["streams"][0].get("sender", {})
        result.measurements.append(
            _rtt(
                idle_rtts, target, "idle", f"iperf3 TCP smoothed RTT every {_IDLE_INTERVAL_S:g} s at {_IDLE_RATE}bit/s",
                kernel_min_rtt_s=kernel.get("min_rtt", 0) / 1e6 or None,
                kernel_max_rtt_s=kernel.get("max_rtt", 0) / 1e6 or None,
            )  # fmt: skip
        )
    else:
        reason = "this iperf3 build reports no TCP RTT (it reads Linux/BSD tcp_info); RTT not measured"
        result.unavailable.append(Unavailable(probe=PROBE, metric="net_rtt", device=f"net:{target.host}", reason=reason))

    interval = max(0.1, min(1.0, seconds / 5))
    common_args = ["-t", str(int(seconds)), "-P", str(streams), "-i", f"{interval:g}"]
    progress(f"network: upload to {target}", 0.1)
    up = run([*common_args, "--get-server-output"], seconds, "upload")
    result.measurements.append(_throughput(up, "net_upload", target, tool, streams))
    if loaded := _stream_rtts(up.get("intervals", [])):
        method = f"iperf3 TCP smoothed RTT of the sending streams while uploading, every {interval:g} s"
        result.measurements.append(_rtt(loaded, target, "loaded", method, direction="upload"))

    progress(f"network: download from {target}", 0.55)
    down = run([*common_args, "-R"], seconds, "download")
    result.measurements.append(_throughput(down, "net_download", target, tool, streams))
    progress("network: done", 1.0)
    return result


def start_network_server(
    port: int = DEFAULT_PORT,
    *,
    iperf3: str | None = None,
    bind: str | None = None,
    on_output: Callable[[str], None] = lambda _line: None,
    ready_timeout_s: float = 5.0,
) -> subprocess.Popen[str]:
    """Start `iperf3 -s` and return once it listens; its output lines go to `on_output`.

    The caller owns the process (terminate it). A port already in use, or an iperf3 that exits,
    raises ProbeError.
    """
    if not 1 <= port <= 65535:
        raise ProbeError(f"network: bad port {port}: expected 1 to 65535")
    tool = find_iperf3(iperf3)
    argv = [tool.path, "-s", "-p", str(port)]
    if bind:
        argv += ["-B", bind]
    if "--forceflush" in tool.options:
        argv.append("--forceflush")  # line by line through the pipe, so readiness is seen at once
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    listening, ended = threading.Event(), threading.Event()
    early: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            if not listening.is_set():
                early.append(line)
            on_output(line)
            if "listening on" in line.lower():
                listening.set()
        ended.set()
        listening.set()

    threading.Thread(target=pump, name=f"iperf3-server-{port}", daemon=True).start()
    # An iperf3 without --forceflush may say nothing yet through the pipe while it already listens.
    listening.wait(ready_timeout_s)
    if ended.is_set():
        proc.wait()
        detail = _one_line(" ".join(early))[-300:] or f"exit {proc.returncode}"
        raise ProbeError(f"network: cannot serve on port {port}: {detail}")
    return proc


def serve_network(
    port: int = DEFAULT_PORT,
    *,
    iperf3: str | None = None,
    bind: str | None = None,
    on_output: Callable[[str], None] = lambda _line: None,
) -> None:
    """Be the other end of `measure_network` until interrupted (Ctrl-C) or iperf3 stops."""
    proc = start_network_server(port, iperf3=iperf3, bind=bind, on_output=on_output)
    try:
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if code != 0:
        raise ProbeError(f"network: the iperf3 server on port {port} stopped (exit {code})")
