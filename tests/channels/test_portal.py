"""Portal channel: WordPress mode over real HTTP against the WordPress emulator (uploads once,
in-place update, trash/force retract, reconcile after an ambiguous create, the error table), and
generic mode against a small signed-webhook receiver."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
import traceback
from dataclasses import replace
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import pytest
import requests
from pydantic import ValidationError

from channels.base import AssetRef, Attempt, RenderContext
from channels.errors import (AuthInvalid, ContentRejected, NotFound, OutcomeUnknown, RateLimited,
                             Unavailable)
from channels.portal import PortalChannel, _classify, _retry_after
from syndicator.emulators.server import EmulatorServer
from syndicator.emulators.wordpress import WordPressEmulator, WordPressSettings, WPUser
from syndicator.tokens import FileTokenCache

PASSWORD = "abcd EFGH ijkl MNOP qrst UVWX"
#: The emulator's clock is set to the ports clock, so the fixture articles are not "future" posts.
NOW = datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)
HMAC_SECRET = "whsec-2b7e151628aed2a6abf71588"


class Slot:
    """ASGI app forwarding to the emulator the current test plugged in (one uvicorn per module)."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class Site:
    """One fresh WordPress emulator behind the module's server, and channels pointed at it."""

    def __init__(self, slot: Slot, url: str, ports: Any) -> None:
        self.slot, self.url, self.ports = slot, url, ports
        self.emulators: list[WordPressEmulator] = []
        self.start()

    def start(self, **settings: Any) -> WordPressEmulator:
        self.emu = WordPressEmulator(WordPressSettings(**settings))
        self.emu.clock.advance(NOW.timestamp() - time.time())
        self.slot.app = self.emu.app
        self.emulators.append(self.emu)
        return self.emu

    def channel(self, instance: str = "portal_main", **settings: Any) -> PortalChannel:
        values = {"base_url": self.url, "username": "editor", "app_password": PASSWORD, "timeout": 3, **settings}
        return PortalChannel(instance, PortalChannel.Settings(**values), self.ports)

    def posts(self) -> list[Any]:
        return [p for p in self.emu.items.values() if p.type == "post"]

    def uploads(self) -> list[str]:
        """sha256 of every file the site received as media, in order."""
        return [e["body"]["sha256"] for e in self.emu.ledger.effects("media/create")]


@pytest.fixture(scope="module")
def _server():
    slot = Slot()
    server = EmulatorServer(slot)
    server.start()
    yield slot, server.base_url
    server.stop()


@pytest.fixture
def ports(ports, tmp_path):
    """The shared ports, with a real (file-backed) token cache as every worker would share it."""
    return replace(ports, tokens=FileTokenCache(tmp_path / "tokens"))


@pytest.fixture
def site(_server, ports):
    s = Site(*_server, ports)
    yield s
    for emu in s.emulators:
        emu.faults.clear()  # releases requests a fault keeps hanging
        emu.stopping.set()


def attempt(media, reconcile: bool = False, remote_id: str | None = None) -> Attempt:
    return Attempt(delivery_id=7, number=1, reconcile=reconcile, remote_id=remote_id, media=media)


def run(channel: PortalChannel, article, media, op: str = "deliver", **kw):
    rendition = channel.render(article, RenderContext(now=NOW, ports=channel.ports))
    return getattr(channel, op)(rendition, attempt(media, **kw))


def illustrated(make_snapshot, media, article_id: int = 1, shared: AssetRef | None = None, **kw):
    """An article with a cover and one inline image (`shared`, if given)."""
    inline = shared or media.add_image("red")
    cover = media.add_image(("navy", "olive", "teal", "plum")[article_id % 4])
    return make_snapshot(article_id=article_id, cover=cover, assets=(inline,),
                         body_html=f'<p>图片：</p><img src="asset:{inline.sha256}" alt="现场">', **kw)


# -- settings ------------------------------------------------------------------------------------

