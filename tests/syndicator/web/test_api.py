"""The JSON API: the role matrix over every route, CSRF, publishing through the API, bad input."""
from __future__ import annotations

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from syndicator.config import load_config
from syndicator.runtime import Runtime
from syndicator.users import ROLES, add_user, issue_token
from syndicator.web.app import create_app
from tests.support.services import write_config

PASSWORD = "correct-horse-battery"


@pytest.fixture
def web(tmp_path):
    config = load_config(write_config(tmp_path / "config.yaml", database_url=f"sqlite:///{tmp_path / 's.db'}",
                                      broker_url=f"sqla+sqlite:///{tmp_path / 'b.db'}", public=tmp_path / "public"))
    rt = Runtime(config)
    rt.store.migrate()
    tokens = {}
    for role in ROLES:
        add_user(rt.store, f"u-{role}", PASSWORD, role, actor="test")
        tokens[role] = issue_token(rt.store, f"u-{role}", "test", actor="test")
    client = TestClient(create_app(rt))
    yield client, rt, tokens
    rt.store.dispose()


def jpeg_b64() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), "teal").save(buf, "JPEG")
    return base64.b64encode(buf.getvalue()).decode()


ARTICLE = {"title": "接口发布", "summary": "通过接口发布", "slug": "api-item", "tags": ["测试"],
           "body": "正文。\n\n![图](photo.jpg)", "cover": "photo.jpg"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


#: (method, path, json body, action) for every API route; {ref}/{id} are filled in per test.
ROUTES = [
    ("GET", "/api/v1/me", None, "read"),
    ("GET", "/api/v1/articles", None, "read"),
    ("POST", "/api/v1/articles", "publish", "publish"),
    ("GET", "/api/v1/articles/{ref}", None, "read"),
    ("POST", "/api/v1/articles/{ref}/corrections", "correct", "correct"),
    ("POST", "/api/v1/articles/{ref}/retry", {}, "retry"),
    ("GET", "/api/v1/deliveries", None, "read"),
    ("GET", "/api/v1/deliveries/{id}/timeline", None, "read"),
    ("POST", "/api/v1/deliveries/{id}/resolve", {}, "operate"),
    ("POST", "/api/v1/deliveries/{id}/cancel", {}, "operate"),
    ("GET", "/api/v1/channels", None, "read"),
    ("POST", "/api/v1/articles/{ref}/retraction", {"reason": "测试撤稿"}, "retract"),
]
ALLOWED = {"read": set(ROLES), "publish": {"editor", "publisher", "admin"},
           "correct": {"editor", "publisher", "admin"}, "retract": {"editor", "publisher", "admin"},
           "retry": {"editor", "publisher", "ops", "admin"}, "operate": {"ops", "admin"}}


def test_the_matrix_covers_every_api_route(web):
    client, _, _ = web
    documented = {(m.upper(), p) for p, ops in client.get("/api/openapi.json").json()["paths"].items()
                  for m in ops if p.startswith("/api/v1/") and p != "/api/v1/session"}
    covered = {(m, p.replace("{ref}", "{ref}").replace("{id}", "{delivery_id}")) for m, p, _, _ in ROUTES}
    assert documented == covered


@pytest.mark.parametrize("role", [None, *ROLES])
def test_role_matrix(web, role):
    client, rt, tokens = web
    admin = bearer(tokens["admin"])
    n = 0
    for method, path, body, action in ROUTES:
        # a fresh article (and its first delivery) for each call, made by an admin
        n += 1
        created = client.post("/api/v1/articles", headers=admin,
                              json={**ARTICLE, "slug": f"m-{role or 'anon'}-{n}", "images": {"photo.jpg": jpeg_b64()}})
        assert created.status_code == 201, created.text
        ref, delivery = created.json()["article"]["slug"], created.json()["deliveries"][0]["id"]
        url = path.replace("{ref}", ref).replace("{id}", str(delivery))
        if body == "publish":
            body = {**ARTICLE, "slug": f"p-{role or 'anon'}-{n}", "images": {"photo.jpg": jpeg_b64()}}
        elif body == "correct":
            body = {**ARTICLE, "slug": ref, "body": "更正后的正文。", "note": "更正", "cover": None}
        headers = bearer(tokens[role]) if role else {}
        response = client.request(method, url, json=body, headers=headers)
        if role is None:
            assert response.status_code == 401, (url, response.text)
        elif role in ALLOWED[action]:
            assert response.status_code in (200, 201, 409), (role, method, url, response.text)
        else:
            assert response.status_code == 403, (role, method, url, response.text)


def test_session_login_needs_csrf_for_changes(web):
    client, _, _ = web
    assert client.post("/api/v1/session", json={"username": "u-editor", "password": "wrong"}).status_code == 401
    login = client.post("/api/v1/session", json={"username": "u-editor", "password": PASSWORD})
    assert login.status_code == 200
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    body = {**ARTICLE, "images": {"photo.jpg": jpeg_b64()}}
    refused = client.post("/api/v1/articles", json=body)
    assert refused.status_code == 403 and "CSRF" in refused.text
    accepted = client.post("/api/v1/articles", json=body, headers={"X-CSRF-Token": login.json()["csrf_token"]})
    assert accepted.status_code == 201
    assert client.get("/api/v1/me").json() == {"username": "u-editor", "role": "editor", "via": "session"}


def test_publish_through_the_api_records_the_owner_and_plans_every_channel(web):
    client, rt, tokens = web
    response = client.post("/api/v1/articles", headers=bearer(tokens["editor"]),
                           json={**ARTICLE, "images": {"photo.jpg": jpeg_b64()}})
    assert response.status_code == 201
    data = response.json()
    assert data["created"] and {d["channel"] for d in data["deliveries"]} == {"rss_main", "microsite"}
    from sqlalchemy import select

    from syndicator.models import Event
    with rt.store.read() as s:
        assert s.scalar(select(Event.actor).where(Event.kind == "publish")) == "token:u-editor"


@pytest.mark.parametrize("change,expected", [
    ({"title": ""}, "title"),
    ({"slug": "Not A Slug"}, "slug"),
    ({"body": "<script>alert(1)</script>"}, "<script> is not allowed"),
    ({"images": {"photo.jpg": "!!notbase64!!"}}, "not valid base64"),
    ({"images": {"photo.jpg": base64.b64encode(b"not an image").decode()}}, "not a readable image"),
    ({"cover": "missing.jpg"}, "no image named 'missing.jpg'"),
    ({"colour": "red"}, "extra"),
])
def test_bad_input_is_422_with_the_field_and_stores_nothing(web, change, expected):
    client, _, tokens = web
    body = {**ARTICLE, "images": {"photo.jpg": jpeg_b64()}, **change}
    response = client.post("/api/v1/articles", headers=bearer(tokens["editor"]), json=body)
    assert response.status_code == 422, response.text
    assert expected in response.text
    assert client.get("/api/v1/articles", headers=bearer(tokens["editor"])).json()["articles"] == []


def test_metrics_expose_deliveries_and_breakers(web):
    client, _, tokens = web
    client.post("/api/v1/articles", headers=bearer(tokens["editor"]), json={**ARTICLE, "images": {
        "photo.jpg": jpeg_b64()}})
    text = client.get("/metrics").text
    assert 'syndicator_deliveries{channel="rss_main",state="queued"} 1.0' in text
    assert 'syndicator_breaker_open{channel="microsite"} 0.0' in text
    assert "syndicator_queue_depth" in text
