"""The ops dashboard end to end: `syndicator run` with real workers and the sandbox emulators, a
real Chromium. Weibo is told to refuse one post (moderation, 20021); ops watch the failure appear
on the board by itself, open its timeline, retry it and watch it turn delivered. Screenshots of
the board, the matrix and the timeline at desktop and phone widths land in tests/artifacts/."""
from __future__ import annotations

import secrets

import pytest
import requests

from tests.conftest import ARTIFACTS
from tests.syndicator.web.conftest import PASSWORD

pytestmark = [pytest.mark.integration, pytest.mark.browser]

DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}


def publish(base: str, slug: str, title: str) -> dict:
    """Publish through the JSON API as the admin (session login, CSRF header)."""
    session = requests.Session()
    login = session.post(base + "/api/v1/session", json={"username": "admin", "password": PASSWORD}, timeout=10)
    assert login.status_code == 200, login.text
    article = {"title": title, "slug": slug, "summary": "运维看板端到端测试", "author": "测试员", "unit": "省民政厅办公室",
               "tags": ["测试"], "body": "省民政厅近日召开专题会议，部署冬春救助工作。\n\n会议要求各地摸清底数，确保困难群众温暖过冬。"}
    created = session.post(base + "/api/v1/articles", json=article, timeout=30,
                           headers={"X-CSRF-Token": login.json()["csrf_token"]})
    assert created.status_code == 201, created.text
    return created.json()


def watch_console(page) -> list[str]:
    """Collect CSP violations, script errors and console errors (a missing favicon aside)."""
    problems: list[str] = []

    def on_console(message) -> None:
        if "Content Security Policy" in message.text or (message.type == "error" and "404" not in message.text):
            problems.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    return problems


def test_ops_see_an_injected_failure_retry_it_and_see_it_delivered(running_app, login):
    base, weibo = running_app.url, running_app.emulator("weibo")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    fault = requests.patch(weibo + "/_emulator/faults", timeout=10,
                           json={"force": [{"code": 20021, "path": "/2/statuses/share.json", "times": 1}]})
    assert fault.status_code == 200 and fault.json()["force"][0]["code"] == 20021

    board = login("ops", DESKTOP)
    problems = watch_console(board)
    board.goto(base + "/ops")
    assert board.locator("h1").inner_text() == "运维看板"
    assert board.locator("#ops-live-status.is-live").count() == 1

    slug = f"ops-e2e-{secrets.token_hex(3)}"
    title = "省民政厅部署冬春救助工作（运维看板测试）"
    status = publish(base, slug, title)
    weibo_delivery = next(d["id"] for d in status["deliveries"] if d["channel"] == "weibo_main")

    # the failure appears on the open board without a reload (live updates)
    row = board.locator(f'tr[data-delivery="{weibo_delivery}"]')
    row.wait_for(timeout=30_000)
    assert "ops-row-failed" in row.get_attribute("class") and title in row.inner_text()
    assert "20021" in row.inner_text() or "moderation" in row.inner_text()
    card = board.locator('article[data-channel="weibo_main"]')
    card.locator('[data-metric="hour-failed"]:text-is("1")').wait_for(timeout=10_000)
    board.locator('article[data-channel="rss_main"] [data-metric="hour-delivered"]:text-is("1")').wait_for(
        timeout=30_000)
    board.wait_for_timeout(300)
    board.screenshot(path=str(ARTIFACTS / "ops-board-desktop.png"), full_page=True)

    phone = login("ops", PHONE)
    phone_problems = watch_console(phone)
    phone.goto(base + "/ops")
    phone.locator(f'tr[data-delivery="{weibo_delivery}"]').wait_for(timeout=10_000)
    phone.screenshot(path=str(ARTIFACTS / "ops-board-phone.png"), full_page=True)
    phone.goto(base + f"/ops/matrix?q={slug}")
    phone.locator(f'a[href="/ops/deliveries/{weibo_delivery}"][data-state="failed"]').wait_for(timeout=10_000)
    phone.screenshot(path=str(ARTIFACTS / "ops-matrix-phone.png"), full_page=True)

    board.goto(base + "/ops/matrix")
    cell = board.locator(f'a[href="/ops/deliveries/{weibo_delivery}"]')
    assert cell.get_attribute("data-state") == "failed"
    board.screenshot(path=str(ARTIFACTS / "ops-matrix-desktop.png"), full_page=True)

    # open its timeline from the board
    board.goto(base + "/ops")
    board.locator(f'tr[data-delivery="{weibo_delivery}"] a.ops-title').click()
    board.wait_for_url(f"**/ops/deliveries/{weibo_delivery}")
    assert board.locator("[data-delivery-state]").get_attribute("data-delivery-state") == "failed"
    assert "20021" in board.locator(".ops-detail-error").inner_text()
    assert board.locator("li.ops-event").count() >= 3
    assert board.locator("li.ops-event-failed").count() == 1
    assert slug in board.locator(".ops-rendition-text").inner_text()            # the stored rendition, as text
    board.screenshot(path=str(ARTIFACTS / "ops-timeline-desktop.png"), full_page=True)

    # retry it, and watch it turn delivered without reloading
    board.locator('button[data-action="retry"]').click()
    board.wait_for_url(f"**/ops/deliveries/{weibo_delivery}")
    assert "已重试" in board.locator(".ops-flash").inner_text()
    board.locator('[data-delivery-state="delivered"]').wait_for(timeout=30_000)
    assert board.locator("li.ops-event-delivered").count() == 1
    assert not board.locator('button[data-action="retry"]').count()
    board.screenshot(path=str(ARTIFACTS / "ops-timeline-delivered-desktop.png"), full_page=True)

    phone.goto(base + f"/ops/deliveries/{weibo_delivery}")
    phone.screenshot(path=str(ARTIFACTS / "ops-timeline-phone.png"), full_page=True)

    # the channel received it once, and the board no longer lists it
    shares = requests.get(weibo + "/_emulator/ledger", params={"op": "statuses/share"}, timeout=10).json()["effects"]
    assert len([e for e in shares if slug in str(e)]) == 1, shares
    board.goto(base + "/ops")
    assert board.locator(f'tr[data-delivery="{weibo_delivery}"]').count() == 0
    assert problems == [] and phone_problems == [], problems + phone_problems


def test_editors_may_look_but_get_no_controls_and_are_refused(running_app, login):
    page = login("editor", DESKTOP)
    page.goto(running_app.url + "/ops/deliveries?tab=attention")
    assert page.locator("h1").inner_text() == "待处理"
    assert page.locator('input[name="ids"]').count() == 0 and page.locator("form[data-bulk] button").count() == 0
    response = page.request.post(running_app.url + "/ops/deliveries/bulk", form={"action": "retry", "ids": "1"})
    assert response.status == 403
