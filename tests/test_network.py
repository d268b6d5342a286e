"""The network probe on real links: two namespace hosts, a real iperf3, tbf-shaped directions.

Expectation for a shaped direction: tbf counts whole Ethernet frames (1514 B on the wire for 1448 B
of TCP payload with timestamps), so TCP goodput is about 0.956 of the shaped rate; the probe must
land within ±10% of the shaped rate, and the direction left alone (a veth, several Gbit/s) far above.
"""

from __future__ import annotations

import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.commands.network import serve_network
from netns import Host, Lab, uses_netns
from probes.measurement import Measurement, ProbeError, ProbeResult
from probes.network import (
    _interval_rates,
    _server_text_rates,
    _stream_rtts,
    measure_network,
    parse_server,
    start_network_server,
)

PORT = 5201


def _measurement(result: ProbeResult, metric: str, variant: str | None = None) -> Measurement:
    (m,) = [m for m in result.measurements if m.metric == metric and m.variant == variant]
    return m


def _figure(result: ProbeResult, metric: str, variant: str | None = None) -> float:
    return _measurement(result, metric, variant).value


# -- without a network -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [("pc.lan", "pc.lan", 5201), ("10.0.0.2:5300", "10.0.0.2", 5300), ("[fe80::1]:9", "fe80::1", 9), ("::1", "::1", 5201)],
)
def test_parse_server_accepts_host_and_port(text: str, host: str, port: int) -> None:
    server = parse_server(text)
    assert (server.host, server.port) == (host, port)


@pytest.mark.parametrize("text", ["", "pc:", "pc:0", "pc:70000", "pc:http", "two words", "a:b:c", "[::1]x", "[pc]:1"])
def test_bad_server_is_one_line_naming_it(text: str) -> None:
    with pytest.raises(ProbeError) as err:
        measure_network(text)
    message = str(err.value)
    assert "\n" not in message and repr(text.strip()) in message and "HOST:PORT" in message


def test_missing_iperf3_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ProbeError) as err:
        measure_network("10.0.0.2")
    message = str(err.value)
    assert "iperf3 not found" in message
    for hint in ("apt install iperf3", "brew install iperf3", "Windows", "--iperf3"):
        assert hint in message


def test_iperf3_path_that_is_not_a_program(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="not an executable iperf3"):
        measure_network("10.0.0.2", iperf3=str(tmp_path / "iperf3"))


#: A plain `iperf3 -s` server's report, as the client gets it with --get-server-output: iperf 3.12
#: on the dev VM (2026-12-01), two streams at 20 Mbit/s on loopback, then one unlimited stream.
SERVER_TEXT_TWO_STREAMS = """\
Accepted connection from 127.0.0.1, port 59776
[  5] local 127.0.0.1 port 5399 connected to 127.0.0.1 port 59792
[  8] local 127.0.0.1 port 5399 connected to 127.0.0.1 port 59800
[ ID] Interval           Transfer     Bitrate
[  5]   0.00-1.00   sec  2.50 MBytes  21.0 Mbits/sec
[  8]   0.00-1.00   sec  2.50 MBytes  21.0 Mbits/sec
[SUM]   0.00-1.00   sec  5.00 MBytes  41.9 Mbits/sec
- - - - - - - - - - - - - - - - - - - - - - - - -
[  5]   1.00-2.00   sec  2.38 MBytes  19.9 Mbits/sec
[  8]   1.00-2.00   sec  2.38 MBytes  19.9 Mbits/sec
[SUM]   1.00-2.00   sec  4.75 MBytes  39.9 Mbits/sec
- - - - - - - - - - - - - - - - - - - - - - - - -
[ ID] Interval           Transfer     Bitrate
[  5]   0.00-2.00   sec  4.88 MBytes  20.4 Mbits/sec                  receiver
[  8]   0.00-2.00   sec  4.88 MBytes  20.4 Mbits/sec                  receiver
[SUM]   0.00-2.00   sec  9.75 MBytes  40.9 Mbits/sec                  receiver
"""
SERVER_TEXT_ONE_STREAM = """\
[ ID] Interval           Transfer     Bitrate
[  5]   0.00-1.00   sec   975 MBytes  8.16 Gbits/sec
[  5]   1.00-2.00   sec  1.11 GBytes  9.54 Gbits/sec
[  5]   2.00-2.01   sec   640 KBytes   952 Mbits/sec
- - - - - - - - - - - - - - - - - - - - - - - - -
[ ID] Interval           Transfer     Bitrate
[  5]   0.00-2.01   sec  2.06 GBytes  8.83 Gbits/sec                  receiver
"""
SERVER_TEXT_TRICKLE = """\
[  5]   0.00-1.00   sec   128 KBytes  1.05 Mbits/sec
[  5]   1.00-2.00   sec  0.00 Bytes  0.00 bits/sec
[  5]   0.00-2.00   sec   128 KBytes   524 Kbits/sec                  receiver
"""


