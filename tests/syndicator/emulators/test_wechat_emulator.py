"""The WeChat OA emulator over real HTTP, driven by wechatpy 1.8.18 the way the adapter will be
(contract §1, fidelity checklist §1.9)."""
from __future__ import annotations

import json
import re
import time

import pytest
import requests
import xmltodict
from emulator_helpers import eventually, image
from wechatpy import WeChatClient
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import APILimitedException, InvalidSignatureException, WeChatClientException
from wechatpy.utils import check_signature

from syndicator.emulators.wechat import WeChatEmulator, WeChatSettings

RID = re.compile(r" rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$")
MARK = "https://portal.example.cn/a/123?sid=S-123"


class LocalWeChatClient(WeChatClient):
    """wechatpy pointed at the emulator, token URL overridden as contract §1.8 shows."""

    def __init__(self, base: str, settings: WeChatSettings) -> None:
        self.API_BASE_URL = base + "/cgi-bin/"
        super().__init__(settings.appid, settings.secret, timeout=5, auto_retry=False)

    def fetch_access_token(self):
        return self._fetch_access_token(url=self.API_BASE_URL + "token", params={
            "grant_type": "client_credential", "appid": self.appid, "secret": self.secret})


@pytest.fixture
def wechat(serve):
    emu = WeChatEmulator(WeChatSettings(publish_delay=0.15, callback_timeout=1.0))
    return emu, serve(emu)


@pytest.fixture
def client(wechat):
    emu, base = wechat
    return LocalWeChatClient(base, emu.settings)


def errcode(fn, *args, **kwargs) -> int:
    with pytest.raises(WeChatClientException) as info:
        fn(*args, **kwargs)
    assert RID.search(info.value.errmsg), info.value.errmsg
    return info.value.errcode


def cover(client) -> str:
    return client.material.add("thumb", ("cover.jpg", image(), "image/jpeg"))["media_id"]


def article(thumb: str, **over) -> dict:
    base = {"title": "省民政厅部署冬春救助工作", "author": "张明", "digest": "确保困难群众温暖过冬",
            "content": "<p>近日，省民政厅召开视频会议。</p>", "content_source_url": MARK, "thumb_media_id": thumb}
    base.update(over)
    return base


def add_draft(client, *articles) -> str:
    return client.post("draft/add", data={"articles": list(articles)})["media_id"]


def finished(client, publish_id: str) -> dict:
    """Poll freepublish/get until the job leaves status 1."""
    def check() -> dict | None:
        job = client.post("freepublish/get", data={"publish_id": publish_id})
        return job if job["publish_status"] != 1 else None

    return eventually(check)


def publish(client, media_id: str) -> dict:
    return finished(client, client.post("freepublish/submit", data={"media_id": media_id})["publish_id"])


# -- tokens ----------------------------------------------------------------------------------------
def test_token_is_fetched_and_used_with_http_200(wechat, client):
    emu, base = wechat
    assert client.get("draft/count") == {"total_count": 0}
    token_calls = emu.ledger.requests(path="/cgi-bin/token", method="GET")
    assert len(token_calls) == 1 and token_calls[0]["status"] == 200
    assert emu.ledger.count(op="token") == 1


def test_each_token_call_rotates_and_the_old_token_dies_after_the_grace_window(wechat):
    emu, base = wechat
    emu.settings.token_grace = 60
    first, second = LocalWeChatClient(base, emu.settings), LocalWeChatClient(base, emu.settings)
    first.get("draft/count")
    # When another process fetches a token, the first one still works inside the grace window …
    second.get("draft/count")
    first.get("draft/count")
    # … and is invalid (40001, not "expired") once it has passed.
    emu.clock.advance(61)
    assert errcode(first.get, "draft/count") == 40001
    assert second.get("draft/count") == {"total_count": 0}


def test_without_grace_the_previous_token_is_invalid_at_once(wechat):
    emu, base = wechat
    emu.settings.token_grace = 0
    first = LocalWeChatClient(base, emu.settings)
    first.get("draft/count")
    LocalWeChatClient(base, emu.settings).fetch_access_token()
    assert errcode(first.get, "draft/count") == 40001


def test_expired_token_answers_42001_distinct_from_40001(wechat, client):
    emu, _ = wechat
    client.get("draft/count")
    emu.clock.advance(7200)
    assert errcode(client.get, "draft/count") == 42001
    client.fetch_access_token()
    assert client.get("draft/count") == {"total_count": 0}


