"""Logging in through a real browser; pages speak Chinese by default; security headers."""
from __future__ import annotations

import pytest
import requests

from tests.conftest import ARTIFACTS
from tests.syndicator.web.conftest import PASSWORD

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def test_login_page_in_chinese_then_in_english(chromium, running_app):
    page = chromium.new_page(viewport={"width": 390, "height": 844})
    page.goto(running_app.url + "/")
    assert "/login" in page.url
    assert page.locator("h1").inner_text() == "登录"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "login-phone.png"))
    page.goto(running_app.url + "/login?lang=en")
    assert page.locator("h1").inner_text() == "Log in"
    page.close()


def test_wrong_password_is_refused_and_right_one_lands_on_the_desk(chromium, running_app):
    page = chromium.new_page()
    page.goto(running_app.url + "/login")
    page.fill("input[name=username]", "editor")
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit]")
    assert page.locator(".error").inner_text() == "用户名或密码错误。"
    page.fill("input[name=username]", "editor")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert page.url.endswith("/desk")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["syndicator_session"]["httpOnly"] and cookies["syndicator_session"]["sameSite"] == "Strict"
    page.close()


def test_pages_carry_a_content_security_policy_and_forms_need_csrf(running_app):
    response = requests.get(running_app.url + "/login", timeout=10)
    assert "script-src 'self'" in response.headers["content-security-policy"]
    posted = requests.post(running_app.url + "/login", data={"username": "editor", "password": PASSWORD},
                           timeout=10, allow_redirects=False)
    assert posted.status_code == 403
