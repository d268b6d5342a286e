"""`flopwatt runs` and `flopwatt show`: what the local database holds."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from bench import report
from bench.options import DbOption, JsonOption, stdout
from bench.store import Store


def runs(
    limit: Annotated[int, typer.Option(help="Show at most this many runs.", min=1)] = 20,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """List stored runs, newest first."""
    summaries = Store(db).list_runs(limit)
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "id": s.id,
                        "started_at": s.started_at.isoformat(),
                        "command": s.command,
                        "cpu_model": s.cpu_model,
                        "devices": s.devices,
                        "measurements": s.measurements,
                    }
                    for s in summaries
                ],
                indent=2,
            )
        )
        return
    report.render_runs(summaries, stdout())


def show(
    run: Annotated[str, typer.Argument(help="Run id, a unique prefix of it, or 'latest'.")],
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Show one run; with --json, print its run document."""
    doc = Store(db).get(run)
    if as_json:
        print(doc.to_json())
    else:
        report.render_run(doc, stdout())