def test_server_text_rates_are_bit_s_with_decimal_prefixes() -> None:
    # The per-interval SUM lines, not the streams and not the summary; Mbit is 1e6 bit, not bytes.
    assert _server_text_rates(SERVER_TEXT_TWO_STREAMS, streams=2) == ([41.9e6, 39.9e6], 1.0)
    # Gbit is 1e9; the last 0.01 s sliver says nothing about the rate and is dropped.
    assert _server_text_rates(SERVER_TEXT_ONE_STREAM, streams=1) == ([8.16e9, 9.54e9], 1.0)
    # kbit is 1e3 (the summary's 524 Kbits is not a sample), and a bare bits/sec is 1.
    assert _server_text_rates(SERVER_TEXT_TRICKLE, streams=1) == ([1.05e6, 0.0], 1.0)
    assert _server_text_rates("iperf3: error - the server has terminated", streams=1) == ([], 0.0)
    # A server started with -f M reports bytes: none of it may pass for bits.
    in_megabytes = "[  5]   0.00-1.00   sec  2.50 MBytes  2.50 MBytes/sec\n[  5]   1.00-2.00   sec  2.38 MBytes  2.37 MBytes/sec\n"
    assert _server_text_rates(in_megabytes, streams=1) == ([], 0.0)


def _interval(seconds: float, bits_per_second: float, *, omitted: bool = False, rtt_us: int = 0) -> dict[str, Any]:
    """One entry of iperf3 --json's "intervals", with the fields the probe reads."""
    stream = {"socket": 5, "seconds": seconds, "bits_per_second": bits_per_second, "sender": True, "rtt": rtt_us}
    return {"streams": [stream], "sum": {"seconds": seconds, "bits_per_second": bits_per_second, "omitted": omitted}}


def test_json_interval_rates_are_bit_s_and_skip_omitted_and_sliver_intervals() -> None:
    intervals = [
        _interval(0.6, 1e9, omitted=True),  # --omit warm-up: not a sample
        _interval(0.6, 23.91e6),
        _interval(0.6, 23.89e6),
        _interval(0.01, 12e6),  # the sliver iperf3 may end with
    ]
    assert _interval_rates(intervals) == ([23.91e6, 23.89e6], 0.6)
    assert _interval_rates([]) == ([], 0.0)


def test_stream_rtts_are_microseconds_turned_into_seconds() -> None:
    intervals = [_interval(1.0, 1e6, rtt_us=1234), _interval(1.0, 1e6, rtt_us=0)]  # 0: not reported
    intervals.append({"streams": [{"sender": False, "rtt": 999}], "sum": {}})  # a receiving stream
    assert _stream_rtts(intervals) == [0.001234]


# -- on namespace links ------------------------------------------------------------------------


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab(hosts=2) as built:
        yield built


@pytest.fixture
def hosts(lab: Lab) -> tuple[Host, Host]:
    """(client, server): the server host runs `iperf3 -s` started the way `flopwatt serve-network` does."""
    client, server = lab.hosts
    with server.entered():
        lab.processes.append(start_network_server(PORT))
    return client, server


