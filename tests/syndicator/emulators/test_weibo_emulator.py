"""The Weibo emulator over real HTTP with requests (contract §2, fidelity checklist §2.7)."""
from __future__ import annotations

import re
import time

import pytest
import requests
from emulator_helpers import image

from syndicator.emulators.faults import Faults
from syndicator.emulators.weibo import WeiboEmulator, WeiboSettings, weibo_length

TOKEN = "weibo-emulator-token"
LINK = "https://www.example.com/a/123"
CREATED_AT = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} \d{2} \d{2}:\d{2}:\d{2} \+0800 \d{4}$")


@pytest.fixture
def weibo(serve):
    emu = WeiboEmulator(WeiboSettings(safe_domains=["example.com"]))
    return emu, serve(emu)


def share(base: str, status: str | None = "省民政厅部署冬春救助 " + LINK, token: str | None = TOKEN,
          rip: str | None = "203.0.113.7", pic: tuple | None = None, **kw) -> requests.Response:
    data = {k: v for k, v in {"access_token": token, "status": status, "rip": rip}.items() if v is not None}
    files = {"pic": pic} if pic else kw.pop("files", None)
    return requests.post(base + "/2/statuses/share.json", data=data, files=files, timeout=5, **kw)


def error(resp: requests.Response, status: int = 400) -> int:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"request", "error_code", "error"}
    assert body["request"] == resp.request.path_url.split("?")[0]
    return int(body["error_code"])


# -- length rule -----------------------------------------------------------------------------------
@pytest.mark.parametrize("text,length", [
    ("字" * 140, 140), ("a" * 280, 140), ("a" * 281, 141), ("字" * 130 + LINK, 140),
    ("字" * 130 + "http://example.com/" + "x" * 200, 180), ("看 http://t.cn/abc", 9),
    ("http://weibo.com/x", 9), ("http://weibo.com/" + "x" * 30, 10), ("", 0)])
def test_weibo_length_counts_half_width_units(text, length):
    assert weibo_length(text) == length


# -- share -----------------------------------------------------------------------------------------
def test_share_form_returns_status_object_and_records_effect(weibo):
    emu, base = weibo
    resp = share(base)
    assert resp.status_code == 200 and resp.request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    status = resp.json()
    assert status["idstr"] == str(status["id"]) and isinstance(status["id"], int)
    assert CREATED_AT.match(status["created_at"]) and status["text"].endswith(LINK)
    assert status["user"]["id"] == 5000000001 and "original_pic" not in status
    effect, = emu.ledger.effects(op="statuses/share")
    assert effect["id"] == status["idstr"] and effect["body"]["rip"] == "203.0.113.7"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF"])
def test_share_multipart_with_picture(weibo, fmt):
    emu, base = weibo
    resp = share(base, pic=(f"p.{fmt.lower()}", image(fmt), f"image/{fmt.lower()}"))
    assert resp.status_code == 200 and resp.json()["original_pic"].startswith("http://ww1.sinaimg.cn/large/")
    assert resp.request.headers["Content-Type"].startswith("multipart/form-data")
    assert emu.ledger.last(op="statuses/share")["body"]["pic"]["size"] == len(image(fmt))


def test_picture_errors(weibo):
    emu, base = weibo
    assert error(share(base, pic=("p.bmp", image("BMP"), "image/bmp"))) == 20005
    assert error(share(base, pic=("p.jpg", image(pad_to=5 * 1024 * 1024), "image/jpeg"))) == 20006
    assert share(base, pic=("p.jpg", image(pad_to=5 * 1024 * 1024 - 1), "image/jpeg")).status_code == 200
    no_pic = share(base, status="另一条 " + LINK, files={"other": ("x.txt", b"x", "text/plain")})
    assert error(no_pic) == 20007
    assert emu.ledger.count(op="statuses/share") == 1


def test_text_length_limit_20012(weibo):
    _, base = weibo
    assert share(base, status="字" * 130 + LINK).status_code == 200
    assert error(share(base, status="字" * 131 + LINK)) == 20012


def test_status_must_link_to_the_safe_domain(weibo):
    _, base = weibo
    for text in ("没有链接的微博", "外链 https://elsewhere.example.org/x", "相似 https://notexample.com/x"):
        resp = share(base, status=text)
        assert error(resp) == 10017 and resp.json()["error"] == "text not find domain!"
    assert share(base, status="子域名 https://news.example.com/x").status_code == 200


def test_topic_hashtags_are_rejected(weibo):
    _, base = weibo
    resp = share(base, status="#冬春救助# 通知 " + LINK)
    assert error(resp) == 10017 and "topic" in resp.json()["error"]
    assert share(base, status="第#1号通知 " + LINK + "#part").status_code == 200


def test_identical_to_last_post_is_20019(weibo):
    emu, base = weibo
    first = share(base).json()
    assert error(share(base)) == 20019
    assert share(base, status="另一条 " + LINK).status_code == 200
    assert share(base).status_code == 200  # only the last post counts
    last = emu.ledger.last(op="statuses/share")["id"]
    requests.post(base + "/2/statuses/destroy.json", data={"access_token": TOKEN, "id": last})
    assert share(base).status_code == 200 and first["idstr"] != last
    assert emu.ledger.count(op="statuses/share") == 4


@pytest.mark.parametrize("missing", ["status", "rip"])
def test_required_parameters_10016(weibo, missing):
    _, base = weibo
    resp = share(base, **{missing: None})
    assert error(resp) == 10016 and f"({missing})" in resp.json()["error"]


