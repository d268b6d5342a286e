"""Shared fixtures: every test gets its own database, config directory and environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pg import fresh_database


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

    FLOPWATT_TEST_PG_URL names a role that may create databases (.ci/run sets it up). CI must
    have it; elsewhere the test is skipped.
    """
    admin_url = os.environ.get("FLOPWATT_TEST_PG_URL")
    if not admin_url:
        if os.environ.get("CI"):
            pytest.fail("CI must set FLOPWATT_TEST_PG_URL (see .ci/run)")
        pytest.skip("no PostgreSQL: set FLOPWATT_TEST_PG_URL")
    with fresh_database(admin_url, "flopwatt_test") as url:
        yield url
