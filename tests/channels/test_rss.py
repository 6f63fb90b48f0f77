"""RSS/Atom channel: render is pure, feeds are valid, stable, capped and safe under concurrency."""
from __future__ import annotations

import builtins
import calendar
import json
import os
import sqlite3
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import feedparser
import pytest
from pydantic import ValidationError

from channels import localfs
from channels.base import Attempt, Channel, Ports, RenderContext
from channels.errors import Unavailable
from channels.registry import load_type
from channels.rss import NEWEST_SQL, RSSChannel

T0 = datetime(2026, 11, 25, 1, 30, tzinfo=timezone.utc)


def make_channel(ports: Ports, instance: str = "rss_main", **settings) -> RSSChannel:
    return RSSChannel(instance, RSSChannel.Settings(title="省民政厅 · 政务动态", **settings), ports)


def attempt(media, remote_id: str | None = None) -> Attempt:
    return Attempt(delivery_id=1, number=1, reconcile=False, remote_id=remote_id, media=media)


def publish(channel: RSSChannel, article, media, op: str = "deliver"):
    ctx = RenderContext(now=channel.ports.clock(), ports=channel.ports)
    return getattr(channel, op)(channel.render(article, ctx), attempt(media))


def feeds(channel: RSSChannel):
    """Both feeds parsed by feedparser; each must be well-formed."""
    parsed = []
    for name in ("rss.xml", "atom.xml"):
        result = feedparser.parse((channel.directory / name).read_bytes())
        assert result.bozo == 0, (name, result.get("bozo_exception"))
        parsed.append(result)
    return parsed


def files(channel: RSSChannel) -> tuple[bytes, bytes]:
    return (channel.directory / "rss.xml").read_bytes(), (channel.directory / "atom.xml").read_bytes()


def epoch(struct) -> int:
    return calendar.timegm(struct)


# -- settings and capabilities -----------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    {},
    {"title": ""},
    {"title": "   "},
    {"title": "t", "path": "/srv/feeds"},
    {"title": "t", "path": "../outside"},
    {"title": "t", "path": "feeds/../../etc"},
    {"title": "t", "path": ""},
    {"title": "t", "items": 0},
    {"title": "t", "items": 501},
    {"title": "t", "link": "www.example.gov.cn"},
    {"title": "t", "unknown": 1},
])
def test_settings_reject_bad_values(bad):
    with pytest.raises(ValidationError):
        RSSChannel.Settings.model_validate(bad)


def test_settings_defaults_and_normalisation():
    s = RSSChannel.Settings.model_validate({"title": "订阅", "path": "./pub/feeds/"})
    assert (s.path, s.items, s.language, s.link, s.description) == ("pub/feeds", 50, "zh-CN", None, "")
    with pytest.raises(ValidationError):
        s.items = 3  # frozen


def test_registry_loads_the_type_with_its_capabilities():
    cls = load_type("rss")
    assert cls is RSSChannel and issubclass(cls, Channel)
    assert (cls.name, cls.display_name) == ("rss", "RSS/Atom 订阅")
    assert cls.supports_update and cls.supports_retract and cls.reconcilable
    assert cls.update is not Channel.update and cls.retract is not Channel.retract


# -- render ------------------------------------------------------------------------------------

def test_render_is_pure(ports, render_ctx, media, make_snapshot, monkeypatch):
    # Given an article with images and a channel whose public dir does not exist yet
    img = media.add_image("blue", fmt="PNG")
    article = make_snapshot(cover=media.add_image(), assets=(img,),
                            body_html=f'<p>图</p><img src="asset:{img.sha256}">')
    channel = make_channel(ports)

    def forbidden(*args, **kwargs):
        raise AssertionError("render touched the file system")

    for target, name in ((builtins, "open"), (os, "open"), (os, "mkdir"), (os, "replace"), (sqlite3, "connect")):
        monkeypatch.setattr(target, name, forbidden)
    # When it renders twice
    first, second = channel.render(article, render_ctx), channel.render(article, render_ctx)
    monkeypatch.undo()
    # Then nothing was read or written, and the result is the same both times
    assert not ports.public_dir.exists()
    assert media.reads == []
    assert first.to_json() == second.to_json()
    json.loads(first.to_json())  # storable as JSON


