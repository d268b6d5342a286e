"""A run beside reference cards (`flopwatt compare RUN --card NAME`): the run's figures, and per card
the datasheet figure in the same dtype, the figure someone measured on that card and published,
the ratio, and how many of this machine add up to one card.

The ratio is taken against what the card measurably reaches where that is published (mamf-finder,
BabelStream: bench.hardware's achieved figures) and against its datasheet peak otherwise; `basis`
says which. Datasheet peaks are not what anyone reaches, so the measured figure is the fair one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bench.document import RunDocument
from bench.hardware import Achieved, Card, achieved_limit, datasheet_limit, find_card, get_card

#: The cards a run is set beside when none is named: its own, the seed's GTX 1080, a gaming flagship,
#: and the two datacenter GPUs the claims are about.
DEFAULT_CARDS = ("gtx1080", "rtx4090", "h100", "h200")
#: Figures of a run that have a counterpart on a card.
COMPARED_METRICS = ("matmul_flops", "mem_copy_bandwidth", "mem_triad_bandwidth", "h2d_bandwidth", "d2h_bandwidth")
#: Figures that add up over machines, so "N of this machine = one card" means something.
ADDITIVE = ("matmul_flops", "mem_copy_bandwidth", "mem_triad_bandwidth", "memory_bytes")
PER_WATT_UNITS = {"FLOP/s": "FLOP/J", "B/s": "B/J"}


@dataclass(frozen=True)
class CardFigure:
    """One figure of the run beside one card."""

    metric: str  # a run metric, or "memory_bytes" for the device's memory size
    dtype: str | None
    variant: str | None
    device: str | None
    unit: str
    #: This run's figure (per watt: its efficiency).
    value: float
    card: Card
    datasheet: float | None
    datasheet_source: str | None
    achieved: Achieved | None = None
    per_watt: bool = False

    @property
    def basis(self) -> Literal["achieved", "datasheet"] | None:
        """Which card figure the ratio is taken against."""
        if self.achieved is not None:
            return "achieved"
        return "datasheet" if self.datasheet is not None else None

    @property
    def card_value(self) -> float | None:
        return self.achieved.value if self.achieved is not None else self.datasheet

    @property
    def ratio(self) -> float | None:
        """This run's figure over the card's (1.0: as good as the card)."""
        return self.value / self.card_value if self.card_value else None

    @property
    def machines_per_card(self) -> float | None:
        """How many of this machine make one card; only for figures that add up across machines."""
        if self.per_watt or self.metric not in ADDITIVE or not self.card_value or self.value <= 0:
            return None
        return self.card_value / self.value


def default_cards(doc: RunDocument) -> list[Card]:
    """The run's own cards (where the table knows them), then DEFAULT_CARDS, each once."""
    cards = own_cards(doc) + [get_card(key) for key in DEFAULT_CARDS]
    return list({card.key: card for card in cards}.values())


def own_cards(doc: RunDocument) -> list[Card]:
    found = (find_card(d.name) for d in doc.devices if d.kind != "cpu")
    return list({card.key: card for card in found if card is not None}.values())


def card_figures(doc: RunDocument, cards: list[Card]) -> list[CardFigure]:
    """Every comparable figure of the run against every card, in the run's order; per watt where measured."""
    rows: list[CardFigure] = []
    for m in doc.measurements:
        if m.metric not in COMPARED_METRICS:
            continue
        common = {"metric": m.metric, "dtype": m.dtype, "variant": m.variant, "device": m.device}
        for card in cards:
            limit = datasheet_limit(card, m.metric, m.dtype)
            rows.append(CardFigure(**common, unit=m.unit, value=m.value, card=card,  # type: ignore[arg-type]
                                   datasheet=limit[0] if limit else None, datasheet_source=limit[1] if limit else None,
                                   achieved=achieved_limit(card, m.metric, m.dtype)))  # fmt: skip
        if m.efficiency and m.unit in PER_WATT_UNITS:
            for card in cards:
                limit = datasheet_limit(card, m.metric, m.dtype)
                power = card.board_power_w  # None for a GPU with no power of its own (Apple's)
                rows.append(CardFigure(
                    **common, unit=PER_WATT_UNITS[m.unit], value=m.efficiency, card=card,  # type: ignore[arg-type]
                    datasheet=limit[0] / power if limit and power else None,
                    datasheet_source=f"datasheet figure / board power: {card.source('power')}" if limit and power else None,
                    per_watt=True,
                ))  # fmt: skip
    for device in doc.devices:
        if not device.memory_bytes:
            continue
        for card in cards:
            size = float(card.memory_bytes) if card.memory_bytes else None
            rows.append(CardFigure("memory_bytes", None, None, device.id, "B", float(device.memory_bytes), card,
                                   size, card.source("memory") if size else None))  # fmt: skip
    return rows
