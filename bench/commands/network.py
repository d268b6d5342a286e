"""`flopwatt serve-network`: be the other end of someone's `flopwatt probe --only network --server`.

It wraps a plain `iperf3 -s`, so a friend may test against either this or any iperf3 server.
ProbeError (no iperf3, port taken) reaches the CLI's one-line error handler unchanged.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from probes.network import DEFAULT_PORT
from probes.network import serve_network as run_server


def serve_network(
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="TCP port to listen on (iperf3's usual one is 5201).")
    ] = DEFAULT_PORT,
    iperf3: Annotated[
        Optional[str], typer.Option("--iperf3", help="Path to the iperf3 program when it is not on PATH.")
    ] = None,
    bind: Annotated[
        Optional[str], typer.Option("--bind", help="Listen on this local address only (default: all).")
    ] = None,
) -> None:
    """Serve network tests (iperf3) to another machine until Ctrl-C; open the port in your firewall."""
    typer.echo(
        f"Serving network tests on port {port}. On the other machine run:\n"
        f"  flopwatt probe --only network --server <this machine's address>:{port}"
    )
    try:
        run_server(port, iperf3=iperf3, bind=bind, on_output=typer.echo)
    except KeyboardInterrupt:
        typer.echo("stopped")