def test_settings_minimal_defaults_and_redaction():
    s = PortalChannel.Settings.model_validate({"base_url": "https://portal.example.gov.cn/", "username": "u",
                                               "app_password": PASSWORD})
    assert (s.mode, s.base_url, s.status, s.delete, s.timeout, s.slug_prefix, s.rest_route) == \
        ("wordpress", "https://portal.example.gov.cn", "publish", "trash", 15, "s-", False)
    assert PASSWORD not in repr(s) and PASSWORD not in str(s) and PASSWORD not in s.model_dump_json()
    with pytest.raises(ValidationError):
        s.status = "draft"  # frozen
    g = PortalChannel.Settings(mode="generic", endpoint="https://cms.example.gov.cn/api/articles",
                               hmac_secret=HMAC_SECRET)
    assert HMAC_SECRET not in repr(g)


@pytest.mark.parametrize("bad", [
    {"username": "u", "app_password": "x"},                                     # no base_url
    {"base_url": "https://p.example", "username": "u"},                          # no app_password
    {"base_url": "https://p.example", "username": "u", "app_password": ""},
    {"base_url": "ftp://p.example", "username": "u", "app_password": "x"},
    {"base_url": "https://u:pw@p.example", "username": "u", "app_password": "x"},
    {"base_url": "https://p.example/?p=1", "username": "u", "app_password": "x"},
    {"base_url": "https://p.example", "username": "u", "app_password": "x", "slug_prefix": "文章-"},
    {"base_url": "https://p.example", "username": "u", "app_password": "x", "status": "future"},
    {"base_url": "https://p.example", "username": "u", "app_password": "x", "timeout": 0},
    {"base_url": "https://p.example", "username": "u", "app_password": "x", "colour": "red"},
    {"mode": "generic", "endpoint": "https://cms.example/api"},                  # no hmac_secret
    {"mode": "generic", "hmac_secret": "k"},                                     # no endpoint
])
def test_settings_reject_bad_values(bad):
    with pytest.raises(ValidationError):
        PortalChannel.Settings.model_validate(bad)


# -- render --------------------------------------------------------------------------------------

def test_render_payload(site, media, make_snapshot):
    article = illustrated(make_snapshot, media, article_id=42)
    inline = article.assets[0]
    body = article.body_html.replace(inline.sha256, inline.sha256.upper())  # case must not matter
    r = site.channel(status="pending").render(replace(article, body_html=body), RenderContext(NOW, site.ports))
    p = r.payload
    assert p["slug"] == "s-42" and p["status"] == "pending"
    assert p["title"] == article.title and p["excerpt"] == article.summary
    assert p["date_gmt"] == "2026-11-25T01:30:00"
    assert p["content"] == f'<p>图片：</p><img src="asset:{inline.sha256}" alt="现场">'
    assert p["cover"] == article.cover.sha256
    assert set(r.assets) == {inline.sha256, article.cover.sha256} == {m["sha256"] for m in p["media"]}
    assert r.warnings == ()


def test_render_correction_note_and_warnings(site, media, make_snapshot):
    missing = "e" * 64
    article = make_snapshot(revision=2, summary=" ", correction_note="第二段人数由“3人”更正为“5人”。<b>",
                            body_html=f'<p>正文</p><img src="asset:{missing}">')
    r = site.channel().render(article, RenderContext(NOW, site.ports))
    assert r.payload["content"] == ('<p class="correction"><strong>更正说明：</strong>'
                                    '第二段人数由“3人”更正为“5人”。&lt;b&gt;</p><p>正文</p>')
    assert r.payload["excerpt"] == "" and r.assets == ()
    assert any("summary is empty" in w for w in r.warnings)
    assert any(missing in w for w in r.warnings)
    silent = site.channel().render(replace(article, correction_note=None), RenderContext(NOW, site.ports))
    assert any("no correction note" in w for w in silent.warnings)


# -- WordPress: publish, media, update, retract ---------------------------------------------------

def test_deliver_creates_post_with_featured_media_and_rewritten_images(site, media, make_snapshot):
    # Given an article with a cover and an inline image
    article = illustrated(make_snapshot, media)
    inline, cover = article.assets[0], article.cover
    # When it is delivered
    receipt = run(site.channel(), article, media)
    # Then the site holds one published post with our slug, content, excerpt and featured image
    [post] = site.posts()
    assert receipt.remote_id == str(post.id) and receipt.remote_url == f"{site.url}/s-1/"
    assert (post.slug, post.status, post.title, post.excerpt) == ("s-1", "publish", article.title, article.summary)
    featured = site.emu.items[post.featured_media]
    assert featured.type == "attachment" and featured.extra["filesize"] == cover.size
    # and the inline image points at the uploaded file, which serves the same bytes
    assert "asset:" not in post.content
    src = post.content.split('src="')[1].split('"')[0]
    assert src.startswith(f"{site.url}/wp-content/uploads/2026/11/syn-{inline.sha256[:32]}")
    assert requests.get(src, timeout=3).content == media.blobs[inline.sha256]
    assert sorted(site.uploads()) == sorted([inline.sha256, cover.sha256])
    # and the API calls went to the /wp-json/ base
    api = site.emu.ledger.requests(path="/wp/v2/*")
    assert len(api) == 3 and {r["raw_path"].split("/wp/v2/")[0] for r in api} == {"/wp-json"}


