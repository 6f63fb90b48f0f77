"""The ops dashboard in process: who may look and act, CSRF, bad input, the health numbers, the
matrix filters, the timeline (escaped), bulk actions, live updates, CSP and the query plans."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import lxml.html
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from syndicator import states
from syndicator.config import load_config
from syndicator.models import Article, ChannelStatus, Delivery, Event, Revision, utcnow
from syndicator.runtime import Runtime
from syndicator.states import DeliveryState as S
from syndicator.users import ROLES, add_user
from syndicator.web import ops
from syndicator.web.app import create_app
from tests.support.services import REPO, write_config

PASSWORD = "correct-horse-battery"
CHANNELS = {
    "rss_main": {"type": "rss", "title": "测试订阅", "items": 100},
    "microsite": {"type": "microsite", "title": "测试微站", "path": "m"},
    "weibo_main": {"type": "weibo", "api_base": "http://127.0.0.1:9/", "access_token": "weibo-test-token",
                   "safe_domain": "127.0.0.1"},
}
TYPES = {name: c["type"] for name, c in CHANNELS.items()}
PAGES = ["/ops", "/ops/matrix", "/ops/deliveries", "/ops/deliveries?tab=failed", "/ops/matrix?state=failed"]


@dataclass
class OpsApp:
    rt: Runtime
    app: object
    now: datetime

    def client(self, role: str | None) -> tuple[TestClient, str]:
        """A client logged in as `role` (None: anonymous) and its session's CSRF token."""
        client = TestClient(self.app)
        if role is None:
            return client, ""
        login = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', login.text).group(1)
        done = client.post("/login", data={"username": role, "password": PASSWORD, "csrf_token": token,
                                           "next": "/ops"}, follow_redirects=False)
        assert done.status_code == 303, done.text
        page = client.get("/ops/deliveries")
        return client, re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def _make(tmp_path, database_url: str) -> OpsApp:
    config = load_config(write_config(tmp_path / "config.yaml", database_url=database_url,
                                      broker_url=f"sqla+sqlite:///{tmp_path / 'b.db'}", public=tmp_path / "public",
                                      channels=CHANNELS))
    now = utcnow().replace(microsecond=0)
    rt = Runtime(config, clock=lambda: now)
    rt.store.migrate()
    for role in ROLES:
        add_user(rt.store, role, PASSWORD, role, actor="test")
    return OpsApp(rt, create_app(rt), now)


