"""Schemathesis against the OpenAPI spec the server publishes: whatever it is sent, never a 5xx.

Each operation gets a bounded number of generated requests, with a valid token, against a real
uvicorn over a database that already holds a run (so that ids can be found as well as missed).
EXAMPLES per operation: 25 took 28 s for the whole file on the shared 2-core machine (10 took 38 s
under more load: most of it is start-up and the two submission operations), a small share of CI's
time; FLOPWATT_FUZZ_EXAMPLES=1000 fuzzes longer by hand.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from bench.server.app import create_app
from server_support import LIFTED, bearer, live_server, make_doc, new_token


EXAMPLES = int(os.environ.get("FLOPWATT_FUZZ_EXAMPLES", "25"))

#: The spec as the server publishes it; it does not depend on the database, so an in-memory one serves.
schema = schemathesis.openapi.from_dict(create_app("sqlite://").openapi())


@pytest.fixture
def api(postgres_url: str) -> Iterator[tuple[str, str]]:
    """PostgreSQL, where a deployment runs and where text and index limits are strictest."""
    with live_server(create_app(postgres_url, limits=LIFTED)) as base:
        token = new_token(base)
        seeded = httpx.post(f"{base}/api/v1/runs", content=make_doc().to_json(),
                            headers={**bearer(token), "Content-Type": "application/json"})  # fmt: skip
        assert seeded.status_code == 201
        yield base, token


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_no_request_makes_the_server_fail(case, api: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    base, token = api
    response = case.call(base_url=base, headers=bearer(token))
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
    assert response.status_code < 500
