"""The `flopwatt` command line: parse, call, render. The work happens in runner, store and report.

User mistakes (FlopwattError, ProbeError, and click's own usage errors such as an unknown option or
a value out of range) become one line on stderr and exit code 2, in one place: FlopwattGroup.
"""

from __future__ import annotations

import csv
import io
import json
import shlex
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from typer.core import TyperGroup

from bench import report
from bench.document import RunDocument, parse_document, utc_now
from bench.commands.monitor import monitor
from bench.commands.network import serve_network
from bench.commands.project import project
from bench.commands.serve import serve
from bench.commands.submit import ServerOption, compare_shared, submit
from bench.errors import DocumentError, FlopwattError
from bench.options import DbOption, EstimateCpuPowerOption, JsonOption
from bench.store import PROJECT_ROOT, Store
from probes import KNOWN_PROBES
from probes.measurement import ProbeError


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _is_usage_error(exc: typer.TyperException) -> bool:
    """An unknown option or command, a missing argument, a value out of range: click's exit code 2.

    A bare `flopwatt` raises one too (NoArgsIsHelpError, which prints the help); typer itself tells
    it apart by name, as here.
    """
    return exc.exit_code == 2 and type(exc).__name__ != "NoArgsIsHelpError"


def _usage_line(exc: typer.TyperException) -> str:
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx else "flopwatt"
    return f"{exc.format_message().rstrip('.')} (see '{command} --help')"


