"""HTTP in and out: parameters, authentication, rate limits. Decisions belong to the service."""

from __future__ import annotations

import csv
import functools
import hashlib
import hmac
import io
import json
import math
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bench.api_models import (
    API_PREFIX,
    MAX_BATCH_RUNS,
    MAX_DOCUMENT_BYTES,
    BatchSubmitted,
    ErrorBody,
    HiddenUpdate,
    Leaderboard,
    RunBatch,
    RunPage,
    RunState,
    Standing,
    Submitted,
    SubmittedRun,
    TokenIssued,
)
from bench.document import RunDocument
from bench.server import page
from bench.server.errors import ApiError
from bench.server.ingest import GroupWriter
from bench.server.ratelimit import Limiter, RateLimits
from bench.server.repository import Repository, RunFilter, export_documents
from bench.server.service import KnownTokens, Service, hash_token
from bench.server.validation import device_model

RUN_ID = Path(pattern=r"^[0-9a-f]{8,64}$", description="The run's id, as `flopwatt runs` shows it.")


@dataclass
class ServerState:
    """Everything a request needs from the app, built by create_app (never at import time)."""

    engine: Engine
    secret: bytes
    requests: Limiter
    submissions: Limiter
    tokens: Limiter
    known_tokens: KnownTokens
    writer: GroupWriter

    @classmethod
    def build(cls, engine: Engine, secret: bytes, limits: RateLimits) -> ServerState:
        return cls(
            engine, secret, Limiter(limits.requests), Limiter(limits.submissions), Limiter(limits.tokens),
            KnownTokens(), GroupWriter(engine),
        )  # fmt: skip


def _state(request: Request) -> ServerState:
    return request.app.state.flopwatt


# -- request bodies: at most 1 MiB, before and after gzip -----------------------------------


class _LimitedRequest(Request):
    _checked: bytes | None = None

    async def body(self) -> bytes:
        if self._checked is None:
            declared = self.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_DOCUMENT_BYTES:
                raise _too_large()
            chunks, size = [], 0
            async for chunk in self.stream():
                size += len(chunk)
                if size > MAX_DOCUMENT_BYTES:
                    raise _too_large()
                chunks.append(chunk)
            raw = b"".join(chunks)
            encoding = self.headers.get("content-encoding", "identity").strip().lower()
            if encoding == "gzip":
                raw = _gunzip(raw)
            elif encoding not in ("", "identity"):
                raise ApiError(415, "Content-Encoding", f"{encoding!r} is not accepted: send gzip or nothing")
            self._checked = raw
        return self._checked


def _too_large() -> ApiError:
    return ApiError(413, "body", f"a request body is at most {MAX_DOCUMENT_BYTES} bytes, compressed or not")


def _gunzip(raw: bytes) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(raw, MAX_DOCUMENT_BYTES + 1)
    except zlib.error as exc:
        raise ApiError(400, "body", f"not valid gzip: {exc}") from None
    if len(out) > MAX_DOCUMENT_BYTES or inflater.unconsumed_tail:
        raise _too_large()
    if not inflater.eof or inflater.unused_data:
        raise ApiError(400, "body", "the gzip stream is truncated or followed by other data")
    return out


class BodyCheckedRoute(APIRoute):
    """Reads and checks the body before FastAPI parses it, so a refusal reaches the error handler."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            request = _LimitedRequest(request.scope, request.receive)
            if request.method in ("POST", "PUT", "PATCH"):
                await request.body()
            return await handler(request)

        return checked


# -- dependencies ----------------------------------------------------------------------------


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One session per request; tests override this to see or break what the service does.

    Async only so that FastAPI does not spend a thread hop on it: opening a session does no I/O.
    """
    with Session(_state(request).engine) as session:
        yield session


async def get_service(request: Request, session: Annotated[Session, Depends(get_session)]) -> Service:
    state = _state(request)
    return Service(Repository(session), state.known_tokens)