def test_images_upload_once_across_articles_workers_and_redelivery(site, media, make_snapshot):
    # Given two articles sharing one inline image, and two workers sharing the token cache
    shared = media.add_image("red")
    first = illustrated(make_snapshot, media, article_id=1, shared=shared)
    second = illustrated(make_snapshot, media, article_id=2, shared=shared)
    worker_a, worker_b = site.channel(), site.channel()
    # When worker A delivers the first, worker B the second, and A redelivers the first (reconcile)
    run(worker_a, first, media)
    run(worker_b, second, media)
    run(worker_a, first, media, reconcile=True)
    # Then each distinct image reached the site exactly once, and both posts use the shared one
    assert sorted(site.uploads()) == sorted({shared.sha256, first.cover.sha256, second.cover.sha256})
    assert len(site.posts()) == 2
    sources = {p.content.split('src="')[1].split('"')[0] for p in site.posts()}
    assert len(sources) == 1


def test_two_workers_uploading_the_same_image_at_once_upload_it_once(site, media, make_snapshot):
    # Given two articles with the same image, a slow site, and two workers sharing the token cache
    shared = media.add_image("red")
    articles = [make_snapshot(article_id=i, assets=(shared,), body_html=f'<img src="asset:{shared.sha256}">')
                for i in (1, 2)]
    workers = [site.channel(), site.channel()]
    site.emu.faults.update(latency=0.15)
    # When both deliver at the same moment
    errors: list[BaseException] = []

    def deliver(worker, article):
        try:
            run(worker, article, media)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
    threads = [threading.Thread(target=deliver, args=pair) for pair in zip(workers, articles)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    # Then the image was uploaded once (the second worker waited on the per-image lock)
    assert errors == [] and len(site.posts()) == 2
    assert site.uploads() == [shared.sha256]


def test_image_deleted_on_the_site_is_uploaded_again(site, media, make_snapshot):
    article = illustrated(make_snapshot, media)
    run(site.channel(), article, media)
    gone = site.emu.items[site.posts()[0].featured_media]
    del site.emu.items[gone.id]  # an editor deleted the attachment in wp-admin
    run(site.channel(), article, media, reconcile=True)
    assert site.uploads().count(article.cover.sha256) == 2
    assert site.emu.items[site.posts()[0].featured_media].type == "attachment"


def test_update_in_place(site, media, make_snapshot):
    # Given a delivered post
    article = illustrated(make_snapshot, media)
    channel = site.channel()
    receipt = run(channel, article, media)
    before = site.posts()[0]
    modified, link = before.modified_gmt, receipt.remote_url
    site.emu.clock.advance(90)
    # When revision 2 (new title, a correction note, one more image) is sent as an update
    extra = media.add_image("gold")
    revised = replace(article, revision=2, title="（更正）" + article.title, correction_note="更正了时间。",
                      assets=(*article.assets, extra),
                      body_html=article.body_html + f'<img src="asset:{extra.sha256}">')
    updated = run(channel, revised, media, op="update", remote_id=receipt.remote_id)
    # Then the same post changed in place: same id and URL, modified bumped, note on top
    [post] = site.posts()
    assert (updated.remote_id, updated.remote_url, post.id) == (receipt.remote_id, link, before.id)
    assert post.modified_gmt > modified and post.title == revised.title and post.status == "publish"
    assert post.content.startswith('<p class="correction"><strong>更正说明：</strong>更正了时间。</p>')
    assert site.emu.ledger.count("posts/create") == 1 and site.emu.ledger.count("posts/update") == 1
    assert site.uploads().count(extra.sha256) == 1 and len(site.uploads()) == 3


def test_update_leaves_the_editorial_status_alone(site, media, make_snapshot):
    # Given a post delivered as a draft that an editor then published in wp-admin
    channel = site.channel(status="draft")
    receipt = run(channel, make_snapshot(), media)
    post = site.posts()[0]
    assert post.status == "draft"
    post.status = "publish"
    # When a correction arrives
    run(channel, make_snapshot(revision=2, correction_note="更正。"), media, op="update", remote_id=receipt.remote_id)
    # Then the correction is applied and the post stays published
    assert post.status == "publish" and post.content.startswith('<p class="correction">')


def test_update_of_a_post_deleted_on_the_site_is_not_found(site, media, make_snapshot):
    receipt = run(site.channel(), make_snapshot(), media)
    site.emu.items.pop(int(receipt.remote_id))
    with pytest.raises(NotFound, match="rest_post_invalid_id"):
        run(site.channel(), make_snapshot(revision=2), media, op="update", remote_id=receipt.remote_id)


def test_retract_trashes_and_a_second_retract_still_succeeds(site, media, make_snapshot):
    receipt = run(site.channel(), make_snapshot(), media)
    first = run(site.channel(), make_snapshot(), media, op="retract", remote_id=receipt.remote_id)
    [post] = site.posts()
    assert (post.status, post.slug) == ("trash", "s-1__trashed")
    assert first.detail["result"] == "trashed"
    again = run(site.channel(), make_snapshot(), media, op="retract", remote_id=receipt.remote_id)
    assert again.remote_id == receipt.remote_id and again.detail["code"] == "rest_already_trashed"
    assert site.emu.ledger.count("posts/trash") == 1


def test_retract_force_deletes(site, media, make_snapshot):
    receipt = run(site.channel(), make_snapshot(), media)
    channel = site.channel(delete="force")
    gone = run(channel, make_snapshot(), media, op="retract", remote_id=receipt.remote_id)
    assert gone.detail["result"] == "deleted"
    assert site.posts() == [] and site.emu.ledger.count("posts/delete") == 1
    again = run(channel, make_snapshot(), media, op="retract", remote_id=receipt.remote_id)
    assert again.detail["code"] == "rest_post_invalid_id"


def test_retract_without_remote_id_finds_the_post_by_slug(site, media, make_snapshot):
    run(site.channel(), make_snapshot(article_id=5), media)
    receipt = run(site.channel(), make_snapshot(article_id=5), media, op="retract")
    assert site.posts()[0].status == "trash" and receipt.remote_id == str(site.posts()[0].id)
    # once it is in the trash the slug lookup finds nothing, which counts as retracted
    assert run(site.channel(), make_snapshot(article_id=5), media, op="retract").detail == {"result": "absent"}


# -- WordPress: reconcile after an ambiguous create ----------------------------------------------

@pytest.mark.parametrize("fault", [
    {"hang": True, "hang_seconds": 5, "after_apply": True},     # applied, the answer never comes in time
    {"down": "drop", "after_apply": True},                       # applied, then the connection is cut
    {"down": "503", "after_apply": True},                        # applied, then a proxy answers 503
], ids=["timeout", "dropped", "proxy-503"])
def test_reconcile_after_ambiguous_create_does_not_double_post(site, media, make_snapshot, fault):
    # Given a site that applies the create but loses the answer
    article = make_snapshot()
    channel = site.channel(timeout=0.5)
    site.emu.faults.update(**fault)
    # When the create is attempted
    with pytest.raises(OutcomeUnknown, match="POST /wp/v2/posts"):
        run(channel, article, media)
    assert site.emu.ledger.count("posts/create") == 1
    # and the pipeline retries with reconcile once the site answers again
    site.emu.faults.clear()
    receipt = run(channel, article, media, reconcile=True)
    # Then there is still exactly one post, and the receipt names it
    [post] = site.posts()
    assert site.emu.ledger.count("posts/create") == 1 and site.emu.ledger.count("posts/update") == 1
    assert receipt.remote_id == str(post.id) and receipt.detail["reconciled"] is True and post.slug == "s-1"


def test_reconcile_when_nothing_was_created_creates_once(site, media, make_snapshot):
    receipt = run(site.channel(), make_snapshot(), media, reconcile=True)
    [post] = site.posts()
    assert receipt.remote_id == str(post.id) and "reconciled" not in receipt.detail
    lookups = site.emu.ledger.requests(path="/wp/v2/posts", method="GET")
    assert len(lookups) == 1 and "slug=s-1" in lookups[0]["query"] and "status=any" in lookups[0]["query"]


# -- WordPress: both REST bases -------------------------------------------------------------------

def test_rest_route_base_for_plain_permalinks(site, media, make_snapshot):
    # Given a site without pretty permalinks
    site.start(pretty_permalinks=False)
    article = illustrated(make_snapshot, media)
    # When the channel uses /wp-json/ it is told what to change
    with pytest.raises(AuthInvalid, match="try rest_route: true"):
        run(site.channel(), article, media)
    # and with rest_route: true everything goes through /?rest_route=
    receipt = run(site.channel(rest_route=True), article, media)
    [post] = site.posts()
    assert receipt.remote_url == f"{site.url}/?p={post.id}" and post.featured_media
    assert len(site.uploads()) == 2
    ok = [r for r in site.emu.ledger.requests() if r["status"] in (200, 201)]
    assert ok and all(r["raw_path"] == "/" and r["query"].startswith("rest_route=/wp/v2/") for r in ok)


# -- WordPress: the error table (contract §3.3) ---------------------------------------------------

def _svg_article(make_snapshot, media):
    data = b'<svg xmlns="http://www.w3.org/2000/svg"/>'
    sha = hashlib.sha256(data).hexdigest()
    media.blobs[sha] = data
    logo = AssetRef(sha256=sha, mime="image/svg+xml", filename="logo.svg", size=len(data))
    return make_snapshot(assets=(logo,), body_html=f'<img src="asset:{sha}">')


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def force(code, path="/wp/v2/posts*", method=None):
    return lambda emu: emu.faults.force(code, path=path, method=method)


HANG = lambda emu: emu.faults.update(hang=True, hang_seconds=5)  # noqa: E731
ERRORS: list[tuple[str, dict, dict, Callable | None, str, str, type, tuple[str, ...]]] = [
    # id, emulator settings, channel settings, fault, operation, article, error, message fragments
    ("wrong-password", {}, {"app_password": "aaaa bbbb cccc dddd eeee ffff"}, None, "deliver", "plain",
     AuthInvalid, ("incorrect_password", "invalid application password", "app_password")),
    ("unknown-user", {}, {"username": "nobody"}, None, "deliver", "plain",
     AuthInvalid, ("invalid_username", "Unknown username")),
    ("app-passwords-unavailable", {"environment_type": "production"}, {}, None, "deliver", "plain",
     AuthInvalid, ("HTTP 401 rest_cannot_create", "Application Passwords are unavailable", "Authorization header")),
    ("app-passwords-unavailable-on-lookup", {"environment_type": "production"}, {}, None, "reconcile", "plain",
     AuthInvalid, ("HTTP 401", "Application Passwords are unavailable")),
    ("403-cannot-publish", {"users": [WPUser(1, "editor", [PASSWORD], role="contributor")]}, {}, None, "deliver",
     "plain", AuthInvalid, ("HTTP 403 rest_cannot_publish", "not allowed to publish", "permission")),
    ("403-cannot-upload", {"users": [WPUser(1, "editor", [PASSWORD], role="subscriber")]}, {}, None, "deliver",
     "image", AuthInvalid, ("POST /wp/v2/media", "HTTP 403 rest_cannot_create")),
    ("400-invalid-param", {}, {}, force("rest_invalid_param"), "deliver", "plain",
     ContentRejected, ("HTTP 400 rest_invalid_param", "Injected rest_invalid_param.")),
    ("413-image-too-large-for-server", {"server_max_body": 500}, {}, None, "deliver", "image",
     ContentRejected, ("image red.jpeg", "HTTP 413", "Request Entity Too Large")),
    ("image-over-site-limit", {"max_upload_kb": 0}, {}, None, "deliver", "image",
     ContentRejected, ("image red.jpeg", "rest_upload_file_too_big", "This file is too big")),
    ("image-type-not-allowed", {}, {}, None, "deliver", "svg",
     ContentRejected, ("image logo.svg", "rest_upload_sideload_error", "not allowed to upload this file type")),
    ("412-upload-hash-mismatch", {}, {}, force(412, "/wp/v2/media"), "deliver", "image",
     Unavailable, ("POST /wp/v2/media", "HTTP 412")),
    ("502-on-upload", {}, {}, force(502, "/wp/v2/media"), "deliver", "image",
     Unavailable, ("POST /wp/v2/media", "HTTP 502", "nginx")),
    ("500-db-insert-error-on-create", {}, {}, force("db_insert_error"), "deliver", "plain",
     Unavailable, ("HTTP 500 db_insert_error",)),
    ("502-on-create-is-ambiguous", {}, {}, force(502), "deliver", "plain",
     OutcomeUnknown, ("POST /wp/v2/posts", "HTTP 502", "may have been applied")),
    ("500-on-update", {}, {}, force(500), "update", "plain",
     Unavailable, ("POST /wp/v2/posts/", "HTTP 500 internal_server_error", "critical error")),
    ("503-on-retract", {}, {}, force(503), "retract", "plain", Unavailable, ("DELETE /wp/v2/posts/", "HTTP 503")),
    ("timeout-on-create", {}, {"timeout": 0.3}, HANG, "deliver", "plain",
     OutcomeUnknown, ("POST /wp/v2/posts", "no answer within 0.3s", "looks the slug up")),
    ("timeout-on-update", {}, {"timeout": 0.3}, HANG, "update", "plain",
     Unavailable, ("POST /wp/v2/posts/", "no answer within 0.3s")),
    ("timeout-on-retract", {}, {"timeout": 0.3}, HANG, "retract", "plain", Unavailable, ("no answer within",)),
    ("refused-before-create", {}, {"base_url": _closed_port()}, None, "deliver", "plain",
     Unavailable, ("POST /wp/v2/posts", "ConnectionError")),
    ("429", {}, {}, force(429), "deliver", "plain", RateLimited, ("HTTP 429",)),
    ("no-route", {}, {}, force("rest_no_route"), "deliver", "plain",
     AuthInvalid, ("rest_no_route", "wrong base_url or permalinks; try rest_route: true")),
    ("wrong-base-path", {}, {"base_url": "SITE/blog"}, None, "deliver", "plain",
     AuthInvalid, ("HTTP 404", "try rest_route: true")),
    ("update-of-deleted-post", {}, {}, force("rest_post_invalid_id", method="POST"), "update", "plain",
     NotFound, ("rest_post_invalid_id",)),
    ("trash-disabled", {"trash_enabled": False}, {}, None, "retract", "plain",
     AuthInvalid, ("rest_trash_not_supported", "set delete: force")),
]


@pytest.mark.parametrize("wp, settings, fault, op, kind, error, fragments",
                         [case[1:] for case in ERRORS], ids=[case[0] for case in ERRORS])
def test_error_mapping(site, media, make_snapshot, wp, settings, fault, op, kind, error, fragments):
    # Given the site in the state of this row (an existing post for update and retract)
    emu = site.start(**wp)
    article = {"plain": lambda: make_snapshot(), "image": lambda: illustrated(make_snapshot, media),
               "svg": lambda: _svg_article(make_snapshot, media)}[kind]()
    remote_id = run(site.channel(), article, media).remote_id if op in ("update", "retract") else None
    settings = {k: v.replace("SITE", site.url) if isinstance(v, str) else v for k, v in settings.items()}
    if fault:
        fault(emu)
    # When the operation runs
    with pytest.raises(error) as caught:
        if op == "reconcile":
            run(site.channel(**settings), article, media, reconcile=True)
        else:
            run(site.channel(**settings), article, media, op=op, remote_id=remote_id)
    # Then it is classified as the contract says, and the message tells ops why
    assert type(caught.value) is error
    for fragment in fragments:
        assert fragment in str(caught.value)
    if error is RateLimited:
        assert caught.value.retry_after == 60  # the proxy sent no Retry-After
    if op == "deliver" and error is not OutcomeUnknown:
        assert site.emu.ledger.count("posts/create") == 0


def test_real_wordpress_answer_to_an_anonymous_slug_lookup_is_an_auth_problem():
    # Core sanitises `status` before the permission check, so an anonymous `status=any` lookup gets
    # 400 rest_invalid_param "Status is forbidden." (the emulator answers 401 rest_forbidden_context).
    resp = requests.Response()
    resp.status_code = 400
    resp._content = json.dumps({"code": "rest_invalid_param", "message": "Invalid parameter(s): status",
                                "data": {"status": 400, "params": {"status": "Status is forbidden."}}}).encode()
    error = _classify("portal p: GET /wp/v2/posts", resp, creating=False, image=None, wordpress=True, now=NOW)
    assert type(error) is AuthInvalid and "Application Passwords are unavailable" in str(error)


@pytest.mark.parametrize("header, seconds", [
    (None, 60), ("7", 7), ("Wed, 25 Nov 2026 08:02:00 GMT", 120), ("soon", 60), ("-5", 0)])
def test_retry_after_forms(header, seconds):
    assert _retry_after(header, NOW) == seconds


def test_app_password_never_appears_in_logs_errors_or_repr(site, media, make_snapshot, caplog):
    caplog.set_level(logging.DEBUG)
    secrets = {PASSWORD, PASSWORD.replace(" ", ""), base64.b64encode(f"editor:{PASSWORD}".encode()).decode()}
    channel = site.channel(timeout=0.3)
    texts = [repr(channel.settings), str(channel.settings), repr(channel), repr(channel.session)]
    # Given a success, a vendor error, a timeout and a refused connection
    run(channel, illustrated(make_snapshot, media), media)
    site.emu.faults.force(500, path="/wp/v2/posts")
    failures = [lambda: run(channel, make_snapshot(article_id=2), media),
                lambda: (site.emu.faults.update(hang=True), run(channel, make_snapshot(article_id=3), media)),
                lambda: run(site.channel(base_url=_closed_port()), make_snapshot(), media)]
    for fail in failures:
        with pytest.raises(Exception) as caught:
            fail()
        texts += [str(caught.value), repr(caught.value), "".join(traceback.format_exception(caught.value))]
    texts.append(caplog.text)
    # Then no form of the password shows anywhere
    assert any("POST" in t for t in texts) and "urllib3" in caplog.text
    for text in texts:
        for secret in secrets:
            assert secret not in text


# -- generic mode ---------------------------------------------------------------------------------

class Receiver:
    """A portal implementing the generic protocol: checks the HMAC, honours Idempotency-Key.

    `script` holds (status, body, headers) answers to give instead of handling, in order;
    `delay_after_apply` makes the next POST apply and then answer late.
    """

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.by_key: dict[str, str] = {}
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.script: list[tuple[int, Any, dict[str, str]]] = []
        self.delay_after_apply = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def handle_one(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.seen.append((self.command, self.path, dict(self.headers), body))
                status, answer, headers = receiver.handle(self.command, self.path, self.headers, body)
                data = json.dumps(answer).encode() if answer is not None else b""
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up

            do_POST = do_PUT = do_DELETE = handle_one  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/api/articles"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any, dict[str, str]]:
        expected = "sha256=" + hmac.new(HMAC_SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(headers.get("X-Syndicator-Signature", ""), expected):
            return 401, {"code": "bad_signature", "message": "signature does not match"}, {}
        if self.script:
            return self.script.pop(0)
        item_id = path.rsplit("/", 1)[1] if path != "/api/articles" else None
        if method == "POST":
            key = headers["Idempotency-Key"]
            if key not in self.by_key:
                self.by_key[key] = str(100 + len(self.items))
                self.items[self.by_key[key]] = json.loads(body)
                time.sleep(self.delay_after_apply)
            item_id = self.by_key[key]
            return 201, {"id": item_id, "url": f"https://portal.example/a/{item_id}.html"}, {}
        if item_id not in self.items:
            return 404, {"code": "not_found", "message": "no such article"}, {}
        if method == "PUT":
            self.items[item_id] = json.loads(body)
            return 200, {"id": item_id, "url": f"https://portal.example/a/{item_id}.html"}, {}
        del self.items[item_id]
        return 204, None, {}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def generic(ports, receiver: Receiver, **settings: Any) -> PortalChannel:
    values = {"mode": "generic", "endpoint": receiver.endpoint, "hmac_secret": HMAC_SECRET, "timeout": 3, **settings}
    return PortalChannel("portal_generic", PortalChannel.Settings(**values), ports)


def test_generic_publish_update_retract_signed(ports, receiver, media, make_snapshot):
    # Given an article with a cover and an inline image
    article = illustrated(make_snapshot, media)
    channel = generic(ports, receiver)
    # When it is published, corrected and retracted
    created = run(channel, article, media)
    updated = run(channel, replace(article, revision=2, correction_note="更正。"), media, op="update",
                  remote_id=created.remote_id)
    body = receiver.items[created.remote_id]
    retracted = run(channel, article, media, op="retract", remote_id=created.remote_id)
    # Then every call was signed (the receiver checked), with the delivery id and, on POST, the key
    assert [(m, p) for m, p, _, _ in receiver.seen] == [
        ("POST", "/api/articles"), ("PUT", f"/api/articles/{created.remote_id}"),
        ("DELETE", f"/api/articles/{created.remote_id}")]
    assert all(h["X-Syndicator-Delivery"] == "7" for _, _, h, _ in receiver.seen)
    assert receiver.seen[0][2]["Idempotency-Key"] == "s-1" and "Idempotency-Key" not in receiver.seen[1][2]
    assert (created.remote_id, created.remote_url) == ("100", "https://portal.example/a/100.html")
    assert updated.remote_id == created.remote_id and retracted.remote_id == created.remote_id
    assert receiver.items == {}
    # and the body carried the content (images still as asset:) and the image bytes
    assert body["content"].startswith('<p class="correction">')
    assert f'<img src="asset:{article.assets[0].sha256}"' in body["content"]
    sent = {m["sha256"]: base64.b64decode(m["data"]) for m in body["media"]}
    assert sent == {a: media.blobs[a] for a in (article.cover.sha256, article.assets[0].sha256)}
    assert body["cover"] == article.cover.sha256 and body["slug"] == "s-1"


def test_generic_retry_after_lost_answer_does_not_duplicate(ports, receiver, media, make_snapshot):
    receiver.delay_after_apply = 1.0
    channel = generic(ports, receiver, timeout=0.3)
    with pytest.raises(OutcomeUnknown, match="no answer within 0.3s"):
        run(channel, make_snapshot(), media)
    receiver.delay_after_apply = 0
    receipt = run(channel, make_snapshot(), media, reconcile=True)
    assert list(receiver.items) == [receipt.remote_id] and len(receiver.seen) == 2


@pytest.mark.parametrize("op, script, settings, error, fragments", [
    ("deliver", None, {"hmac_secret": "not-the-secret"}, AuthInvalid, ("HTTP 401 bad_signature", "hmac_secret")),
    ("deliver", (429, {"message": "slow down"}, {"Retry-After": "7"}), {}, RateLimited, ("HTTP 429", "slow down")),
    ("deliver", (422, {"code": "title_too_long", "message": "标题过长"}, {}), {}, ContentRejected,
     ("title_too_long", "标题过长")),
    ("deliver", (404, {"code": "no_route"}, {}), {}, AuthInvalid, ("HTTP 404", "endpoint")),
    ("deliver", (301, None, {"Location": "https://portal.example/api/articles"}), {}, AuthInvalid,
     ("redirected to 'https://portal.example/api/articles'",)),
    ("update", (500, {"code": "oops", "message": "db down"}, {}), {}, Unavailable, ("HTTP 500 oops", "db down")),
    ("update", None, {}, NotFound, ("no remote id",)),
], ids=["bad-signature", "429-retry-after", "422", "404-endpoint", "redirect", "500-on-update", "update-unknown-id"])
def test_generic_errors(ports, receiver, media, make_snapshot, op, script, settings, error, fragments):
    if script:
        receiver.script.append(script)
    with pytest.raises(error) as caught:
        run(generic(ports, receiver, **settings), make_snapshot(), media, op=op,
            remote_id="100" if script and op == "update" else None)
    assert type(caught.value) is error
    for fragment in fragments:
        assert fragment in str(caught.value)
    if error is RateLimited:
        assert caught.value.retry_after == 7
    assert "not-the-secret" not in str(caught.value) and HMAC_SECRET not in str(caught.value)


def test_generic_retract_of_a_gone_item_succeeds(ports, receiver, media, make_snapshot):
    receipt = run(generic(ports, receiver), make_snapshot(), media, op="retract", remote_id="555")
    assert receipt.detail == {"result": "already gone"} and receiver.seen[0][0] == "DELETE"
    assert receiver.seen[0][3] == b""