@pytest.mark.parametrize("override,code", [
    ({"grant_type": "password"}, 40002), ({"appid": "wxffffffffffffffff"}, 40013),
    ({"secret": "wrong"}, 40125), ({"appid": ""}, 41002), ({"secret": ""}, 41004)])
def test_token_endpoint_errors(wechat, override, code):
    emu, base = wechat
    s = emu.settings
    params = {"grant_type": "client_credential", "appid": s.appid, "secret": s.secret, **override}
    resp = requests.get(base + "/cgi-bin/token", params=params)
    assert resp.status_code == 200
    assert resp.json()["errcode"] == code and RID.search(resp.json()["errmsg"])
    assert emu.ledger.count(op="token") == 0


def test_missing_and_unknown_access_token(wechat):
    _, base = wechat
    assert requests.get(base + "/cgi-bin/draft/count").json()["errcode"] == 41001
    assert requests.get(base + "/cgi-bin/draft/count", params={"access_token": "nope"}).json()["errcode"] == 40001


def test_stable_token_normal_mode_force_refresh_and_isolation(wechat):
    emu, base = wechat
    s = emu.settings

    def stable(force: bool = False) -> dict:
        body = {"grant_type": "client_credential", "appid": s.appid, "secret": s.secret, "force_refresh": force}
        return requests.post(base + "/cgi-bin/stable_token", data=json.dumps(body)).json()

    def count(token: str) -> dict:
        return requests.get(base + "/cgi-bin/draft/count", params={"access_token": token}).json()

    first = stable()
    emu.clock.advance(100)
    again = stable()
    assert again["access_token"] == first["access_token"] and again["expires_in"] in (7099, 7100)
    # Classic /token rotation does not touch the stable token.
    s.token_grace = 0
    for _ in range(2):
        requests.get(base + "/cgi-bin/token", params={"grant_type": "client_credential", "appid": s.appid,
                                                       "secret": s.secret})
    assert count(first["access_token"]) == {"total_count": 0}
    # Close to expiry normal mode hands out a new token; the old one lives until it expires.
    emu.clock.advance(7100 - 299)
    renewed = stable()
    assert renewed["access_token"] != first["access_token"]
    assert count(first["access_token"]) == {"total_count": 0}
    # force_refresh invalidates the previous token; it is rate limited.
    forced = stable(force=True)
    assert count(renewed["access_token"])["errcode"] == 40001
    assert stable(force=True)["errcode"] == 45011
    s.stable_force_daily = 1
    emu.clock.advance(31)
    assert stable(force=True)["errcode"] == 45009
    assert count(forced["access_token"]) == {"total_count": 0}


def test_ip_not_in_whitelist(wechat, client):
    emu, _ = wechat
    emu.settings.ip_whitelist = ["10.0.0.1"]
    assert errcode(client.fetch_access_token) == 40164


# -- media ---------------------------------------------------------------------------------------
def test_uploadimg_accepts_jpg_png_below_1mb(wechat, client):
    emu, _ = wechat
    url = client.media.upload_image(("a.jpg", image(), "image/jpeg"))
    assert url.startswith("http://mmbiz.qpic.cn/")
    assert client.media.upload_image(("b.png", image("PNG"), "image/png")).startswith("http://mmbiz.qpic.cn/")
    assert client.media.upload_image(("c.jpg", image(pad_to=1024 * 1024 - 1), "image/jpeg"))
    assert errcode(client.media.upload_image, ("d.gif", image("GIF"), "image/gif")) == 40005
    assert errcode(client.media.upload_image, ("e.jpg", image(pad_to=1024 * 1024), "image/jpeg")) == 40009
    effects = emu.ledger.effects(op="media/uploadimg")
    assert len(effects) == 3 and effects[0]["id"] == url and effects[0]["body"]["filename"] == "a.jpg"


def test_upload_needs_multipart_field_media(wechat, client):
    _, base = wechat
    resp = requests.post(base + "/cgi-bin/media/uploadimg", params={"access_token": client.access_token},
                         files={"file": ("a.jpg", image(), "image/jpeg")})
    assert resp.json()["errcode"] == 41005


