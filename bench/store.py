"""The local results database: run documents in, run documents out, over schema.sql.

Any SQLAlchemy URL works (SQLite by default, PostgreSQL for a shared server). A run is written in
one transaction, so an interrupted or failed save leaves the database as it was.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event, exc, func, insert, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, selectinload

from bench.document import SCHEMA_VERSION, Device, Host, RunDocument, RunInfo
from bench.errors import StoreError
from bench.orm import DeviceRow, MeasurementRow, RunRow, SchemaInfo, UnavailableRow
from probes.measurement import Energy, Measurement, Unavailable

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = PROJECT_ROOT / "schema.sql"


def default_url() -> str:
    """FLOPWATT_DB if set, else results/flopwatt.db in the checkout."""
    return os.environ.get("FLOPWATT_DB") or f"sqlite:///{PROJECT_ROOT / 'results' / 'flopwatt.db'}"


def schema_statements() -> list[str]:
    """schema.sql split into statements (it holds no semicolons inside statements)."""
    lines = [line for line in SCHEMA_FILE.read_text().splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


@dataclass(frozen=True)
class RunSummary:
    """One line of `flopwatt runs`."""

    id: str
    started_at: datetime
    command: str
    cpu_model: str
    devices: list[str]
    measurements: int


class Store:
    """Opens (and on first use creates) the database at `url`."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.engine = self._connect(self.url)
        with self._guard("open"):
            self._ensure_schema()

    # -- opening --------------------------------------------------------------------------

    @staticmethod
    def _connect(url: str) -> Engine:
        try:
            parsed = make_url(url)
            database = parsed.database or ""
            if parsed.get_backend_name() == "sqlite" and database != ":memory:" and not database.startswith("file:"):
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(parsed)
        except (exc.ArgumentError, exc.NoSuchModuleError, ModuleNotFoundError, OSError) as err:
            raise StoreError(f"cannot use database {url!r}: {err}") from err
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_foreign_keys)
        return engine

    def _ensure_schema(self) -> None:
        names = set(inspect(self.engine).get_table_names())
        if "runs" not in names:
            if names:
                raise StoreError(f"{self.url}: not a flopwatt database (it has tables {sorted(names)})")
            with self.engine.begin() as conn:
                for statement in schema_statements():
                    conn.execute(text(statement))
                conn.execute(text("INSERT INTO schema_info (version) VALUES (:v)"), {"v": SCHEMA_VERSION})
            return
        with Session(self.engine) as session:
            version = session.scalar(select(func.max(SchemaInfo.version)))
        if version is None or version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.url}: database schema version {version} is not one this flopwatt knows "
                f"({SCHEMA_VERSION}); upgrade flopwatt"
            )

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Turn database errors a user can cause (corrupt file, no permission) into one line."""
        try:
            yield
        except (exc.IntegrityError, exc.ProgrammingError, exc.DataError):
            raise  # our own bugs, or handled by the caller
        except (exc.OperationalError, exc.DatabaseError) as err:
            reason = str(err.orig) if getattr(err, "orig", None) else str(err)
            raise StoreError(f"cannot {action} database {self.url}: {reason.splitlines()[0]}") from err

    # -- writing --------------------------------------------------------------------------

    def save(self, doc: RunDocument) -> None:
        """Store a whole run in one transaction; a run already stored is refused."""
        self.save_all([doc])

    def save_all(self, docs: list[RunDocument]) -> None:
        """Store several runs in one transaction: all of them, or none if any is refused."""
        ids = [d.run.id for d in docs]
        if len(set(ids)) != len(ids):
            raise StoreError("the same run appears twice in what is being stored")
        with self._guard("write to"):
            with self.engine.begin() as conn:
                stored = conn.scalars(select(RunRow.id).where(RunRow.id.in_(ids))).first()
                if stored is not None:
                    raise StoreError(f"run {stored} is already stored")
                rows = [document_rows(doc) for doc in docs]
                for table in RUN_TABLES:
                    table_rows = [row for doc_rows in rows for row in doc_rows[table.name]]
                    if table_rows:
                        conn.execute(insert(table), table_rows)

    def delete(self, run_id: str) -> None:
        with self._guard("write to"):
            with Session(self.engine) as session, session.begin():
                row = session.get(RunRow, run_id)
                if row is None:
                    raise StoreError(f"no run {run_id}")
                session.delete(row)

    # -- reading --------------------------------------------------------------------------

    def resolve(self, ref: str) -> str:
        """A run id from `latest`, a full id or a unique prefix of at least 4 characters."""
        with self._guard("read"), Session(self.engine) as session:
            if ref == "latest":
                found = session.scalars(select(RunRow.id).order_by(RunRow.started_at.desc()).limit(1)).all()
                if not found:
                    raise StoreError(f"no runs stored yet in {self.url}")
                return found[0]
            if len(ref) < 4:
                raise StoreError(f"run reference {ref!r} is too short: give at least 4 characters of its id")
            # Ids are lowercase hex; escaped, so a typed % or _ is a character, not a LIKE wildcard.
            prefix = select(RunRow.id).where(RunRow.id.startswith(ref.lower(), autoescape=True))
            found = session.scalars(prefix.limit(2)).all()
        if not found:
            raise StoreError(f"no run {ref!r} in {self.url} (see `flopwatt runs`)")
        if len(found) > 1:
            raise StoreError(f"run reference {ref!r} is ambiguous: give more characters")
        return found[0]

    def get(self, ref: str) -> RunDocument:
        run_id = self.resolve(ref)
        with self._guard("read"), Session(self.engine) as session:
            row = session.scalars(with_children(select(RunRow).where(RunRow.id == run_id))).one()
            return run_document_from_row(row)

    def documents(self) -> list[RunDocument]:
        """Every stored run, oldest first (for export)."""
        with self._guard("read"), Session(self.engine) as session:
            rows = session.scalars(with_children(select(RunRow).order_by(RunRow.started_at))).all()
            return [run_document_from_row(row) for row in rows]

    def list_runs(self, limit: int | None = None) -> list[RunSummary]:
        """The newest runs first."""
        with self._guard("read"), Session(self.engine) as session:
            query = select(RunRow).options(selectinload(RunRow.devices)).order_by(RunRow.started_at.desc())
            counts = dict(
                session.execute(select(MeasurementRow.run_id, func.count()).group_by(MeasurementRow.run_id)).all()
            )
            return [
                RunSummary(
                    id=row.id,
                    started_at=datetime.fromisoformat(row.started_at),
                    command=row.command,
                    cpu_model=row.cpu_model,
                    devices=[d.name for d in row.devices],
                    measurements=counts.get(row.id, 0),
                )
                for row in session.scalars(query.limit(limit))
            ]


def _sqlite_foreign_keys(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def with_children(query):  # type: ignore[no-untyped-def]
    """Load a run's devices, measurements and unavailable rows with it (three queries, not N)."""
    return query.options(
        selectinload(RunRow.devices), selectinload(RunRow.measurements), selectinload(RunRow.unavailable)
    )