@pytest.mark.parametrize(
    ("rate", "shaped"),
    [(25e6, "upload"), (100e6, "upload"), (25e6, "download")],
    ids=["up-25M", "up-100M", "down-25M"],
)
@uses_netns
def test_shaped_direction_is_measured_and_the_other_is_not_capped(
    hosts: tuple[Host, Host], rate: float, shaped: str
) -> None:
    client, server = hosts
    if shaped == "upload":
        client.shape_uplink(rate)
    else:
        client.shape_downlink(rate)
    with client.entered():
        result = measure_network(server.address, seconds=2)
    up, down = _figure(result, "net_upload"), _figure(result, "net_download")
    capped, free = (up, down) if shaped == "upload" else (down, up)
    assert capped == pytest.approx(rate, rel=0.10)
    assert free > 5 * rate
    idle_rtt = _figure(result, "net_rtt", "idle")
    assert 1e-6 < idle_rtt < 0.01  # a veth: tens of microseconds
    upload = _measurement(result, "net_upload")
    assert upload.params["samples_from"] == "receiver intervals (server text)" and upload.n >= 2
    assert upload.params["streams"] == 1 and upload.device == f"net:{server.address}"
    if shaped == "upload":
        # The upload fills tbf's queue (up to 400 ms of it): the RTT a training job would see.
        loaded = _measurement(result, "net_rtt", "loaded")
        assert 10 * idle_rtt < loaded.value < 0.5
        assert loaded.params["direction"] == "upload" and loaded.n >= 2


@uses_netns
def test_parallel_streams_share_the_shaped_link(hosts: tuple[Host, Host]) -> None:
    client, server = hosts
    client.shape_uplink(25e6)
    with client.entered():
        result = measure_network(f"{server.address}:{PORT}", seconds=2, streams=3, iperf3=shutil.which("iperf3"))
    (upload,) = [m for m in result.measurements if m.metric == "net_upload"]
    assert upload.params["streams"] == 3
    assert upload.value == pytest.approx(25e6, rel=0.10)


@uses_netns
def test_refused_port(hosts: tuple[Host, Host]) -> None:
    client, server = hosts
    with client.entered(), pytest.raises(ProbeError) as err:
        measure_network(f"{server.address}:5999")
    assert str(err.value) == (
        f"network: cannot connect to {server.address}:5999: Connection refused "
        "(is `flopwatt serve-network` or `iperf3 -s` running there?)"
    )


@uses_netns
@pytest.mark.parametrize(
    ("address", "reason"),
    [("10.231.0.99", "Connection timed out"), ("10.232.0.1", "Network is unreachable")],
    ids=["nobody-there", "no-route"],
)
def test_unreachable_host(hosts: tuple[Host, Host], address: str, reason: str) -> None:
    client, _server = hosts
    with client.entered(), pytest.raises(ProbeError) as err:
        measure_network(address, connect_timeout_s=1)
    assert str(err.value).startswith(f"network: cannot connect to {address}:{PORT}: {reason}")


@uses_netns
def test_unresolvable_host(hosts: tuple[Host, Host]) -> None:
    client, _server = hosts
    with client.entered(), pytest.raises(ProbeError, match=r"^network: cannot resolve host 'nosuchhost\.invalid'"):
        measure_network("nosuchhost.invalid")


@uses_netns
def test_busy_server(hosts: tuple[Host, Host]) -> None:
    client, server = hosts
    other = client.popen("iperf3", "-c", server.address, "-p", str(PORT), "-t", "5", "--forceflush")
    assert other.stdout is not None
    for line in other.stdout:  # once its data stream is connected, the server is taken
        if "connected to" in line:
            break
    with client.entered(), pytest.raises(ProbeError) as err:
        measure_network(server.address, busy_retries=0)
    assert str(err.value) == (
        f"network: iperf3 server {server.address}:{PORT} is busy running a test for someone else; try again later"
    )


@uses_netns
def test_link_cut_mid_test_discards_partial_samples(lab: Lab) -> None:
    """The cable is pulled once the upload's bytes flow: when its server has reported an interval."""
    client, server = lab.hosts
    client.shape_uplink(25e6)
    uploading, cut = threading.Event(), threading.Event()

    def on_server_output(line: str) -> None:
        if uploading.is_set() and "bits/sec" in line and not cut.is_set():
            cut.set()
            server.cut()

    def progress(step: str, _fraction: float) -> None:
        if step.startswith("network: upload"):
            uploading.set()

    with server.entered():
        lab.processes.append(start_network_server(PORT, on_output=on_server_output))
    with client.entered(), pytest.raises(ProbeError) as err:
        measure_network(server.address, seconds=3, stall_timeout_s=1, progress=progress)
    assert cut.is_set()
    message = str(err.value)
    assert message.startswith(f"network: upload with {server.address}:{PORT} ")
    assert "partial samples discarded" in message and "\n" not in message


