"""/metrics: open without `serve.metrics_token` (and a warning says so at start), behind a bearer
token with one; the token comes from the environment and never shows in logs, errors or pages."""
from __future__ import annotations

import logging
import re

import pytest
from fastapi.testclient import TestClient

from syndicator.config import ConfigError, load_config
from syndicator.runtime import Runtime
from syndicator.users import add_user, issue_token
from syndicator.web.app import create_app
from tests.support.services import write_config

TOKEN = "scrape-9f2c61d0a7b34e58b1c2"
ENV = "SYN_TEST_METRICS_TOKEN"
PASSWORD = "correct-horse-battery"


@pytest.fixture(autouse=True)
def quick_password_hashes(monkeypatch):
    from argon2 import PasswordHasher

    from syndicator import users

    monkeypatch.setattr(users, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


def _config(tmp_path, **serve):
    return write_config(tmp_path / "config.yaml", database_url=f"sqlite:///{tmp_path / 's.db'}",
                        broker_url=f"sqla+sqlite:///{tmp_path / 'b.db'}", public=tmp_path / "public",
                        serve={"metrics_token": "${%s:-}" % ENV, **serve})


@pytest.fixture
def make_app(tmp_path, caplog):
    runtimes = []

    def factory() -> TestClient:
        rt = Runtime(load_config(_config(tmp_path)))
        rt.store.migrate()
        runtimes.append(rt)
        caplog.set_level(logging.DEBUG)
        client = TestClient(create_app(rt))
        client.rt = rt
        return client

    yield factory
    for rt in runtimes:
        rt.store.dispose()


def _open_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "/metrics is open" in r.getMessage()]


def test_without_a_token_metrics_stay_open_and_startup_says_so_once(make_app, caplog, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    client = make_app()
    assert client.rt.config.serve.metrics_token is None  # "${VAR:-}" with VAR unset: no token
    response = client.get("/metrics")
    assert response.status_code == 200
    assert "syndicator_deliveries" in response.text
    client.get("/metrics")
    warnings = _open_warnings(caplog)
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def test_an_empty_token_in_the_environment_also_leaves_metrics_open(make_app, monkeypatch):
    monkeypatch.setenv(ENV, "")
    client = make_app()
    assert client.rt.config.serve.metrics_token is None
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize("authorization", [
    None,
    "Bearer",
    "Bearer ",
    "Bearer wrong-token-0000000000",
    f"Bearer {TOKEN}x",
    f"Bearer {TOKEN[:-1]}",
    f"Basic {TOKEN}",
    TOKEN,
    "Bearer 令牌令牌令牌令牌令牌令牌".encode(),  # not ASCII, as raw bytes
])
def test_with_a_token_metrics_refuse_a_missing_or_wrong_one(make_app, monkeypatch, authorization):
    monkeypatch.setenv(ENV, TOKEN)
    client = make_app()
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "syndicator_deliveries" not in response.text
    assert TOKEN not in response.text and TOKEN not in str(response.headers)


@pytest.mark.parametrize("authorization", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"  Bearer   {TOKEN}  "])
def test_with_a_token_metrics_answer_the_right_bearer(make_app, monkeypatch, caplog, authorization):
    monkeypatch.setenv(ENV, TOKEN)
    client = make_app()
    response = client.get("/metrics", headers={"Authorization": authorization})
    assert response.status_code == 200
    assert "syndicator_deliveries" in response.text
    assert _open_warnings(caplog) == []


def test_the_token_is_compared_in_constant_time(make_app, monkeypatch):
    from syndicator.web import metrics

    monkeypatch.setenv(ENV, TOKEN)
    client = make_app()
    calls = []
    real = metrics.hmac.compare_digest
    monkeypatch.setattr(metrics.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert calls == [(b"nope", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


def test_the_token_never_shows_in_logs_config_or_pages(make_app, monkeypatch, caplog):
    monkeypatch.setenv(ENV, TOKEN)
    client = make_app()
    rt = client.rt
    assert rt.config.serve.metrics_token.get_secret_value() == TOKEN
    for text in (repr(rt.config), str(rt.config.serve), rt.config.model_dump_json()):
        assert TOKEN not in text
    add_user(rt.store, "admin", PASSWORD, "admin", actor="test")
    api_token = issue_token(rt.store, "admin", "test", actor="test")
    login = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.text).group(1)
    done = client.post("/login", data={"username": "admin", "password": PASSWORD, "csrf_token": csrf,
                                       "next": "/ops"}, follow_redirects=False)
    assert done.status_code == 303, done.text
    seen = [login.text]
    for path in ("/ops", "/ops/deliveries", "/ops/matrix", "/desk", "/api/openapi.json", "/healthz",
                 "/metrics", "/nowhere"):
        response = client.get(path)
        assert response.status_code in (200, 401, 404), path
        seen.append(response.text)
    for path in ("/api/v1/channels", "/api/v1/me"):
        seen.append(client.get(path, headers={"Authorization": f"Bearer {api_token}"}).text)
    seen.append(client.get("/metrics", headers={"Authorization": "Bearer wrong-token-0000000000"}).text)
    seen.append(client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text)
    assert all(TOKEN not in text for text in seen)
    assert all(TOKEN not in record.getMessage() and TOKEN not in str(record.__dict__)
               for record in caplog.records)
    assert TOKEN not in caplog.text


@pytest.mark.parametrize("token", ["short", "has a space in it 0123", "tab\tseparated-0123456789"])
def test_a_weak_or_malformed_token_is_refused_without_echoing_it(tmp_path, monkeypatch, token):
    monkeypatch.setenv(ENV, token)
    with pytest.raises(ConfigError) as err:
        load_config(_config(tmp_path))
    assert "serve: metrics_token must be at least 16 printable ASCII characters" in str(err.value)
    assert token not in str(err.value)


def test_a_non_string_token_is_refused_without_echoing_it(tmp_path):
    path = write_config(tmp_path / "config.yaml", database_url=f"sqlite:///{tmp_path / 's.db'}",
                        broker_url=f"sqla+sqlite:///{tmp_path / 'b.db'}", public=tmp_path / "public",
                        serve={"metrics_token": 12345678901234567})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "serve: metrics_token must be a string" in str(err.value)
    assert "12345678901234567" not in str(err.value)


def test_a_token_variable_without_fallback_must_be_set(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    path = _config(tmp_path, metrics_token="${%s}" % ENV)
    with pytest.raises(ConfigError, match=f"serve.metrics_token: environment variable {ENV} is not set"):
        load_config(path)


def test_the_shipped_config_reads_the_token_from_the_environment(monkeypatch):
    from tests.support.services import REPO

    monkeypatch.delenv("SYNDICATOR_METRICS_TOKEN", raising=False)
    assert load_config(REPO / "config.yaml").serve.metrics_token is None
    monkeypatch.setenv("SYNDICATOR_METRICS_TOKEN", TOKEN)
    assert load_config(REPO / "config.yaml").serve.metrics_token.get_secret_value() == TOKEN
