"""`flopwatt submit` and `flopwatt compare RUN --shared`: this machine's runs and everyone else's.

The command functions only parse and call; the work is in bench.client, the rendering in the
functions below, which draw on the Console they are given.
"""

from __future__ import annotations

import json

from dataclasses import dataclass
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.api_models import API_PREFIX, LeaderboardRow
from bench.client import Outcome, SubmitClient, request_body
from bench.document import RunDocument
from bench.options import DbOption, JsonOption
from bench.store import Store
from bench.units import si
from probes.measurement import Measurement

ServerOption = Annotated[
    Optional[str],
    typer.Option("--server", help="Results server URL [default: $FLOPWATT_SERVER or http://127.0.0.1:8765]."),
]
#: Reference cards shown beside each figure in `compare --shared`.
REFERENCE_CARDS_SHOWN = 3


def submit(
    runs: Annotated[
        Optional[list[str]],
        typer.Argument(help="Runs to send: ids, unique prefixes or 'latest' [default: latest, unless --pending]."),
    ] = None,
    server: ServerOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print exactly what would be sent; send nothing.")] = False,
    pending: Annotated[bool, typer.Option("--pending", help="Send the runs queued while the server was unreachable.")] = False,
    include_identifying: Annotated[
        bool,
        typer.Option(
            "--include-identifying", help="Also send host name, user name, addresses, serials, UUIDs, MACs, bus ids."
        ),
    ] = False,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Share runs with the results server; nothing identifying is sent unless asked."""
    refs = runs or ([] if pending else ["latest"])
    docs = [Store(db).get(ref) for ref in refs] if refs else []
    # with --json the lines a person reads go to stderr, and stdout holds only JSON
    console = Console(highlight=False, stderr=as_json)
    with SubmitClient(server) as client:
        if as_json and dry_run:  # what submit_runs prints for a dry run, as one JSON list
            bodies = [(p.stem, p.read_bytes()) for p in client.pending()] if pending else []
            bodies += [(d.run.id, request_body(d, include_identifying=include_identifying)) for d in docs]
            url = f"{client.server}{API_PREFIX}/runs"
            print(json.dumps([{"run": run_id, "url": url, "bytes": len(body), "body": json.loads(body)}
                              for run_id, body in bodies], indent=2))  # fmt: skip
            return
        outcomes = submit_runs(client, docs, console, dry_run=dry_run, pending=pending,
                               include_identifying=include_identifying)  # fmt: skip
        if as_json:
            print(json.dumps([{"run": o.run_id, "status": o.status, "note": o.note, "server": client.server}
                              for o in outcomes], indent=2))  # fmt: skip


def submit_runs(
    client: SubmitClient,
    docs: list[RunDocument],
    console: Console,
    *,
    dry_run: bool = False,
    pending: bool = False,
    include_identifying: bool = False,
) -> list[Outcome]:
    """Send (or with dry_run, print) the queue if asked, then each run; report every outcome."""
    url = f"{client.server}{API_PREFIX}/runs"
    if dry_run:
        bodies = [(p.stem, p.read_bytes()) for p in client.pending()] if pending else []
        bodies += [(d.run.id, request_body(d, include_identifying=include_identifying)) for d in docs]
        for run_id, body in bodies:
            console.print(f"POST {url} (run {run_id}, {len(body)} bytes, sent gzip-compressed):", soft_wrap=True,
                          markup=False)  # fmt: skip
            console.out(body.decode(), highlight=False)
        return []
    outcomes = list(client.send_pending()) if pending else []
    if pending and not outcomes:
        console.print("No queued runs.")
    outcomes += [client.submit(d, include_identifying=include_identifying) for d in docs]
    for outcome in outcomes:
        render_outcome(outcome, client.server, console)
    return outcomes


def render_outcome(outcome: Outcome, server: str, console: Console) -> None:
    run, note = outcome.run_id[:12], escape(outcome.note or "")
    if outcome.status == "queued":
        console.print(f"run {run}: queued ({note}); send it later with `flopwatt submit --pending`", soft_wrap=True)
        return
    if outcome.status == "refused":
        console.print(f"run {run}: [red]refused[/red], set aside: {note}", soft_wrap=True)
        return
    said = "stored" if outcome.status == "created" else "already stored"
    console.print(f"run {run}: {said} on {escape(server)}", soft_wrap=True)
    if note:
        console.print(f"  [yellow]flagged, left out of the leaderboard:[/yellow] {note}", soft_wrap=True)


# -- compare RUN --shared --------------------------------------------------------------------


@dataclass(frozen=True)
class SharedFigure:
    """One figure of a run beside the shared figures of its device model and of reference cards."""

    measurement: Measurement
    device_model: str
    same_card: LeaderboardRow | None
    percentile: float | None
    references: list[LeaderboardRow]


def compare_shared(
    run: str, console: Console, *, server: str | None = None, db: str | None = None, as_json: bool = False
) -> None:
    """For `flopwatt compare RUN --shared`: this run against everyone's medians."""
    doc = Store(db).get(run)
    with SubmitClient(server) as client:
        figures = shared_figures(doc, client)
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "metric": f.measurement.metric,
                        "dtype": f.measurement.dtype,
                        "variant": f.measurement.variant,
                        "value": f.measurement.value,
                        "device_model": f.device_model,
                        "same_card": f.same_card.model_dump() if f.same_card else None,
                        "percentile": f.percentile,
                        "references": [r.model_dump() for r in f.references],
                    }
                    for f in figures
                ],
                indent=2,
            )
        )
        return
    render_shared(doc, figures, console)


def shared_figures(doc: RunDocument, client: SubmitClient) -> list[SharedFigure]:
    names = {d.id: d.name for d in doc.devices}
    boards: dict[tuple[str, str | None, str | None], list[LeaderboardRow]] = {}
    figures = []
    for m in doc.measurements:
        if m.device not in names:
            continue
        key = (m.metric, m.dtype, m.variant)
        if key not in boards:
            boards[key] = client.leaderboard(*key).rows
        standing = client.standing(m.metric, names[m.device], m.value, m.dtype, m.variant)
        rows = boards[key]
        same = next((r for r in rows if r.device_model == standing.device_model), None)
        references = [r for r in rows if r.reference and r.device_model != standing.device_model]
        figures.append(
            SharedFigure(m, standing.device_model, same, standing.percentile, references[:REFERENCE_CARDS_SHOWN])
        )
    return figures


def render_shared(doc: RunDocument, figures: list[SharedFigure], console: Console) -> None:
    if not figures:
        console.print(f"Run {doc.run.id[:12]} has no per-device figures to compare.")
        return
    table = Table(title=f"Run {doc.run.id[:12]} against the shared results")
    for column in ("Figure", "Device", "This run", "Same card: median (runs)", "Percentile", "Reference cards"):
        table.add_column(column)
    for f in figures:
        m = f.measurement
        label = " ".join(part for part in (m.metric, m.dtype, m.variant) if part)
        same = f"{si(f.same_card.median, m.unit)} ({f.same_card.count})" if f.same_card else "no shared runs"
        percentile = f"{f.percentile:.0f}" if f.percentile is not None else "–"
        refs = "; ".join(f"{escape(r.device_model)} {si(r.median, m.unit)}" for r in f.references) or "–"
        table.add_row(escape(label), escape(f.device_model), si(m.value, m.unit), same, percentile, refs)
    console.print(table)