ServiceDep = Annotated[Service, Depends(get_service)]
bearer = HTTPBearer(auto_error=False, description="The token POST /api/v1/tokens issued.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def client_hash(request: Request) -> str:
    """A keyed hash of the client address: links one client's requests without storing where it is."""
    return _keyed_hash(_state(request).secret, request.client.host if request.client else "unknown")


@functools.lru_cache(maxsize=65536)
def _keyed_hash(secret: bytes, host: str) -> str:
    """Remembered: the same addresses send request after request, and an HMAC costs more than the lookup."""
    return hmac.new(secret, host.encode(), hashlib.sha256).hexdigest()[:32]


ClientDep = Annotated[str, Depends(client_hash)]


def _limit(limiter: Limiter, key: str, field: str, what: str, cost: int = 1) -> None:
    wait = limiter.take(key, cost)
    if wait:
        seconds = math.ceil(wait)
        raise ApiError(429, field, f"too many {what}; retry in {seconds} s", headers={"Retry-After": str(seconds)})


async def limit_client(request: Request, client: ClientDep) -> None:
    _limit(_state(request).requests, client, "client", "requests from this address")


async def bearer_token(credentials: Credentials) -> str:
    """The caller's token, which the service checks; every write needs one."""
    if credentials is None:
        raise ApiError(401, "Authorization", "send Authorization: Bearer TOKEN (get a token from POST /api/v1/tokens)")
    return credentials.credentials


TokenDep = Annotated[str, Depends(bearer_token)]


async def token_owner(request: Request, token: TokenDep) -> str:
    """The stored hash of the caller's token. Submissions are async, so a token this process has not
    seen yet is looked up in a worker thread, never on the event loop."""
    state = _state(request)
    token_hash = hash_token(token)
    if token_hash in state.known_tokens:
        return token_hash

    def look_up() -> str:
        with Session(state.engine) as session:
            return Service(Repository(session), state.known_tokens).authenticate(token)

    return await run_in_threadpool(look_up)


OwnerDep = Annotated[str, Depends(token_owner)]


# -- the API ---------------------------------------------------------------------------------

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 401, 403, 404, 409, 413, 415, 422, 429)
}
api = APIRouter(
    prefix=API_PREFIX, route_class=BodyCheckedRoute, dependencies=[Depends(limit_client)], responses=_ERRORS
)


@api.post("/tokens", status_code=201, response_model=TokenIssued, summary="Issue an anonymous submitter token")
def issue_token(request: Request, client: ClientDep, service: ServiceDep) -> TokenIssued:
    """The token is shown once; the server keeps only its hash."""
    _limit(_state(request).tokens, client, "client", "new tokens from this address")
    return service.issue_token(client)


@api.post(
    "/runs",
    status_code=201,
    response_model=Submitted,
    responses={200: {"model": Submitted, "description": "Already stored: the same id, nothing written."}},
    summary="Submit a run document",
)
async def submit_run(
    doc: RunDocument, request: Request, response: Response, owner: OwnerDep, client: ClientDep
) -> Submitted:
    """201 for a new run; 200 with the same id when this run was already submitted."""
    state = _state(request)
    _limit(state.submissions, owner, "Authorization", "submissions with this token")
    (result,) = await state.writer.store(Service.stage_run(doc, owner, client))
    if not result.created:
        response.status_code = 200
    return result


@api.post(
    "/runs/batch",
    status_code=201,
    response_model=BatchSubmitted,
    responses={200: {"model": BatchSubmitted, "description": "Every run was already stored."}},
    summary=f"Submit up to {MAX_BATCH_RUNS} run documents at once",
)
async def submit_batch(
    batch: RunBatch, request: Request, response: Response, owner: OwnerDep, client: ClientDep
) -> BatchSubmitted:
    """One transaction: every run is stored (or found already stored), or none is; results keep the order."""
    state = _state(request)
    _limit(state.submissions, owner, "Authorization", "submissions with this token", cost=len(batch.runs))
    results = await state.writer.store(Service.stage_batch(batch, owner, client))
    if not any(r.created for r in results):
        response.status_code = 200
    return BatchSubmitted(results=results)


