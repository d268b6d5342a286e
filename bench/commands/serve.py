"""`flopwatt serve`: the shared results server on uvicorn."""

from __future__ import annotations

import os
import secrets
from typing import Annotated, Optional

import typer
import uvicorn

from bench.server.settings import DB_ENV, SECRET_ENV

#: How long a worker process may take to start before uvicorn gives up on it.
WORKER_START_S = 60


def serve(
    db: Annotated[
        str,
        typer.Option(
            "--db", help="SQLAlchemy URL: postgresql+psycopg://... for a deployment, sqlite:///FILE for a quick one."
        ),
    ],
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8765,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Server processes (about one per core). Each keeps its own rate-limit buckets, so a client "
            "may get up to this many times the per-client rates.",
        ),
    ] = 1,
    secret: Annotated[
        Optional[str],
        typer.Option(
            envvar=SECRET_ENV,
            show_default=False,
            help="Key for hashing client addresses; keep it across restarts to link a client's submissions.",
        ),
    ] = None,
) -> None:
    """Run the shared results server: API at /api/v1, its docs at /docs, the leaderboard at /."""
    from bench.server.app import create_app, open_server_database  # FastAPI: only this command needs it

    if workers == 1:
        uvicorn.run(create_app(db, secret=secret.encode() if secret else None), host=host, port=port, log_level="info")
        return
    # uvicorn starts each worker from an import string; the database is created here, once, first.
    open_server_database(db).engine.dispose()
    os.environ[DB_ENV] = db
    os.environ[SECRET_ENV] = secret or secrets.token_urlsafe(32)  # one key, so every worker hashes a client alike
    uvicorn.run(
        "bench.server.app:app_from_environment", factory=True, workers=workers, host=host, port=port, log_level="info",
        # A worker re-imports this CLI and builds the app: when that was slower (torch was imported too),
        # two workers starting at once on this 2-core VM outlasted uvicorn's 5 s start-up check, and
        # uvicorn killed and restarted one. The margin stays for small busy machines.
        timeout_worker_healthcheck=WORKER_START_S,
    )  # fmt: skip