def test_render_payload(ports, render_ctx, media, make_snapshot):
    img = media.add_image("blue", fmt="PNG")
    cover = media.add_image("red")
    missing = "f" * 64
    article = make_snapshot(
        title="标题\x0b含控制符", summary="", cover=cover, assets=(img,), tags=("救助", "救助", "民生"),
        body_html=f'<p>正文\x00</p><img alt="图" src="asset:{img.sha256}"><img src="asset:{missing}">',
        canonical_url="http://portal.example.gov.cn/a/1.html")
    r = make_channel(ports).render(article, render_ctx)
    p = r.payload
    url = f"http://127.0.0.1:8470/feeds/rss_main/media/{img.sha256}.png"
    assert p["guid"] == "urn:syndicator:article:1"
    assert p["title"] == "标题含控制符"
    assert p["content"] == f'<p>正文</p><img alt="图" src="{url}">'
    assert p["link"] == "http://portal.example.gov.cn/a/1.html"
    assert p["summary"].startswith("正文")
    assert p["categories"] == ["救助", "民生"]
    assert p["enclosure"] == {"url": f"http://127.0.0.1:8470/feeds/rss_main/media/{cover.sha256}.jpg",
                              "length": cover.size, "type": "image/jpeg"}
    assert set(r.assets) == {img.sha256, cover.sha256}
    assert any("summary" in w for w in r.warnings)
    assert any(missing in w for w in r.warnings)


def test_guid_is_stable_across_revisions(ports, render_ctx, make_snapshot):
    channel = make_channel(ports)
    a1 = make_snapshot(revision=1, content_hash="h1")
    a2 = make_snapshot(revision=2, content_hash="h2", title="新标题", revised_at=T0 + timedelta(hours=3))
    assert channel.render(a1, render_ctx).payload["guid"] == channel.render(a2, render_ctx).payload["guid"]
    assert channel.render(make_snapshot(article_id=2), render_ctx).payload["guid"] != \
        channel.render(a1, render_ctx).payload["guid"]


# -- deliver -----------------------------------------------------------------------------------

def test_publish_writes_valid_feeds_and_media(ports, media, make_snapshot):
    # Given an article with a cover and an inline image
    img, cover = media.add_image("blue", fmt="PNG"), media.add_image("red")
    article = make_snapshot(cover=cover, assets=(img,), body_html=f'<p>正文</p><img src="asset:{img.sha256}">')
    channel = make_channel(ports)
    # When it is delivered
    receipt = publish(channel, article, media)
    # Then the receipt names the guid and the RSS URL
    assert receipt.remote_id == "urn:syndicator:article:1"
    assert receipt.remote_url == "http://127.0.0.1:8470/feeds/rss_main/rss.xml"
    # And the media were copied byte for byte
    for asset in (img, cover):
        assert (channel.directory / "media" / asset.stored_name).read_bytes() == media.blobs[asset.sha256]
    # And both feeds are valid and carry the item
    rss, atom = feeds(channel)
    raw_rss, raw_atom = files(channel)
    assert b'<guid isPermaLink="false">urn:syndicator:article:1</guid>' in raw_rss
    assert b'type="CDATA"' not in raw_rss + raw_atom and b"<![CDATA[" not in raw_rss + raw_atom
    for parsed in (rss, atom):
        (entry,) = parsed.entries
        assert entry.id == "urn:syndicator:article:1"
        assert entry.title == article.title
        assert entry.author == "张明"
        assert [t.term for t in entry.tags] == ["社会救助", "冬春救助"]
        assert f'src="http://127.0.0.1:8470/feeds/rss_main/media/{img.sha256}.png"' in entry.content[0].value
        assert "asset:" not in entry.content[0].value
        assert epoch(entry.published_parsed) == int(T0.timestamp())
        alternates = [link for link in entry.links if link.rel == "alternate"]
        assert len(alternates) == 1
        (enclosure,) = [link for link in entry.links if link.rel == "enclosure"]
        assert (enclosure.href, enclosure.type, int(enclosure.length)) == \
            (f"http://127.0.0.1:8470/feeds/rss_main/media/{cover.sha256}.jpg", "image/jpeg", cover.size)
    assert rss.entries[0].guidislink is False
    assert rss.entries[0].enclosures[0].href.endswith(f"{cover.sha256}.jpg")
    assert rss.version == "rss20" and atom.version == "atom10"
    # And each feed advertises itself and links the site
    assert {(link.rel, link.href) for link in rss.feed.links} >= {
        ("self", "http://127.0.0.1:8470/feeds/rss_main/rss.xml"),
        ("alternate", "http://127.0.0.1:8470/feeds/rss_main/")}
    assert ("self", "http://127.0.0.1:8470/feeds/rss_main/atom.xml") in {(lk.rel, lk.href) for lk in atom.feed.links}


