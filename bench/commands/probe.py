"""`flopwatt probe`: measure this machine with a progress bar, store the run, print its table.

The probes run in bench.runner (which imports torch, so only this command pays for it).
"""

from __future__ import annotations

import shlex
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bench import report
from bench.options import DbOption, EstimateCpuPowerOption, JsonOption, stdout
from bench.store import Store
from probes import KNOWN_PROBES


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
        Optional[str], typer.Option(help="collective: rank 0's HOST:PORT [default: $MASTER_ADDR and $MASTER_PORT].")
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
        out = stdout()
        report.render_run(doc, out)
        out.print(f"Stored as run [bold]{doc.run.id[:12]}[/bold] in {store.url}")
    for failure in run.failures:
        err.print(f"[red]error:[/red] {failure}")
    if run.failures:
        raise typer.Exit(2)
