"""`make bench` for the network probe: its upload against raw iperf3 on the same link, same run.

It builds a two-host namespace lab (tests/netns.py: root and iproute2 needed, traffic stays inside),
shapes the client's uplink with tbf, then alternates `rounds` times: plain `iperf3 -c` (the peer;
its figure is the receiver's total, `end.sum_received`) and the probe (the median of the receiver's
per-interval rates). Alternating lets load from other processes hit both alike.
Target: probe / peer within 1 +- 0.03. Also reported: the probe's wall time and how much of it is
not iperf3's own test time (its idle-RTT, upload and download runs).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

from probes.network import measure_network, start_network_server
from tests.netns import Lab, netns_unavailable

TARGET = 0.03


def _raw_iperf3_upload(server: str, seconds: int) -> float:
    """What anyone would run by hand: one iperf3 upload, the receiver's total rate."""
    out = subprocess.run(
        ["iperf3", "-c", server, "-t", str(seconds), "--json"], capture_output=True, text=True, check=True,
        timeout=seconds + 30,
    )  # fmt: skip
    return float(json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"])


def run(rate_bit_s: float = 100e6, seconds: int = 3, rounds: int = 3) -> dict[str, object]:
    """Probe vs raw iperf3 upload on a link shaped to `rate_bit_s`; medians, ratio and wall time."""
    reason = netns_unavailable()
    if reason:
        return {"skipped": reason}
    peer, probe, walls = [], [], []
    with Lab(hosts=2) as lab:
        client, server = lab.hosts
        with server.entered():
            lab.processes.append(start_network_server())
        client.shape_uplink(rate_bit_s)
        with client.entered():
            for _ in range(rounds):
                peer.append(_raw_iperf3_upload(server.address, seconds))
                start = time.perf_counter()
                result = measure_network(server.address, seconds=seconds)
                walls.append(time.perf_counter() - start)
                (upload,) = [m for m in result.measurements if m.metric == "net_upload"]
                probe.append(upload.value)
    ratio = statistics.median(probe) / statistics.median(peer)
    wall = statistics.median(walls)
    test_time = 1 + 2 * seconds  # idle RTT (1 s) + upload + download
    return {
        "link": f"veth pair + bridge, client uplink tbf {rate_bit_s:g} bit/s",
        "seconds": seconds,
        "rounds": rounds,
        "peer_upload_bit_s": statistics.median(peer),
        "probe_upload_bit_s": statistics.median(probe),
        "ratio": ratio,
        "target": f"1 +- {TARGET}",
        "pass": abs(ratio - 1) <= TARGET,
        "probe_wall_s": wall,
        "probe_overhead_s": wall - test_time,
        "peer_samples_bit_s": peer,
        "probe_samples_bit_s": probe,
    }


if __name__ == "__main__":
    figures = run()
    print(json.dumps(figures, indent=2))
    sys.exit(0 if figures.get("pass", True) else 1)
