"""Weibo channel: Weibo's length rule, a status that always fits with its link intact, and share /
destroy over real HTTP against the Weibo emulator, with every vendor answer classified."""
from __future__ import annotations

import hashlib
import json
import logging
import socket
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

import pytest
from pydantic import ValidationError

from channels import registry
from channels.base import Attempt, Channel, Ports, Receipt, RenderContext, Rendition
from channels.errors import (AuthInvalid, ContentRejected, ManualActionRequired, OutcomeUnknown, PermanentError,
                             RateLimited, TransientError, Unavailable)
from channels.weibo import UNKNOWN_ID, ManualRemovalRequired, WeiboChannel, _shorten, weibo_length
from syndicator.emulators.server import EmulatorServer
from syndicator.emulators.weibo import ERRORS as EMULATOR_TEXTS
from syndicator.emulators.weibo import WeiboEmulator, WeiboSettings, WeiboToken
from tests.conftest import snapshot

#: A distinctive token, so any leak is found by substring search.
TOKEN = "wb-2.00SECRET-token-7f3c9a"
UID = 5000000001
SAFE = "example.gov.cn"
LINK_BASE = "https://www.example.gov.cn/m/a/"
SHARE_PATH = "/2/statuses/share.json"
DESTROY_PATH = "/2/statuses/destroy.json"
#: The conftest clock: 2026-11-25 08:00:00 UTC, exactly on the hour.
T0 = datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)


# -- the emulator on a free port, one fresh WeiboEmulator per test ------------------------------

class Slot:
    """ASGI app forwarding to whatever the current test plugged in (uvicorn starts once per module)."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def server():
    slot = Slot()
    srv = EmulatorServer(slot)
    srv.start()
    yield slot, srv
    srv.stop()


@dataclass
class Remote:
    emu: WeiboEmulator
    url: str
    slot: Slot

    @property
    def ledger(self):
        return self.emu.ledger

    def posts(self) -> list[dict[str, Any]]:
        return self.ledger.effects(op="statuses/share")

    def share_requests(self) -> list[dict[str, Any]]:
        return self.ledger.requests(path=SHARE_PATH)

    def destroyed(self) -> list[str]:
        """Ids of the posts Weibo deleted, in order."""
        return [e["id"] for e in self.ledger.effects(op="statuses/destroy")]

    def live(self) -> list[str]:
        """Texts of the account's posts that are still up."""
        return [st.text for st in self.emu.by_user.get(UID, []) if not st.deleted]


@pytest.fixture
def remote(server):
    slot, srv = server
    emu = WeiboEmulator(WeiboSettings(safe_domains=[SAFE], tokens={
        TOKEN: WeiboToken(uid=UID, expires_at=time.time() + 86400)}))
    slot.app = emu.app
    yield Remote(emu, srv.base_url, slot)
    emu.stopping.set()  # let go of a request a fault still holds


class Trial:
    """Builds channels, renditions and attempts for one test."""

    def __init__(self, remote: Remote, ports: Ports, media) -> None:
        self.remote, self.ports, self.media = remote, ports, media

    def channel(self, **settings) -> WeiboChannel:
        base = {"api_base": self.remote.url, "access_token": TOKEN, "safe_domain": SAFE,
                "link_base": LINK_BASE, "timeout": 5}
        return WeiboChannel("weibo_main", WeiboChannel.Settings.model_validate({**base, **settings}), self.ports)

    def rendition(self, channel: WeiboChannel, **article) -> Rendition:
        return channel.render(snapshot(**article), RenderContext(now=self.ports.clock(), ports=self.ports))

    def attempt(self, reconcile: bool = False, remote_id: str | None = None, number: int = 1,
                held_ids: tuple[str, ...] = ()) -> Attempt:
        return Attempt(delivery_id=7, number=number, reconcile=reconcile, remote_id=remote_id, media=self.media,
                       held_ids=held_ids)


@pytest.fixture
def trial(remote, ports, media) -> Trial:
    return Trial(remote, ports, media)


def form(request: dict[str, Any]) -> dict[str, str]:
    return dict(parse_qsl(request["body"].decode()))


# -- the length rule -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("", 0),
    ("中", 1),                                            # non-ASCII = 2 units
    ("民政厅", 3),
    ("，。！", 3),                                         # full-width punctuation too
    ("a", 1),                                             # ceil(1/2)
    ("ab", 1),                                            # two ASCII chars = 1 字
    ("abc", 2),
    ("2026", 2),
    ("中a", 2),                                            # 3 units
    ("😀", 1),
    ("http://example.com/x", 10),                         # a link = 20 units, whatever its length
    ("https://www.example.gov.cn/m/a/2026-winter-relief.html", 10),
    ("http://127.0.0.1:8470/m/a/x.html", 10),
    ("https://mzt-gov.example.cn/a", 10),                 # hyphenated host names are links too
    ("看 http://a.cn/1 和 https://b.cn/2", 24),            # 2+1+20+1+2+1+20 = 47 units
    ("http://a.cn/" + "x" * 128, 10),                     # 140 characters: still 20 units
    ("http://a.cn/" + "x" * 129, 11),                     # 141: the excess counts (21 units)
    ("http://a.cn/" + "x" * 200, 46),                     # 212 → 212 - 140 + 20 = 92 units
    ("http://", 4),                                       # no host: plain text, 7 units
    ("民" * 140, 140),
    ("民" * 141, 141),
    ("a" * 280, 140),
    ("a" * 281, 141),
])
def test_weibo_length_follows_the_contract_rule(text, expected):
    assert weibo_length(text) == expected