def test_permanent_material_limits_and_delete(wechat, client):
    emu, _ = wechat
    thumb = client.material.add("thumb", ("t.jpg", image(pad_to=64 * 1024), "image/jpeg"))
    assert set(thumb) == {"media_id"}
    img = client.material.add("image", ("i.png", image("PNG"), "image/png"))
    assert img["url"].startswith("http://mmbiz.qpic.cn/")
    assert errcode(client.material.add, "thumb", ("t.png", image("PNG"), "image/png")) == 40005
    assert errcode(client.material.add, "thumb", ("t.jpg", image(pad_to=64 * 1024 + 1), "image/jpeg")) == 40009
    assert errcode(client.material.add, "image", ("i.jpg", image(pad_to=10 * 1024 * 1024 + 1), "image/jpeg")) == 40009
    assert errcode(client.material.add, "sticker", ("i.jpg", image(), "image/jpeg")) == 40004
    assert client.material.delete(thumb["media_id"]) == {"errcode": 0, "errmsg": "ok"}
    assert errcode(client.material.delete, thumb["media_id"]) == 40007
    assert [e["op"] for e in emu.ledger.effects(op="material/*")] == [
        "material/add_material", "material/add_material", "material/del_material"]


# -- drafts --------------------------------------------------------------------------------------
def test_raw_utf8_json_without_content_type_and_literal_unicode_escapes(wechat, client):
    emu, base = wechat
    body = {"articles": [article(cover(client), title="题" * 20)]}
    params = {"access_token": client.access_token}
    resp = requests.post(base + "/cgi-bin/draft/add", params=params,
                         data=json.dumps(body, ensure_ascii=False).encode("utf-8"))
    assert "Content-Type" not in resp.request.headers
    assert "media_id" in resp.json()
    # ASCII-escaped JSON is stored literally by WeChat, so 20 字 become 120 characters → too long.
    escaped = requests.post(base + "/cgi-bin/draft/add", params=params, data=json.dumps(body))
    assert escaped.json()["errcode"] == 45003
    assert requests.post(base + "/cgi-bin/draft/add", params=params, data=b"").json()["errcode"] == 44002
    assert requests.post(base + "/cgi-bin/draft/add", params=params, data=b"{not json").json()["errcode"] == 47001


@pytest.mark.parametrize("field,value,code", [
    ("title", "题" * 33, 45003),
    ("title", "", 44003),
    ("author", "者" * 17, 45110),
    ("digest", "摘" * 129, 45004),
    ("content", "", 44004),
    ("content", "<p>" + "字" * 20000 + "</p>", 45002),
    ("content", "<p style='" + "x" * (1024 * 1024) + "'>短</p>", 45002),
    ("content", '<p>见<a href="https://example.com/x">链接</a></p>', 45166),
    ("content_source_url", "https://portal.example.cn/" + "a" * 1000, 41039),
    ("thumb_media_id", "no-such-media", 40007),
])
def test_draft_field_validation_rejects(wechat, client, field, value, code):
    emu, _ = wechat
    assert errcode(add_draft, client, article(cover(client), **{field: value})) == code
    assert emu.ledger.count(op="draft/add") == 0


def test_draft_field_limits_accept_the_boundaries(wechat, client):
    thumb = cover(client)
    tags = "".join(f"<span style='color:red'>{'字' * 999}</span>" for _ in range(20)) + "<b>" + "字" * 19 + "</b>"
    ok = article(thumb, title="题" * 32, author="者" * 16, digest="摘" * 128, content=tags,
                 content_source_url="https://portal.example.cn/" + "a" * (1024 - 26))
    assert len("".join(re.split(r"<[^>]+>", tags))) == 19999 and len(tags) > 20000
    media_id = add_draft(client, ok, article(thumb, content='<a href="https://mp.weixin.qq.com/s/abc">往期</a>'))
    items = client.post("draft/get", data={"media_id": media_id})["news_item"]
    assert [i["title"] for i in items] == ["题" * 32, "省民政厅部署冬春救助工作"]
    assert errcode(add_draft, client, *[article(thumb)] * 9) == 45008


def test_content_is_cleaned_of_external_images_and_scripts(wechat, client):
    inner = client.media.upload_image(("a.jpg", image(), "image/jpeg"))
    content = (f'<p>图<img src="https://cdn.example.com/x.jpg"><img src="{inner}">'
               '<script>alert(1)</script><b onclick="steal()">粗</b></p>')
    media_id = add_draft(client, article(cover(client), content=content, digest=""))
    item = client.post("draft/get", data={"media_id": media_id})["news_item"][0]
    assert "cdn.example.com" not in item["content"] and inner in item["content"]
    assert "script" not in item["content"] and "onclick" not in item["content"]
    assert item["digest"] == "图粗" and item["content_source_url"] == MARK and item["url"]


