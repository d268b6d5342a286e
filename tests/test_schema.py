"""schema.sql is the one schema: the ORM must describe exactly the tables it creates, on both engines."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect, text

from bench.orm import Base
from bench.store import Store, schema_statements


def _described(url: str) -> dict[str, dict]:
    """Tables as the database itself reports them: columns (python type, nullable), keys, indexes."""
    engine = create_engine(url)
    inspector = inspect(engine)
    tables = {}
    for table in inspector.get_table_names():
        tables[table] = {
            "columns": {
                c["name"]: (c["type"].python_type, bool(c["nullable"])) for c in inspector.get_columns(table)
            },
            "primary_key": sorted(inspector.get_pk_constraint(table)["constrained_columns"]),
            "foreign_keys": sorted(
                (tuple(fk["constrained_columns"]), fk["referred_table"], (fk.get("options") or {}).get("ondelete"))
                for fk in inspector.get_foreign_keys(table)
            ),
            "indexes": sorted((i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(table)),
        }
    engine.dispose()
    return tables


def _orm_described() -> dict[str, dict]:
    tables = {}
    for table in Base.metadata.sorted_tables:
        tables[table.name] = {
            "columns": {
                c.name: (c.type.python_type, bool(c.nullable) and not c.primary_key) for c in table.columns
            },
            "primary_key": sorted(c.name for c in table.primary_key.columns),
            "foreign_keys": sorted(
                ((fk.parent.name,), fk.column.table.name, fk.ondelete) for fk in table.foreign_keys
            ),
            "indexes": sorted((i.name, tuple(c.name for c in i.columns)) for i in table.indexes),
        }
    return tables


def _normalise(tables: dict[str, dict]) -> dict[str, dict]:
    # SQLite reports a single INTEGER PRIMARY KEY as nullable; the key makes it NOT NULL in practice.
    for table in tables.values():
        for key in table["primary_key"]:
            python_type, _ = table["columns"][key]
            table["columns"][key] = (python_type, False)
    return tables


def _create_from_schema_sql(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in schema_statements():
            conn.execute(text(statement))
    engine.dispose()


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_orm_mirrors_schema_sql(engine: str, tmp_path, request) -> None:
    url = f"sqlite:///{tmp_path / 'schema.db'}" if engine == "sqlite" else request.getfixturevalue("postgres_url")
    _create_from_schema_sql(url)
    from_sql = _normalise(_described(url))
    from_orm = _normalise(_orm_described())
    assert set(from_sql) == set(from_orm)
    for table in from_orm:
        assert from_sql[table] == from_orm[table], f"table {table} differs between schema.sql and bench/orm.py"


def test_store_creates_schema_once_and_records_its_version(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    Store(url)
    Store(url)  # a second open must find the schema, not recreate it
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM schema_info")).scalars().all() == [1]
    engine.dispose()


def test_schema_statements_cover_every_table() -> None:
    created = {s.split()[2] for s in schema_statements() if s.upper().startswith("CREATE TABLE")}
    assert created == {t.name for t in Base.metadata.sorted_tables}
