"""The server's SQL, and nothing else: one class over one SQLAlchemy session.

Run documents go in and come out through bench.store's mapping, so the server stores exactly what
`flopwatt import` would. The leaderboard is kept per group in board_groups (see schema.sql): writes
mark the groups they touch, reads recompute those first. The percentiles run in PostgreSQL
(percentile_cont) where it serves; on SQLite, which has no such aggregate, the same linear
interpolation runs here over sorted values.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, Table, and_, case, delete, func, insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bench.api_models import Submitted
from bench.document import RunDocument
from bench.orm import BoardGroupRow, FigureRow, RunRow, SubmissionRow, TokenRow
from bench.store import RUN_TABLES, document_rows, run_document_from_row, with_children

#: Tables the server needs on top of a flopwatt database.
SERVER_TABLES = ("tokens", "submissions", "figures", "board_groups")


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
        _write_rows(self.session.connection(), rows, _groups_of(rows[FigureRow.__table__]))

    def delete_run(self, run_id: str) -> None:
        """Everything of the run goes: its children, submission and figures cascade in the database."""
        self._touch_groups_of(run_id)
        self.session.execute(delete(RunRow).where(RunRow.id == run_id))

    def set_hidden(self, submission: SubmissionRow, hidden: bool) -> None:
        submission.hidden = int(hidden)
        counted = int(not hidden and submission.flagged_reason is None)
        self.session.execute(update(FigureRow).where(FigureRow.run_id == submission.run_id).values(counted=counted))
        self._touch_groups_of(submission.run_id)

    def _touch_groups_of(self, run_id: str) -> None:
        """The run's leaderboard groups must be recomputed: its figures are changing."""
        figures = self.session.execute(select(*_GROUP_KEY).where(FigureRow.run_id == run_id)).mappings().all()
        _write_rows(self.session.connection(), {}, _groups_of(figures))

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
        """The groups of one metric and dtype (and variant, if given), after recomputing stale ones."""
        self._refresh_groups(metric, dtype)
        query = select(
            BoardGroupRow.device_model, BoardGroupRow.variant, BoardGroupRow.figure_count, BoardGroupRow.p10,
            BoardGroupRow.median, BoardGroupRow.p90, BoardGroupRow.per_watt, BoardGroupRow.per_watt_count,
        ).where(BoardGroupRow.metric == metric, BoardGroupRow.dtype == dtype, BoardGroupRow.figure_count > 0)  # fmt: skip
        if variant is not None:
            query = query.where(BoardGroupRow.variant == variant)
        return [BoardStats(*row) for row in self.session.execute(query)]

    def _refresh_groups(self, metric: str, dtype: str) -> None:
        """Recompute, from the figures, the groups written since their stats were computed.

        Versions are read before the figures, so stats stamped with a version include at least every
        write up to it; a write meanwhile leaves its group stale for the next read. Each group is
        committed alone, so a writer bumping it waits for one short update, never for the whole read.
        """
        stale = self.session.execute(
            select(BoardGroupRow.variant, BoardGroupRow.device_model, BoardGroupRow.version)
            .where(BoardGroupRow.metric == metric, BoardGroupRow.dtype == dtype,
                   BoardGroupRow.version > BoardGroupRow.computed_version)  # fmt: skip
            .order_by(BoardGroupRow.variant, BoardGroupRow.device_model)
        ).all()
        for variant, model, version in stale:
            key = {"metric": metric, "dtype": dtype, "variant": variant, "device_model": model}
            stats = self._group_stats(key)
            self.session.execute(_STORE_STATS, {**key, **stats, "version": version})
            self.session.commit()

    def _group_stats(self, key: dict[str, str]) -> dict[str, Any]:
        """One group's counted figures: count, p10, median, p90, median per watt.

        One group per query, every key column compared for equality: an index-only range scan of
        figures_board. (Several groups in one `IN` list made PostgreSQL read the table instead.)
        """
        if self.session.get_bind().dialect.name == "postgresql":
            return dict(zip(_STATS_COLUMNS, self.session.execute(_GROUP_STATS, key).one()))
        # SQLite has no percentile_cont: the same linear interpolation, over values read in order.
        rows = self.session.execute(_GROUP_VALUES, key).all()
        values = [value for value, _ in rows]
        efficiencies = sorted(efficiency for _, efficiency in rows if efficiency is not None)
        return dict(
            zip(
                _STATS_COLUMNS,
                (
                    len(values),
                    quantile(values, 0.1) if values else None,
                    quantile(values, 0.5) if values else None,
                    quantile(values, 0.9) if values else None,
                    quantile(efficiencies, 0.5) if efficiencies else None,
                    len(efficiencies),
                ),
            )
        )

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