def test_draft_box_get_update_delete_batchget_count(wechat, client):
    emu, base = wechat
    thumb = cover(client)
    first = add_draft(client, article(thumb, title="第一篇"))
    emu.clock.advance(1)
    second = add_draft(client, article(thumb, title="第二篇"))
    assert client.get("draft/count") == {"total_count": 2}
    page = client.post("draft/batchget", data={"offset": 0, "count": 1, "no_content": 1})
    assert page["total_count"] == 2 and page["item_count"] == 1 and page["item"][0]["media_id"] == second
    news = page["item"][0]["content"]["news_item"][0]
    assert "content" not in news and news["content_source_url"] == MARK
    assert client.post("draft/update", data={"media_id": first, "index": 0,
                                              "articles": article(thumb, title="改过的")})["errcode"] == 0
    assert client.post("draft/get", data={"media_id": first})["news_item"][0]["title"] == "改过的"
    assert errcode(client.post, "draft/update", data={"media_id": first, "index": 1, "articles": article(thumb)}) == 40114
    assert errcode(client.post, "draft/update", data={"media_id": first, "index": 0, "articles": [article(thumb)]}) == 47001
    assert errcode(client.post, "draft/batchget", data={"offset": 0, "count": 21}) == 40097
    assert client.post("draft/delete", data={"media_id": first})["errcode"] == 0
    assert errcode(client.post, "draft/get", data={"media_id": first}) == 40007
    assert client.get("draft/count") == {"total_count": 1}
    token = {"access_token": client.access_token}
    assert requests.get(base + "/cgi-bin/draft/add", params=token).json()["errcode"] == 43002
    assert requests.post(base + "/cgi-bin/draft/count", params=token).json()["errcode"] == 43001
    assert [e["op"] for e in emu.ledger.effects(op="draft/*")] == ["draft/add", "draft/add", "draft/update", "draft/delete"]


def test_unverified_account_gets_48001_for_draft_apis(wechat, client):
    emu, _ = wechat
    emu.settings.api_authorized = False
    assert errcode(client.get, "draft/count") == 48001
    assert client.material.add("thumb", ("c.jpg", image(), "image/jpeg"))["media_id"]


# -- publishing ----------------------------------------------------------------------------------
def test_publish_success_consumes_draft_pushes_event_and_is_found_by_marker(wechat, client, receiver):
    emu, _ = wechat
    emu.settings.callback_url = receiver.url
    media_id = add_draft(client, article(cover(client)))
    submitted = client.post("freepublish/submit", data={"media_id": media_id})
    publish_id = submitted["publish_id"]
    assert submitted["errcode"] == 0 and isinstance(publish_id, str) and submitted["msg_data_id"]
    assert errcode(client.post, "draft/get", data={"media_id": media_id}) == 40007
    assert client.post("freepublish/get", data={"publish_id": publish_id})["publish_status"] == 1
    done = finished(client, publish_id)
    assert done["publish_status"] == 0 and done["fail_idx"] == []
    assert done["article_detail"]["count"] == 1 and done["article_detail"]["item"][0]["idx"] == 1
    published = client.post("freepublish/getarticle", data={"article_id": done["article_id"]})["news_item"][0]
    assert published["content_source_url"] == MARK and published["is_deleted"] is False
    assert published["url"] == done["article_detail"]["item"][0]["article_url"]
    listing = client.post("freepublish/batchget", data={"offset": 0, "count": 20, "no_content": 1})
    assert [i["article_id"] for i in listing["item"]
            if i["content"]["news_item"][0]["content_source_url"] == MARK] == [done["article_id"]]
    (query, body), = receiver.wait(1)
    check_signature(emu.settings.callback_token, query["signature"], query["timestamp"], query["nonce"])
    event = xmltodict.parse(body)["xml"]
    assert event["Event"] == "PUBLISHJOBFINISH" and event["MsgType"] == "event"
    assert event["ToUserName"] == emu.settings.original_id and query["openid"] == event["FromUserName"]
    info = event["PublishEventInfo"]
    assert info["publish_id"] == publish_id and info["publish_status"] == "0"
    assert info["article_id"] == done["article_id"]
    assert info["article_detail"]["item"]["article_url"] == published["url"]
    pushed = emu.ledger.wait_for("callback/PUBLISHJOBFINISH")
    assert pushed[0]["ok"] is True and pushed[0]["attempt"] == 1 and pushed[0]["id"] == publish_id
    assert [e["op"] for e in emu.ledger.effects(op="freepublish/*")] == ["freepublish/submit", "freepublish/finish"]


