"""Fuzz the API from its own OpenAPI document: no malformed request may produce a 5xx."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from syndicator.config import load_config
from syndicator.runtime import Runtime
from syndicator.users import add_user, issue_token
from syndicator.web.app import create_app
from tests.support.services import write_config


def _app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    config = load_config(write_config(tmp / "config.yaml", database_url=f"sqlite:///{tmp / 's.db'}",
                                      broker_url=f"sqla+sqlite:///{tmp / 'b.db'}", public=tmp / "public"))
    rt = Runtime(config)
    rt.store.migrate()
    add_user(rt.store, "fuzzer", "fuzzing-password-1", "admin", actor="test")
    return create_app(rt), issue_token(rt.store, "fuzzer", "fuzz", actor="test")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    return _app(tmp_path_factory)


def test_no_request_makes_the_server_fail(api):
    # (Driven through Hypothesis directly: schemathesis' pytest plugin does not load under pytest 9.)
    from hypothesis import given

    app, token = api
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            response = case.call(headers={"Authorization": f"Bearer {token}"})
            assert response.status_code < 500, \
                f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
        fuzz()
