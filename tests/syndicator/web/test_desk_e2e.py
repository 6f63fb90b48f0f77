"""The desk in a real headless Chromium against `syndicator run` (sandbox emulators, real workers):
an editor writes an article, previews all five channels, presses 发布 (twice, quickly), and watches
every channel's row turn delivered without a reload. Screenshots at desktop and phone widths."""
from __future__ import annotations

import re
import subprocess

import pytest
import requests
from playwright.sync_api import expect

from tests.conftest import ARTIFACTS, REPO
from tests.syndicator.web.conftest import PASSWORD, SYNDICATOR

pytestmark = [pytest.mark.integration, pytest.mark.browser]

DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
CHANNELS = {"rss_main", "microsite", "portal", "wechat_main", "weibo_main"}
IMAGES = REPO / "examples" / "articles" / "images"
TITLE = "省民政厅部署今冬明春困难群众基本生活保障工作"
#: 41 characters: more than WeChat's 32.
LONG_TITLE = "关于全省养老服务补贴发放工作情况的通报及下一步加强资金监管和服务质量提升工作的安排"


def sample_body() -> str:
    text = (REPO / "examples" / "articles" / "2026-winter-relief.md").read_text(encoding="utf-8")
    return text.split("---", 2)[2].strip().replace("images/winter-relief-inline.jpg", "winter-relief-inline.jpg")


def watch_csp(page, seen: list[str]) -> None:
    page.on("console", lambda m: seen.append(f"{page.url}: {m.text}") if "Content Security Policy" in m.text else None)


def fill_article(page, title: str = TITLE) -> None:
    page.fill("#new-title", title)
    page.fill("#new-summary", "省民政厅召开全省视频会议，要求各地12月15日前完成集中走访排查，元旦前将取暖补贴和临时救助资金发放到户。")
    page.fill("#new-body", sample_body())
    page.set_input_files("input[name=cover_file]", str(IMAGES / "winter-relief-cover.jpg"))
    page.set_input_files("input[name=image_files]", str(IMAGES / "winter-relief-inline.jpg"))
    page.fill("#new-unit", "省民政厅社会救助处")
    page.fill("#new-author", "林思远")
    page.fill("#new-tags", "社会救助，冬春救助")
    page.wait_for_selector("[data-cover-img]:not([hidden])")  # the chosen cover is shown before sending


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"desk-{name}.png"), full_page=True)