def test_publish_failure_outcomes(wechat, client, receiver):
    emu, _ = wechat
    emu.settings.callback_url = receiver.url
    thumb = cover(client)
    emu.next_publish_outcome(2, [1, 2])
    failed = publish(client, add_draft(client, article(thumb), article(thumb, title="第二篇")))
    assert failed["publish_status"] == 2 and failed["fail_idx"] == [1, 2] and "article_id" not in failed
    emu.settings.publish_outcome = 3
    general = publish(client, add_draft(client, article(thumb)))
    assert general["publish_status"] == 3 and general["fail_idx"] == []
    events = [xmltodict.parse(body)["xml"]["PublishEventInfo"] for _, body in receiver.wait(2)]
    by_status = {e["publish_status"]: e for e in events}
    assert by_status["2"]["fail_idx"] == ["1", "2"] and "article_id" not in by_status["2"]
    assert "fail_idx" not in by_status["3"]


@pytest.mark.parametrize("mode", ["aes", "compat"])
def test_publish_event_in_safe_mode_decrypts_with_wechatcrypto(wechat, client, receiver, mode):
    emu, _ = wechat
    s = emu.settings
    s.callback_url, s.callback_mode = receiver.url, mode
    done = publish(client, add_draft(client, article(cover(client))))
    (query, body), = receiver.wait(1)
    assert query["encrypt_type"] == "aes"
    assert (b"<PublishEventInfo>" in body) is (mode == "compat")
    check_signature(s.callback_token, query["signature"], query["timestamp"], query["nonce"])
    crypto = WeChatCrypto(s.callback_token, s.encoding_aes_key, s.appid)
    plain = crypto.decrypt_message(body, query["msg_signature"], query["timestamp"], query["nonce"])
    info = xmltodict.parse(plain)["xml"]["PublishEventInfo"]
    assert info["publish_id"] == done["publish_id"] and info["article_id"] == done["article_id"]
    with pytest.raises(InvalidSignatureException):
        crypto.decrypt_message(body, "0" * 40, query["timestamp"], query["nonce"])


def test_callback_is_retried_until_acknowledged(wechat, client, receiver):
    emu, _ = wechat
    emu.settings.callback_url = receiver.url
    receiver.replies.extend([(500, "", 0), (200, "not ok", 0)])
    publish(client, add_draft(client, article(cover(client))))
    attempts = emu.ledger.wait_for("callback/PUBLISHJOBFINISH", count=3)
    assert [(a["attempt"], a["ok"]) for a in attempts] == [(1, False), (2, False), (3, True)]
    assert attempts[0]["status"] == 500 and len(receiver.wait(3)) == 3


def test_callback_gives_up_after_three_timeouts(wechat, client, receiver):
    emu, _ = wechat
    emu.settings.callback_url, emu.settings.callback_timeout = receiver.url, 0.2
    receiver.replies.extend([(200, "success", 0.5)] * 4)
    publish(client, add_draft(client, article(cover(client))))
    attempts = emu.ledger.wait_for("callback/PUBLISHJOBFINISH", count=3)
    assert all(not a["ok"] and "Timeout" in a["error"] for a in attempts)
    time.sleep(0.3)
    assert len(emu.ledger.effects(op="callback/PUBLISHJOBFINISH")) == 3 and len(receiver.received) == 3


def test_delete_published_uses_1_based_index_and_0_deletes_all(wechat, client):
    emu, _ = wechat
    thumb = cover(client)
    done = publish(client, add_draft(client, article(thumb), article(thumb, title="第二篇")))
    article_id = done["article_id"]
    assert client.post("freepublish/delete", data={"article_id": article_id, "index": 2})["errcode"] == 0
    items = client.post("freepublish/getarticle", data={"article_id": article_id})["news_item"]
    assert [i["is_deleted"] for i in items] == [False, True]
    assert client.post("freepublish/get", data={"publish_id": done["publish_id"]})["publish_status"] == 0
    assert errcode(client.post, "freepublish/delete", data={"article_id": article_id, "index": 3}) == 40114
    assert client.post("freepublish/delete", data={"article_id": article_id})["errcode"] == 0
    assert client.post("freepublish/get", data={"publish_id": done["publish_id"]})["publish_status"] == 5
    assert errcode(client.post, "freepublish/delete", data={"article_id": article_id, "index": 0}) == 53600
    assert errcode(client.post, "freepublish/getarticle", data={"article_id": "nope"}) == 53600
    assert [e["body"]["index"] for e in emu.ledger.effects(op="freepublish/delete")] == [2, 0]


