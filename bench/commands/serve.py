"""`flopwatt serve`: the shared results server on uvicorn."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
import uvicorn

from bench.server import create_app


def serve(
    db: Annotated[
        str,
        typer.Option(
            "--db", help="SQLAlchemy URL: postgresql+psycopg://... for a deployment, sqlite:///FILE for a quick one."
        ),
    ],
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8765,
    secret: Annotated[
        Optional[str],
        typer.Option(
            envvar="FLOPWATT_SERVER_SECRET",
            show_default=False,
            help="Key for hashing client addresses; keep it across restarts to link a client's submissions.",
        ),
    ] = None,
) -> None:
    """Run the shared results server: API at /api/v1, its docs at /docs, the leaderboard at /."""
    app = create_app(db, secret=secret.encode() if secret else None)
    # One worker: rate limits are counted in this process.
    uvicorn.run(app, host=host, port=port, log_level="info")