@pytest.fixture(autouse=True)
def quick_password_hashes(monkeypatch):
    """Cheap argon2 parameters for test users (the real ones cost ~0.3 s per login by design)."""
    from argon2 import PasswordHasher

    from syndicator import users

    monkeypatch.setattr(users, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def web(tmp_path):
    app = _make(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    yield app
    app.rt.store.dispose()


# -- seeding ------------------------------------------------------------------------------------

def add_article(rt: Runtime, slug: str, title: str = "测试稿件", *, created: datetime,
                publish_at: datetime | None = None) -> tuple[int, int]:
    def tx(s):
        a = Article(slug=slug, status="live", current_revision=1, first_published_at=created, created_at=created,
                    created_by="editor")
        s.add(a)
        s.flush()
        r = Revision(article_id=a.id, number=1, content_hash=slug, title=title, body_source="x", body_html="x",
                     publish_at=publish_at, created_at=created, created_by="editor")
        s.add(r)
        s.flush()
        return a.id, r.id
    return rt.store.run_write(tx)


def add_delivery(rt: Runtime, ids: tuple[int, int], channel: str, state: str, *, created: datetime,
                 updated: datetime | None = None, delivered: datetime | None = None, attempts: int = 1,
                 error: str | None = None, operation: str = "publish", next_attempt_at: datetime | None = None,
                 rendition: str | None = None) -> int:
    """A delivery row as it would be after its transitions (timestamps under the test's control)."""
    def tx(s):
        d = Delivery(article_id=ids[0], revision_id=ids[1], revision=1, channel=channel, channel_type=TYPES[channel],
                     operation=operation, state=state, attempts=attempts, created_at=created,
                     updated_at=updated or delivered or created, delivered_at=delivered, last_error=error,
                     next_attempt_at=next_attempt_at, rendition=rendition)
        s.add(d)
        s.flush()
        return d.id
    return rt.store.run_write(tx)


def state_of(rt: Runtime, delivery_id: int) -> str:
    with rt.store.read() as s:
        return s.scalar(select(Delivery.state).where(Delivery.id == delivery_id))


def event_count(rt: Runtime) -> int:
    with rt.store.read() as s:
        return s.scalar(select(func.count()).select_from(Event))


def doc(response) -> lxml.html.HtmlElement:
    assert response.status_code == 200, response.text[:2000]
    return lxml.html.fromstring(response.text)


def cls(name: str) -> str:
    """XPath predicate: the element has the class `name`."""
    return f"contains(concat(' ', normalize-space(@class), ' '), ' {name} ')"


# -- permissions, CSRF, bad input -----------------------------------------------------------------

def test_pages_need_a_login_and_the_live_endpoint_answers_401(web):
    client, _ = web.client(None)
    for page in PAGES + ["/ops/deliveries/1"]:
        response = client.get(page, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next=/ops"), page
    assert client.get("/ops/live.json").status_code == 401
    posted = client.post("/ops/deliveries/bulk", data={"action": "retry", "ids": "1"}, follow_redirects=False)
    assert posted.status_code == 303 and "/login" in posted.headers["location"]


def test_every_role_may_look_but_only_ops_and_admin_may_act(web):
    for role in ROLES:
        ids = add_article(web.rt, f"roles-{role}", created=web.now - timedelta(minutes=5))
        failed = add_delivery(web.rt, ids, "weibo_main", "failed", created=web.now, error="20021 moderation")
        client, csrf = web.client(role)
        for page in PAGES + [f"/ops/deliveries/{failed}"]:
            page_doc = doc(client.get(page))
            # the action controls are shown only to those who may use them
            controls = page_doc.xpath("//input[@name='ids'] | //form[contains(@action, '/retry')]")
            if "matrix" not in page:
                assert bool(controls) == (role in ("ops", "admin")), (role, page)
        before = event_count(web.rt)
        response = client.post("/ops/deliveries/bulk", data={"action": "retry", "ids": str(failed),
                                                              "csrf_token": csrf}, follow_redirects=False)
        retried = state_of(web.rt, failed)
        single = client.post(f"/ops/deliveries/{failed}/cancel", data={"csrf_token": csrf}, follow_redirects=False)
        if role in ("ops", "admin"):
            assert response.status_code == 303 and retried == "queued", response.text
            assert single.status_code == 303 and state_of(web.rt, failed) == "cancelled"
        else:
            assert response.status_code == 403 and single.status_code == 403, (role, response.text)
            assert state_of(web.rt, failed) == "failed" and event_count(web.rt) == before


def test_changes_need_the_sessions_csrf_token(web):
    ids = add_article(web.rt, "csrf", created=web.now)
    failed = add_delivery(web.rt, ids, "weibo_main", "failed", created=web.now)
    client, csrf = web.client("ops")
    other, other_csrf = web.client("admin")
    before = event_count(web.rt)
    for token in (None, "", "forged-token", other_csrf):
        data = {"action": "retry", "ids": str(failed)}
        if token is not None:
            data["csrf_token"] = token
        assert client.post("/ops/deliveries/bulk", data=data).status_code == 403, token
        assert client.post(f"/ops/deliveries/{failed}/retry", data=data).status_code == 403, token
    assert state_of(web.rt, failed) == "failed" and event_count(web.rt) == before
    assert client.post("/ops/deliveries/bulk", data={"action": "retry", "ids": str(failed)},
                       headers={"X-CSRF-Token": csrf}, follow_redirects=False).status_code == 303
    assert state_of(web.rt, failed) == "queued"


def test_bad_input_answers_4xx_and_changes_nothing(web):
    ids = add_article(web.rt, "bad-input", created=web.now)
    failed = add_delivery(web.rt, ids, "weibo_main", "failed", created=web.now)
    client, csrf = web.client("ops")
    before = event_count(web.rt)
    bulk = [
        ({"action": "retry"}, 422),                                        # nothing selected
        ({"action": "retry", "ids": "abc"}, 422),
        ({"action": "retry", "ids": "0"}, 422),
        ({"action": "retry", "ids": "-3"}, 422),
        ({"action": "retry", "ids": "1.5"}, 422),
        ({"action": "retry", "ids": str(2**63)}, 422),
        ({"action": "retry", "ids": "١٢"}, 422),                            # Arabic-Indic digits
        ({"action": "retry", "ids": [str(failed)] + [str(i) for i in range(10_000, 10_101)]}, 422),  # > 100
        ({"action": "explode", "ids": str(failed)}, 422),
        ({"ids": str(failed)}, 422),
        ({"action": "cancel", "ids": str(failed), "note": "x" * 501}, 422),
        ({"action": "retry", "ids": [str(failed), "999999"]}, 404),        # one unknown id: none is done
    ]
    for data, status in bulk:
        response = client.post("/ops/deliveries/bulk", data={**data, "csrf_token": csrf}, follow_redirects=False)
        assert response.status_code == status, (data, response.status_code, response.text[:300])
        as_json = client.post("/ops/deliveries/bulk", data={**data, "csrf_token": csrf},
                              headers={"Accept": "application/json"})
        assert as_json.status_code == status and "detail" in as_json.json()
    for method, url in [("GET", "/ops/deliveries/0"), ("GET", "/ops/deliveries/abc"),
                        ("GET", f"/ops/deliveries/{2**63}"),
                        ("POST", f"/ops/deliveries/{failed}/explode"), ("POST", "/ops/deliveries/0/retry"),
                        ("GET", "/ops/matrix?state=bogus"), ("GET", "/ops/matrix?channel=nope"),
                        ("GET", "/ops/matrix?q=" + "x" * 81), ("GET", "/ops/matrix?before=0"),
                        ("GET", "/ops/deliveries?tab=bogus"), ("GET", "/ops/deliveries?channel=nope"),
                        ("GET", "/ops/deliveries?before=-1")]:
        response = client.request(method, url, data={"csrf_token": csrf} if method == "POST" else None)
        assert response.status_code == 422, (url, response.status_code)
    missing = client.get("/ops/deliveries/999999")
    assert missing.status_code == 404 and "999999" in missing.text
    assert client.post("/ops/deliveries/999999/retry", data={"csrf_token": csrf}).status_code == 404
    assert state_of(web.rt, failed) == "failed" and event_count(web.rt) == before


# -- bulk actions ----------------------------------------------------------------------------------

def test_bulk_actions_report_what_was_done_and_what_conflicted(web):
    ids = add_article(web.rt, "bulk", "批量处理", created=web.now - timedelta(minutes=30))
    other = add_article(web.rt, "bulk-2", created=web.now - timedelta(minutes=30))
    failed = add_delivery(web.rt, ids, "weibo_main", "failed", created=web.now, error="20021")
    delivered = add_delivery(web.rt, ids, "rss_main", "delivered", created=web.now, delivered=web.now)
    unknown = add_delivery(web.rt, ids, "microsite", "unknown", created=web.now)
    manual = add_delivery(web.rt, other, "weibo_main", "manual", created=web.now)
    queued = add_delivery(web.rt, other, "rss_main", "queued", created=web.now)
    client, csrf = web.client("ops")
    json_headers = {"Accept": "application/json"}

    retried = client.post("/ops/deliveries/bulk", headers=json_headers,
                          data={"action": "retry", "ids": [str(failed), str(delivered)], "csrf_token": csrf})
    assert retried.json() == {"action": "retry", "done": [failed], "also": [],
                              "conflicts": [{"id": delivered, "state": "delivered"}]}
    assert state_of(web.rt, failed) == "queued" and state_of(web.rt, delivered) == "delivered"

    resolved = client.post("/ops/deliveries/bulk", headers=json_headers, data={
        "action": "resolve", "ids": [str(unknown), str(manual), str(delivered), str(unknown)], "csrf_token": csrf,
        "note": "checked on the channel"})
    assert resolved.json()["done"] == [unknown, manual]
    assert resolved.json()["conflicts"] == [{"id": delivered, "state": "delivered"}]
    assert state_of(web.rt, unknown) == state_of(web.rt, manual) == "delivered"
    with web.rt.store.read() as s:
        last = s.scalars(select(Event).where(Event.delivery_id == manual).order_by(Event.id.desc())).first()
    assert last.actor == "ops" and "checked on the channel" in last.detail

    # the browser way: redirect back, then the outcome is shown once
    page = client.post("/ops/deliveries/bulk", data={"action": "cancel", "ids": [str(queued), str(delivered)],
                                                     "csrf_token": csrf, "next": "/ops/deliveries?tab=failed"},
                       follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/ops/deliveries?tab=failed"
    assert state_of(web.rt, queued) == "cancelled"
    shown = client.get(page.headers["location"])
    flash = doc(shown).xpath(f"//*[{cls('ops-flash')}]")[0].text_content()
    assert "已取消" in flash and f"#{queued}" in flash and "未变更" in flash and f"#{delivered}" in flash
    assert not doc(client.get("/ops/deliveries")).xpath(f"//*[{cls('ops-flash')}]")
    # somewhere else is not a place to be sent back to
    for target in ("https://evil.example/ops", "//evil.example/ops", "/desk", "/ops\\@evil"):
        away = client.post("/ops/deliveries/bulk", data={"action": "cancel", "ids": str(queued), "csrf_token": csrf,
                                                         "next": target}, follow_redirects=False)
        assert away.headers["location"] == "/ops/deliveries", target


# -- the health board ------------------------------------------------------------------------------

@dataclass
class Seeded:
    channel: str
    state: str
    created: datetime
    updated: datetime
    delivered: datetime | None = None
    due: datetime | None = None
    attempts: int = 1


def _seed_health(app: OpsApp) -> list[Seeded]:
    now, rt = app.now, app.rt
    rows: list[Seeded] = []

    def put(channel, state, *, created, updated=None, latency=None, attempts=1, publish_at=None, error=None):
        ids = add_article(rt, f"h-{len(rows)}", created=created, publish_at=publish_at)
        due = max(created, publish_at) if publish_at else created
        delivered = due + timedelta(seconds=latency) if latency is not None else None
        updated = updated or delivered or created
        add_delivery(rt, ids, channel, state, created=created, updated=updated, delivered=delivered,
                     attempts=attempts, error=error, next_attempt_at=now + timedelta(minutes=1)
                     if state == "retry_wait" else None)
        rows.append(Seeded(channel, state, created, updated, delivered, due, attempts))

    m = timedelta(minutes=1)
    for i, lat in enumerate((1.0, 2.0, 3.5, 4.0, 12.0)):                       # last hour
        put("rss_main", "delivered", created=now - 30 * m + i * m, latency=lat, attempts=2 if lat == 3.5 else 1)
    put("rss_main", "delivered", created=now - 180 * m, publish_at=now - 20 * m, latency=2.5)  # scheduled
    put("rss_main", "failed", created=now - 15 * m, updated=now - 10 * m, attempts=3, error="gave up <b>")
    put("rss_main", "unknown", created=now - 6 * m, updated=now - 5 * m, error="timed out")
    put("rss_main", "retry_wait", created=now - 4 * m, updated=now - 2 * m, attempts=2, error="HTTP 503")
    for lat in (6.0, 7.0, 30.0):                                              # earlier today
        put("rss_main", "delivered", created=now - 300 * m, latency=lat)
    put("rss_main", "failed", created=now - 181 * m, updated=now - 180 * m, error="earlier")
    put("rss_main", "delivered", created=now - 30 * 60 * m, latency=100.0)   # yesterday: outside both
    put("rss_main", "failed", created=now - 26 * 60 * m, error="old")
    put("rss_main", "queued", created=now - m)
    put("rss_main", "queued", created=now - m)
    put("rss_main", "manual", created=now - 120 * m)
    for lat in (0.5, 0.7):                                                    # another channel
        put("microsite", "delivered", created=now - 10 * m, latency=lat)
    put("microsite", "delivered", created=now - 200 * m, latency=9.0)
    return rows


def _expected(rows: list[Seeded], channel: str, now: datetime) -> dict:
    mine = [r for r in rows if r.channel == channel]
    out = {}
    for key, length in ops.WINDOWS:
        since = now - length
        delivered = [r for r in mine if r.state == "delivered" and r.delivered >= since]
        failed = sum(r.state == "failed" and r.updated >= since for r in mine)
        unknown = sum(r.state == "unknown" and r.updated >= since for r in mine)
        retried = sum(r.updated >= since and (r.attempts > 1 or r.state == "retry_wait") for r in mine)
        latencies = sorted((r.delivered - r.due).total_seconds() for r in delivered)

        def rank(p):  # nearest rank: the smallest value with at least p% at or below it
            return latencies[math.ceil(p / 100 * len(latencies)) - 1] if latencies else None
        settled = len(delivered) + failed + unknown
        out[key] = {"delivered": len(delivered), "failed": failed, "unknown": unknown, "retried": retried,
                    "success_rate": len(delivered) / settled if settled else None, "p50": rank(50), "p95": rank(95)}
    out["queue"] = sum(r.state in ("queued", "retry_wait") for r in mine)
    out["attention"] = sum(r.state in ("failed", "unknown", "manual") for r in mine)
    return out


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_health_board_numbers_match_the_seeded_deliveries(tmp_path, database, request):
    if database == "postgresql":
        from tests.support.services import PostgresDatabase

        db = PostgresDatabase().create()
        request.addfinalizer(db.drop)
        url = db.url
    else:
        url = f"sqlite:///{tmp_path / 's.db'}"
    app = _make(tmp_path, url)
    request.addfinalizer(app.rt.store.dispose)
    rows = _seed_health(app)
    health = {h["name"]: h for h in ops.health(app.rt, app.now)}
    for channel in ("rss_main", "microsite"):
        expected = _expected(rows, channel, app.now)
        got = health[channel]
        for key, _ in ops.WINDOWS:
            for field in ("delivered", "failed", "unknown", "retried"):
                assert got["windows"][key][field] == expected[key][field], (channel, key, field)
            for field in ("success_rate", "p50", "p95"):
                assert got["windows"][key][field] == pytest.approx(expected[key][field], abs=1e-3), \
                    (channel, key, field)
        assert got["queue"] == expected["queue"] and got["attention"] == expected["attention"]
    rss = health["rss_main"]
    assert rss["windows"]["hour"]["p95"] == pytest.approx(12.0, abs=1e-3)  # the scheduled one counts 2.5 s
    assert rss["last_error"] == "HTTP 503" and rss["spark"][23][1] == 2 and sum(d for d, _ in rss["spark"]) == 9
    assert health["weibo_main"]["windows"]["day"]["success_rate"] is None

    client, _ = app.client("editor")
    card = doc(client.get("/ops")).xpath("//article[@data-channel='rss_main']")[0]
    metric = {td.get("data-metric"): td.text_content().strip() for td in card.xpath(".//*[@data-metric]")}
    exp = _expected(rows, "rss_main", app.now)
    assert metric["hour-delivered"] == str(exp["hour"]["delivered"]) == "6"
    assert metric["hour-failed"] == "1" and metric["day-failed"] == "2" and metric["hour-retried"] == "3"
    assert metric["hour-rate"] == f"{exp['hour']['success_rate'] * 100:.1f}%" == "75.0%"
    assert metric["hour-p50"] == "2.5 s" and metric["hour-p95"] == "12 s"
    assert metric["queue"].startswith("3")
    assert "HTTP 503" in card.xpath(f".//*[{cls('ops-card-error')}]")[0].text_content()


def test_board_shows_breaker_suspension_credential_and_alerts(web):
    rt, now = web.rt, web.now
    rt.store.run_write(lambda s: s.add_all([
        ChannelStatus(channel="weibo_main", suspended=True, reason="AuthInvalid: token revoked <script>",
                      changed_at=now, changed_by="worker", failures=0),
        ChannelStatus(channel="microsite", suspended=False, changed_at=now, changed_by="worker", failures=6,
                      open_until=now + timedelta(seconds=60))]))
    late = add_delivery(rt, add_article(rt, "late", created=now - timedelta(minutes=40)), "rss_main", "queued",
                        created=now - timedelta(minutes=40))
    client, _ = web.client("reviewer")
    page = client.get("/ops")
    board = doc(page)
    assert board.xpath(f"//article[@data-channel='weibo_main']//*[{cls('ops-status-suspended')}]")
    assert board.xpath(f"//article[@data-channel='microsite']//*[{cls('ops-status-breaker_open')}]")
    breaker = board.xpath("//article[@data-channel='microsite']//*[@data-metric='breaker']")[0]
    assert "熔断至" in breaker.text_content()
    kinds = [k.text_content() for k in board.xpath(f"//*[{cls('ops-alert-kind')}]")]
    assert {"渠道已暂停", "渠道连续失败", "超时未完成"} <= set(kinds)
    assert board.xpath(f"//*[{cls('ops-alerts')}]//a[@href='/ops/deliveries/{late}']")
    assert "<script>" not in page.text and "token revoked &lt;script&gt;" in page.text


# -- matrix -----------------------------------------------------------------------------------------

def test_matrix_filters_by_latest_state_channel_and_text(web, monkeypatch):
    rt, now = web.rt, web.now
    t = now - timedelta(hours=1)
    a1 = add_article(rt, "alpha", "社会救助通知", created=t)
    add_delivery(rt, a1, "rss_main", "delivered", created=t, delivered=t)
    add_delivery(rt, a1, "microsite", "delivered", created=t, delivered=t)
    weibo_failed = add_delivery(rt, a1, "weibo_main", "failed", created=t, error="20021")
    a2 = add_article(rt, "beta", "婚姻登记公告", created=t)
    add_delivery(rt, a2, "rss_main", "failed", created=t)                    # superseded by the update below
    add_delivery(rt, a2, "microsite", "delivered", created=t, delivered=t)
    add_delivery(rt, a2, "weibo_main", "delivered", created=t, delivered=t)
    update = add_delivery(rt, a2, "rss_main", "delivered", created=t, delivered=t, operation="update")
    a3 = add_article(rt, "gamma", "殡葬整治", created=t)
    add_delivery(rt, a3, "rss_main", "delivered", created=t, delivered=t)
    add_delivery(rt, a3, "microsite", "unknown", created=t)
    add_delivery(rt, a3, "weibo_main", "delivered", created=t, delivered=t)
    a4 = add_article(rt, "delta", "养老服务 100%", created=t)
    for channel in CHANNELS:
        add_delivery(rt, a4, channel, "delivered", created=t, delivered=t)
    client, _ = web.client("editor")

    def rows(query: str) -> list[str]:
        page = doc(client.get("/ops/matrix" + query))
        return [r.xpath(f".//*[{cls('ops-title')}]")[0].text_content() for r in page.xpath("//tr[@data-article]")]

    assert rows("") == ["养老服务 100%", "殡葬整治", "婚姻登记公告", "社会救助通知"]
    assert rows("?state=failed") == ["社会救助通知"]
    assert rows("?state=failed&channel=rss_main") == []
    assert rows("?state=unknown") == ["殡葬整治"]
    assert rows("?state=delivered&channel=weibo_main") == ["养老服务 100%", "殡葬整治", "婚姻登记公告"]
    assert rows("?state=delivered&channel=microsite") == ["养老服务 100%", "婚姻登记公告", "社会救助通知"]
    assert rows("?q=养老") == ["养老服务 100%"] and rows("?q=beta") == ["婚姻登记公告"]
    assert rows("?q=100%25") == ["养老服务 100%"] and rows("?q=%25%25") == [] and rows("?q=_") == []
    assert rows("?state=failed&q=社会") == ["社会救助通知"] and rows("?state=failed&q=养老") == []
    assert rows("?state=&channel=&q=") == rows("")

    page = doc(client.get("/ops/matrix?channel=weibo_main"))
    assert [th.text_content() for th in page.xpath(f"//th[{cls('ops-matrix-channel')}]")] == ["weibo_main"]
    failed_cell = doc(client.get("/ops/matrix")).xpath(f"//a[@href='/ops/deliveries/{weibo_failed}']")[0]
    assert failed_cell.get("data-state") == "failed" and "ops-cell-failed" in failed_cell.get("class")
    update_cell = doc(client.get("/ops/matrix?q=beta")).xpath(f"//a[@href='/ops/deliveries/{update}']")[0]
    assert "更正" in update_cell.text_content()

    monkeypatch.setattr(ops.matrix, "MATRIX_PAGE", 2)
    first = doc(client.get("/ops/matrix?state=delivered"))
    older = first.xpath(f"//*[{cls('ops-pager')}]/a")[-1].get("href")
    assert older == f"/ops/matrix?state=delivered&before={a3[0]}"
    assert rows(older.removeprefix("/ops/matrix")) == ["婚姻登记公告", "社会救助通知"]


# -- timeline ---------------------------------------------------------------------------------------

def test_timeline_shows_every_event_and_the_rendition_as_escaped_text(web):
    rt, now = web.rt, web.now
    ids = add_article(rt, "timeline", "时间线 <i>测试</i>", created=now - timedelta(minutes=10))
    hostile = '<img src=x onerror=alert(1)>'
    rendition = '{"payload": {"html": "<script>alert(\'x\')</script><p>正文</p>"}, "warnings": []}'

    def tx(s):
        d = states.plan(s, actor="editor", now=now - timedelta(minutes=10), article_id=ids[0], revision_id=ids[1],
                        revision=1, channel="weibo_main", channel_type="weibo", operation="publish")
        d.rendition = rendition
        steps = [(S.SENDING, None, {}), (S.RETRY_WAIT, "Unavailable: HTTP 503; retry in 2s", {}),
                 (S.SENDING, None, {}),
                 (S.FAILED, f"ContentRejected: 20021 {hostile}", {"last_error": f"20021 {hostile}"})]
        for i, (to, detail, fields) in enumerate(steps):
            states.transition(s, d.id, to, actor="worker", detail=detail, now=now - timedelta(minutes=9 - i), **fields)
        states.record(s, "receipt", actor="worker", delivery_id=d.id, article_id=ids[0],
                      detail={"remote": "<b>123</b>", "code": 20021})
        return d.id

    delivery = rt.store.run_write(tx)
    client, _ = web.client("editor")
    response = client.get(f"/ops/deliveries/{delivery}")
    page = doc(response)
    events = page.xpath(f"//li[{cls('ops-event')}]")
    assert len(events) == 6
    assert [e.get("class").split()[-1] for e in events][:5] == [
        "ops-event-queued", "ops-event-sending", "ops-event-retry_wait", "ops-event-sending", "ops-event-failed"]
    assert "HTTP 503" in events[2].text_content() and "20021" in events[4].text_content()
    assert '"remote": "<b>123</b>"' in events[5].text_content()             # JSON detail, pretty and as text
    shown = page.xpath(f"//*[{cls('ops-rendition-text')}]")[0].text_content()
    assert shown.startswith('{\n  "payload": {\n    "html": "<script>')
    # hostile text from channels and people is shown, never live
    assert "<script>alert" not in response.text and "&lt;script&gt;alert" in response.text
    assert "<img src=x" not in response.text and "&lt;img src=x onerror=alert(1)&gt;" in response.text
    assert "<i>测试</i>" not in response.text
    assert not page.xpath("//form[contains(@action, '/retry')]")                 # an editor cannot retry
    ops_page = doc(web.client("ops")[0].get(f"/ops/deliveries/{delivery}"))
    assert ops_page.xpath(f"//form[@action='/ops/deliveries/{delivery}/retry']")
    assert ops_page.xpath(f"//form[@action='/ops/deliveries/{delivery}/cancel']")
    assert not ops_page.xpath(f"//form[@action='/ops/deliveries/{delivery}/resolve']")  # failed: not resolvable


# -- live updates, CSP, language, query plans --------------------------------------------------------

def test_live_endpoint_changes_its_stamp_when_a_delivery_moves(web):
    ids = add_article(web.rt, "live", created=web.now)
    failed = add_delivery(web.rt, ids, "weibo_main", "failed", created=web.now)
    client, csrf = web.client("editor")
    first = client.get("/ops/live.json").json()
    assert first["attention"] == 1 and first["counts"] == {"failed": 1}
    assert client.get("/ops/live.json").json()["stamp"] == first["stamp"]
    ops_client, ops_csrf = web.client("ops")
    ops_client.post("/ops/deliveries/bulk", data={"action": "retry", "ids": str(failed), "csrf_token": ops_csrf})
    second = client.get("/ops/live.json")
    assert second.json()["stamp"] != first["stamp"] and second.json()["attention"] == 0
    assert second.headers["cache-control"] == "no-store"
    page = doc(client.get("/ops"))
    assert page.xpath("//*[@id='ops-live-status']")[0].get("data-stamp") == second.json()["stamp"]
    assert page.xpath("//script[@src='/_static/ops.js']")


def test_pages_keep_to_the_content_security_policy(web):
    ids = add_article(web.rt, "csp", created=web.now)
    delivery = add_delivery(web.rt, ids, "weibo_main", "failed", created=web.now, error="x",
                            rendition='{"payload": {}}')
    client, _ = web.client("ops")
    for url in PAGES + [f"/ops/deliveries/{delivery}", "/ops/deliveries/999999"]:
        response = client.get(url)
        assert "script-src 'self'" in response.headers["content-security-policy"], url
        page = lxml.html.fromstring(response.text)
        for script in page.iter("script"):
            assert script.get("src", "").startswith("/_static/") and not (script.text or "").strip(), url
        for element in page.iter():
            if not isinstance(element.tag, str):
                continue
            assert "style" not in element.attrib, (url, element.tag)
            assert not [a for a in element.attrib if a.lower().startswith("on")], (url, element.tag)
            assert not element.get("href", "").lower().startswith("javascript:"), url
        assert not page.xpath("//style"), url
    js = (REPO / "syndicator/web/static/ops.js").read_text()
    assert "innerHTML" not in js and "eval(" not in js and ".style" not in js


def test_every_ops_string_is_translated_and_english_is_available(web):
    from syndicator.web.i18n import catalogue

    zh = catalogue("zh_CN")
    sources = [*sorted((REPO / "templates/web/ops").glob("*.html")), *sorted((REPO / "syndicator/web/ops").glob("*.py")),
               REPO / "syndicator/alerts.py"]
    used = set()
    for path in sources:
        text = path.read_text(encoding="utf-8")
        used |= {m.group(2) for m in re.finditer(r'''_\(\s*(["'])(.+?)\1''', text)}
        used |= set(re.findall(r'BadRequest\(\d+, "([^"]+)"', text))
    used |= {s.value for s in S} | set(TYPES.values())
    missing = sorted(m for m in used if m not in zh)
    assert len(used) > 100 and not missing, missing
    client, _ = web.client("ops")
    english = client.get("/ops?lang=en")
    assert "Channel health" in english.text and "渠道健康状况" not in english.text
    assert "渠道健康状况" in client.get("/ops?lang=zh_CN").text


def test_board_and_matrix_queries_read_deliveries_through_indexes(web):
    """The board must stay fast on millions of rows: no query may scan the deliveries table."""
    rows = _seed_health(web)
    assert rows
    client, _ = web.client("ops")
    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    engine = web.rt.store.read_engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        for url in ["/ops", "/ops/matrix", "/ops/matrix?state=delivered&channel=rss_main", "/ops/matrix?state=failed",
                    "/ops/deliveries", "/ops/live.json"]:
            assert client.get(url).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    scans = []
    with engine.connect() as conn:
        for statement, parameters in statements:
            if "deliveries" not in statement or not statement.lstrip().upper().startswith("SELECT"):
                continue
            plan = [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)]
            scans += [(line, statement[:200]) for line in plan if re.match(r"SCAN (deliveries|deliveries_1)\b", line)]
    assert len(statements) > 15 and not scans, scans