# -- render --------------------------------------------------------------------------------------

def test_render_builds_title_summary_and_the_default_microsite_link(ports, render_ctx):
    channel = WeiboChannel("weibo_main", WeiboChannel.Settings(access_token=TOKEN, safe_domain="127.0.0.1"), ports)
    r = channel.render(snapshot(), render_ctx)
    link = "http://127.0.0.1:8470/m/a/2026-winter-relief.html"
    assert r.payload == {
        "status": f"【省民政厅部署2026年冬春困难群众救助工作】要求各市州摸清底数，确保困难群众温暖过冬。 {link}",
        "link": link, "length": 53, "cover": None}
    assert r.warnings == () and r.assets == ()
    assert channel.render(snapshot(), render_ctx) == r  # identical on every render, so retries match


def test_render_is_plain_text_without_html_entities_or_topics(trial):
    channel = trial.channel()
    r = trial.rendition(channel, title='A&B <通知> "公告" 它\'s', summary="详见 #冬春救助# 专题 &amp; 附件。\n\n第二段")
    status = r.payload["status"]
    assert status.startswith('【A&B <通知> "公告" 它\'s】详见 ＃冬春救助＃ 专题 &amp; 附件。 第二段 ')
    for entity in ("&lt;", "&gt;", "&#34;", "&#39;", "&quot;", "&amp;amp;"):
        assert entity not in status
    assert "#" not in status and "\n" not in status
    assert any("话题" in w for w in r.warnings)


def test_long_summary_is_cut_to_exactly_140_and_weibo_accepts_it_with_the_link_intact(trial, remote):
    channel = trial.channel()
    summary = "为切实保障困难群众基本生活，省民政厅要求各地摸清底数、加强监测、及时救助。" * 8
    r = trial.rendition(channel, summary=summary)
    status, link = r.payload["status"], r.payload["link"]
    # Then the summary is cut on a character boundary, the link is whole and last, and it is 140 exactly
    assert link == LINK_BASE + "2026-winter-relief.html" and urlsplit(link).hostname.endswith("." + SAFE)
    assert status.endswith("… " + link)
    kept = status[len("【省民政厅部署2026年冬春困难群众救助工作】"):-len("… " + link)]
    assert summary.startswith(kept) and len(kept) < len(summary)
    assert weibo_length(status) == r.payload["length"] == 140
    one_more = status.replace("… ", summary[len(kept)] + "… ")
    assert weibo_length(one_more) > 140  # nothing more would have fitted
    assert any("truncated to fit 140" in w for w in r.warnings)
    # And Weibo (the emulator's own counter) accepts it as sent
    receipt = channel.deliver(r, trial.attempt())
    [post] = remote.posts()
    assert post["body"]["text"] == status and post["id"] == receipt.remote_id


def test_a_title_too_long_for_any_summary_is_cut_and_still_ends_with_the_link(trial):
    r = trial.rendition(trial.channel(), title="关于" * 80)
    status = r.payload["status"]
    assert weibo_length(status) <= 140 and status.endswith("…】 " + r.payload["link"])
    assert any("summary dropped" in w for w in r.warnings)


def test_a_correction_is_a_new_status_that_weibo_does_not_take_for_a_repeat(trial, remote):
    channel = trial.channel()
    original = trial.rendition(channel)
    corrected = trial.rendition(channel, revision=2, correction_note="原文“3月”应为“11月”。")
    assert corrected.payload["status"] == ("【更正】【省民政厅部署2026年冬春困难群众救助工作】原文“3月”应为“11月”。 "
                                           + corrected.payload["link"])
    channel.deliver(original, trial.attempt())
    channel.deliver(corrected, trial.attempt())
    assert [p["body"]["text"] for p in remote.posts()] == [original.payload["status"], corrected.payload["status"]]


def test_an_empty_summary_falls_back_to_the_start_of_the_body(trial):
    r = trial.rendition(trial.channel(), summary="  ", body_html="<p>近日，省民政厅&amp;省财政厅</p><p>联合发文。</p>")
    assert r.payload["status"].startswith("【省民政厅部署2026年冬春困难群众救助工作】近日，省民政厅&省财政厅 联合发文。 ")
    assert any("summary is empty" in w for w in r.warnings)


@pytest.mark.parametrize("text, keep, expected", [
    ("确保困难群众温暖过冬", 4, "确保困难…"),
    ("确保困难群众温暖过冬", 10, "确保困难群众温暖过冬"),      # nothing to cut
    ("确保，困难", 3, "确保…"),                                # no dangling comma before the ellipsis
    ("ab\U0001F468\u200d\U0001F469\u200d\U0001F467cd", 4, "ab…"),  # a ZWJ emoji stays whole
    ("cafe\u0301 ok", 4, "caf…"),                           # so does e + combining accent
    ("确保", 0, ""),
])
def test_shortening_cuts_between_whole_characters(text, keep, expected):
    assert _shorten(text, keep) == expected