def test_editor_previews_five_channels_publishes_once_and_watches_them_deliver(login, running_app):
    # Some earlier work on the desk, published the way automation does it (the CLI), meanwhile.
    others = [subprocess.Popen([SYNDICATOR, "--config", str(running_app.config), "publish",
                                str(REPO / "examples" / "articles" / name)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT, cwd=running_app.config.parent)
              for name in ("2026-flood-relief-report.md", "2026-elderly-care-subsidy-notice.md")]
    csp: list[str] = []
    page = login("editor", DESKTOP)
    watch_csp(page, csp)
    assert page.url.endswith("/desk")
    page.click("a.new-button")
    page.wait_for_url("**/desk/new")
    fill_article(page)
    shot(page, "form-desktop")

    page.click("text=预览各渠道效果")
    page.wait_for_url("**/desk/preview")
    panels = page.locator(".preview-grid > .panel")
    assert panels.count() == 5
    assert {panels.nth(i).get_attribute("data-channel") for i in range(5)} == CHANNELS
    assert page.locator(".panel-wechat .wx-title").inner_text() == TITLE
    assert re.fullmatch(r"\d+/140", page.locator("[data-weibo-count]").inner_text())
    frame = page.frame_locator(".panel-microsite iframe")
    assert frame.locator("h1.article-title").inner_text() == TITLE
    assert frame.locator(".article-body img").first.evaluate("img => img.complete && img.naturalWidth > 0")
    assert page.locator(".panel-portal .portal-title").inner_text() == TITLE
    assert page.locator(".panel-rss .feed-title").inner_text() == TITLE
    assert page.locator(".press-button").count() == 1
    shot(page, "preview-desktop")

    for proc in others:
        proc.wait(60)
    page.locator(".press-button").dblclick()
    page.wait_for_url(re.compile(r".*/desk/articles/\d+$"))
    article_url = page.url
    first_render = {row.get_attribute("data-channel"): row.get_attribute("data-state")
                    for row in page.locator("tr[data-channel]").all()}
    assert set(first_render) == CHANNELS and first_render["wechat_main"] != "delivered"
    page.evaluate("window.stillTheSamePage = true")
    expect(page.locator("tr[data-state=delivered]")).to_have_count(5, timeout=45_000)
    assert page.evaluate("window.stillTheSamePage") is True  # updated in place, never reloaded
    assert page.locator("[data-live-summary]").inner_text().startswith("已送达 5/5")
    assert page.locator("tr[data-channel=microsite] a").get_attribute("href").endswith(".html")
    assert page.locator("[data-retry]").is_disabled()
    shot(page, "article-desktop")

    mine = [a for a in page.request.get(running_app.url + "/api/v1/articles").json()["articles"] if a["title"] == TITLE]
    assert len(mine) == 1 and mine[0]["deliveries"] == {"delivered": 5}

    page.goto(running_app.url + "/desk")
    rows = page.locator(".article-list tbody tr")
    assert rows.first.locator(".title-cell a").inner_text() == TITLE
    assert rows.first.locator(".dot-delivered").count() == 5
    shot(page, "list-desktop")

    phone = login("editor", PHONE)
    watch_csp(phone, csp)
    shot(phone, "list-phone")
    phone.goto(running_app.url + "/desk/new")
    fill_article(phone, LONG_TITLE)
    shot(phone, "form-phone")
    phone.click("text=预览各渠道效果")
    phone.wait_for_url("**/desk/preview")
    assert phone.locator(".preview-grid > .panel").count() == 5
    assert phone.locator(".panel-wechat .problem-error").count() == 1  # its title is too long for WeChat
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sticks out sideways
    shot(phone, "preview-phone")
    # The 发布 button is good for one press: hold the answer (204 keeps the page where it is) and
    # press again, impatiently. Nothing is published here.
    sent = []

    def no_content(route):
        sent.append(route.request.method)
        route.fulfill(status=204)

    phone.route("**/desk/publish", no_content)
    press = phone.locator(".press-button")
    press.click()
    expect(press).to_be_disabled()
    assert press.inner_text() == "正在发布…"
    press.click(force=True)
    phone.keyboard.press("Enter")
    phone.wait_for_timeout(300)
    assert sent == ["POST"]
    phone.unroute("**/desk/publish")
    phone.goto(article_url)
    expect(phone.locator("tr[data-state=delivered]")).to_have_count(5)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    shot(phone, "article-phone")
    assert csp == []


def test_desk_pages_refuse_other_roles_and_missing_csrf(running_app):
    session = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', session.get(running_app.url + "/login").text).group(1)
    session.post(running_app.url + "/login", data={"username": "reviewer", "password": PASSWORD,
                                                   "csrf_token": token})
    assert session.get(running_app.url + "/desk/new", allow_redirects=False).status_code == 403
    page = session.get(running_app.url + "/desk").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert session.post(running_app.url + "/desk/publish", data={"csrf_token": token, "title": "x", "body": "y"},
                        allow_redirects=False).status_code == 403
    editor = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', editor.get(running_app.url + "/login").text).group(1)
    editor.post(running_app.url + "/login", data={"username": "editor", "password": PASSWORD, "csrf_token": token})
    assert editor.post(running_app.url + "/desk/publish", data={"title": "x", "body": "y"},
                       allow_redirects=False).status_code == 403
    assert "script-src 'self'" in editor.get(running_app.url + "/desk").headers["content-security-policy"]