#: The tables a run document fills, parents first: foreign keys are checked row by row.
RUN_TABLES: tuple[Table, ...] = (
    RunRow.__table__,
    DeviceRow.__table__,
    MeasurementRow.__table__,
    UnavailableRow.__table__,
)  # type: ignore[assignment]


def document_rows(doc: RunDocument) -> dict[str, list[dict[str, Any]]]:
    """A run document as plain rows of RUN_TABLES, keyed by table name, as a Core insert takes them.

    Plain dicts rather than ORM objects: the results server writes hundreds of runs a second, and
    building mapped objects cost it more CPU than the database did.
    """
    run = doc.run
    return {
        "runs": [
            {
                "id": run.id,
                "schema_version": doc.schema_version,
                "tool_version": run.tool_version,
                "status": run.status,
                "command": run.command,
                "started_at": run.started_at.isoformat(),
                "finished_at": run.finished_at.isoformat(),
                "host_json": doc.host.model_dump_json(),
                "cpu_model": doc.host.cpu_model,
                "os": doc.host.os,
                "torch_version": doc.host.torch,
            }
        ],
        "devices": [
            {
                "run_id": run.id,
                "device_id": d.id,
                "seq": seq,
                "kind": d.kind,
                "name": d.name,
                "memory_bytes": d.memory_bytes,
                "info_json": d.model_dump_json(exclude={"id", "kind", "name", "memory_bytes"}),
            }
            for seq, d in enumerate(doc.devices)
        ],
        "measurements": [_measurement_row(run.id, seq, m) for seq, m in enumerate(doc.measurements)],
        "unavailable": [
            {"run_id": run.id, "seq": seq, "probe": u.probe, "device": u.device, "metric": u.metric,
             "dtype": u.dtype, "reason": u.reason}  # fmt: skip
            for seq, u in enumerate(doc.unavailable)
        ],
    }