class FlopwattGroup(TyperGroup):
    """Turns the errors a user can cause into one line and exit code 2, for every command."""

    def make_context(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        # the group's own options (`flopwatt --bogus`) are parsed here; a subcommand's, in invoke
        try:
            return super().make_context(*args, **kwargs)
        except typer.TyperException as exc:
            if not _is_usage_error(exc):
                raise
            raise _fail(_usage_line(exc)) from None

    def invoke(self, ctx: typer.Context):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except (FlopwattError, ProbeError) as exc:
            raise _fail(str(exc)) from None
        except typer.TyperException as exc:
            if not _is_usage_error(exc):
                raise
            raise _fail(_usage_line(exc)) from None


app = typer.Typer(
    cls=FlopwattGroup,
    help="Measure what this machine can contribute to training AI models, store it, compare it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



class ExportFormat(str, Enum):
    json = "json"
    csv = "csv"


def _stdout() -> Console:
    return Console(highlight=False)


@app.command()
def probe(
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    only: Annotated[
        Optional[str], typer.Option(help=f"Comma-separated probes to run: {', '.join(KNOWN_PROBES)}.")
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Fewer shapes and repeats: under a minute.")] = False,
    estimate_cpu_power: EstimateCpuPowerOption = False,
    server: Annotated[
        Optional[str], typer.Option(help="network: the iperf3 server to test against, HOST[:PORT].")
    ] = None,
    iperf3: Annotated[Optional[str], typer.Option(help="network: path to iperf3 when it is not on PATH.")] = None,
    streams: Annotated[int, typer.Option(min=1, max=128, help="network: parallel TCP streams.")] = 1,
    seconds: Annotated[int, typer.Option(min=1, max=600, help="network: seconds per direction.")] = 5,
    rank: Annotated[Optional[int], typer.Option(min=0, help="collective: this machine's rank [default: $RANK].")] = None,
    world: Annotated[Optional[int], typer.Option(min=2, help="collective: number of machines [default: $WORLD_SIZE].")] = None,
    master: Annotated[
        Optional[str], typer.Option(help="collective: rank 0's HOST:PORT [default: $MASTER_ADDR:$MASTER_PORT].")
    ] = None,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Probe this machine (matmul FLOP/s per dtype, memory bandwidth, energy; network and
    all-reduce on request) and store the run."""
    # The command as stored with the run: the options that shape the figures (never --db: it may hold a password).
    command = ["probe"] + (["--device", device] if device != "auto" else []) + (["--quick"] if quick else [])
    command += ["--only", only] if only else []
    command += ["--estimate-cpu-power"] if estimate_cpu_power else []
    from bench.runner import NetworkOptions, ProbeRequest, run_probes  # torch: only `probe` pays for it

    request = ProbeRequest(
        device=device,
        only=ProbeRequest.parse_only(only),
        quick=quick,
        estimate_cpu_power=estimate_cpu_power,
        network=NetworkOptions(server, iperf3, streams, seconds, rank, world, master),
        command=shlex.join(command),
    )
    store = Store(db)  # open first: a bad database should fail before minutes of probing
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err, transient=True
    ) as bar:
        task = bar.add_task("starting", total=1.0)
        try:
            run = run_probes(request, lambda step, done: bar.update(task, description=step, completed=done))
        except KeyboardInterrupt:
            bar.stop()
            err.print("interrupted: nothing was stored")
            raise typer.Exit(130) from None
    doc = run.document
    if request.only == ("collective",) and not doc.measurements and not run.failures:
        err.print("collective: this rank is done; rank 0 stores the result")
        return
    store.save(doc)
    if as_json:
        print(doc.to_json())
    else:
        out = _stdout()
        report.render_run(doc, out)
        out.print(f"Stored as run [bold]{doc.run.id[:12]}[/bold] in {store.url}")
    for failure in run.failures:
        err.print(f"[red]error:[/red] {failure}")
    if run.failures:
        raise typer.Exit(2)


@app.command()
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
    report.render_runs(summaries, _stdout())


@app.command()
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
        report.render_run(doc, _stdout())


@app.command()
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
        compare_shared(runs[0], _stdout(), server=server, db=db, as_json=as_json)
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
    report.render_compare(docs, _stdout())


@app.command()
def export(
    format: Annotated[ExportFormat, typer.Option("--format", help="json: run documents; csv: one row per figure.")] = ExportFormat.json,
    output: Annotated[
        Optional[Path], typer.Option(help="File to write, '-' for stdout [default: results/export-<time>.<format>].")
    ] = None,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Export every stored run, for analysis elsewhere or to import on another machine."""
    docs = Store(db).documents()
    text = _export_json(docs) if format is ExportFormat.json else _export_csv(docs)
    if output is not None and str(output) == "-":
        sys.stdout.write(text)
        return
    path = output or PROJECT_ROOT / "results" / f"export-{utc_now():%Y%m%d-%H%M%S}.{format.value}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        raise FlopwattError(f"cannot write {path}: {exc.strerror}") from exc
    figures = sum(len(d.measurements) for d in docs)
    if as_json:
        print(json.dumps({"path": str(path), "runs": len(docs), "measurements": figures}))
    else:
        _stdout().print(f"Wrote {len(docs)} runs ({figures} figures) to {path}")


def _export_json(docs: list[RunDocument]) -> str:
    return "[\n" + ",\n".join(d.model_dump_json(indent=2) for d in docs) + "\n]\n"


CSV_COLUMNS = [
    "run_id", "started_at", "tool_version", "cpu_model", "device", "device_name", "probe", "metric", "dtype",
    "variant", "unit", "value", "min", "max", "n", "peak", "peak_fraction", "energy_joules", "energy_watts_avg",
    "energy_method", "params",
]  # fmt: skip


def _export_csv(docs: list[RunDocument]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for doc in docs:
        names = {d.id: d.name for d in doc.devices}
        for m in doc.measurements:
            writer.writerow(
                {
                    "run_id": doc.run.id,
                    "started_at": doc.run.started_at.isoformat(),
                    "tool_version": doc.run.tool_version,
                    "cpu_model": doc.host.cpu_model,
                    "device": m.device,
                    "device_name": names.get(m.device or "", ""),
                    "probe": m.probe,
                    "metric": m.metric,
                    "dtype": m.dtype,
                    "variant": m.variant,
                    "unit": m.unit,
                    "value": m.value,
                    "min": m.min,
                    "max": m.max,
                    "n": m.n,
                    "peak": m.peak,
                    "peak_fraction": m.peak_fraction,
                    "energy_joules": m.energy.joules if m.energy else None,
                    "energy_watts_avg": m.energy.watts_avg if m.energy else None,
                    "energy_method": m.energy.method if m.energy else None,
                    "params": json.dumps(m.params),
                }
            )
    return buffer.getvalue()


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="A run document (`show --json`) or an export (`export --format json`).")],
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Store runs from a file written by `show --json` or `export --format json`."""
    try:
        text = file.read_text()
    except OSError as exc:
        raise FlopwattError(f"cannot read {file}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{file}: not a text file") from exc
    docs = _parse_import(text, str(file))
    Store(db).save_all(docs)
    if as_json:
        print(json.dumps({"imported": [d.run.id for d in docs]}))
    else:
        _stdout().print(f"Imported {len(docs)} run(s): {', '.join(d.run.id[:12] for d in docs)}")


def _parse_import(text: str, source: str) -> list[RunDocument]:
    stripped = text.lstrip()
    if not stripped.startswith("["):
        return [parse_document(text, source=source)]
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DocumentError(f"{source}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    if not items:
        raise DocumentError(f"{source}: the export holds no runs")
    return [parse_document(json.dumps(item), source=f"{source}[{i}]") for i, item in enumerate(items)]


app.command()(monitor)
app.command()(project)
app.command("serve-network")(serve_network)
app.command()(submit)
app.command()(serve)


def main() -> None:
    app()