# -- tokens ----------------------------------------------------------------------------------------
def test_token_errors_and_expiry(weibo):
    emu, base = weibo
    assert error(share(base, token=None)) == 21301
    assert error(share(base, token="garbage")) == 21332
    emu.add_token("short", uid=42, ttl=3600)
    info = requests.post(base + "/oauth2/get_token_info", data={"access_token": "short"}).json()
    assert info["uid"] == 42 and info["expire_in"] in (3599, 3600) and "expires_in" not in info
    emu.clock.advance(3600)
    assert error(share(base, token="short")) == 21327
    emu.expire_token(TOKEN)
    assert error(share(base)) == 21327
    assert emu.ledger.count(op="statuses/share") == 0


def test_token_in_oauth2_header(weibo):
    _, base = weibo
    resp = requests.post(base + "/2/statuses/share.json", headers={"Authorization": f"OAuth2 {TOKEN}"},
                         data={"status": "头部令牌 " + LINK, "rip": "203.0.113.7"})
    assert resp.status_code == 200


# -- rate limits -----------------------------------------------------------------------------------
def test_user_hourly_post_limit_10024_resets_next_hour(weibo):
    emu, base = weibo
    emu.settings.user_hourly_posts = 3
    emu.clock.advance(3600 - emu.clock.now() % 3600)  # start of a clock hour
    for i in range(3):
        assert share(base, status=f"第{i}条 {LINK}").status_code == 200
    assert error(share(base, status=f"第4条 {LINK}"), status=403) == 10024
    emu.clock.advance(3600)
    assert share(base, status=f"第5条 {LINK}").status_code == 200


def test_ip_hourly_limit_10022_and_post_interval_20016(weibo):
    emu, base = weibo
    emu.settings.min_post_interval = 60
    assert share(base, status="一 " + LINK).status_code == 200
    assert error(share(base, status="二 " + LINK), status=403) == 20016
    emu.settings.ip_hourly_requests = 2
    emu.clock.advance(3600 - emu.clock.now() % 3600)
    share(base, status="三 " + LINK)
    share(base, status="四 " + LINK)
    assert error(share(base, status="五 " + LINK), status=403) == 10022


# -- destroy ---------------------------------------------------------------------------------------
def test_destroy_own_post_then_20101(weibo):
    emu, base = weibo
    idstr = share(base).json()["idstr"]
    gone = requests.post(base + "/2/statuses/destroy.json", data={"access_token": TOKEN, "id": idstr})
    assert gone.status_code == 200 and gone.json()["idstr"] == idstr
    again = requests.post(base + "/2/statuses/destroy.json", data={"access_token": TOKEN, "id": idstr})
    assert error(again) == 20101
    unknown = requests.post(base + "/2/statuses/destroy.json", data={"access_token": TOKEN, "id": "123"})
    assert error(unknown) == 20101
    assert [e["id"] for e in emu.ledger.effects(op="statuses/destroy")] == [idstr]


def test_destroy_other_users_post_20102_and_unavailable_10014(weibo):
    emu, base = weibo
    idstr = share(base).json()["idstr"]
    emu.add_token("other", uid=7)
    resp = requests.post(base + "/2/statuses/destroy.json", data={"access_token": "other", "id": idstr})
    assert error(resp) == 20102
    emu.settings.destroy_available = False
    resp = requests.post(base + "/2/statuses/destroy.json", data={"access_token": TOKEN, "id": idstr})
    assert error(resp, status=403) == 10014
    assert emu.ledger.count(op="statuses/destroy") == 0


def test_wrong_method_unknown_api_and_string_error_codes(weibo):
    emu, base = weibo
    assert error(requests.get(base + "/2/statuses/share.json", params={"access_token": TOKEN})) == 10021
    assert requests.post(base + "/2/statuses/update.json").json()["error_code"] == 10020
    emu.settings.error_code_as_string = True
    assert share(base, token="garbage").json()["error_code"] == "21332"


# -- faults ----------------------------------------------------------------------------------------
def test_latency_fault(weibo):
    emu, base = weibo
    emu.faults.update(latency=0.3)
    started = time.monotonic()
    assert share(base).status_code == 200
    assert time.monotonic() - started >= 0.3
    assert emu.ledger.requests(path="/2/statuses/share.json")[0]["fault"] == "latency"


def test_down_503_and_connection_drop_apply_nothing(weibo):
    emu, base = weibo
    emu.faults.update(down="503")
    resp = share(base)
    assert resp.status_code == 503 and "text/html" in resp.headers["content-type"]
    emu.faults.update(down="drop")
    with pytest.raises(requests.ConnectionError):
        share(base)
    emu.faults.clear()
    assert share(base).status_code == 200
    assert emu.ledger.count(op="statuses/share") == 1
    assert [r["fault"] for r in emu.ledger.requests()] == ["down:503", "down:drop", None]


def test_forced_code_through_the_admin_api(weibo):
    emu, base = weibo
    put = requests.put(base + "/_emulator/faults", json={"force": [{"code": 10001, "path": "/2/statuses/*"}]})
    assert put.status_code == 200 and put.json()["force"][0]["times"] == 1
    assert error(share(base)) == 10001
    assert share(base).status_code == 200
    assert requests.get(base + "/_emulator/faults").json()["force"] == []
    ledger = requests.get(base + "/_emulator/ledger").json()
    assert [e["op"] for e in ledger["effects"]] == ["statuses/share"]
    assert len(ledger["requests"]) == 2  # admin calls are not recorded


def test_error_rate_with_a_seed_is_reproducible(weibo):
    emu, base = weibo

    def run() -> list[int]:
        emu.faults.set(Faults(error_rate=0.3, seed=42))
        return [share(base, status=f"第{i}条 {LINK}").status_code for i in range(15)]

    first = run()
    emu.reset()
    assert run() == first and 400 in first and 200 in first