def _measurement_row(run_id: str, seq: int, m: Measurement) -> dict[str, Any]:
    e = m.energy
    return {
        "run_id": run_id,
        "seq": seq,
        "probe": m.probe,
        "metric": m.metric,
        "variant": m.variant,
        "dtype": m.dtype,
        "device": m.device,
        "unit": m.unit,
        "value": m.value,
        "min_value": m.min,
        "max_value": m.max,
        "n": m.n,
        "samples_json": json.dumps(m.samples),
        "params_json": json.dumps(m.params),
        "peak": m.peak,
        "peak_source": m.peak_source,
        "energy_method": e.method if e else None,
        "energy_joules": e.joules if e else None,
        "energy_watts_avg": e.watts_avg if e else None,
        "energy_watts_peak": e.watts_peak if e else None,
        "energy_seconds": e.seconds if e else None,
        "energy_idle_watts": e.idle_watts if e else None,
        "energy_unavailable_reason": e.unavailable_reason if e else None,
        "energy_telemetry_json": json.dumps(e.telemetry) if e else None,
    }


def run_document_from_row(row: RunRow) -> RunDocument:
    """The run document stored in `row` and its children, exactly as it was saved."""
    return RunDocument(
        schema_version=row.schema_version,
        run=RunInfo(
            id=row.id,
            started_at=datetime.fromisoformat(row.started_at),
            finished_at=datetime.fromisoformat(row.finished_at),
            tool_version=row.tool_version,
            command=row.command,
            status=row.status,  # type: ignore[arg-type]
        ),
        host=Host.model_validate_json(row.host_json),
        devices=[
            Device(id=d.device_id, kind=d.kind, name=d.name, memory_bytes=d.memory_bytes, **json.loads(d.info_json))
            for d in row.devices
        ],
        measurements=[_to_measurement(m) for m in row.measurements],
        unavailable=[
            Unavailable(probe=u.probe, device=u.device, metric=u.metric, dtype=u.dtype, reason=u.reason)
            for u in row.unavailable
        ],
    )


def _to_measurement(m: MeasurementRow) -> Measurement:
    energy = None
    if m.energy_method is not None:
        energy = Energy(
            method=m.energy_method,  # type: ignore[arg-type]
            joules=m.energy_joules,
            watts_avg=m.energy_watts_avg,
            watts_peak=m.energy_watts_peak,
            seconds=m.energy_seconds,
            idle_watts=m.energy_idle_watts,
            unavailable_reason=m.energy_unavailable_reason,
            telemetry=json.loads(m.energy_telemetry_json or "{}"),
        )
    return Measurement(
        probe=m.probe,
        metric=m.metric,
        unit=m.unit,
        samples=json.loads(m.samples_json),
        dtype=m.dtype,
        device=m.device,
        variant=m.variant,
        params=json.loads(m.params_json),
        energy=energy,
        peak=m.peak,
        peak_source=m.peak_source,
    )