@uses_netns
@pytest.mark.parametrize(
    ("server_options", "samples_from"),
    # A server printing MBytes/sec (-f M) has no rate the probe reads as bits: it falls back to the
    # receiver's total from the JSON, in bit/s, rather than read 2.9 MBytes/s as 2.9 Mbit/s.
    [(("-J",), "receiver intervals (server JSON)"), (("-f", "M"), "receiver total")],
    ids=["json-server", "server-in-megabytes"],
)
def test_upload_samples_come_from_whatever_the_server_reports(
    lab: Lab, server_options: tuple[str, ...], samples_from: str
) -> None:
    client, server = lab.hosts
    other_port = PORT + 1
    started = server.popen("iperf3", "-s", "-p", str(other_port), "--forceflush", *server_options)
    assert started.stdout is not None
    if "-J" not in server_options:  # a JSON server prints nothing until a test ends
        for line in started.stdout:
            if "listening" in line:
                break
    client.shape_uplink(25e6)
    with client.entered():
        result = measure_network(f"{server.address}:{other_port}", seconds=2, connect_timeout_s=5)
    upload = _measurement(result, "net_upload")
    assert upload.params["samples_from"] == samples_from
    assert upload.value == pytest.approx(25e6, rel=0.10)
    if samples_from == "receiver total":
        assert upload.samples == [upload.params["mean_bit_s"]] and upload.params["interval_s"] is None
    else:
        assert upload.n >= 2 and upload.params["interval_s"] == pytest.approx(1.0, abs=0.01)


@uses_netns
def test_a_busy_server_is_retried_until_it_is_free(hosts: tuple[Host, Host]) -> None:
    client, server = hosts
    other = client.popen("iperf3", "-c", server.address, "-p", str(PORT), "-t", "2", "--forceflush")
    assert other.stdout is not None
    for line in other.stdout:  # once its data stream is connected, the server is taken for 2 s
        if "connected to" in line:
            break
    with client.entered():
        result = measure_network(server.address, seconds=1, busy_retries=5)
    other.wait(timeout=10)
    assert other.returncode == 0  # the other test was not cut short by ours
    assert {m.metric for m in result.measurements} >= {"net_upload", "net_download"}


@uses_netns
def test_serve_network_command_serves_until_ctrl_c(lab: Lab) -> None:
    client, server = lab.hosts
    command = server.popen(sys.executable, "-m", "bench", "serve-network", "--port", str(PORT))
    assert command.stdout is not None
    banner = [command.stdout.readline() for _ in range(2)]
    assert banner[0] == f"Serving network tests on port {PORT}. On the other machine run:\n"
    assert banner[1] == f"  flopwatt probe --only network --server <this machine's address>:{PORT}\n"
    for line in command.stdout:  # iperf3's own lines follow, echoed
        if "listening on" in line.lower():
            break
    with client.entered():
        result = measure_network(server.address, seconds=1)
    assert _figure(result, "net_upload") > 1e8  # an unshaped veth
    command.send_signal(signal.SIGINT)
    out, err = command.communicate(timeout=15)
    assert command.returncode == 0, err
    assert out.rstrip().endswith("stopped") and "Traceback" not in err


@uses_netns
def test_serve_network_on_a_taken_port_is_one_line(hosts: tuple[Host, Host]) -> None:
    _client, server = hosts
    with server.entered(), pytest.raises(ProbeError) as err:
        serve_network(port=PORT)
    message = str(err.value)
    assert message.startswith(f"network: cannot serve on port {PORT}: ") and "in use" in message


@pytest.mark.parametrize(("option", "value"), [("seconds", 0), ("seconds", 2.5), ("streams", 0), ("rtt_seconds", 0)])
def test_bad_duration_or_streams(option: str, value: float) -> None:
    with pytest.raises(ProbeError, match=f"^network: .*{value}$"):
        measure_network("10.0.0.2", **{option: value})
