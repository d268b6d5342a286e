"""The local results database (bench/store.py) on SQLite and on PostgreSQL (`--db postgresql://…`).

Both engines must answer the same: prefix lookup, the latest run, saving several runs all or
nothing, listing newest first, and refusing databases this flopwatt cannot read.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text

from bench.document import RunDocument
from bench.errors import StoreError
from bench.store import Store
from server_support import db_url, make_doc  # noqa: F401


def run(run_id: str, *, hours: int = 0, **kw: object) -> RunDocument:
    """make_doc's run under a chosen id, started `hours` after make_doc's start."""
    doc = make_doc(**kw)  # type: ignore[arg-type]
    started = doc.run.started_at + timedelta(hours=hours)
    info = doc.run.model_copy(update={"id": run_id, "started_at": started, "finished_at": started + timedelta(minutes=3)})
    return doc.model_copy(update={"run": info})


def test_a_run_is_found_by_a_unique_prefix_of_at_least_four_characters(db_url: str) -> None:  # noqa: F811
    store = Store(db_url)
    first, second = run("abcd1234" + "0" * 24), run("abcd5678" + "0" * 24)
    store.save_all([first, second])
    assert store.resolve("abcd1") == first.run.id and store.resolve(second.run.id) == second.run.id
    assert store.get("abcd5") == second
    assert store.resolve("ABCD1") == first.run.id  # ids are lowercase hex, on either engine
    with pytest.raises(StoreError, match="run reference 'abcd' is ambiguous: give more characters"):
        store.resolve("abcd")
    with pytest.raises(StoreError, match="'abc' is too short: give at least 4 characters"):
        store.resolve("abc")
    with pytest.raises(StoreError, match=r"no run 'abce' in .* \(see `flopwatt runs`\)"):
        store.resolve("abce")


@pytest.mark.parametrize("wildcard", ["abc_", "ab%4", "abcd%"])
def test_a_prefix_is_text_not_a_like_pattern(db_url: str, wildcard: str) -> None:  # noqa: F811
    store = Store(db_url)
    store.save(run("abcd1234" + "0" * 24))
    with pytest.raises(StoreError, match=f"no run '{wildcard}'"):
        store.resolve(wildcard)


def test_latest_and_the_listing_go_by_start_time_not_by_insertion(db_url: str) -> None:  # noqa: F811
    store = Store(db_url)
    with pytest.raises(StoreError, match="no runs stored yet in"):
        store.resolve("latest")
    middle, newest, oldest = run("b" * 32, hours=1), run("c" * 32, hours=24 * 400), run("a" * 32)
    store.save(middle)
    store.save_all([newest, oldest])
    assert store.resolve("latest") == newest.run.id
    listed = store.list_runs()
    assert [s.id for s in listed] == [newest.run.id, middle.run.id, oldest.run.id]
    assert [s.id for s in store.list_runs(limit=2)] == [newest.run.id, middle.run.id]
    assert [d.run.id for d in store.documents()] == [oldest.run.id, middle.run.id, newest.run.id]
    summary = listed[0]
    assert (summary.started_at, summary.command, summary.measurements) == (newest.run.started_at, "probe --quick", 4)
    assert (summary.cpu_model, summary.devices) == (newest.host.cpu_model, [d.name for d in newest.devices])


def test_saving_several_runs_is_all_or_nothing(db_url: str) -> None:  # noqa: F811
    store = Store(db_url)
    stored, new = run("a" * 32), run("b" * 32)
    store.save(stored)
    with pytest.raises(StoreError, match=f"run {'a' * 32} is already stored"):
        store.save_all([new, stored])
    with pytest.raises(StoreError, match="the same run appears twice"):
        store.save_all([new, new])
    assert [s.id for s in store.list_runs()] == [stored.run.id]
    store.save_all([new, run("c" * 32, gpu="NVIDIA H100 80GB HBM3")])
    assert store.get("c" * 32).devices[1].name == "NVIDIA H100 80GB HBM3"
    assert store.get("b" * 32) == new and len(store.list_runs()) == 3


def test_delete_takes_the_run_and_everything_of_it(db_url: str) -> None:  # noqa: F811
    store = Store(db_url)
    store.save_all([run("a" * 32), run("b" * 32)])
    store.delete("a" * 32)
    with pytest.raises(StoreError, match=f"no run {'a' * 32}"):
        store.delete("a" * 32)
    with store.engine.connect() as conn:
        counts = [conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in ("runs", "devices", "measurements")]
    assert counts == [1, 2, 4]


def test_a_database_of_something_else_is_refused_and_left_alone(db_url: str) -> None:  # noqa: F811
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE invoices (id INTEGER PRIMARY KEY)"))
    with pytest.raises(StoreError, match=r"not a flopwatt database \(it has tables \['invoices'\]\)"):
        Store(db_url)
    with engine.connect() as conn:
        tables = conn.execute(text("SELECT count(*) FROM invoices")).scalar_one()
    engine.dispose()
    assert tables == 0


def test_a_database_from_a_newer_flopwatt_is_refused(db_url: str) -> None:  # noqa: F811
    Store(db_url).save(run("a" * 32))
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO schema_info (version) VALUES (2)"))
    engine.dispose()
    with pytest.raises(StoreError, match="database schema version 2 is not one this flopwatt knows .1.; upgrade flopwatt"):
        Store(db_url)