def test_platform_ban_sets_status_6(wechat, client):
    emu, _ = wechat
    done = publish(client, add_draft(client, article(cover(client))))
    emu.ban(done["publish_id"])
    assert client.post("freepublish/get", data={"publish_id": done["publish_id"]})["publish_status"] == 6


def test_mass_send_clientmsgid_is_idempotent_with_45065(wechat, client):
    emu, base = wechat
    thumb = cover(client)
    body = {"filter": {"is_to_all": True}, "mpnews": {"media_id": add_draft(client, article(thumb))},
            "msgtype": "mpnews", "send_ignore_reprint": 0, "clientmsgid": "S-123"}
    sent = client.post("message/mass/sendall", data=body)
    assert sent["errcode"] == 0 and sent["msg_id"]
    body["mpnews"]["media_id"] = add_draft(client, article(thumb))
    again = requests.post(base + "/cgi-bin/message/mass/sendall", params={"access_token": client.access_token},
                          data=json.dumps(body, ensure_ascii=False).encode()).json()
    assert again["errcode"] == 45065 and again["msg_id"] == sent["msg_id"]
    assert emu.ledger.count(op="message/mass/sendall") == 1


# -- quotas and faults ----------------------------------------------------------------------------
def test_daily_quota_45009_clear_quota_and_day_rollover(wechat, client):
    emu, _ = wechat
    emu.settings.daily_quota["draft/count"] = 2
    client.get("draft/count")
    client.get("draft/count")
    with pytest.raises(APILimitedException) as info:
        client.get("draft/count")
    assert info.value.errcode == 45009
    quota = client.post("openapi/quota/get", data={"cgi_path": "/cgi-bin/draft/count"})["quota"]
    assert quota == {"daily_limit": 2, "used": 2, "remain": 0}
    assert client.post("clear_quota", data={"appid": emu.settings.appid})["errcode"] == 0
    assert client.get("draft/count") == {"total_count": 0}
    emu.settings.clear_quota_monthly = 1
    assert errcode(client.post, "clear_quota", data={"appid": emu.settings.appid}) == 48006
    client.get("draft/count")
    emu.clock.advance(86400)
    client.fetch_access_token()
    assert client.get("draft/count") == {"total_count": 0} and emu.quota_used("draft/count") == 1


def test_minute_quota_45011(wechat, client):
    emu, _ = wechat
    emu.settings.minute_quota["draft/count"] = 1
    emu.clock.advance(60 - emu.clock.now() % 60)  # start of a clock minute
    client.get("draft/count")
    assert errcode(client.get, "draft/count") == 45011
    emu.clock.advance(60)
    assert client.get("draft/count") == {"total_count": 0}


def test_forced_error_code_for_a_path_then_normal(wechat, client):
    emu, _ = wechat
    thumb = cover(client)
    emu.faults.force(-1, path="/cgi-bin/draft/add", times=1)
    assert errcode(add_draft, client, article(thumb)) == -1
    assert add_draft(client, article(thumb))
    assert emu.ledger.count(op="draft/add") == 1
    faulted = emu.ledger.requests(path="/cgi-bin/draft/add", where=lambda r: r["fault"] == "code:-1")
    assert len(faulted) == 1 and faulted[0]["status"] == 200


def test_error_rate_is_reproducible_with_a_seed(wechat, client):
    emu, _ = wechat
    client.get("draft/count")

    def run() -> list[bool]:
        emu.faults.update(error_rate=0.5, seed=7)
        outcome = []
        for _ in range(20):
            try:
                client.get("draft/count")
                outcome.append(True)
            except WeChatClientException as exc:
                assert exc.errcode == -1
                outcome.append(False)
        return outcome

    first, second = run(), run()
    assert first == second and 0 < first.count(False) < 20
