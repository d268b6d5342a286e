"""`flopwatt compare`: stored runs side by side, or one run against the shared results."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from bench import report
from bench.commands.submit import ServerOption, compare_shared
from bench.errors import FlopwattError
from bench.options import DbOption, JsonOption, stdout
from bench.store import Store


def compare(
    runs: Annotated[list[str], typer.Argument(help="Two or more runs; the first is the baseline. One with --shared.")],
    shared: Annotated[
        bool, typer.Option("--shared", help="Compare one run with everyone's: the shared medians for its card.")
    ] = False,
    server: ServerOption = None,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Compare runs side by side, as ratios to the first run with Welch's test on the samples;
    with --shared, one run against the shared results of its card and the reference cards."""
    if shared:
        if len(runs) != 1:
            raise FlopwattError("compare --shared takes exactly one run")
        compare_shared(runs[0], stdout(), server=server, db=db, as_json=as_json)
        return
    if len(runs) < 2:
        raise FlopwattError("compare needs at least two runs (or one with --shared)")
    store = Store(db)
    docs = [store.get(ref) for ref in runs]
    if as_json:
        base = {m.key: m for m in docs[0].measurements}
        rows = []
        for doc in docs[1:]:
            for m in doc.measurements:
                if m.key in base:
                    rows.append(
                        {
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
                        }
                    )
        print(json.dumps({"rows": rows, "warnings": report.comparability_warnings(docs)}, indent=2))
        return
    report.render_compare(docs, stdout())
