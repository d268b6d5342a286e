"""The network probe on real links: two namespace hosts, a real iperf3, tbf-shaped directions.

Expectation for a shaped direction: tbf counts whole Ethernet frames (1514 B on the wire for 1448 B
of TCP payload with timestamps), so TCP goodput is about 0.956 of the shaped rate; the probe must
land within ±10% of the shaped rate, and the direction left alone (a veth, several Gbit/s) far above.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.commands.network import serve_network
from netns import Host, Lab, uses_netns
from probes.measurement import ProbeError, ProbeResult
from probes.network import measure_network, parse_server, start_network_server

PORT = 5201


def _figure(result: ProbeResult, metric: str, variant: str | None = None) -> float:
    (m,) = [m for m in result.measurements if m.metric == metric and m.variant == variant]
    return m.value


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
    assert 0 < _figure(result, "net_rtt", "idle") < 0.01
    (upload,) = [m for m in result.measurements if m.metric == "net_upload"]
    assert upload.params["samples_from"] == "receiver intervals" and upload.n >= 2
    assert upload.params["streams"] == 1 and upload.device == f"net:{server.address}"


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
def test_link_cut_mid_test_discards_partial_samples(hosts: tuple[Host, Host]) -> None:
    client, server = hosts
    client.shape_uplink(25e6)
    # The idle-RTT test takes 1 s, then the upload runs for 3 s: cut the server's cable during it.
    cut = threading.Timer(2.0, server.cut)
    cut.start()
    try:
        with client.entered(), pytest.raises(ProbeError) as err:
            measure_network(server.address, seconds=3, stall_timeout_s=1)
    finally:
        cut.join()
    message = str(err.value)
    assert message.startswith(f"network: upload with {server.address}:{PORT} ")
    assert "partial samples discarded" in message and "\n" not in message


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
