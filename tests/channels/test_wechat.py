"""The WeChat channel over real HTTP against the WeChat OA emulator (contract §1).

Each test plugs a fresh `WeChatEmulator` into one uvicorn server started for this module. The plug
also adds the per-path faults the emulator's own fault settings cannot express (an HTTP status,
or an answer lost *after* the call was applied, for one path only) and hooks that run when a path
is called, so a token can expire in the middle of a run.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import json
import logging
import re
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jinja2
import pytest
from PIL import Image
from pydantic import ValidationError
from wechatpy.crypto import WeChatCrypto

from channels.base import AssetRef, Attempt, Receipt, RenderContext, Rendition, capabilities
from channels.errors import (AuthInvalid, ContentRejected, DeliveryError, NotFound, OutcomeUnknown, PermanentError,
                             RateLimited, Unavailable)
from channels.wechat import CallbackResult, WeChatChannel
from syndicator.config import format_validation_error
from syndicator.emulators import EmulatorServer, WeChatEmulator, WeChatSettings
from syndicator.tokens import FileTokenCache, RedisTokenCache

REPO = Path(__file__).resolve().parents[2]
RID = re.compile(r"rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}")
CALLBACK_TOKEN = "cb-token-7f3a9c"
#: Client timeout for tests that lose an answer on purpose, and how long the plug holds that answer.
SHORT_TIMEOUT, HOLD = 0.5, 1.0


class Plug:
    """ASGI app forwarding to the current test's emulator, plus path-scoped faults and hooks."""

    def __init__(self) -> None:
        self.app: Any = None
        self.status: dict[str, list[int]] = {}
        self.hold: dict[str, int] = {}
        #: path → (call numbers, function run before that call is handled).
        self.hooks: dict[str, tuple[set[int], Any]] = {}
        self.calls: dict[str, int] = {}

    def reset(self, app: Any) -> None:
        self.app, self.status, self.hold, self.hooks, self.calls = app, {}, {}, {}, {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        self.calls[path] = n = self.calls.get(path, 0) + 1
        at, hook = self.hooks.get(path, (set(), None))
        if n in at:
            hook()
        if self.status.get(path):
            code = self.status[path].pop(0)
            body = f"<html><body><h1>{code}</h1>nginx</body></html>".encode()
            await send({"type": "http.response.start", "status": code,
                        "headers": [(b"content-type", b"text/html"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        if self.hold.get(path):
            self.hold[path] -= 1
            held: list[Any] = []

            async def keep(message: Any) -> None:
                held.append(message)
            await self.app(scope, receive, keep)  # applied by the emulator …
            await asyncio.sleep(HOLD)  # … and answered only after the client gave up
            try:
                for message in held:
                    await send(message)
            except Exception:  # noqa: BLE001 - the client is gone
                pass
            return
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def plugged():
    plug = Plug()
    server = EmulatorServer(plug)
    base = server.start()
    yield plug, base
    server.stop()


@pytest.fixture
def emu(plugged):
    plug, _ = plugged
    emulator = WeChatEmulator(WeChatSettings(publish_delay=0.2, callback_token=CALLBACK_TOKEN, callback_timeout=2.0))
    plug.reset(emulator.app)
    yield emulator
    emulator.stopping.set()
    plug.reset(None)


@pytest.fixture
def plug(plugged):
    return plugged[0]


@pytest.fixture
def wports(ports, tmp_path):
    return dataclasses.replace(ports, tokens=FileTokenCache(tmp_path / "tokens"))


@pytest.fixture
def make_channel(emu, plugged, wports):
    def make(ports=None, **overrides) -> WeChatChannel:
        settings = {"api_base": plugged[1] + "/", "appid": emu.settings.appid, "secret": emu.settings.secret,
                    "callback_token": CALLBACK_TOKEN, "timeout": 5, **overrides}
        return WeChatChannel("wechat_main", WeChatChannel.Settings.model_validate(settings), ports or wports)
    return make


@pytest.fixture
def article(make_snapshot, media):
    """An article with a cover, a JPEG and a PNG in the body, an outside link and an outside image."""
    def make(**over):
        cover, photo, chart = media.add_image("teal"), media.add_image("red"), media.add_image("navy", fmt="PNG")
        body = (f'<p class="lead">全省各地<a href="https://www.mca.gov.cn/notice">民政部通知</a>要求，'
                f'<a href="https://mp.weixin.qq.com/s/AbC">往期回顾</a>。</p><style>p{{color:red}}</style>'
                f'<img src="asset:{photo.sha256}" alt="现场"><p>救助标准见下图。</p>'
                f'<img src="asset:{chart.sha256}" alt="图表"><img src="https://cdn.example.com/x.jpg">')
        return make_snapshot(**{"cover": cover, "assets": (photo, chart), "body_html": body, **over})
    return make


def attempt(media, reconcile=False, remote_id=None, held_ids=()) -> Attempt:
    return Attempt(delivery_id=1, number=1, reconcile=reconcile, remote_id=remote_id, media=media,
                   held_ids=tuple(held_ids))


def render(channel: WeChatChannel, snapshot) -> Rendition:
    return channel.render(snapshot, RenderContext(now=channel.ports.clock(), ports=channel.ports))


def posted(emu: WeChatEmulator, path: str) -> list[dict]:
    """JSON bodies of the requests the emulator received at `path`."""
    return [json.loads(r["body"]) for r in emu.ledger.requests(path="/cgi-bin/" + path)]


def published(emu: WeChatEmulator) -> list[dict]:
    """Jobs that ended with a live article."""
    return [e for e in emu.ledger.effects(op="freepublish/finish") if e["body"]["publish_status"] == 0]


def settle(channel: WeChatChannel, emu: WeChatEmulator, rendition: Rendition, media, job: Receipt) -> Receipt:
    emu.ledger.wait_for("freepublish/finish", where=lambda e: e["id"] == job.remote_id, timeout=5)
    return channel.poll(rendition, attempt(media, remote_id=job.remote_id))


# -- render ---------------------------------------------------------------------------------------
def test_render_makes_wechat_html_with_markers_and_a_reconciliation_marker(make_channel, article, ports):
    # The template environment as syndicator.runtime builds it; no token cache: render needs no I/O.
    strict = jinja2.Environment(loader=jinja2.FileSystemLoader(REPO / "templates"), autoescape=True,
                                undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    channel = make_channel(ports=dataclasses.replace(ports, templates=strict))
    snap = article(revision=2, correction_note="更正了救助标准的数字。")
    r = render(channel, snap)
    p = r.payload
    assert Rendition.from_json(r.to_json()) == r and render(channel, snap) == r
    # Inline styles only; stored images stay markers; outside image and <style> are gone.
    assert "class=" not in p["content"] and "<style" not in p["content"] and 'style="' in p["content"]
    assert re.findall(r'src="([^"]+)"', p["content"]) == [f"asset:{a.sha256}" for a in snap.assets]
    assert "cdn.example.com" not in p["content"]
    # The outside link becomes text with its address; the WeChat link stays a link.
    assert "民政部通知（https://www.mca.gov.cn/notice）" in p["content"]
    assert 'href="https://www.mca.gov.cn' not in p["content"]
    assert 'href="https://mp.weixin.qq.com/s/AbC"' in p["content"]
    assert "更正说明" in p["content"] and "更正了救助标准的数字。" in p["content"]
    assert p["content_source_url"] == "http://127.0.0.1:8470/m/a/2026-winter-relief.html?sid=wechat_main-a1-r2"
    assert p["title"] == snap.title and p["digest"] == snap.summary and p["author"] == "张明"
    assert p["rejected"] == [] and p["cover"]["sha256"] == snap.cover.sha256
    assert set(r.assets) == {snap.cover.sha256, *(a.sha256 for a in snap.assets)}
    assert any("turned into text" in w for w in r.warnings) and any("cdn.example.com" in w for w in r.warnings)


def test_first_revision_has_no_correction_notice_and_settings_author_wins(make_channel, article):
    p = render(make_channel(author="省民政厅", source_base="https://wx.mz.example.cn/m/a"), article()).payload
    assert "更正说明" not in p["content"] and p["author"] == "省民政厅"
    assert p["content_source_url"] == "https://wx.mz.example.cn/m/a/2026-winter-relief.html?sid=wechat_main-a1-r1"


# -- deliver, poll ----------------------------------------------------------------------------------
def test_happy_path_uploads_images_creates_the_draft_submits_and_polls_to_the_article(make_channel, article, media,
                                                                                      emu):
    channel = make_channel()
    snap = article()
    r = render(channel, snap)
    job = channel.deliver(r, attempt(media))
    assert job.pending and job.remote_id == emu.ledger.last("freepublish/submit")["id"]
    # Given the images were uploaded with uploadimg and the cover as permanent image material …
    urls = [e["id"] for e in emu.ledger.effects(op="media/uploadimg")]
    assert len(urls) == 2 and all(u.startswith("http://mmbiz.qpic.cn/") for u in urls)
    assert [e["body"]["sha256"] for e in emu.ledger.effects(op="media/uploadimg")] == [a.sha256 for a in snap.assets]
    material = emu.ledger.effects(op="material/add_material")
    assert len(material) == 1 and material[0]["body"]["type"] == "image"
    assert material[0]["body"]["sha256"] == snap.cover.sha256
    # … the draft carries the validated fields with <img src> rewritten to the mmbiz URLs.
    [sent] = posted(emu, "draft/add")
    item = sent["articles"][0]
    assert re.findall(r'src="([^"]+)"', item["content"]) == urls and "asset:" not in item["content"]
    assert {k: item[k] for k in ("title", "author", "digest", "need_open_comment")} == {
        "title": snap.title, "author": "张明", "digest": snap.summary, "need_open_comment": 0}
    assert item["thumb_media_id"] == material[0]["id"] and item["content_source_url"].endswith("?sid=wechat_main-a1-r1")
    assert posted(emu, "freepublish/submit") == [{"media_id": emu.ledger.last("draft/add")["id"]}]
    # When polled while publishing, then after the job finished
    assert channel.poll(r, attempt(media, remote_id=job.remote_id)) == Receipt(remote_id=job.remote_id, pending=True)
    final = settle(channel, emu, r, media, job)
    # Then the receipt names the article and its URL
    finish = emu.ledger.last("freepublish/finish")["body"]
    assert not final.pending and final.remote_id == finish["article_id"]
    assert final.remote_url == finish["article_urls"][0]


def test_images_and_cover_are_uploaded_once_across_deliveries(make_channel, article, media, emu):
    channel = make_channel()
    first = article()
    second = article(article_id=2, slug="second", title="第二篇")  # same image bytes
    for snap in (first, second):
        channel.deliver(render(channel, snap), attempt(media))
    assert emu.ledger.count(op="media/uploadimg") == 2 and emu.ledger.count(op="material/add_material") == 1
    a, b = (d["articles"][0] for d in posted(emu, "draft/add"))
    assert re.findall(r'src="([^"]+)"', a["content"]) == re.findall(r'src="([^"]+)"', b["content"])
    assert a["thumb_media_id"] == b["thumb_media_id"]


def test_a_cover_deleted_from_the_material_library_is_uploaded_again_once(make_channel, article, media, emu):
    channel = make_channel()
    channel.deliver(render(channel, article()), attempt(media))
    emu.materials.clear()  # someone cleaned up the library on mp.weixin.qq.com
    job = channel.deliver(render(channel, article(article_id=2, slug="b")), attempt(media))
    assert job.pending
    assert emu.ledger.count(op="material/add_material") == 2 and emu.ledger.count(op="draft/add") == 2
    assert len(emu.ledger.requests(path="/cgi-bin/draft/add")) == 3


def test_default_cover_is_used_for_a_coverless_article(make_channel, make_snapshot, media, emu, tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (90, 50), "green").save(buf, "JPEG")
    (tmp_path / "cover.jpg").write_bytes(buf.getvalue())
    channel = make_channel(default_cover=str(tmp_path / "cover.jpg"))
    r = render(channel, make_snapshot())
    assert channel.deliver(r, attempt(media)).pending
    assert emu.ledger.last("material/add_material")["body"]["sha256"] == hashlib.sha256(buf.getvalue()).hexdigest()


@pytest.mark.parametrize("status,meaning", [(2, "原创校验失败"), (3, "常规失败"), (4, "平台审核不通过")])
def test_failed_publish_jobs_are_content_rejected(make_channel, article, media, emu, status, meaning):
    channel = make_channel()
    emu.next_publish_outcome(status, [1])
    r = render(channel, article())
    job = channel.deliver(r, attempt(media))
    with pytest.raises(ContentRejected, match=meaning) as info:
        settle(channel, emu, r, media, job)
    assert job.remote_id in str(info.value) and ("fail_idx 1" in str(info.value) or status == 3)


def test_retract_deletes_index_1_only_then_succeeds_again_and_the_job_reads_as_removed(make_channel, article,
                                                                                       media, emu):
    channel = make_channel()
    r = render(channel, article())
    job = channel.deliver(r, attempt(media))
    final = settle(channel, emu, r, media, job)
    # When retracted twice
    first = channel.retract(r, attempt(media, remote_id=final.remote_id))
    second = channel.retract(r, attempt(media, remote_id=final.remote_id))
    # Then only index 1 was ever asked for, the second answer (53600) counts as done …
    assert posted(emu, "freepublish/delete") == [{"article_id": final.remote_id, "index": 1}] * 2
    assert [e["body"]["index"] for e in emu.ledger.effects(op="freepublish/delete")] == [1]
    assert first.remote_id == second.remote_id == final.remote_id
    assert first.detail == {"deleted": [final.remote_id], "already_gone": [], "deleted_index": 1}
    assert second.detail == {"deleted": [], "already_gone": [final.remote_id], "deleted_index": 1}
    # … and polling the old job says it was removed remotely.
    with pytest.raises(NotFound, match="removed remotely.*deleted"):
        channel.poll(r, attempt(media, remote_id=job.remote_id))


def test_a_banned_article_reads_as_removed(make_channel, article, media, emu):
    channel = make_channel()
    r = render(channel, article())
    job = channel.deliver(r, attempt(media))
    settle(channel, emu, r, media, job)
    emu.ban(job.remote_id)
    with pytest.raises(NotFound, match="系统封禁"):
        channel.poll(r, attempt(media, remote_id=job.remote_id))


# -- corrections (update) -----------------------------------------------------------------------------
NOTE = "第三段救助标准由每月500元更正为每月550元。"
#: 14:15 in Shanghai, when the correction was made.
REVISED = datetime(2026, 11, 25, 6, 15, tzinfo=timezone.utc)


def corrected(article, revision=2, **over):
    return article(revision=revision, content_hash=f"h{revision}", correction_note=NOTE, revised_at=REVISED, **over)


def published_original(channel, emu, media, snap) -> Receipt:
    r = render(channel, snap)
    return settle(channel, emu, r, media, channel.deliver(r, attempt(media)))


def remote_article(channel, article_id: str) -> dict:
    """What freepublish/getarticle says about one published article (its only news item)."""
    return channel._api().call("freepublish/getarticle", {"article_id": article_id})["news_item"][0]


def test_republish_deletes_index_1_of_the_old_article_and_publishes_the_correction_anew(make_channel, article,
                                                                                        media, emu):
    channel = make_channel()
    old = published_original(channel, emu, media, article())
    r = render(channel, corrected(article))
    # When the correction is applied to the article the channel holds
    job = channel.update(r, attempt(media, remote_id=old.remote_id))
    # Then the old article was deleted, index 1 only, before the corrected draft was made …
    assert job.pending and job.detail["replaced"] == old.remote_id
    assert posted(emu, "freepublish/delete") == [{"article_id": old.remote_id, "index": 1}]
    [deleted] = emu.ledger.effects(op="freepublish/delete")
    assert deleted["id"] == old.remote_id and deleted["body"]["index"] == 1
    assert deleted["seq"] < emu.ledger.last("draft/add")["seq"]
    assert remote_article(channel, old.remote_id)["is_deleted"] is True
    # … the new article carries the correction notice at the top and the new revision's marker …
    item = posted(emu, "draft/add")[-1]["articles"][0]
    assert item["content"].index("更正说明（2026-11-25 14:15）：") < item["content"].index("全省各地")
    assert NOTE in item["content"] and item["content_source_url"].endswith("?sid=wechat_main-a1-r2")
    assert "asset:" not in item["content"] and item["title"] == article().title
    assert posted(emu, "freepublish/submit")[-1] == {"media_id": emu.ledger.last("draft/add")["id"]}
    # … and the finished job names a new article at a new URL.
    new = settle(channel, emu, r, media, job)
    assert not new.pending and new.remote_id != old.remote_id and new.remote_url != old.remote_url
    assert new.remote_url.startswith("http://mp.weixin.qq.com/s/")
    assert NOTE in remote_article(channel, new.remote_id)["content"]
    assert [p["body"]["article_id"] for p in published(emu)] == [old.remote_id, new.remote_id]


def test_republish_without_a_remote_id_deletes_the_earlier_revision_found_by_its_marker(make_channel, article,
                                                                                       media, emu):
    channel = make_channel()
    old = published_original(channel, emu, media, article())
    other = published_original(channel, emu, media, article(article_id=7, slug="other"))  # newer, another article
    job = channel.update(render(channel, corrected(article)), attempt(media, remote_id=None))
    assert job.pending and job.detail["replaced"] == old.remote_id
    assert posted(emu, "freepublish/delete") == [{"article_id": old.remote_id, "index": 1}]
    assert remote_article(channel, other.remote_id)["is_deleted"] is False


def test_republish_refuses_rejected_content_before_deleting_anything(make_channel, article, media, emu):
    channel = make_channel()
    r = render(channel, corrected(article, title="省" * 33))
    with pytest.raises(ContentRejected, match="title has 33 characters"):
        channel.update(r, attempt(media, remote_id="AnyOldArticleId"))
    assert emu.ledger.requests() == []


@pytest.mark.parametrize("lost", ["submit answer", "draft/add answer", "draft/add busy"])
def test_reconcile_after_a_crash_during_republish_deletes_once_and_publishes_once(make_channel, article, media, emu,
                                                                                  plug, lost):
    old = published_original(make_channel(), emu, media, article())
    emu.settings.publish_delay = 1.0
    channel = make_channel(timeout=SHORT_TIMEOUT)
    r = render(channel, corrected(article))
    # Given the first attempt deleted the old article and then failed
    if lost == "submit answer":  # submitted, but the answer never arrived
        plug.hold["/cgi-bin/freepublish/submit"] = 1
    elif lost == "draft/add answer":  # the draft was made, but the answer never arrived
        plug.hold["/cgi-bin/draft/add"] = 1
    else:  # nothing of the new revision exists remotely
        emu.faults.force(-1, path="/cgi-bin/draft/add")
    with pytest.raises(OutcomeUnknown if "answer" in lost else Unavailable):
        channel.update(r, attempt(media, remote_id=old.remote_id))
    assert emu.ledger.count(op="freepublish/delete") == 1
    # When the retry reconciles (once more if the job was still running)
    retry = attempt(media, reconcile=True, remote_id=old.remote_id)
    if lost == "submit answer":
        with pytest.raises(OutcomeUnknown, match="still be running"):
            channel.update(r, retry)
        emu.ledger.wait_for("freepublish/finish", count=2, timeout=5)
        final = channel.update(r, retry)
    else:
        final = settle(channel, emu, r, media, channel.update(r, retry))
    # Then the old article was deleted once, the new revision published once
    new = [p["body"]["article_id"] for p in published(emu)]
    assert len(new) == 2 and new[0] == old.remote_id and final.remote_id == new[1] and not final.pending
    assert emu.ledger.count(op="freepublish/delete") == 1 and emu.ledger.count(op="freepublish/submit") == 2
    assert emu.ledger.count(op="draft/add") == 2
    deletes = posted(emu, "freepublish/delete")
    assert deletes == [{"article_id": old.remote_id, "index": 1}] * (2 if lost == "draft/add busy" else 1)
    assert final.remote_url == remote_article(channel, final.remote_id)["url"]


def test_notice_mode_keeps_the_original_and_publishes_a_notice_linking_to_it(make_channel, article, media, emu):
    channel = make_channel(correction="notice")
    title = "省民政厅部署全省冬春困难群众救助工作要求各市州摸清底数确保温暖过冬"[:32]
    assert len(title) == 32  # the longest title WeChat takes; the notice must shorten it
    old = published_original(channel, emu, media, article(title=title))
    r = render(channel, corrected(article, title=title))
    job = channel.update(r, attempt(media, remote_id=old.remote_id))
    # Then nothing was deleted and the notice is a new article …
    assert job.pending and posted(emu, "freepublish/delete") == []
    assert posted(emu, "freepublish/getarticle") == [{"article_id": old.remote_id}]
    item = posted(emu, "draft/add")[-1]["articles"][0]
    assert item["title"] == "「更正」" + title[:27] + "…" and len(item["title"]) == 32
    assert NOTE in item["content"] and "2026-11-25 14:15" in item["content"] and "2026年11月25日" in item["content"]
    # … linking to the original article, with its own marker and the article's cover
    assert re.findall(r'href="([^"]+)"', item["content"]) == [old.remote_url]
    assert "全省各地" not in item["content"] and item["content_source_url"].endswith("?sid=wechat_main-a1-r2-notice")
    assert item["thumb_media_id"] == emu.ledger.last("material/add_material")["id"]
    notice = settle(channel, emu, r, media, job)
    assert notice.remote_id != old.remote_id and notice.remote_url != old.remote_url
    assert remote_article(channel, old.remote_id)["is_deleted"] is False
    # A second correction, handed the notice as what the channel holds, still links to the original
    r3 = render(channel, corrected(article, revision=3, title=title))
    channel.update(r3, attempt(media, remote_id=notice.remote_id))
    item = posted(emu, "draft/add")[-1]["articles"][0]
    assert re.findall(r'href="([^"]+)"', item["content"]) == [old.remote_url]
    assert item["content_source_url"].endswith("-r3-notice") and emu.ledger.count(op="freepublish/delete") == 0


def test_notice_mode_without_a_live_original_is_not_found(make_channel, article, media, emu):
    channel = make_channel(correction="notice")
    old = published_original(channel, emu, media, article())
    channel.retract(render(channel, article()), attempt(media, remote_id=old.remote_id))
    with pytest.raises(NotFound, match="nothing to link to"):
        channel.update(render(channel, corrected(article)), attempt(media, remote_id=old.remote_id))
    assert emu.ledger.count(op="draft/add") == 1 and emu.ledger.count(op="freepublish/submit") == 1


def live_articles(emu: WeChatEmulator) -> list[str]:
    """article_ids of the published messages still up (status 0) on the emulator."""
    return [a for a, job in emu.publisher.by_article.items() if job.status == 0]


def test_retract_after_notice_corrections_deletes_the_notices_and_the_original(make_channel, article, media, emu):
    # Given an article corrected twice in "notice" mode: the original and two 「更正」 notices are up
    channel = make_channel(correction="notice")
    old = published_original(channel, emu, media, article())
    notices = []
    for revision in (2, 3):
        r = render(channel, corrected(article, revision=revision))
        newest = notices[-1].remote_id if notices else old.remote_id
        notices.append(settle(channel, emu, r, media, channel.update(r, attempt(media, remote_id=newest))))
    held = (notices[1].remote_id, notices[0].remote_id, old.remote_id)  # newest first, as the core passes them
    assert sorted(live_articles(emu)) == sorted(held)
    # When the article is retracted with every id the channel holds
    r = render(channel, article(retraction_reason="撤稿"))
    receipt = channel.retract(r, attempt(media, remote_id=held[0], held_ids=held))
    # Then each of them was deleted, index 1 only, and nothing of the article is left up
    assert posted(emu, "freepublish/delete") == [{"article_id": a, "index": 1} for a in held]
    assert [e["id"] for e in emu.ledger.effects(op="freepublish/delete")] == list(held)
    assert live_articles(emu) == [] and all(remote_article(channel, a)["is_deleted"] for a in held)
    assert receipt.remote_id == held[0] and receipt.detail == {"deleted": list(held), "already_gone": [],
                                                               "deleted_index": 1}
    # And a retry (after a crash, say) finds them gone and succeeds without deleting anything again
    again = channel.retract(r, attempt(media, remote_id=held[0], held_ids=held))
    assert again.detail == {"deleted": [], "already_gone": list(held), "deleted_index": 1}
    assert emu.ledger.count(op="freepublish/delete") == 3


def test_a_retract_interrupted_after_the_notice_finishes_with_the_original(make_channel, article, media, emu):
    # Given an original and its notice, and a retract that deleted the notice before the worker died
    channel = make_channel(correction="notice")
    old = published_original(channel, emu, media, article())
    r = render(channel, corrected(article))
    notice = settle(channel, emu, r, media, channel.update(r, attempt(media, remote_id=old.remote_id)))
    channel._api().call("freepublish/delete", {"article_id": notice.remote_id, "index": 1})
    # When the retract is retried
    receipt = channel.retract(r, attempt(media, reconcile=True, remote_id=notice.remote_id,
                                         held_ids=(notice.remote_id, old.remote_id)))
    # Then the notice counts as gone and the original is deleted
    assert receipt.detail["already_gone"] == [notice.remote_id] and receipt.detail["deleted"] == [old.remote_id]
    assert live_articles(emu) == []


def test_retract_after_a_republish_deletes_the_new_article_and_finds_the_old_one_gone(make_channel, article,
                                                                                     media, emu):
    channel = make_channel()
    old = published_original(channel, emu, media, article())
    r = render(channel, corrected(article))
    new = settle(channel, emu, r, media, channel.update(r, attempt(media, remote_id=old.remote_id)))
    receipt = channel.retract(r, attempt(media, remote_id=new.remote_id, held_ids=(new.remote_id, old.remote_id)))
    assert receipt.detail == {"deleted": [new.remote_id], "already_gone": [old.remote_id], "deleted_index": 1}
    assert live_articles(emu) == [] and emu.ledger.count(op="freepublish/delete") == 2


def test_correction_strategy_follows_the_setting(make_channel, article):
    republish, notice = make_channel(), make_channel(correction="notice")
    assert (republish.correction_strategy(), notice.correction_strategy()) == ("republish", "notice")
    assert (republish.describe()["correction"], notice.describe()["correction"]) == ("republish", "notice")
    assert capabilities(WeChatChannel)["correction"] == "republish" and WeChatChannel.correction == "republish"
    # The rendition of a correction fixes the strategy for every attempt of its delivery
    assert render(notice, corrected(article)).payload["correction_strategy"] == "notice"
    assert "correction_strategy" not in render(notice, article()).payload
    with pytest.raises(ValidationError):
        make_channel(correction="in_place")


# -- callback -----------------------------------------------------------------------------------------
class CallbackRoute:
    """The core's web route in miniature: hands each push to `handle_callback` and answers its reply."""

    def __init__(self, channel: WeChatChannel) -> None:
        self.seen: list[tuple[dict[str, str], bytes, CallbackResult | DeliveryError]] = []
        self.cond = threading.Condition()
        route = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                query = dict(parse_qsl(urlsplit(self.path).query))
                try:
                    result: CallbackResult | DeliveryError = channel.handle_callback(query, body)
                    status, reply = 200, result.reply
                except DeliveryError as exc:
                    result, status, reply = exc, 403, b"forbidden"
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
                with route.cond:
                    route.seen.append((query, body, result))
                    route.cond.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/wechat/callback"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def wait(self, count: int = 1) -> list[tuple[dict[str, str], bytes, Any]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.seen) >= count, 5), "no callback arrived"
            return list(self.seen)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("mode,status,fail_idx", [("plain", 0, None), ("aes", 0, None), ("aes", 2, [1, 2]),
                                                  ("plain", 4, [1])])
def test_publishjobfinish_push_is_verified_and_mapped_like_poll(make_channel, article, media, emu, mode, status,
                                                                fail_idx):
    aes = {"encoding_aes_key": emu.settings.encoding_aes_key} if mode == "aes" else {}
    channel = make_channel(**aes)
    route = CallbackRoute(channel)
    emu.settings.callback_url, emu.settings.callback_mode = route.url, mode
    if status:
        emu.next_publish_outcome(status, fail_idx)
    try:
        r = render(channel, article())
        job = channel.deliver(r, attempt(media))
        [(query, body, result)] = route.wait()
        [push] = emu.ledger.wait_for("callback/PUBLISHJOBFINISH")
    finally:
        route.close()
    assert push["ok"] is True and push["reply"] == "success"  # WeChat got its acknowledgement
    assert ("msg_signature" in query and b"<Encrypt>" in body) == (mode == "aes")
    assert isinstance(result, CallbackResult) and result.reply == b"success" and result.job_id == job.remote_id
    if status == 0:
        assert result.outcome == channel.poll(r, attempt(media, remote_id=job.remote_id))
        assert not result.outcome.pending and result.outcome.remote_url.startswith("http://mp.weixin.qq.com/s/")
    else:
        assert isinstance(result.outcome, ContentRejected)
        assert f"fail_idx {', '.join(map(str, fail_idx))}" in str(result.outcome)
        with pytest.raises(ContentRejected) as polled:
            channel.poll(r, attempt(media, remote_id=job.remote_id))
        assert str(polled.value) == str(result.outcome)
    # A forged or tampered push is refused
    forged = {**query, "signature": "0" * 40}
    with pytest.raises(AuthInvalid, match="signature"):
        channel.handle_callback(forged, body)
    if mode == "aes":
        with pytest.raises(AuthInvalid, match="msg_signature"):
            channel.handle_callback({**query, "msg_signature": "1" * 40}, body)
        with pytest.raises(AuthInvalid, match="plaintext"):
            channel.handle_callback({k: v for k, v in query.items() if k not in ("encrypt_type", "msg_signature")},
                                    body)
    else:
        with pytest.raises(AuthInvalid):
            make_channel(callback_token="another-token").handle_callback(query, body)


def signed(token: str, **extra: str) -> dict[str, str]:
    timestamp, nonce = "1764057600", "8675309"
    signature = hashlib.sha1("".join(sorted([token, timestamp, nonce])).encode()).hexdigest()
    return {"signature": signature, "timestamp": timestamp, "nonce": nonce, **extra}


def test_url_verification_and_other_events(make_channel, emu):
    channel = make_channel()
    assert channel.verify_url(signed(CALLBACK_TOKEN, echostr="4711")) == "4711"
    with pytest.raises(AuthInvalid):
        channel.verify_url(signed("wrong", echostr="4711"))
    with pytest.raises(AuthInvalid, match="not configured"):
        make_channel(callback_token=None).verify_url(signed(CALLBACK_TOKEN, echostr="1"))
    subscribe = b"<xml><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>"
    assert channel.handle_callback(signed(CALLBACK_TOKEN), subscribe) == CallbackResult(b"success", None, None)
    # Still publishing (status 1 is never pushed, but must not settle anything)
    busy = (b"<xml><MsgType>event</MsgType><Event>PUBLISHJOBFINISH</Event><PublishEventInfo>"
            b"<publish_id>2247503099</publish_id><publish_status>1</publish_status></PublishEventInfo></xml>")
    assert channel.handle_callback(signed(CALLBACK_TOKEN), busy) == CallbackResult(b"success", "2247503099", None)
    # Safe mode: an event encrypted for another appid is refused
    other = WeChatCrypto(CALLBACK_TOKEN, emu.settings.encoding_aes_key, "wxffffffffffffffff")
    enc = other.encrypt_message(busy.decode(), "8675309", "1764057600")
    msg_signature = re.search(r"<MsgSignature><!\[CDATA\[(\w+)", enc).group(1)
    encrypt = re.search(r"<Encrypt><!\[CDATA\[([^\]]+)", enc).group(1)
    body = f"<xml><ToUserName>gh_x</ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>".encode()
    safe = make_channel(encoding_aes_key=emu.settings.encoding_aes_key)
    with pytest.raises(AuthInvalid, match="another appid"):
        safe.handle_callback(signed(CALLBACK_TOKEN, encrypt_type="aes", msg_signature=msg_signature), body)


# -- reconciliation -----------------------------------------------------------------------------------
def test_reconcile_after_the_submit_answer_was_lost_publishes_exactly_once(make_channel, article, media, emu, plug):
    emu.settings.publish_delay = 1.0
    channel = make_channel(timeout=SHORT_TIMEOUT)
    r = render(channel, article())
    plug.hold["/cgi-bin/freepublish/submit"] = 1
    # Given freepublish/submit was applied but its answer never arrived
    with pytest.raises(OutcomeUnknown, match="freepublish/submit"):
        channel.deliver(r, attempt(media))
    assert emu.ledger.count(op="freepublish/submit") == 1
    # When the retry reconciles while the job still runs, it waits instead of creating another draft
    with pytest.raises(OutcomeUnknown, match="still be running"):
        channel.deliver(r, attempt(media, reconcile=True))
    emu.ledger.wait_for("freepublish/finish", timeout=5)
    found = channel.deliver(r, attempt(media, reconcile=True))
    # Then the published article is found by its marker: one draft, one submit, one article
    assert not found.pending and found.remote_id == published(emu)[0]["body"]["article_id"]
    assert found.remote_url == published(emu)[0]["body"]["article_urls"][0]
    assert emu.ledger.count(op="draft/add") == 1 and emu.ledger.count(op="freepublish/submit") == 1
    assert len(published(emu)) == 1


def test_reconcile_after_the_draft_add_answer_was_lost_submits_that_draft(make_channel, article, media, emu, plug):
    channel = make_channel(timeout=SHORT_TIMEOUT)
    r = render(channel, article())
    plug.hold["/cgi-bin/draft/add"] = 1
    with pytest.raises(OutcomeUnknown, match="draft/add"):
        channel.deliver(r, attempt(media))
    job = channel.deliver(r, attempt(media, reconcile=True))
    assert job.pending and job.detail["reused_draft"] is True
    assert job.detail["media_id"] == emu.ledger.last("draft/add")["id"]
    final = settle(channel, emu, r, media, job)
    assert emu.ledger.count(op="draft/add") == 1 and emu.ledger.count(op="freepublish/submit") == 1
    assert [p["body"]["article_id"] for p in published(emu)] == [final.remote_id]


def test_reconcile_with_nothing_left_behind_creates_the_article(make_channel, article, media, emu):
    channel = make_channel()
    other = render(channel, article(article_id=9, slug="other"))
    settle(channel, emu, other, media, channel.deliver(other, attempt(media)))  # a different marker
    r = render(channel, article())
    job = channel.deliver(r, attempt(media, reconcile=True))
    assert job.pending and job.detail["reused_draft"] is False
    assert emu.ledger.count(op="draft/add") == 2


def test_reconcile_pages_back_through_newer_published_messages(make_channel, article, make_snapshot, media, emu):
    channel = make_channel()
    ours = render(channel, article())
    job = channel.deliver(ours, attempt(media))
    cover = media.add_image("gray")
    for n in range(21):  # newer messages push ours to the second page of freepublish/batchget
        channel.deliver(render(channel, make_snapshot(article_id=500 + n, slug=f"n{n}", cover=cover)), attempt(media))
    emu.ledger.wait_for("freepublish/finish", count=22, timeout=5)
    found = channel.deliver(ours, attempt(media, reconcile=True))
    assert not found.pending and found.remote_id == settle(channel, emu, ours, media, job).remote_id
    assert [b["offset"] for b in posted(emu, "freepublish/batchget")] == [0, 20]
    assert emu.ledger.count(op="draft/add") == 22


# -- tokens ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cache", ["redis", "file"])
def test_eight_workers_fetch_one_token_per_expiry(make_channel, make_snapshot, media, emu, plug, wports, tmp_path,
                                                  request, cache):
    tokens = RedisTokenCache(request.getfixturevalue("redis_url")) if cache == "redis" else FileTokenCache(tmp_path)
    channel = make_channel(ports=dataclasses.replace(wports, tokens=tokens))
    cover = media.add_image("olive")
    failures: list[BaseException] = []

    def run_round(first_id: int) -> None:
        barrier = threading.Barrier(8)

        def work(n: int) -> None:
            try:
                r = render(channel, make_snapshot(article_id=first_id + n, slug=f"a{first_id + n}", cover=cover))
                barrier.wait()
                assert channel.deliver(r, attempt(media)).pending
            except BaseException as exc:  # noqa: BLE001
                failures.append(exc)
        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)

    # Given every token dies when the 4th draft of a round arrives (workers are mid-flight)
    plug.hooks["/cgi-bin/draft/add"] = ({4}, emu.expire_tokens)
    run_round(100)
    plug.calls["/cgi-bin/draft/add"] = 0
    run_round(200)
    assert not failures, failures
    # Then: one fetch at start, one per expiry — and every article was submitted
    assert len(emu.ledger.requests(path="/cgi-bin/stable_token")) == 3
    assert emu.ledger.count(op="draft/add") == 16
    assert emu.ledger.count(op="freepublish/submit") == 16 and emu.ledger.count(op="material/add_material") == 1


def test_a_token_rejected_again_after_one_refresh_is_auth_invalid_without_recursion(make_channel, article, media,
                                                                                   emu):
    channel = make_channel()
    emu.faults.force(40001, path="/cgi-bin/media/uploadimg", times=None)
    with pytest.raises(AuthInvalid, match="another process is rotating the token or the secret is wrong") as info:
        channel.deliver(render(channel, article()), attempt(media))
    assert "40001" in str(info.value) and RID.search(str(info.value))
    assert len(emu.ledger.requests(path="/cgi-bin/stable_token")) == 2
    assert len(emu.ledger.requests(path="/cgi-bin/media/uploadimg")) == 2


def test_classic_token_mode_uses_api_base_and_keeps_secrets_out_of_logs(make_channel, article, media, emu, caplog):
    caplog.set_level(logging.DEBUG)
    channel = make_channel(token_mode="classic")
    channel.deliver(render(channel, article()), attempt(media))
    assert [r["method"] for r in emu.ledger.requests(path="/cgi-bin/token")] == ["GET"]
    assert emu.ledger.requests(path="/cgi-bin/stable_token") == []
    token = emu.current["token"]
    assert "/cgi-bin/token" in caplog.text  # urllib3 did log the calls …
    assert emu.settings.secret not in caplog.text and token not in caplog.text  # … without the secrets


class RecordingCache(FileTokenCache):
    """The file token cache, noting the TTL of every value written."""

    def __init__(self, directory) -> None:
        super().__init__(directory)
        self.ttls: dict[str, float] = {}

    def set(self, key: str, value: str, ttl: float) -> None:
        self.ttls[key.split(":")[2]] = ttl
        super().set(key, value, ttl)


def test_token_lives_expires_in_minus_300s_and_uploads_are_remembered_for_long(make_channel, article, media, emu,
                                                                                wports, tmp_path):
    cache = RecordingCache(tmp_path / "recording")
    channel = make_channel(ports=dataclasses.replace(wports, tokens=cache), need_open_comment=True)
    channel.deliver(render(channel, article()), attempt(media))
    assert 7200 - 300 - 5 < cache.ttls["access_token"] <= 7200 - 300
    assert cache.ttls["uploadimg"] >= 30 * 86400 and cache.ttls["material"] >= 30 * 86400
    assert posted(emu, "draft/add")[0]["articles"][0]["need_open_comment"] == 1


# -- error mapping ------------------------------------------------------------------------------------------
CASES = [
    # (fault, path, expected class, message fragment, errcode shown)
    (-1, "draft/add", Unavailable, "system busy", True),
    (45009, "draft/add", RateLimited, "00:00 Asia/Shanghai", True),
    (45011, "media/uploadimg", RateLimited, "per-minute", True),
    (40164, "stable_token", AuthInvalid, "IP whitelist", True),
    (48001, "draft/add", AuthInvalid, "verified", True),
    (45166, "draft/add", ContentRejected, "hyperlinks outside mp.weixin.qq.com", True),
    (45003, "draft/add", ContentRejected, "title too long", True),
    (40005, "media/uploadimg", ContentRejected, "image ", True),
    (53503, "freepublish/submit", ContentRejected, "publish check", True),
    (53504, "freepublish/submit", PermanentError, "mp.weixin.qq.com", True),
    ("http:500", "material/add_material", Unavailable, "HTTP 500", False),
    ("http:502", "draft/add", OutcomeUnknown, "may have been applied", False),
]


@pytest.mark.parametrize("code,path,cls,fragment,errcode", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_vendor_answers_map_to_the_error_tree(make_channel, article, media, emu, plug, code, path, cls, fragment,
                                             errcode):
    channel = make_channel()
    if isinstance(code, str):
        plug.status["/cgi-bin/" + path] = [int(code.split(":")[1])]
    else:
        emu.faults.force(code, path="/cgi-bin/" + path)
    with pytest.raises(DeliveryError) as info:
        channel.deliver(render(channel, article()), attempt(media))
    exc = info.value
    assert type(exc) is cls and fragment in str(exc) and path in str(exc)
    if errcode:
        assert exc.code == code and f"errcode {code}" in str(exc) and RID.search(str(exc))
    if code == 45009:  # the test clock says 16:00 in Shanghai
        assert exc.retry_after == 8 * 3600
    if code == 45011:
        assert exc.retry_after == 60
    if code == 40005:
        assert re.search(r"image [0-9a-f]{16}\.jpg", str(exc))
    assert emu.ledger.count(op="freepublish/submit") == 0  # nothing was published


def test_unreachable_api_is_unavailable(make_channel, article, media, emu):
    channel = make_channel(api_base="http://127.0.0.1:9/")
    with pytest.raises(Unavailable, match="ConnectionError"):
        channel.deliver(render(channel, article()), attempt(media))


# -- limits, refused before anything is sent -------------------------------------------------------------------
def gif(media) -> AssetRef:
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), "blue").save(buf, "GIF")
    data = buf.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    media.blobs[sha] = data
    return AssetRef(sha256=sha, mime="image/gif", filename="anim.gif", size=len(data))


@pytest.mark.parametrize("case,limit", [
    ("title", "title has 33 characters; WeChat allows at most 32"),
    ("digest", "digest (summary) has 129 characters"),
    ("author", "author has 17 characters"),
    ("content", "content has 20"),
    ("big_image", "is 1048576 bytes; WeChat needs less than 1 MB"),
    ("gif", "is image/gif; WeChat takes JPEG or PNG"),
    ("lying_mime", "anim.gif (image/jpeg) is not a JPEG or PNG file"),
    ("no_cover", "no cover image"),
])
def test_over_limit_renditions_are_refused_before_any_request(make_channel, article, media, emu, case, limit):
    channel = make_channel()
    photo = media.add_image("maroon")
    over = {
        "title": {"title": "省" * 33}, "digest": {"summary": "摘" * 129}, "author": {"author": "作" * 17},
        "content": {"body_html": "<p>" + "字" * 20_000 + "</p>"},
        "big_image": {"assets": (dataclasses.replace(photo, size=1024 * 1024),),
                      "body_html": f'<img src="asset:{photo.sha256}">'},
        "no_cover": {"cover": None},
    }.get(case, {})
    if case == "gif":
        g = gif(media)
        over = {"assets": (g,), "body_html": f'<img src="asset:{g.sha256}">'}
    if case == "lying_mime":  # the stored metadata says JPEG, the bytes say otherwise
        g = gif(media)
        g = dataclasses.replace(g, mime="image/jpeg")
        over = {"assets": (g,), "body_html": f'<img src="asset:{g.sha256}">'}
    r = render(channel, article(**over))
    if case != "lying_mime":
        assert any(limit in w for w in r.warnings)
    with pytest.raises(ContentRejected, match=re.escape(limit)):
        channel.deliver(r, attempt(media))
    assert emu.ledger.requests() == []


# -- settings and secrets ---------------------------------------------------------------------------------------
def test_secrets_stay_out_of_repr_messages_and_validation_errors(make_channel, article, media, emu):
    secret, aes = emu.settings.secret, emu.settings.encoding_aes_key
    channel = make_channel(encoding_aes_key=aes, secret="wrong-secret-9d8e7f")
    shown = repr(channel.settings) + str(channel.settings) + channel.settings.model_dump_json()
    assert "wrong-secret-9d8e7f" not in shown and aes not in shown and CALLBACK_TOKEN not in shown
    # A wrong secret is reported without echoing it
    with pytest.raises(AuthInvalid, match="invalid appsecret") as info:
        channel.deliver(render(channel, article()), attempt(media))
    assert "wrong-secret-9d8e7f" not in str(info.value) and info.value.__cause__ is None
    # Classic mode puts the secret in the token URL; a failing connection must not echo it
    down = make_channel(api_base="http://127.0.0.1:9/", token_mode="classic")
    with pytest.raises(Unavailable) as info:
        down.deliver(render(down, article()), attempt(media))
    assert secret not in str(info.value) and "secret=***" in str(info.value) and info.value.__cause__ is None
    # A malformed key is refused without echoing it
    with pytest.raises(ValidationError) as bad:
        WeChatChannel.Settings.model_validate({"appid": "wx1", "secret": secret, "callback_token": "t",
                                               "encoding_aes_key": "short-but-secret-key"})
    assert "short-but-secret-key" not in str(bad.value)
    assert "short-but-secret-key" not in format_validation_error("config.yaml", bad.value, prefix="channels.wx")
    assert "43-character" in str(bad.value)


def test_settings_defaults_and_unknown_keys():
    s = WeChatChannel.Settings.model_validate({"appid": "wx1", "secret": "s"})
    assert (s.api_base, s.token_mode, s.timeout) == ("https://api.weixin.qq.com/", "stable", 15)
    assert s.need_open_comment is False and s.encoding_aes_key is None and s.author == ""
    with pytest.raises(ValidationError):
        WeChatChannel.Settings.model_validate({"appid": "wx1", "secret": "s", "colour": "red"})
    with pytest.raises(ValidationError):
        WeChatChannel.Settings.model_validate({"appid": "wx1", "secret": "s", "author": "作" * 17})
    assert s.correction == "republish"
    caps = capabilities(WeChatChannel)
    assert caps["settles_async"] and caps["reconcilable"] and caps["supports_retract"] and caps["supports_update"]
    assert (caps["max_title_chars"], caps["max_body_chars"]) == (32, 20_000)