def test_link_base_with_a_slug_placeholder_and_quoting(trial):
    channel = trial.channel(link_base="https://mzt.example.gov.cn/news/{slug}/index.shtml")
    r = trial.rendition(channel, slug="冬春 救助")
    assert r.payload["link"] == "https://mzt.example.gov.cn/news/%E5%86%AC%E6%98%A5%20%E6%95%91%E5%8A%A9/index.shtml"
    assert r.payload["status"].endswith(" " + r.payload["link"])


def test_a_default_link_off_the_safe_domain_is_refused_at_render(ports, render_ctx):
    channel = WeiboChannel("weibo_main", WeiboChannel.Settings(access_token=TOKEN, safe_domain=SAFE), ports)
    with pytest.raises(PermanentError, match="not an http\\(s\\) link on safe_domain example.gov.cn"):
        channel.render(snapshot(), render_ctx)  # ports serve http://127.0.0.1:8470/


def test_cover_goes_along_only_when_weibo_takes_it(trial, media):
    jpeg = media.add_image("teal")
    r = trial.rendition(trial.channel(), cover=jpeg)
    assert r.payload["cover"] == {"sha256": jpeg.sha256, "mime": "image/jpeg"} and r.assets == (jpeg.sha256,)
    assert trial.rendition(trial.channel(with_cover=False), cover=jpeg).payload["cover"] is None
    webp = replace(jpeg, mime="image/webp")
    r = trial.rendition(trial.channel(), cover=webp)
    assert r.payload["cover"] is None and r.assets == () and "JPEG, GIF or PNG" in r.warnings[0]
    big = replace(jpeg, size=5 * 1024 * 1024)
    assert trial.rendition(trial.channel(), cover=big).payload["cover"] is None


# -- settings ------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    {},
    {"safe_domain": SAFE},                                                   # no token
    {"access_token": "", "safe_domain": SAFE},                               # ${ENV} set but empty
    {"access_token": "t"},                                                   # no safe domain
    {"access_token": "t", "safe_domain": "https://example.gov.cn/"},
    {"access_token": "t", "safe_domain": SAFE, "api_base": "http://api.weibo.com/"},  # token in clear
    {"access_token": "t", "safe_domain": SAFE, "api_base": "api.weibo.com"},
    {"access_token": "t", "safe_domain": SAFE, "link_base": "https://elsewhere.cn/m/a/"},
    {"access_token": "t", "safe_domain": SAFE, "link_base": "www.example.gov.cn/m/a/"},
    {"access_token": "t", "safe_domain": SAFE, "token_expires_at": "2026-12-01T00:00:00"},  # no offset
    {"access_token": "t", "safe_domain": SAFE, "rip": "not-an-ip"},
    {"access_token": "t", "safe_domain": SAFE, "timeout": 0},
    {"access_token": "t", "safe_domain": SAFE, "colour": "red"},
])
def test_settings_reject_bad_values(bad):
    with pytest.raises(ValidationError):
        WeiboChannel.Settings.model_validate(bad)


def test_settings_defaults_normalisation_and_capabilities(ports):
    s = WeiboChannel.Settings.model_validate({"access_token": "t", "safe_domain": " Example.GOV.cn. ",
                                              "api_base": "http://127.0.0.1:9/", "link_base": "https://m.example.gov.cn/a",
                                              "token_expires_at": "2026-12-01T00:00:00+08:00"})
    assert (s.safe_domain, s.api_base, s.link_base, s.rip, s.with_cover, s.timeout, s.delete_on_correction) == (
        "example.gov.cn", "http://127.0.0.1:9/", "https://m.example.gov.cn/a/", "127.0.0.1", True, 15, True)
    assert WeiboChannel.Settings(access_token="t", safe_domain=SAFE).api_base == "https://api.weibo.com/"
    with pytest.raises(ValidationError):
        s.rip = "10.0.0.1"  # frozen
    info = WeiboChannel("w", s, ports).describe()
    assert info["token_expires_at"] == "2026-12-01T00:00:00+08:00" and info["token_expired"] is False
    assert (info["supports_update"], info["supports_retract"], info["reconcilable"]) == (True, True, True)
    assert info["correction"] == "new_post" and WeiboChannel.correction == "new_post"
    assert info["rate_limit"] == "30 posts/hour per user" and info["max_body_chars"] == 140
    assert WeiboChannel.update is not Channel.update and WeiboChannel.retract is not Channel.retract


# -- share -------------------------------------------------------------------------------------

