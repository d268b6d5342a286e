"""`flopwatt compare`: stored runs side by side, one run beside reference cards, or one run against the
shared results."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from bench import report
from bench.cards import CardFigure, card_figures, default_cards, own_cards
from bench.commands.submit import ServerOption, compare_shared
from bench.document import RunDocument
from bench.errors import FlopwattError
from bench.hardware import get_card
from bench.options import DbOption, JsonOption, stdout
from bench.store import Store


def compare(
    runs: Annotated[
        list[str],
        typer.Argument(help="Runs: two or more side by side, the first the baseline; one run beside reference "
                            "cards, or with --shared."),
    ],
    card: Annotated[
        Optional[list[str]],
        typer.Option("--card", help="A reference card to set one run beside, e.g. rtx4090 or h100; repeat for "
                                    "more [default: the run's own card, gtx1080, rtx4090, h100 and h200]."),
    ] = None,
    shared: Annotated[
        bool, typer.Option("--shared", help="Compare one run with everyone's: the shared medians for its card.")
    ] = False,
    server: ServerOption = None,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Compare runs side by side, or one run beside reference cards or the shared results.

    Several runs: each later one as ratios to the first, with Welch's test on the samples. One run:
    beside reference cards, their datasheet figures and what they were measured to reach, the ratio,
    and how many of this machine make one card. With --shared, one run against everyone's results."""
    if shared:
        if len(runs) != 1 or card:
            raise FlopwattError("compare --shared takes exactly one run and no --card")
        compare_shared(runs[0], stdout(), server=server, db=db, as_json=as_json)
        return
    if len(runs) == 1:
        compare_with_cards(Store(db).get(runs[0]), card or [], as_json=as_json)
        return
    if card:
        raise FlopwattError("--card sets one run beside reference cards; give one run, not several")
    store = Store(db)
    docs = [store.get(ref) for ref in runs]
    if as_json:
        print(json.dumps({"rows": _run_rows(docs), "warnings": report.comparability_warnings(docs)}, indent=2))
        return
    report.render_compare(docs, stdout())


def compare_with_cards(doc: RunDocument, names: list[str], *, as_json: bool = False) -> None:
    cards = [get_card(name) for name in names] if names else default_cards(doc)
    cards = list({c.key: c for c in cards}.values())
    own = {c.key for c in own_cards(doc)}
    figures = card_figures(doc, cards)
    if as_json:
        print(json.dumps({
            "run": doc.run.id,
            "cards": [{"key": c.key, "name": c.name, "own": c.key in own} for c in cards],
            "rows": [_card_row(f) for f in figures],
            "warnings": report.comparability_warnings([doc]),
        }, indent=2))  # fmt: skip
        return
    out = stdout()
    report.render_cards(doc, figures, own, out)
    for warning in report.comparability_warnings([doc]):
        out.print(f"[yellow]warning[/yellow] {warning}")


def _card_row(f: CardFigure) -> dict[str, object]:
    return {
        "metric": f.metric,
        "dtype": f.dtype,
        "variant": f.variant,
        "device": f.device,
        "per_watt": f.per_watt,
        "unit": f.unit,
        "value": f.value,
        "card": f.card.key,
        "datasheet": f.datasheet,
        "datasheet_source": f.datasheet_source,
        "achieved": f.achieved.value if f.achieved else None,
        "achieved_source": f.achieved.source if f.achieved else None,
        "achieved_date": f.achieved.date if f.achieved else None,
        "basis": f.basis,
        "ratio": f.ratio,
        "machines_per_card": f.machines_per_card,
    }


def _run_rows(docs: list[RunDocument]) -> list[dict[str, object]]:
    """Every later run's figures as ratios to the first's, with Welch's verdict."""
    base = {m.key: m for m in docs[0].measurements}
    rows = []
    for doc in docs[1:]:
        for m in doc.measurements:
            if m.key not in base:
                continue
            rows.append({
                "run": doc.run.id,
                "baseline": docs[0].run.id,
                "metric": m.metric,
                "dtype": m.dtype,
                "variant": m.variant,
                "device": m.device,
                "value": m.value,
                "baseline_value": base[m.key].value,
                "ratio": m.value / base[m.key].value if base[m.key].value else None,
                "verdict": report.verdict(base[m.key], m),
                "efficiency": m.efficiency,
                "baseline_efficiency": base[m.key].efficiency,
            })  # fmt: skip
    return rows