#: What _group_stats computes, as board_groups names it.
_STATS_COLUMNS = ("figure_count", "p10", "median", "p90", "per_watt", "per_watt_count")

# The group refresh's statements, built once: a read may refresh dozens of groups, and building a
# SQLAlchemy statement costs more Python than running it.
_IN_GROUP = (
    "metric = :metric AND dtype = :dtype AND variant = :variant AND device_model = :device_model AND counted = 1"
)
_GROUP_STATS = text(
    "SELECT count(*), percentile_cont(0.1) WITHIN GROUP (ORDER BY value), "
    "percentile_cont(0.5) WITHIN GROUP (ORDER BY value), percentile_cont(0.9) WITHIN GROUP (ORDER BY value), "
    f"percentile_cont(0.5) WITHIN GROUP (ORDER BY efficiency), count(efficiency) FROM figures WHERE {_IN_GROUP}"
)
_GROUP_VALUES = text(f"SELECT value, efficiency FROM figures WHERE {_IN_GROUP} ORDER BY value")
#: Stats stamped with the version they include; a concurrent read that got further is not undone.
_STORE_STATS = text(
    "UPDATE board_groups SET computed_version = :version, figure_count = :figure_count, p10 = :p10, "
    "median = :median, p90 = :p90, per_watt = :per_watt, per_watt_count = :per_watt_count "
    "WHERE metric = :metric AND dtype = :dtype AND variant = :variant AND device_model = :device_model "
    "AND computed_version < :version"
)

#: A leaderboard group: the figures columns that key board_groups.
_GROUP_KEY = (FigureRow.metric, FigureRow.dtype, FigureRow.variant, FigureRow.device_model)
_GROUP_COLUMNS = tuple(column.key for column in _GROUP_KEY)


def _groups_of(figures: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The distinct groups of these figures, in key order (the order every writer locks them in)."""
    keys = sorted({tuple(f[c] for c in _GROUP_COLUMNS) for f in figures})
    return [dict(zip(_GROUP_COLUMNS, key)) for key in keys]


def _write_rows(conn: Connection, rows: dict[Table, list[dict[str, Any]]], groups: list[dict[str, str]]) -> None:
    """Every table's rows, in `rows`' order (parents first), and a version bump of each group in `groups`,
    inside the session's transaction.

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
            conn.execute(insert(table), table_rows)
        if groups:
            conn.exec_driver_sql(_BUMP_SQL.format(source=_BUMP_VALUES), [tuple(g.values()) for g in groups])
        return
    driver = conn.connection.driver_connection
    try:
        with driver.cursor() as cursor, driver.pipeline():
            for table, table_rows in rows.items():
                cursor.execute(_from_json_sql(table), [json.dumps(table_rows)])
            if groups:
                cursor.execute(_BUMP_SQL.format(source=_BUMP_FROM_JSON), [json.dumps(groups)])
    except psycopg.errors.IntegrityError as err:
        raise IntegrityError(f"writing {sum(map(len, rows.values()))} rows", None, err) from err


#: A new group starts stale (version 1, nothing computed); a known one gets its version raised.
_BUMP_SQL = (
    "INSERT INTO board_groups (metric, dtype, variant, device_model, version, computed_version, figure_count, "
    "per_watt_count) {source} ON CONFLICT (metric, dtype, variant, device_model) "
    "DO UPDATE SET version = board_groups.version + 1"
)
_BUMP_VALUES = "VALUES (?, ?, ?, ?, 1, 0, 0, 0)"
_BUMP_FROM_JSON = (
    "SELECT metric, dtype, variant, device_model, 1, 0, 0, 0 FROM json_populate_recordset(NULL::board_groups, %s)"
)


def _from_json_sql(table: Table) -> str:
    columns = ", ".join(c.name for c in table.columns)
    return f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM json_populate_recordset(NULL::{table.name}, %s)"


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