def test_correction_keeps_guid_and_pubdate_but_moves_updated(ports, media, make_snapshot):
    # Given a published article
    channel = make_channel(ports)
    publish(channel, make_snapshot(), media)
    # When a correction is applied three hours later
    fixed_at = T0 + timedelta(hours=3)
    receipt = publish(channel, make_snapshot(revision=2, content_hash="h2", revised_at=fixed_at,
                                             body_html="<p>更正后的正文。</p>",
                                             correction_note="原文会议日期有误，已更正。"), media, op="update")
    # Then there is still one item with the same guid and pubDate
    assert receipt.remote_id == "urn:syndicator:article:1"
    rss, atom = feeds(channel)
    for parsed in (rss, atom):
        (entry,) = parsed.entries
        assert entry.id == "urn:syndicator:article:1"
        assert epoch(entry.published_parsed) == int(T0.timestamp())
        # And its updated time and content moved, with the correction note on top
        assert epoch(entry.updated_parsed) == int(fixed_at.timestamp())
        assert "更正说明：" in entry.content[0].value and "原文会议日期有误" in entry.content[0].value
        assert "更正后的正文" in entry.content[0].value
        assert epoch(parsed.feed.updated_parsed) == int(fixed_at.timestamp())
    assert b"<atom:updated>" in files(channel)[0]


def test_a_late_older_revision_does_not_overwrite_a_newer_one(ports, media, make_snapshot):
    # Given revision 2 is live
    channel = make_channel(ports)
    publish(channel, make_snapshot(revision=2, revised_at=T0 + timedelta(hours=1), body_html="<p>新</p>"), media)
    # When a retry of revision 1 arrives late
    publish(channel, make_snapshot(revision=1, body_html="<p>旧</p>"), media)
    # Then the feed still shows revision 2
    assert feeds(channel)[0].entries[0].content[0].value == "<p>新</p>"


def test_redelivery_is_idempotent(ports, media, make_snapshot, render_ctx):
    # Given a delivered rendition
    channel = make_channel(ports)
    rendition = channel.render(make_snapshot(cover=media.add_image()), render_ctx)
    channel.deliver(rendition, attempt(media))
    before = files(channel)
    # When the same rendition is delivered again (a retry after an unknown outcome)
    channel.deliver(rendition, replace(attempt(media), number=2, reconcile=True))
    # Then the files are byte-identical and hold one item
    assert files(channel) == before
    assert [len(p.entries) for p in feeds(channel)] == [1, 1]


