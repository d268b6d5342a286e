"""All-reduce over home links: a ring, or a tree where the ring's (n-1)·RTT would dominate.

The swarm's links are asymmetric, so each algorithm takes the slower of what it sends over the
uplink and what it receives over the downlink (docs/projection.md, "All-reduce over home links").
"""

from __future__ import annotations

import math


def ring_allreduce_s(nbytes: float, n: int, uplink_bps: float, downlink_bps: float, rtt_s: float) -> float:
    """Ring all-reduce: each node sends and receives 2(n-1)/n of the buffer, in 2(n-1) steps each
    paying one one-way latency (Patarasuk & Yuan 2009; Thakur et al. 2005)."""
    if n <= 1:
        return 0.0
    moved = 2 * (n - 1) / n * nbytes * 8
    return max(moved / uplink_bps, moved / downlink_bps) + 2 * (n - 1) * rtt_s / 2


def tree_allreduce_s(nbytes: float, n: int, uplink_bps: float, downlink_bps: float, rtt_s: float) -> float:
    """Double binary tree (Sanders, Speck & Träff 2009; NCCL 2.4's trees): a reduce up and a
    broadcast down two complementary trees, each carrying half the buffer, pipelined. Each node sends
    and receives about 2x the buffer, and a value crosses 2·ceil(log2 n) hops, one latency each."""
    if n <= 1:
        return 0.0
    moved = 2 * nbytes * 8
    return max(moved / uplink_bps, moved / downlink_bps) + 2 * math.ceil(math.log2(n)) * rtt_s / 2


def allreduce_s(nbytes: float, n: int, uplink_bps: float, downlink_bps: float, rtt_s: float) -> tuple[float, str]:
    """The faster of the ring and the tree, and its name: a swarm library picks its algorithm by size
    and scale as NCCL does."""
    ring = ring_allreduce_s(nbytes, n, uplink_bps, downlink_bps, rtt_s)
    tree = tree_allreduce_s(nbytes, n, uplink_bps, downlink_bps, rtt_s)
    return (tree, "tree") if tree < ring else (ring, "ring")