@api.get("/runs", response_model=RunPage, summary="List submitted runs, newest first")
def list_runs(
    service: ServiceDep,
    device: Annotated[str | None, Query(max_length=128, description="Device model, e.g. 'RTX 4090'.")] = None,
    metric: Annotated[str | None, Query(max_length=64)] = None,
    dtype: Annotated[str | None, Query(max_length=32)] = None,
    tool_version: Annotated[str | None, Query(max_length=64)] = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> RunPage:
    return service.list_runs(RunFilter(device, metric, dtype, tool_version), offset, limit)


@api.get("/runs/{run_id}", response_model=SubmittedRun, summary="One submitted run, with its document")
def get_run(run_id: Annotated[str, RUN_ID], service: ServiceDep, credentials: Credentials) -> SubmittedRun:
    """A hidden run is found only with its owner's token."""
    return service.get_run(run_id, credentials.credentials if credentials else None)


@api.patch("/runs/{run_id}", response_model=RunState, summary="Hide or show one of your runs")
def set_hidden(run_id: Annotated[str, RUN_ID], update: HiddenUpdate, token: TokenDep, service: ServiceDep) -> RunState:
    """A hidden run stays stored but leaves listings, aggregates and the export."""
    return service.set_hidden(run_id, service.authenticate(token), update)


@api.delete("/runs/{run_id}", status_code=204, summary="Delete one of your runs")
def delete_run(run_id: Annotated[str, RUN_ID], token: TokenDep, service: ServiceDep) -> Response:
    service.delete(run_id, service.authenticate(token))
    return Response(status_code=204)


@api.get("/leaderboard", response_model=Leaderboard, summary="Per device model: median, p10, p90, per watt, per dollar")
def leaderboard(
    service: ServiceDep,
    metric: Annotated[str, Query(max_length=64, description="A metric name, e.g. matmul_flops.")],
    dtype: Annotated[str | None, Query(max_length=32, description="Omit for metrics without a dtype.")] = None,
    variant: Annotated[str | None, Query(max_length=64, description="e.g. sustained; omit for every variant.")] = None,
) -> Leaderboard:
    """Flagged and hidden runs are left out."""
    return service.leaderboard(metric, dtype, variant)


@api.get("/standing", response_model=Standing, summary="The percentile of a figure among its device model's runs")
def standing(
    service: ServiceDep,
    metric: Annotated[str, Query(max_length=64)],
    device: Annotated[str, Query(min_length=1, max_length=128, description="Device name or model.")],
    value: Annotated[float, Query(ge=0, allow_inf_nan=False)],
    dtype: Annotated[str | None, Query(max_length=32)] = None,
    variant: Annotated[str | None, Query(max_length=64)] = None,
) -> Standing:
    return service.standing(metric, dtype, variant, device, value)


class ExportFormat(str, Enum):
    jsonl = "jsonl"
    csv = "csv"


EXPORT_COLUMNS = [
    "run_id", "received_at", "started_at", "tool_version", "flagged_reason", "device", "device_model", "probe",
    "metric", "dtype", "variant", "unit", "value", "min", "max", "n", "energy_method", "energy_joules",
    "energy_watts_avg", "efficiency", "params",
]  # fmt: skip


@api.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}, "text/csv": {}}, "description": "Every visible run."}},
    summary="Every visible run, for analysis elsewhere",
)
def export(request: Request, format: ExportFormat = ExportFormat.jsonl) -> StreamingResponse:
    """jsonl: one submitted run (document included) per line; csv: one row per figure."""
    engine = _state(request).engine
    if format is ExportFormat.jsonl:
        return StreamingResponse(_jsonl(engine), media_type="application/x-ndjson")
    return StreamingResponse(
        _csv(engine), media_type="text/csv", headers={"Content-Disposition": 'attachment; filename="flopwatt.csv"'}
    )


def _jsonl(engine: Engine) -> Iterator[str]:
    for sub, doc in export_documents(engine):
        yield json.dumps(
            {"id": sub.run_id, "received_at": sub.received_at, "flagged_reason": sub.flagged_reason,
             "document": doc.model_dump(mode="json")}  # fmt: skip
        ) + "\n"


def _csv(engine: Engine) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS)
    writer.writeheader()
    for sub, doc in export_documents(engine):
        names = {d.id: d.name for d in doc.devices}
        for m in doc.measurements:
            name = names.get(m.device or "")
            writer.writerow(
                {
                    "run_id": doc.run.id, "received_at": sub.received_at, "started_at": doc.run.started_at.isoformat(),
                    "tool_version": doc.run.tool_version, "flagged_reason": sub.flagged_reason, "device": m.device,
                    "device_model": device_model(name) if name else "", "probe": m.probe, "metric": m.metric,
                    "dtype": m.dtype, "variant": m.variant, "unit": m.unit, "value": m.value, "min": m.min,
                    "max": m.max, "n": m.n, "energy_method": m.energy.method if m.energy else None,
                    "energy_joules": m.energy.joules if m.energy else None,
                    "energy_watts_avg": m.energy.watts_avg if m.energy else None, "efficiency": m.efficiency,
                    "params": json.dumps(m.params),
                }  # fmt: skip
            )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


# -- the leaderboard page --------------------------------------------------------------------

pages = APIRouter(dependencies=[Depends(limit_client)])


@pages.get("/", response_class=HTMLResponse, include_in_schema=False)
def leaderboard_page(
    service: ServiceDep,
    metric: Annotated[str, Query(max_length=64)] = "matmul_flops",
    dtype: Annotated[str, Query(max_length=32)] = "fp32",
    variant: Annotated[str, Query(max_length=64)] = "",
    sort: Annotated[str, Query(max_length=32)] = "median",
    order: Annotated[str, Query(max_length=4)] = "desc",
) -> HTMLResponse:
    board = service.leaderboard(metric, dtype or None, variant or None)
    return HTMLResponse(page.render(board, sort=sort, order=order))
