"""The server's SQL, and nothing else: one class over one SQLAlchemy session.

Run documents go in and come out through bench.store's mapping, so the server stores exactly what
`flopwatt import` would. The percentiles run in PostgreSQL (percentile_cont) where it serves; on
SQLite, which has no such aggregate, the same linear interpolation runs here over sorted values.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, Table, and_, case, delete, func, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bench.api_models import Submitted
from bench.document import RunDocument
from bench.orm import FigureRow, RunRow, SubmissionRow, TokenRow
from bench.store import RUN_TABLES, document_rows, run_document_from_row, with_children

#: Tables the server needs on top of a flopwatt database.
SERVER_TABLES = ("tokens", "submissions", "figures")


@dataclass(frozen=True)
class StagedRun:
    """A run ready to write: its document, where it sat in the request, its submissions and figures rows."""

    doc: RunDocument
    path: str
    submission: dict[str, Any]
    figures: list[dict[str, Any]]

    def created(self) -> Submitted:
        """The answer once this run is written."""
        return Submitted(id=self.doc.run.id, created=True, flagged_reason=self.submission["flagged_reason"])


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

        The rows are the ones bench.store maps a document to, written table by table for the whole
        batch: at ingest rates, per-row statements and round trips cost more than the database.
        """
        rows: dict[Table, list[dict[str, Any]]] = {table: [] for table in _WRITE_ORDER}
        for item in staged:
            for name, table_rows in document_rows(item.doc).items():
                rows[_TABLES[name]] += table_rows
            rows[SubmissionRow.__table__].append(item.submission)
            rows[FigureRow.__table__] += item.figures
        _write_rows(self.session.connection(), rows)

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
_WRITE_ORDER: tuple[Table, ...] = (*RUN_TABLES, SubmissionRow.__table__, FigureRow.__table__)  # type: ignore[has-type]
_TABLES = {table.name: table for table in _WRITE_ORDER}


def _write_rows(conn: Connection, rows: dict[Table, list[dict[str, Any]]]) -> None:
    """Every table's rows, in `rows`' order (parents first), inside the session's transaction.

    On PostgreSQL, one INSERT per table with the table's rows as one JSON parameter, which
    PostgreSQL unpacks into typed rows (json_populate_recordset), and all of them pipelined: one
    round trip in all. psycopg then passes one string per table instead of adapting every value in
    Python (an executemany costs a protocol message per row), and the statement text never changes,
    so PostgreSQL prepares it once. Round trips matter beyond latency: each gives up the GIL, and
    on a busy server getting it back can take a switch interval (5 ms). A clash on a key surfaces
    as SQLAlchemy's IntegrityError, as an INSERT's would.
    """
    rows = {table: table_rows for table, table_rows in rows.items() if table_rows}
    if conn.dialect.name != "postgresql":
        for table, table_rows in rows.items():
            conn.exec_driver_sql(_insert_sql(table), [tuple(row[c.name] for c in table.columns) for row in table_rows])
        return
    driver = conn.connection.driver_connection
    try:
        with driver.cursor() as cursor, driver.pipeline():
            for table, table_rows in rows.items():
                cursor.execute(_from_json_sql(table), [json.dumps(table_rows)])
    except psycopg.errors.IntegrityError as err:
        raise IntegrityError(f"writing {sum(map(len, rows.values()))} rows", None, err) from err


def _from_json_sql(table: Table) -> str:
    columns = ", ".join(c.name for c in table.columns)
    return f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM json_populate_recordset(NULL::{table.name}, %s)"


def _insert_sql(table: Table) -> str:
    columns = [c.name for c in table.columns]
    return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join(['?'] * len(columns))})"


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