def test_share_without_a_picture_posts_once_form_encoded(trial, remote):
    channel = trial.channel()
    r = trial.rendition(channel)
    receipt = channel.deliver(r, trial.attempt())
    [post] = remote.posts()
    assert post["body"]["text"] == r.payload["status"] and post["body"]["pic"] is None
    assert post["body"]["uid"] == UID and post["body"]["rip"] == "127.0.0.1"
    assert receipt.remote_id == post["id"] and receipt.remote_id.isdigit()
    assert receipt.remote_url == f"https://weibo.com/{UID}/{receipt.remote_id}"
    [request] = remote.share_requests()
    assert request["method"] == "POST" and request["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert request["query"] == ""  # the token travels in the body, never in the URL
    assert form(request)["status"] == r.payload["status"]


def test_share_with_the_cover_posts_it_as_multipart_pic(trial, remote, media):
    cover = media.add_image("teal", size=(120, 80))
    channel = trial.channel()
    r = trial.rendition(channel, cover=cover)
    receipt = channel.deliver(r, trial.attempt())
    [post] = remote.posts()
    assert post["body"]["text"] == r.payload["status"]
    assert post["body"]["pic"]["sha256"] == cover.sha256 and post["body"]["pic"]["size"] == cover.size
    assert media.reads == [cover.sha256]
    assert remote.share_requests()[0]["headers"]["content-type"].startswith("multipart/form-data")
    assert receipt.detail["picture"].startswith("http://ww1.sinaimg.cn/large/")


def test_weibo_answering_20032_server_slow_counts_as_posted(trial, remote):
    remote.emu.faults.force(20032, path=SHARE_PATH)
    channel = trial.channel()
    receipt = channel.deliver(trial.rendition(channel), trial.attempt())
    assert receipt.remote_id == UNKNOWN_ID and receipt.detail["server_slow"] is True


# -- ambiguous outcomes and reconciliation -------------------------------------------------------

def test_timeout_after_weibo_posted_then_a_reconciling_retry_counts_it_as_posted(trial, remote):
    channel = trial.channel(timeout=0.5)
    r = trial.rendition(channel)
    # Given Weibo applies the share but the answer never comes back in time
    remote.emu.faults.update(hang=True, hang_seconds=10, after_apply=True)
    with pytest.raises(OutcomeUnknown, match="may have been posted") as caught:
        channel.deliver(r, trial.attempt())
    assert isinstance(caught.value, Unavailable)  # also a failing remote, for backoff and breakers
    remote.emu.faults.clear()
    assert len(remote.posts()) == 1
    # When the pipeline retries with reconcile=True and the identical status
    receipt = channel.deliver(r, trial.attempt(reconcile=True, number=2))
    # Then 20019 is read as "already posted": one post on Weibo, delivered with an unknown id
    assert receipt == Receipt(remote_id=UNKNOWN_ID, detail={"already_posted": True, "code": 20019,
                                                            "error": "repeat content!"})
    assert len(remote.posts()) == 1
    first, second = remote.share_requests()
    assert form(first)["status"] == form(second)["status"] == r.payload["status"]


def test_a_reconciling_retry_posts_normally_when_the_first_attempt_never_arrived(trial, remote):
    channel = trial.channel()
    receipt = channel.deliver(trial.rendition(channel), trial.attempt(reconcile=True, number=2))
    assert receipt.remote_id == remote.posts()[0]["id"]


def test_connection_refused_is_unavailable_and_not_an_unknown_outcome(trial):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    channel = trial.channel(api_base=f"http://127.0.0.1:{port}/")
    with pytest.raises(Unavailable, match="cannot reach") as caught:
        channel.deliver(trial.rendition(channel), trial.attempt())
    assert not isinstance(caught.value, OutcomeUnknown)


def test_pipeline_timeout_then_reconcile_delivers_once(tmp_path, monkeypatch, remote):
    """The whole core path: SQLite store, stored rendition, retry state, reconcile flag."""
    from sqlalchemy import select

    from syndicator import pipeline
    from syndicator.articles import read_article
    from syndicator.config import load_config
    from syndicator.models import Delivery
    from syndicator.publishing import publish
    from syndicator.runtime import Runtime
    from tests.conftest import write_article
    from tests.support.services import write_config

    class NoBroker:
        def enqueue(self, items, countdown=None):
            return []

        def forget(self, ids):
            pass

    now = [T0]
    monkeypatch.setitem(registry.CHANNEL_TYPES, "weibo", "channels.weibo:WeiboChannel")
    monkeypatch.setenv("WEIBO_TOKEN", TOKEN)
    registry.load_type.cache_clear()
    config = load_config(write_config(
        tmp_path / "config.yaml", database_url=f"sqlite:///{tmp_path / 's.db'}", broker_url="redis://127.0.0.1:1/0",
        public=tmp_path / "public", channels={"weibo_main": {
            "type": "weibo", "api_base": remote.url, "access_token": "${WEIBO_TOKEN}", "safe_domain": SAFE,
            "link_base": LINK_BASE, "timeout": 0.5}}))
    rt = Runtime(config, clock=lambda: now[0])
    try:
        rt.store.migrate()
        rt._enqueuer = NoBroker()
        draft = read_article(write_article(tmp_path / "in", "weibo-1"), max_image_bytes=10**6, max_body_chars=10**5)
        publish(rt.store, rt.config, draft, actor="editor:li", enqueuer=rt.enqueuer, now=T0)
        with rt.store.read() as s:
            delivery_id = s.scalar(select(Delivery.id))
        # Given Weibo posts but the answer is lost
        remote.emu.faults.update(hang=True, hang_seconds=10, after_apply=True)
        assert pipeline.attempt(rt, delivery_id) == "retry_wait"
        remote.emu.faults.clear()
        with rt.store.read() as s:
            d = s.get(Delivery, delivery_id)
            assert d.reconcile is True and "may have been posted" in d.last_error
        # When the retry comes due
        now[0] = T0 + timedelta(minutes=1)
        assert pipeline.attempt(rt, delivery_id) == "delivered"
        # Then exactly one post exists and the delivery is recorded as delivered, id unknown
        assert len(remote.posts()) == 1 and len(remote.share_requests()) == 2
        with rt.store.read() as s:
            d = s.get(Delivery, delivery_id)
            assert (d.state, d.remote_id) == ("delivered", UNKNOWN_ID)
            assert json.loads(d.rendition)["payload"]["status"] == remote.posts()[0]["body"]["text"]
    finally:
        rt.store.dispose()
        registry.load_type.cache_clear()


# -- retract -------------------------------------------------------------------------------------

def test_retract_destroys_the_post_and_a_second_retract_is_success(trial, remote):
    channel = trial.channel()
    r = trial.rendition(channel)
    posted = channel.deliver(r, trial.attempt())
    first = channel.retract(r, trial.attempt(remote_id=posted.remote_id))
    assert first.remote_id == posted.remote_id and first.detail == {"deleted": [posted.remote_id], "already_gone": []}
    second = channel.retract(r, trial.attempt(remote_id=posted.remote_id))
    assert second.detail == {"deleted": [], "already_gone": [posted.remote_id]}  # Weibo answered 20101
    assert [e["id"] for e in remote.ledger.effects(op="statuses/destroy")] == [posted.remote_id]
    assert len(remote.ledger.requests(path="/2/statuses/destroy.json")) == 2


def test_retract_when_destroy_is_closed_to_the_app_asks_for_manual_removal(trial, remote):
    remote.emu.settings.destroy_available = False
    channel = trial.channel()
    r = trial.rendition(channel)
    posted = channel.deliver(r, trial.attempt())
    with pytest.raises(ManualRemovalRequired, match="by hand at https://m.weibo.cn/status/") as caught:
        channel.retract(r, trial.attempt(remote_id=posted.remote_id))
    assert caught.value.url == f"https://m.weibo.cn/status/{posted.remote_id}" and caught.value.code == 10014
    assert isinstance(caught.value, ManualActionRequired)  # the core parks it as a manual task
    assert "Insufficient app permissions" in str(caught.value)
    assert remote.ledger.effects(op="statuses/destroy") == []


def test_retract_of_a_post_whose_id_is_unknown_asks_for_manual_removal_without_calling(trial, remote):
    channel = trial.channel()
    with pytest.raises(ManualActionRequired, match="by hand") as caught:
        channel.retract(trial.rendition(channel), trial.attempt(remote_id=UNKNOWN_ID))
    assert isinstance(caught.value, ManualRemovalRequired) and caught.value.url is None
    assert remote.ledger.requests() == []


def test_retract_after_a_kept_correction_destroys_the_correction_and_the_original(trial, remote):
    # Given delete_on_correction off: the original and its 【更正】 post are both up
    channel = trial.channel(delete_on_correction=False)
    posted = channel.deliver(trial.rendition(channel), trial.attempt())
    fix = channel.update(corrected(trial, channel), trial.attempt(remote_id=posted.remote_id))
    held = (fix.remote_id, posted.remote_id)  # newest first, as the core passes them
    assert len(remote.live()) == 2
    # When the article is retracted with every id the channel holds
    receipt = channel.retract(trial.rendition(channel), trial.attempt(remote_id=fix.remote_id, held_ids=held))
    # Then both posts were destroyed, newest first, and nothing of the article is left up
    assert remote.destroyed() == list(held) and remote.live() == []
    assert receipt.remote_id == fix.remote_id and receipt.detail == {"deleted": list(held), "already_gone": []}
    # And a retry finds both gone (20101) and succeeds
    again = channel.retract(trial.rendition(channel), trial.attempt(remote_id=fix.remote_id, held_ids=held))
    assert again.detail == {"deleted": [], "already_gone": list(held)} and remote.destroyed() == list(held)


def test_retract_destroys_what_it_can_and_names_the_post_weibo_refuses(trial, remote):
    # Given the original post belongs to another account (Weibo answers 20102 to destroy) and the
    # 【更正】 post to ours; plus a post Weibo reported without an id
    other = "wb-other-account-token"
    remote.emu.add_token(other, uid=UID + 1)
    original = trial.channel(access_token=other).deliver(trial.rendition(trial.channel()), trial.attempt())
    channel = trial.channel(delete_on_correction=False)
    fix = channel.update(corrected(trial, channel), trial.attempt(remote_id=original.remote_id))
    held = (UNKNOWN_ID, fix.remote_id, original.remote_id)
    # When the article is retracted
    with pytest.raises(ManualRemovalRequired) as caught:
        channel.retract(trial.rendition(channel), trial.attempt(remote_id=UNKNOWN_ID, held_ids=held))
    # Then the post it may delete is gone, and the manual task names the other two and what was done
    assert remote.destroyed() == [fix.remote_id]
    assert len(remote.ledger.requests(path=DESTROY_PATH)) == 2  # no call for the unknown id
    message = str(caught.value)
    assert "2 post(s) must be deleted by hand" in message and "unknown ('unknown'" in message
    assert f"by hand at https://m.weibo.cn/status/{original.remote_id}" in message and "[20102]" in message
    assert f"deleted: {fix.remote_id}" in message
    assert caught.value.url == f"https://m.weibo.cn/status/{original.remote_id}" and caught.value.code == 20102


def test_retract_when_destroy_is_closed_names_every_post_to_delete_by_hand(trial, remote):
    remote.emu.settings.destroy_available = False
    channel = trial.channel(delete_on_correction=False)
    posted = channel.deliver(trial.rendition(channel), trial.attempt())
    fix = channel.update(corrected(trial, channel), trial.attempt(remote_id=posted.remote_id))
    with pytest.raises(ManualRemovalRequired) as caught:
        channel.retract(trial.rendition(channel),
                        trial.attempt(remote_id=fix.remote_id, held_ids=(fix.remote_id, posted.remote_id)))
    message = str(caught.value)
    assert all(f"https://m.weibo.cn/status/{i}" in message for i in (fix.remote_id, posted.remote_id))
    assert caught.value.url == f"https://m.weibo.cn/status/{fix.remote_id}" and remote.destroyed() == []
    assert len(remote.ledger.requests(path=DESTROY_PATH)) == 2


# -- corrections (update) ------------------------------------------------------------------------

NOTE = "原文“3月”应为“11月”。"


def corrected(trial: Trial, channel: WeiboChannel) -> Rendition:
    return trial.rendition(channel, revision=2, correction_note=NOTE)


def test_a_correction_is_a_new_post_and_the_old_post_is_deleted(trial, remote):
    channel = trial.channel()
    # Given the article went out
    original = trial.rendition(channel)
    posted = channel.deliver(original, trial.attempt())
    # When its correction is applied, with the id the core holds for the article
    fix = corrected(trial, channel)
    receipt = channel.update(fix, trial.attempt(remote_id=posted.remote_id))
    # Then a second post says 【更正】 with the note and the link, exactly as rendered
    first, second = remote.posts()
    assert first["id"] == posted.remote_id
    assert second["body"]["text"] == fix.payload["status"]
    assert second["body"]["text"].startswith("【更正】") and NOTE in second["body"]["text"]
    assert second["body"]["text"].endswith(" " + LINK_BASE + "2026-winter-relief.html")
    assert receipt.remote_id == second["id"] != posted.remote_id
    assert receipt.remote_url == f"https://weibo.com/{UID}/{second['id']}"
    # And the old post was destroyed; only the correction is still up
    assert remote.destroyed() == [posted.remote_id]
    assert remote.live() == [fix.payload["status"]]
    assert receipt.detail["old_post_id"] == posted.remote_id and receipt.detail["old_post_deleted"] is True
    assert "old_post_kept" not in receipt.detail


def test_a_correction_keeps_the_old_post_and_says_so_when_destroy_is_closed_to_the_app(trial, remote):
    # Given an app that may not call statuses/destroy
    remote.emu.settings.destroy_available = False
    channel = trial.channel()
    posted = channel.deliver(trial.rendition(channel), trial.attempt())
    # When the correction is applied
    receipt = channel.update(corrected(trial, channel), trial.attempt(remote_id=posted.remote_id))
    # Then the correction is posted and delivered, and the receipt asks for the old post to be deleted by hand
    assert len(remote.posts()) == 2 and receipt.remote_id == remote.posts()[1]["id"]
    assert len(remote.ledger.requests(path=DESTROY_PATH)) == 1 and remote.destroyed() == []
    assert receipt.detail["old_post_kept"] is True
    assert receipt.detail["manual_delete_url"] == f"https://m.weibo.cn/status/{posted.remote_id}"
    assert "10014" in receipt.detail["delete_error"] and "by hand" in receipt.detail["delete_error"]
    assert len(remote.live()) == 2


def test_a_correction_whose_old_post_id_is_unknown_keeps_it_without_calling_destroy(trial, remote):
    channel = trial.channel()
    receipt = channel.update(corrected(trial, channel), trial.attempt(remote_id=UNKNOWN_ID))
    assert len(remote.posts()) == 1 and remote.ledger.requests(path=DESTROY_PATH) == []
    assert receipt.detail["old_post_kept"] is True
    assert receipt.detail["manual_delete_url"] == f"https://weibo.com/u/{UID}"  # the timeline to look through
    assert "unknown" in receipt.detail["delete_error"]


def test_a_correction_stands_when_deleting_the_old_post_fails(trial, remote):
    # Given destroy fails with a server error (a retry would only post the correction again)
    channel = trial.channel()
    posted = channel.deliver(trial.rendition(channel), trial.attempt())
    remote.emu.faults.force(10001, path=DESTROY_PATH)
    receipt = channel.update(corrected(trial, channel), trial.attempt(remote_id=posted.remote_id))
    assert len(remote.posts()) == 2 and remote.destroyed() == []
    assert receipt.detail["old_post_kept"] is True and "[10001]" in receipt.detail["delete_error"]
    assert receipt.detail["manual_delete_url"] == f"https://m.weibo.cn/status/{posted.remote_id}"


def test_a_correction_after_the_old_post_is_already_gone_is_fine(trial, remote):
    channel = trial.channel()
    posted = channel.deliver(trial.rendition(channel), trial.attempt())
    channel.retract(trial.rendition(channel), trial.attempt(remote_id=posted.remote_id))
    receipt = channel.update(corrected(trial, channel), trial.attempt(remote_id=posted.remote_id))
    assert receipt.detail["old_post_deleted"] is True and receipt.detail["old_post_already_gone"] is True
    assert len(remote.ledger.requests(path=DESTROY_PATH)) == 2 and remote.destroyed() == [posted.remote_id]


def test_delete_on_correction_off_leaves_the_old_post_alone(trial, remote):
    channel = trial.channel(delete_on_correction=False)
    posted = channel.deliver(trial.rendition(channel), trial.attempt())
    receipt = channel.update(corrected(trial, channel), trial.attempt(remote_id=posted.remote_id))
    assert len(remote.posts()) == 2 and remote.ledger.requests(path=DESTROY_PATH) == []
    assert receipt.detail["old_post_deleted"] is False and "old_post_kept" not in receipt.detail


def test_timeout_on_the_correction_then_a_reconciling_retry_posts_it_once(trial, remote):
    channel = trial.channel(timeout=0.5)
    posted = channel.deliver(trial.rendition(channel), trial.attempt())
    fix = corrected(trial, channel)
    # Given Weibo applies the correction share but the answer is lost
    remote.emu.faults.update(hang=True, hang_seconds=10, after_apply=True)
    with pytest.raises(OutcomeUnknown, match="may have been posted"):
        channel.update(fix, trial.attempt(remote_id=posted.remote_id))
    remote.emu.faults.clear()
    assert len(remote.posts()) == 2 and remote.ledger.requests(path=DESTROY_PATH) == []
    # When the pipeline retries with reconcile=True and the identical rendition
    receipt = channel.update(fix, trial.attempt(reconcile=True, number=2, remote_id=posted.remote_id))
    # Then Weibo's "repeat content" counts as posted: one correction, and the old post is deleted
    assert len(remote.posts()) == 2
    assert receipt.remote_id == UNKNOWN_ID and receipt.detail["already_posted"] is True
    assert remote.destroyed() == [posted.remote_id] and remote.live() == [fix.payload["status"]]
    # While an ordinary (non-reconciling) repeat is refused as a duplicate
    with pytest.raises(ContentRejected, match="duplicate"):
        channel.update(fix, trial.attempt(remote_id=posted.remote_id))


# -- tokens --------------------------------------------------------------------------------------

def test_an_expired_token_fails_fast_without_calling_weibo(trial, remote):
    channel = trial.channel(token_expires_at=T0 - timedelta(seconds=1))
    assert channel.describe()["token_expired"] is True
    r = trial.rendition(channel)  # render does not care
    with pytest.raises(AuthInvalid, match="re-authorised"):
        channel.deliver(r, trial.attempt())
    with pytest.raises(AuthInvalid, match="re-authorised"):
        channel.retract(r, trial.attempt(remote_id="4900000000000001"))
    assert remote.ledger.requests() == []
    # A token still valid at the port's clock is used
    channel = trial.channel(token_expires_at=T0 + timedelta(seconds=1))
    channel.deliver(trial.rendition(channel), trial.attempt())
    assert len(remote.posts()) == 1


async def _echo_token(scope: Any, receive: Any, send: Any) -> None:
    """A server that echoes the caller's token in its error text."""
    while (await receive()).get("more_body"):
        pass
    body = json.dumps({"request": scope["path"], "error_code": 21332,
                       "error": f"invalid_access_token {TOKEN}"}).encode()
    await send({"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def test_the_access_token_never_appears_in_errors_logs_or_repr(trial, remote, caplog):
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    def failure(call: Callable[[], Any]) -> None:
        with pytest.raises(Exception) as caught:
            call()
        seen.extend([str(caught.value), repr(caught.value), caught.value.message])

    channel = trial.channel(timeout=0.5)
    r = trial.rendition(channel)
    seen += [repr(channel.settings), str(channel.settings), channel.settings.model_dump_json(),
             repr(channel.settings.model_dump()), json.dumps(channel.describe()), r.to_json()]
    channel.deliver(r, trial.attempt())                                                  # success
    failure(lambda: channel.deliver(r, trial.attempt()))                                 # 20019
    remote.emu.faults.update(hang=True, hang_seconds=10)
    failure(lambda: channel.deliver(trial.rendition(channel, slug="b"), trial.attempt()))  # timeout
    remote.emu.faults.clear()
    remote.emu.expire_token(TOKEN)
    failure(lambda: channel.deliver(r, trial.attempt()))                                 # 21327
    failure(lambda: trial.channel(token_expires_at=T0).deliver(r, trial.attempt()))     # expired locally
    remote.slot.app = _echo_token
    failure(lambda: channel.deliver(r, trial.attempt()))                                 # echoed by the server
    failure(lambda: channel.retract(r, trial.attempt(remote_id="4900000000000001")))
    assert len(seen) == 24 and any("invalid_access_token ***" in s for s in seen)
    for text in [*seen, caplog.text, *(str(vars(record)) for record in caplog.records)]:
        assert TOKEN not in text


# -- every vendor answer classified --------------------------------------------------------------

def forced(code: int, **emulator) -> Callable[[Trial], tuple[WeiboChannel, Rendition]]:
    def arrange(t: Trial):
        for key, value in emulator.items():
            setattr(t.remote.emu.settings, key, value)
        t.remote.emu.faults.force(code, path=SHARE_PATH)
        ch = t.channel()
        return ch, t.rendition(ch)
    arrange.__name__ = f"forced_{code}"
    return arrange


def over_the_hourly_quota(t: Trial):
    t.remote.emu.settings.user_hourly_posts = 1
    ch = t.channel()
    ch.deliver(t.rendition(ch, slug="earlier", summary="较早的一条。"), t.attempt())
    return ch, t.rendition(ch)


def token_expired_on_weibo(t: Trial):
    t.remote.emu.expire_token(TOKEN)
    ch = t.channel()
    return ch, t.rendition(ch)


def garbage_token(t: Trial, **emulator):
    for key, value in emulator.items():
        setattr(t.remote.emu.settings, key, value)
    ch = t.channel(access_token="not-a-real-token")
    return ch, t.rendition(ch)


def status_over_140(t: Trial):
    ch = t.channel()
    r = t.rendition(ch)
    return ch, replace(r, payload={**r.payload, "status": "长" * 131 + " " + r.payload["link"]})


def posted_before(t: Trial):
    ch = t.channel()
    r = t.rendition(ch)
    ch.deliver(r, t.attempt())
    return ch, r


def bmp_sent_as_jpeg(t: Trial):
    data = b"BM" + bytes(200)
    sha = hashlib.sha256(data).hexdigest()
    t.media.blobs[sha] = data
    ch = t.channel()
    r = t.rendition(ch)
    return ch, replace(r, payload={**r.payload, "cover": {"sha256": sha, "mime": "image/jpeg"}}, assets=(sha,))


def link_off_the_safe_domain(t: Trial):
    ch = t.channel()
    r = t.rendition(ch)
    return ch, replace(r, payload={**r.payload, "status": "【通知】请看 https://elsewhere.cn/a.html"})


def weibo_down(t: Trial):
    t.remote.emu.faults.update(down="503")
    ch = t.channel()
    return ch, t.rendition(ch)


@pytest.mark.parametrize("arrange, expected, code, fragment", [
    (over_the_hourly_quota, RateLimited, 10024, "rate limit reached"),
    (forced(10022), RateLimited, 10022, "rate limit reached"),
    (forced(10023), RateLimited, 10023, "rate limit reached"),
    (forced(20016), RateLimited, 20016, "rate limit reached"),
    (token_expired_on_weibo, AuthInvalid, 21327, "must be re-authorised"),
    (garbage_token, AuthInvalid, 21332, "must be re-authorised"),
    (lambda t: garbage_token(t, error_code_as_string=True), AuthInvalid, 21332, "must be re-authorised"),
    (forced(21301), AuthInvalid, 21301, "must be re-authorised"),
    (forced(21315), AuthInvalid, 21315, "must be re-authorised"),
    (forced(21321), AuthInvalid, 21321, "unaudited"),
    (forced(10014), AuthInvalid, 10014, "lacks permission"),
    (status_over_140, ContentRejected, 20012, "too long"),
    (posted_before, ContentRejected, 20019, "duplicate"),
    (forced(20017), ContentRejected, 20017, "duplicate"),
    (forced(20021), ContentRejected, 20021, "a person must look"),
    (forced(20018), ContentRejected, 20018, "moderation"),
    (forced(20031), ContentRejected, 20031, "captcha"),
    (bmp_sent_as_jpeg, ContentRejected, 20005, "unsupported image type"),
    (forced(20006), ContentRejected, 20006, "image too large"),
    (forced(10016), ContentRejected, 10016, "bug"),
    (link_off_the_safe_domain, ContentRejected, 10017, "安全域名"),
    (weibo_down, Unavailable, 503, "HTTP 503"),
    (forced(10001), Unavailable, 10001, "failing or busy"),
    (forced(10009), Unavailable, 10009, "failing or busy"),
    (forced(29999), PermanentError, 29999, "unrecognised"),
], ids=lambda v: getattr(v, "__name__", None) if callable(v) else None)
def test_weibo_answers_are_classified(trial, remote, arrange, expected, code, fragment):
    channel, rendition = arrange(trial)
    posts_before = len(remote.posts())
    with pytest.raises(expected) as caught:
        channel.deliver(rendition, trial.attempt())
    exc = caught.value
    assert exc.code == code and f"[{code}]" in str(exc) and fragment in str(exc)
    if code in EMULATOR_TEXTS:  # the vendor's own text is part of the message
        assert EMULATOR_TEXTS[code].split("{")[0] in str(exc)
    if expected is RateLimited:
        assert exc.retry_after == 3600  # the conftest clock is on the hour: wait for the next window
    if expected is Unavailable:  # the share was sent, so it may have been posted: the retry reconciles
        assert isinstance(exc, OutcomeUnknown)
    permanent = issubclass(expected, PermanentError)
    assert isinstance(exc, PermanentError) == permanent and isinstance(exc, TransientError) != permanent
    assert len(remote.posts()) == posts_before  # nothing was posted by the failing call


@pytest.mark.parametrize("clock, wait", [
    (datetime(2026, 11, 25, 8, 0, 0, tzinfo=timezone.utc), 3600),
    (datetime(2026, 11, 25, 8, 45, 0, tzinfo=timezone.utc), 900),
    (datetime(2026, 11, 25, 8, 59, 30, tzinfo=timezone.utc), 60),  # at least a minute
])
def test_rate_limits_wait_for_the_next_hourly_window(trial, remote, ports, clock, wait):
    trial.ports = replace(ports, clock=lambda: clock)
    remote.emu.faults.force(10024, path=SHARE_PATH)
    channel = trial.channel()
    with pytest.raises(RateLimited) as caught:
        channel.deliver(trial.rendition(channel), trial.attempt())
    assert caught.value.retry_after == wait