def test_output_is_deterministic_whatever_the_delivery_order(tmp_path, media, make_snapshot, ports):
    # Given the same three articles delivered to two instances in different orders, one of them
    # with a different clock
    articles = [make_snapshot(article_id=i, first_published_at=T0 + timedelta(minutes=i % 2),
                              revised_at=T0 + timedelta(minutes=i)) for i in (1, 2, 3)]
    later = replace(ports, clock=lambda: datetime(2031, 1, 1, tzinfo=timezone.utc))
    a, b = make_channel(ports, path="feeds/same"), make_channel(replace(later, public_dir=tmp_path / "b"),
                                                                 path="feeds/same")
    for article in articles:
        publish(a, article, media)
    for article in reversed(articles):
        publish(b, article, media)
    # Then both produce the same bytes, and the feed time is the newest item's, not the clock
    assert files(a) == files(b)
    assert epoch(feeds(a)[1].feed.updated_parsed) == int((T0 + timedelta(minutes=3)).timestamp())


def test_feed_is_capped_at_items_newest_first(ports, media, make_snapshot):
    # Given a feed limited to three items
    channel = make_channel(ports, items=3)
    # When five articles are delivered oldest-last
    for i in (5, 1, 4, 2, 3):
        publish(channel, make_snapshot(article_id=i, title=f"第{i}篇",
                                       first_published_at=T0 + timedelta(days=i),
                                       revised_at=T0 + timedelta(days=i)), media)
    # Then both feeds hold the three newest, newest first
    for parsed in feeds(channel):
        assert [e.title for e in parsed.entries] == ["第5篇", "第4篇", "第3篇"]


def test_retract_removes_the_item_and_absent_is_success(ports, media, make_snapshot, render_ctx):
    # Given two published articles
    channel = make_channel(ports)
    first = channel.render(make_snapshot(article_id=1), render_ctx)
    channel.deliver(first, attempt(media))
    publish(channel, make_snapshot(article_id=2, first_published_at=T0 + timedelta(hours=1),
                                   revised_at=T0 + timedelta(hours=1)), media)
    # When the first is retracted
    receipt = channel.retract(first, attempt(media, remote_id="urn:syndicator:article:1"))
    # Then only the second remains in both feeds
    assert receipt.remote_id == "urn:syndicator:article:1"
    for parsed in feeds(channel):
        assert [e.id for e in parsed.entries] == ["urn:syndicator:article:2"]
    # And retracting it again succeeds without changing anything
    before = files(channel)
    channel.retract(first, attempt(media))
    assert files(channel) == before


def test_retracting_the_last_item_leaves_a_valid_empty_feed(ports, media, make_snapshot, render_ctx):
    channel = make_channel(ports)
    rendition = channel.render(make_snapshot(), render_ctx)
    channel.deliver(rendition, attempt(media))
    channel.retract(rendition, attempt(media))
    rss, atom = feeds(channel)
    assert rss.entries == [] and atom.entries == []
    assert epoch(atom.feed.updated_parsed) == int(T0.timestamp())  # last known, not now()


def test_settings_path_and_link_are_used(ports, media, make_snapshot):
    channel = make_channel(ports, path="pub/news", link="https://www.example.gov.cn/", description="动态")
    receipt = publish(channel, make_snapshot(), media)
    assert receipt.remote_url == "http://127.0.0.1:8470/pub/news/rss.xml"
    assert (ports.public_dir / "pub/news/rss.xml").exists()
    rss, atom = feeds(channel)
    assert rss.feed.link == "https://www.example.gov.cn/"
    assert rss.entries[0].link == "https://www.example.gov.cn/"
    assert rss.feed.description == atom.feed.subtitle == "动态"
    assert rss.feed.language == "zh-CN"


# -- storage, concurrency, errors ----------------------------------------------------------------

