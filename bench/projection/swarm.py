"""A swarm: groups of alike nodes, uneven in speed, link and hours online (docs/projection.md, "Uneven swarms").

A synchronous ring moves at its slowest member: its slowest compute, its slowest uplink and
downlink, its longest round trip. A node that is online only part of the day rejoins each day by
downloading the weights before it contributes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, replace

from bench.errors import FlopwattError
from bench.projection.model import DAY, HOUR, Figure, check
from bench.projection.nodes import Node
from bench.units import parse_bitrate, parse_duration

#: A joining node downloads the weights in bf16, 2 bytes per parameter (its optimizer state starts
#: fresh, as DiLoCo's inner state may; assumption, docs "Uneven swarms").
JOIN_BYTES_PER_PARAM = 2.0


@dataclass(frozen=True)
class NodeGroup:
    node: Node
    count: int


@dataclass(frozen=True)
class Swarm:
    groups: tuple[NodeGroup, ...]

    @classmethod
    def uniform(cls, node: Node, count: int) -> Swarm:
        check(count, "gpus (nodes)", 1, 1e7, low_inclusive=True)
        return cls((NodeGroup(node, int(count)),))

    @property
    def nodes(self) -> int:
        return sum(g.count for g in self.groups)

    @property
    def gpus(self) -> int:
        return sum(g.count * g.node.gpus for g in self.groups)

    @property
    def name(self) -> str:
        if len(self.groups) == 1:
            return f"{self.nodes} x {self.groups[0].node.name}"
        return " + ".join(f"{g.count} x {g.node.name}" for g in self.groups)

    @property
    def slowest(self) -> Node:
        """The node that sets a synchronous step's compute time."""
        return min((g.node for g in self.groups), key=lambda n: n.node_flops)

    def link(self) -> tuple[float, float, float]:
        """The ring's pace: the slowest uplink, the slowest downlink, the longest round trip."""
        missing = [f"{g.node.name}: {what}" for g in self.groups for what, fig in
                   (("net_upload (--uplink)", g.node.uplink_bps), ("net_download (--downlink)", g.node.downlink_bps),
                    ("net_rtt (--rtt)", g.node.rtt_s)) if fig is None]
        if missing:
            raise FlopwattError("the swarm strategies need every node's link; missing " + ", ".join(missing))
        return (min(g.node.uplink_bps.value for g in self.groups),  # type: ignore[union-attr]
                min(g.node.downlink_bps.value for g in self.groups),  # type: ignore[union-attr]
                max(g.node.rtt_s.value for g in self.groups))  # type: ignore[union-attr]


def join_s(node: Node, params: float) -> float:
    """Seconds a returning node spends downloading the weights (none for a node online all day)."""
    if node.hours_per_day.value >= 24 or node.downlink_bps is None:
        return 0.0
    return JOIN_BYTES_PER_PARAM * params * 8 / node.downlink_bps.value


def online_share(node: Node, params: float) -> float:
    """Share of the day the node contributes: its hours online less its daily download of the weights."""
    return max(0.0, node.hours_per_day.value * HOUR - join_s(node, params)) / DAY


def parse_nodes_csv(text: str, resolve: Callable[[str, str], Node]) -> Swarm:
    """A swarm from CSV rows: `card` or `run`, `count`, and optionally `uplink`, `downlink`, `rtt`
    (as the options read them) and `hours_per_day`. `resolve(kind, name)` makes the node."""
    reader = csv.DictReader(io.StringIO(text))
    fields = set(reader.fieldnames or [])
    if not fields & {"card", "run"} or "count" not in fields:
        raise FlopwattError("nodes CSV: needs a header with `card` or `run`, and `count`")
    groups = []
    for line, row in enumerate(reader, start=2):
        def cell(name: str, row: dict[str, str] = row) -> str:
            return (row.get(name) or "").strip()

        kind = "card" if cell("card") else "run" if cell("run") else ""
        if not kind:
            raise FlopwattError(f"nodes CSV line {line}: give a card or a run")
        try:
            count = int(cell("count"))
        except ValueError:
            raise FlopwattError(f"nodes CSV line {line}: count must be a whole number, got {cell('count')!r}") from None
        check(count, f"nodes CSV line {line}: count", 1, 1e7, low_inclusive=True)
        node = resolve(kind, cell(kind))
        where = f"nodes CSV line {line}"
        changes: dict[str, Figure] = {}
        if cell("uplink"):
            changes["uplink_bps"] = Figure(parse_bitrate(cell("uplink"), f"{where}: uplink"), where)
        if cell("downlink"):
            changes["downlink_bps"] = Figure(parse_bitrate(cell("downlink"), f"{where}: downlink"), where)
        if cell("rtt"):
            changes["rtt_s"] = Figure(parse_duration(cell("rtt"), f"{where}: rtt"), where)
        if cell("hours_per_day"):
            try:
                hours = float(cell("hours_per_day"))
            except ValueError:
                raise FlopwattError(f"{where}: hours_per_day must be a number") from None
            changes["hours_per_day"] = Figure(check(hours, f"{where}: hours_per_day", 0, 24), where)
        groups.append(NodeGroup(replace(node, **changes), count))
    if not groups:
        raise FlopwattError("nodes CSV: no nodes")
    return Swarm(tuple(groups))


def with_hours(swarm: Swarm, hours: float | None) -> Swarm:
    """Every node online `hours` a day (an option), unless its CSV row says otherwise."""
    if hours is None:
        return swarm
    check(hours, "hours per day", 0, 24)
    return Swarm(tuple(NodeGroup(replace(g.node, hours_per_day=Figure(hours, "option --hours-per-day")), g.count)
                       if g.node.hours_per_day.source.startswith("assumed") else g for g in swarm.groups))

