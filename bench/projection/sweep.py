"""One question, every strategy: the Scenario, its projection, and the sweep over swarm sizes."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from bench.errors import FlopwattError
from bench.hardware import Card, get_card
from bench.projection.energy import Prices, Projection, Strategy
from bench.projection.model import MIN_MFU, ModelSpec, check
from bench.projection.nodes import DEFAULT_MFU
from bench.projection.pipeline import pipeline
from bench.projection.strategies import MAX_GPUS, Settings, colocated, ddp, diloco
from bench.projection.swarm import NodeGroup, Swarm

STRATEGIES: tuple[Strategy, ...] = ("colocated", "ddp", "diloco", "pipeline")
SWARM_STRATEGIES: tuple[Strategy, ...] = ("ddp", "diloco", "pipeline")


@dataclass(frozen=True)
class Scenario:
    """Train `model` on `tokens`: on the `swarm` at home, or on `dc_gpus` of `dc_card`."""

    model: ModelSpec
    swarm: Swarm
    tokens: float
    dc_card: Card
    dc_gpus: int
    strategies: tuple[Strategy, ...] = STRATEGIES
    prices: Prices = Prices()
    settings: Settings = Settings()
    mfu: float = DEFAULT_MFU

    @property
    def nodes(self) -> int:
        return self.swarm.nodes


def default_tokens(model: ModelSpec) -> float:
    """Chinchilla-optimal: 20 tokens per parameter (Hoffmann et al. 2022)."""
    return 20 * model.params


def matched_dc_gpus(swarm: Swarm, card: Card, mfu: float = DEFAULT_MFU) -> int:
    """Datacenter GPUs of `card` at `mfu` with the swarm's training FLOP/s, in whole 8-GPU servers."""
    dc = card.peak[card.best_training_dtype] * mfu
    total = sum(g.count * g.node.node_flops for g in swarm.groups)
    return max(8, 8 * math.ceil(total / dc / 8))


def scenario(model: ModelSpec, swarm: Swarm, *, tokens: float | None = None, dc_card: Card | str = "h100",
             dc_gpus: int | None = None, strategy: str = "auto", prices: Prices = Prices(),
             settings: Settings = Settings(), mfu: float = DEFAULT_MFU) -> Scenario:
    """Validate inputs into a Scenario; defaults: Chinchilla tokens, a FLOP-matched datacenter at `mfu`."""
    tok = default_tokens(model) if tokens is None else check(tokens, "tokens", 1, 1e16, low_inclusive=True)
    card = get_card(dc_card) if isinstance(dc_card, str) else dc_card
    if card.missing_datasheet():
        raise FlopwattError(f"datacenter card {card.key} has no datasheet {', '.join(card.missing_datasheet())}")
    check(mfu, "utilisation (MFU)", MIN_MFU, 1, low_inclusive=True)
    for group in swarm.groups:
        node = group.node
        for value, what in ((node.flops.value, "node FLOP/s"), (node.memory_bytes.value, "node memory"),
                            (node.watts.value, "node watts")):
            check(value, what, 0, 1e18)
        check(node.utilisation.value, "node utilisation", MIN_MFU, 1, low_inclusive=True)
    if dc_gpus is None:
        dc = matched_dc_gpus(swarm, card, mfu)
        if dc > MAX_GPUS:
            raise FlopwattError(f"a datacenter matching this swarm's FLOP/s would need {dc:,} {card.name} GPUs at "
                                f"{mfu:.3g} MFU, more than {MAX_GPUS:,.0f}: raise --mfu or give --dc-gpus")
    else:
        dc = int(check(dc_gpus, "datacenter gpus", 1, MAX_GPUS, low_inclusive=True))
    if strategy == "auto":
        chosen: tuple[Strategy, ...] = STRATEGIES
    elif strategy in STRATEGIES:
        chosen = (strategy,)  # type: ignore[assignment]
    else:
        raise FlopwattError(f"strategy must be auto or one of {', '.join(STRATEGIES)}, got {strategy!r}")
    return Scenario(model, swarm, tok, card, dc, chosen, prices.validated(), settings.validated(), mfu)


def project(sc: Scenario) -> list[Projection]:
    """Every chosen strategy, feasible or not (with the reason)."""
    out: list[Projection] = []
    for name in sc.strategies:
        if name == "colocated":
            out.append(colocated(sc.model, sc.dc_card, sc.dc_gpus, sc.tokens, mfu=sc.mfu, prices=sc.prices,
                                 settings=sc.settings))
        else:
            fn = {"ddp": ddp, "diloco": diloco, "pipeline": pipeline}[name]
            out.append(fn(sc.model, sc.swarm, sc.tokens, prices=sc.prices, settings=sc.settings))
    return out


def resized(swarm: Swarm, nodes: int) -> Swarm:
    """The swarm scaled to `nodes`, its groups in proportion (at least one node each)."""
    total = swarm.nodes
    groups = [NodeGroup(g.node, max(1, round(g.count * nodes / total))) for g in swarm.groups]
    return Swarm(tuple(groups)) if len(groups) > 1 else Swarm((NodeGroup(swarm.groups[0].node, nodes),))


def sweep(sc: Scenario, counts: Iterable[int], *, match_datacenter: bool = False) -> list[tuple[int, list[Projection]]]:
    """The scenario at each swarm size. The datacenter stays as the scenario has it, or with
    `match_datacenter` is resized at each point to the swarm's training FLOP/s at the scenario's MFU."""
    out = []
    for n in counts:
        check(n, "node count", 1, 1e7, low_inclusive=True)
        point = replace(sc, swarm=resized(sc.swarm, int(n)))
        if match_datacenter:
            point = replace(point, dc_gpus=matched_dc_gpus(point.swarm, sc.dc_card, sc.mfu))
        out.append((int(n), project(point)))
    return out


def best(results: Sequence[Projection], strategies: Sequence[Strategy] = SWARM_STRATEGIES) -> Projection | None:
    """The feasible result among `strategies` that finishes first on the calendar. DiLoCo outside the
    published range already carries its pessimistic token factor."""
    ok = [r for r in results if r.feasible and r.strategy in strategies and r.calendar_s is not None]
    return min(ok, key=lambda r: r.calendar_s or math.inf) if ok else None
