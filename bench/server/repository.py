"""The server's SQL, and nothing else: one class over one SQLAlchemy session.

Run documents go in and come out through bench.store's mapping, so the server stores exactly what
`flopwatt import` would. The percentiles run in PostgreSQL (percentile_cont) where it serves; on
SQLite, which has no such aggregate, the same linear interpolation runs here over sorted values.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, Table, and_, case, delete, func, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bench.document import RunDocument
from bench.orm import DeviceRow, FigureRow, MeasurementRow, RunRow, SubmissionRow, TokenRow, UnavailableRow
from bench.store import run_document_from_row, run_row, with_children

#: Tables the server needs on top of a flopwatt database.
SERVER_TABLES = ("tokens", "submissions", "figures")


@dataclass(frozen=True)
class StagedRun:
    """A run ready to write: its document, its submissions row and its figures rows."""

    doc: RunDocument
    submission: dict[str, Any]
    figures: list[dict[str, Any]]


@dataclass(frozen=True)
class BoardStats:
    """One leaderboard group as the database computes it."""

    device_model: str
    variant: str
    count: int
    p10: float
    median: float
    p90: float
    per_watt: float | None
    per_watt_count: int


@dataclass(frozen=True)
class ListedRun:
    id: str
    received_at: str
    started_at: str
    tool_version: str
    flagged_reason: str | None


@dataclass(frozen=True)
class RunFilter:
    device_model: str | None = None
    metric: str | None = None
    dtype: str | None = None
    tool_version: str | None = None


class Repository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # -- tokens ------------------------------------------------------------------------------

    def add_token(self, token_hash: str, created_at: str, client_hash: str) -> None:
        self.session.add(TokenRow(token_hash=token_hash, created_at=created_at, client_hash=client_hash))

    def token_exists(self, token_hash: str) -> bool:
        return self.session.get(TokenRow, token_hash) is not None

    # -- submissions -------------------------------------------------------------------------

    def submission(self, run_id: str) -> SubmissionRow | None:
        return self.session.get(SubmissionRow, run_id)

    def submissions(self, run_ids: list[str]) -> dict[str, SubmissionRow]:
        found = self.session.scalars(select(SubmissionRow).where(SubmissionRow.run_id.in_(run_ids)))
        return {s.run_id: s for s in found}

    def stored_runs(self, run_ids: list[str]) -> list[str]:
        return list(self.session.scalars(select(RunRow.id).where(RunRow.id.in_(run_ids))))

    def add_runs(self, staged: list[StagedRun]) -> None:
        """Insert runs, who sent them and their leaderboard rows; the caller commits them as one.

        The rows are the ones bench.store maps a document to, written with one multi-row INSERT per
        table for the whole batch: at ingest rates, per-row statements cost more than the database.
        """
        rows: dict[Table, list[dict[str, Any]]] = {table: [] for table in _WRITE_ORDER}
        for item in staged:
            run = run_row(item.doc)
            rows[RunRow.__table__].append(_columns(RunRow.__table__, run))
            for table, children in (
                (DeviceRow.__table__, run.devices),
                (MeasurementRow.__table__, run.measurements),
                (UnavailableRow.__table__, run.unavailable),
            ):
                rows[table] += [_columns(table, child, run_id=run.id) for child in children]
            rows[SubmissionRow.__table__].append(item.submission)
            rows[FigureRow.__table__] += item.figures
        conn = self.session.connection()
        for table in _WRITE_ORDER:
            _insert_rows(conn, table, rows[table])

    def delete_run(self, run_id: str) -> None:
        """Everything of the run goes: its children, submission and figures cascade in the database."""
        self.session.execute(delete(RunRow).where(RunRow.id == run_id))

    def set_hidden(self, submission: SubmissionRow, hidden: bool) -> None:
        submission.hidden = int(hidden)
        counted = int(not hidden and submission.flagged_reason is None)
        self.session.execute(update(FigureRow).where(FigureRow.run_id == submission.run_id).values(counted=counted))

    # -- reading runs ------------------------------------------------------------------------

    def document(self, run_id: str) -> RunDocument:
        row = self.session.scalars(with_children(select(RunRow).where(RunRow.id == run_id))).one()
        return run_document_from_row(row)

    def list_runs(self, where: RunFilter, offset: int, limit: int) -> list[ListedRun]:
        """Visible runs, newest submission first."""
        query = (
            select(RunRow.id, SubmissionRow.received_at, RunRow.started_at, RunRow.tool_version, SubmissionRow.flagged_reason)
            .join(SubmissionRow, SubmissionRow.run_id == RunRow.id)
            .where(SubmissionRow.hidden == 0)
        )
        if where.tool_version is not None:
            query = query.where(RunRow.tool_version == where.tool_version)
        figure_terms = [
            column == value
            for column, value in (
                (FigureRow.device_model, where.device_model),
                (FigureRow.metric, where.metric),
                (FigureRow.dtype, where.dtype),
            )
            if value is not None
        ]
        if figure_terms:
            query = query.where(RunRow.id.in_(select(FigureRow.run_id).where(and_(*figure_terms))))
        query = query.order_by(SubmissionRow.received_at.desc(), RunRow.id.desc()).offset(offset).limit(limit)
        return [ListedRun(*row) for row in self.session.execute(query)]

    def devices_and_metrics(self, run_ids: list[str]) -> dict[str, tuple[list[str], list[str]]]:
        """run id -> (device models, metrics), from the figures of those runs."""
        found: dict[str, tuple[set[str], set[str]]] = {run_id: (set(), set()) for run_id in run_ids}
        query = select(FigureRow.run_id, FigureRow.device_model, FigureRow.metric).where(FigureRow.run_id.in_(run_ids))
        for run_id, model, metric in self.session.execute(query):
            if model:
                found[run_id][0].add(model)
            found[run_id][1].add(metric)
        return {run_id: (sorted(models), sorted(metrics)) for run_id, (models, metrics) in found.items()}

    # -- aggregates --------------------------------------------------------------------------

    def leaderboard(self, metric: str, dtype: str, variant: str | None) -> list[BoardStats]:
        terms = [FigureRow.metric == metric, FigureRow.dtype == dtype, FigureRow.counted == 1]
        if variant is not None:
            terms.append(FigureRow.variant == variant)
        if self.session.get_bind().dialect.name == "postgresql":
            return self._leaderboard_in_sql(terms)
        return self._leaderboard_here(terms)

    def _leaderboard_in_sql(self, terms: list) -> list[BoardStats]:
        def pct(q: float, column):  # type: ignore[no-untyped-def]
            return func.percentile_cont(q).within_group(column)

        query = (
            select(
                FigureRow.device_model,
                FigureRow.variant,
                func.count(),
                pct(0.1, FigureRow.value),
                pct(0.5, FigureRow.value),
                pct(0.9, FigureRow.value),
                pct(0.5, FigureRow.efficiency),
                func.count(FigureRow.efficiency),
            )
            .where(*terms)
            .group_by(FigureRow.variant, FigureRow.device_model)  # the index's order: no sort
        )
        return [BoardStats(*row) for row in self.session.execute(query)]

    def _leaderboard_here(self, terms: list) -> list[BoardStats]:
        query = (
            select(FigureRow.device_model, FigureRow.variant, FigureRow.value, FigureRow.efficiency)
            .where(*terms)
            .order_by(FigureRow.variant, FigureRow.device_model, FigureRow.value)
        )
        stats = []
        for (model, variant), group in itertools.groupby(self.session.execute(query), key=lambda r: (r[0], r[1])):
            rows = list(group)
            values = [r[2] for r in rows]
            efficiencies = sorted(r[3] for r in rows if r[3] is not None)
            stats.append(
                BoardStats(
                    device_model=model,
                    variant=variant,
                    count=len(values),
                    p10=quantile(values, 0.1),
                    median=quantile(values, 0.5),
                    p90=quantile(values, 0.9),
                    per_watt=quantile(efficiencies, 0.5) if efficiencies else None,
                    per_watt_count=len(efficiencies),
                )
            )
        return stats

    def standing(self, metric: str, dtype: str, variant: str, device_model: str, value: float) -> tuple[int, float]:
        """(how many counted figures share this key, how many lie below `value`, ties counting half)."""
        below = case((FigureRow.value < value, 1.0), (FigureRow.value == value, 0.5), else_=0.0)
        query = select(func.count(), func.coalesce(func.sum(below), 0.0)).where(
            FigureRow.metric == metric,
            FigureRow.dtype == dtype,
            FigureRow.counted == 1,
            FigureRow.device_model == device_model,
            FigureRow.variant == variant,
        )
        count, under = self.session.execute(query).one()
        return int(count), float(under)


#: Parents before children: the foreign keys are checked row by row.
_WRITE_ORDER: tuple[Table, ...] = (
    RunRow.__table__,
    DeviceRow.__table__,
    MeasurementRow.__table__,
    UnavailableRow.__table__,
    SubmissionRow.__table__,
    FigureRow.__table__,
)  # type: ignore[assignment]


#: From this many rows, PostgreSQL gets COPY: its setup costs more than it saves on a few rows.
COPY_FROM_ROWS = 40


def _insert_rows(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """All rows in one go, inside the session's transaction.

    Many rows on PostgreSQL go by COPY, which psycopg encodes in C: a fifth of the client CPU of an
    executemany. A clash on a key surfaces as SQLAlchemy's IntegrityError, as an INSERT's would.
    """
    if not rows:
        return
    columns = [c.name for c in table.columns]
    if conn.dialect.name != "postgresql" or len(rows) < COPY_FROM_ROWS:
        mark = "%s" if conn.dialect.paramstyle in ("format", "pyformat") else "?"
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"
        conn.exec_driver_sql(sql, [tuple(row[c] for c in columns) for row in rows])
        return
    statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
    try:
        with conn.connection.driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row([row[c] for c in columns])
    except psycopg.errors.IntegrityError as err:
        raise IntegrityError(statement, None, err) from err


def _columns(table: Table, row: object, **override: object) -> dict[str, Any]:
    """A mapped object's column values, as a Core insert takes them."""
    return {c.name: override[c.name] if c.name in override else getattr(row, c.key) for c in table.columns}


def quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks: PostgreSQL's percentile_cont, numpy's default."""
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def missing_server_tables(engine: Engine) -> list[str]:
    present = set(inspect(engine).get_table_names())
    return [name for name in SERVER_TABLES if name not in present]


# -- export: streamed in batches, each in its own short session ------------------------------

EXPORT_BATCH = 500


def export_documents(engine: Engine) -> Iterator[tuple[SubmissionRow, RunDocument]]:
    """Every visible run with its submission, in run id order, a batch of runs at a time."""
    after = ""
    while True:
        with Session(engine) as session:
            subs = session.scalars(
                select(SubmissionRow)
                .where(SubmissionRow.hidden == 0, SubmissionRow.run_id > after)
                .order_by(SubmissionRow.run_id)
                .limit(EXPORT_BATCH)
            ).all()
            if not subs:
                return
            rows = session.scalars(with_children(select(RunRow).where(RunRow.id.in_([s.run_id for s in subs])))).all()
            docs = {row.id: run_document_from_row(row) for row in rows}
            session.expunge_all()
        for sub in subs:
            if sub.run_id in docs:  # else deleted between the two reads
                yield sub, docs[sub.run_id]
        after = subs[-1].run_id
