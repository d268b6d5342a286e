"""Shared fixtures: every test gets its own database, config directory and environment.

Tests that need a part of the machine carry a marker (`postgres`, `netns`, `chromium`). Where the part
is missing such a test is skipped, saying why; under CI (CI set, as .ci/run does) it fails instead,
so a CI run that lost PostgreSQL, root or Chromium cannot pass with those tests silently skipped.
Tests that take `postgres_url` (directly or as db_url's "postgresql") are marked `postgres` here, so
`pytest -m postgres` selects every one of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from netns import netns_unavailable
from pg import fresh_database
from server_support import find_chromium

PG_ENV = "FLOPWATT_TEST_PG_URL"


def postgres_unavailable() -> str | None:
    return None if os.environ.get(PG_ENV) else f"needs PostgreSQL: set {PG_ENV} (.ci/run sets it up)"


def chromium_unavailable() -> str | None:
    return None if find_chromium() else "needs chromium (.ci/run installs it)"


#: marker -> why the part it names is missing here, or None when it is present.
REQUIREMENTS: dict[str, Callable[[], str | None]] = {
    "postgres": postgres_unavailable,
    "netns": netns_unavailable,
    "chromium": chromium_unavailable,
}


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        params = getattr(item, "callspec", None)
        on_postgres = params is not None and params.params.get("db_url") == "postgresql"
        if "postgres_url" in getattr(item, "fixturenames", ()) or on_postgres:
            item.add_marker(pytest.mark.postgres)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker, missing in REQUIREMENTS.items():
        if item.get_closest_marker(marker) is None:
            continue
        reason = missing()
        if reason is None:
            continue
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide what this test needs: {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep tests away from the user's database, config and token, whatever the shell exports."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("FLOPWATT_DB", f"sqlite:///{tmp_path / 'flopwatt.db'}")
    for name in ("FLOPWATT_SERVER", "FLOPWATT_POWERCAP_ROOT"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards.

    FLOPWATT_TEST_PG_URL names a role that may create databases; without it the test never gets
    here (pytest_runtest_setup skips or fails it).
    """
    with fresh_database(os.environ[PG_ENV], "flopwatt_test") as url:
        yield url