def test_newest_query_uses_the_index_at_ten_thousand_items(ports, media, make_snapshot):
    # Given an archive of 10,000 items in the channel's index
    channel = make_channel(ports, items=20)
    publish(channel, make_snapshot(), media)
    item = json.loads(sqlite3.connect(channel.directory / ".index.sqlite").execute(
        "SELECT item FROM items").fetchone()[0])
    rows = []
    for i in range(2, 10_002):
        at = (T0 + timedelta(minutes=i)).isoformat()
        rows.append((f"urn:syndicator:article:{i}", (T0 + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                     at, json.dumps({**item, "guid": f"urn:syndicator:article:{i}", "title": f"第{i}篇",
                                     "published": at, "updated": at}, ensure_ascii=False)))
    with sqlite3.connect(channel.directory / ".index.sqlite") as db:
        # rows as an index written before fragments were stored: rendered when first needed
        db.executemany("INSERT INTO items (guid, published, updated, item) VALUES (?, ?, ?, ?)", rows)
        plan = " ".join(str(row) for row in db.execute("EXPLAIN QUERY PLAN " + NEWEST_SQL, (20,)))
    # Then picking the newest N walks the index instead of sorting the archive
    assert "items_newest" in plan and "TEMP B-TREE" not in plan
    # And a new delivery regenerates the feeds from the newest 20
    publish(channel, make_snapshot(article_id=20_000, title="最新",
                                   first_published_at=T0 + timedelta(days=30), revised_at=T0 + timedelta(days=30)),
            media)
    titles = [e.title for e in feeds(channel)[0].entries]
    assert titles[:3] == ["最新", "第10001篇", "第10000篇"] and len(titles) == 20


def test_concurrent_deliveries_all_land(ports, media, make_snapshot):
    # Given ten different articles and ten threads starting together
    channel = make_channel(ports)
    ctx = RenderContext(now=ports.clock(), ports=ports)
    renditions = [channel.render(make_snapshot(article_id=i, first_published_at=T0 + timedelta(minutes=i),
                                               revised_at=T0 + timedelta(minutes=i)), ctx) for i in range(10)]
    barrier, errors = threading.Barrier(10), []

    def run(rendition):
        barrier.wait()
        try:
            channel.deliver(rendition, attempt(media))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r,)) for r in renditions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    # Then every item is in both feeds
    assert errors == []
    for parsed in feeds(channel):
        assert sorted(e.id for e in parsed.entries) == sorted(f"urn:syndicator:article:{i}" for i in range(10))


def test_deliver_waits_for_the_instance_lock(ports, media, make_snapshot, render_ctx):
    # Given another worker holds the instance lock
    channel = make_channel(ports)
    rendition = channel.render(make_snapshot(), render_ctx)
    done = threading.Event()
    worker = threading.Thread(target=lambda: (channel.deliver(rendition, attempt(media)), done.set()))
    with localfs.exclusive(channel.directory):
        worker.start()
        # Then a delivery does not proceed while it is held
        assert not done.wait(0.3)
        assert not (channel.directory / "rss.xml").exists()
    # And it completes once the lock is released
    worker.join(5)
    assert done.is_set()


def test_unwritable_directory_is_transient_and_names_the_path(ports, media, make_snapshot):
    # Given a plain file where the feed directory should be
    channel = make_channel(ports)
    channel.directory.parent.mkdir(parents=True)
    channel.directory.write_text("not a directory")
    # When delivering, Then the error is transient and names the path
    with pytest.raises(Unavailable) as info:
        publish(channel, make_snapshot(), media)
    assert str(channel.directory) in str(info.value)


def test_failed_feed_write_is_transient_and_leaves_no_item(ports, media, make_snapshot):
    # Given rss.xml cannot be replaced (a directory is in the way)
    channel = make_channel(ports)
    (channel.directory / "rss.xml").mkdir(parents=True)
    # When delivering, Then Unavailable names the file
    with pytest.raises(Unavailable) as info:
        publish(channel, make_snapshot(), media)
    assert "rss.xml" in str(info.value)
    # And the index was rolled back, so the retry starts clean
    count = sqlite3.connect(channel.directory / ".index.sqlite").execute("SELECT COUNT(*) FROM items").fetchone()
    assert count == (0,)
