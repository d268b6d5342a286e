"""The app factory and the one place where errors become HTTP answers."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from bench.api_models import ErrorBody, ErrorDetail
from bench.errors import FlopwattError, StoreError
from bench.server import routes
from bench.server.errors import ApiError
from bench.server.ratelimit import RateLimits
from bench.server.repository import missing_server_tables
from bench.server.settings import DB_ENV, SECRET_ENV
from bench.store import Store


#: Database connections per server process: requests beyond it wait for one.
POOL_SIZE = 20


def create_app(db_url: str, *, limits: RateLimits | None = None, secret: bytes | None = None) -> FastAPI:
    """The server over the database at `db_url`, created with schema.sql if it is empty.

    `secret` keys the hash of client addresses; without one, a random key links a client's
    submissions only for the life of this process.
    """
    store = open_server_database(db_url)
    try:
        tool_version = version("flopwatt")
    except PackageNotFoundError:
        tool_version = "unknown"
    state = routes.ServerState.build(_engine(store), secret or secrets.token_bytes(32), limits or RateLimits())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        state.writer.stop()  # uvicorn has answered every request by now; write what is queued

    app = FastAPI(
        lifespan=lifespan,
        title="flopwatt results server",
        version=tool_version,
        description="Shared flopwatt runs: submit, list, export, and a leaderboard per device model.",
    )
    app.state.flopwatt = state
    app.include_router(routes.api)
    app.include_router(routes.pages)
    for kind in (FlopwattError, RequestValidationError, HTTPException, OperationalError):
        app.add_exception_handler(kind, error_response)
    return app


def open_server_database(db_url: str) -> Store:
    """The database at `db_url`, created with schema.sql if empty; one from an older flopwatt is refused."""
    store = Store(db_url)
    missing = missing_server_tables(store.engine)
    if missing:
        raise StoreError(
            f"{store.url} lacks the server tables {', '.join(missing)}: it was created by an older flopwatt; "
            "serve a new database"
        )
    return store


def app_from_environment() -> FastAPI:
    """The app of one worker process: the database and client-hash key the parent put in the environment."""
    return create_app(os.environ[DB_ENV], secret=os.environ[SECRET_ENV].encode())


def _engine(store: Store) -> Engine:
    """Store's engine, with a pool as large as the requests served at once on a server database.

    With SQLAlchemy's default pool (5), concurrent requests beyond it open and close a connection
    each, which costs more than the request itself. SQLite keeps Store's engine (and its pragmas).
    """
    if store.engine.dialect.name == "sqlite":
        return store.engine
    store.engine.dispose()
    return create_engine(store.engine.url, pool_size=POOL_SIZE, max_overflow=0, pool_timeout=30)


def error_response(request: Request, exc: Exception) -> JSONResponse:
    """Every refusal as {"error": {"status", "field", "message"}}, whatever raised it."""
    headers: dict[str, str] = {}
    if isinstance(exc, ApiError):
        status, field, message, headers = exc.status, exc.field, exc.message, exc.headers
    elif isinstance(exc, RequestValidationError):
        status, (field, message) = 422, _first_problem(exc)
    elif isinstance(exc, HTTPException):
        status, field, message = exc.status_code, "path" if exc.status_code == 404 else "method", str(exc.detail)
        headers = dict(exc.headers or {})
    elif isinstance(exc, OperationalError):
        # The database is down or busy: the request was fine, and may be sent again.
        status, field, message, headers = 503, "database", "the database is unavailable; retry later", {"Retry-After": "5"}
    else:
        status, field, message = 400, "request", str(exc)
    body = ErrorBody(error=ErrorDetail(status=status, field=field, message=message))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _first_problem(exc: RequestValidationError) -> tuple[str, str]:
    """("measurements.0.unit", "...") from pydantic's first error location, without its 'body' prefix."""
    first = exc.errors()[0]
    loc = [str(part) for part in first.get("loc", ())]
    if first.get("type") == "json_invalid":
        return "body", f"not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}"
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:] or [loc[0]]
    field, message = ".".join(loc) or "body", str(first["msg"])
    # Measurement checks its metric and unit together, so pydantic reports them at the measurement.
    if "unknown metric" in message:
        field += ".metric"
    elif message.startswith("Value error, metric ") and " is in " in message:
        field += ".unit"
    return field, message
