"""RSS/Atom channel: feeds joined from stored item fragments equal feedgen's full rebuild.

The reference is `rss_feed.build`, the whole-feed feedgen path the channel used before it stored
fragments, fed the same newest items and feed time as the old writer computed them.
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import feedparser
import pytest
from lxml import etree

from channels import rss, rss_feed
from channels.base import Attempt, RenderContext
from channels.errors import Unavailable
from channels.rss import RSSChannel

T0 = datetime(2026, 11, 25, 1, 30, tzinfo=timezone.utc)
#: The index schema before fragments were stored.
OLD_SCHEMA = """
CREATE TABLE items (guid TEXT PRIMARY KEY, published TEXT NOT NULL, updated TEXT NOT NULL, item TEXT NOT NULL);
CREATE INDEX items_newest ON items (published DESC, guid);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def make_channel(ports, **settings) -> RSSChannel:
    return RSSChannel("rss_main", RSSChannel.Settings(title="省民政厅 · 政务动态", **settings), ports)


def attempt(media) -> Attempt:
    return Attempt(delivery_id=1, number=1, reconcile=False, remote_id=None, media=media)


def rendition(channel, article):
    return channel.render(article, RenderContext(now=channel.ports.clock(), ports=channel.ports))


def index(channel) -> sqlite3.Connection:
    return closing(sqlite3.connect(channel.directory / ".index.sqlite"))


def written(channel) -> dict[str, bytes]:
    return {fmt: (channel.directory / f"{fmt}.xml").read_bytes() for fmt in rss_feed.FORMATS}


def reference(channel) -> dict[str, bytes]:
    """Both feeds as the full feedgen rebuild writes them from the index (the old writer's logic)."""
    with index(channel) as db:
        items = [json.loads(row[0]) for row in db.execute(
            "SELECT item FROM items ORDER BY published DESC, guid LIMIT ?", (channel.settings.items,))]
        meta = db.execute("SELECT value FROM meta WHERE key = 'updated'").fetchone()
    if items:
        updated = max(datetime.fromisoformat(i["updated"]) for i in items)
    else:
        updated = datetime.fromisoformat(meta[0]) if meta else rss_feed.EPOCH
    tz = channel.ports.timezone
    return {fmt: rss_feed.serialise(rss_feed.build(channel._feed_info(), items, fmt, updated, tz), fmt)
            for fmt in rss_feed.FORMATS}


def assert_equivalent(channel) -> None:
    """Byte-identical to the reference, hence the same canonical XML; and clean for feedparser."""
    got, want = written(channel), reference(channel)
    for fmt in rss_feed.FORMATS:
        assert got[fmt] == want[fmt], fmt
        c14n = [etree.tostring(etree.fromstring(x), method="c14n") for x in (got[fmt], want[fmt])]
        assert c14n[0] == c14n[1]
        assert feedparser.parse(got[fmt]).bozo == 0


def varied_articles(make_snapshot, media):
    """Articles covering every optional element, markup-like text and a published-time tie."""
    at = [T0 + timedelta(hours=h) for h in range(6)]
    return [
        make_snapshot(article_id=1, cover=media.add_image(), correction_note="日期有误 & 已更正",
                      first_published_at=at[0], revised_at=at[3]),
        make_snapshot(article_id=2, author="", unit="", tags=(), first_published_at=at[1], revised_at=at[1]),
        make_snapshot(article_id=3, author="", unit="省民政厅", first_published_at=at[1], revised_at=at[2]),
        make_snapshot(article_id=4, title='标题 <item> & </channel> "引号"\x0b', summary="",
                      body_html="<p>&lt;/item&gt; <entry>正文</entry></p>", first_published_at=at[2],
                      revised_at=at[2]),
        make_snapshot(article_id=5, cover=media.add_image("blue", fmt="PNG"), first_published_at=at[4],
                      revised_at=at[5]),
        make_snapshot(article_id=6, tags=("民生",), first_published_at=at[3], revised_at=at[3]),
    ]


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "UTC", "America/New_York"])
def test_feeds_equal_the_full_feedgen_rebuild(ports, media, make_snapshot, zone):
    # Given a capped feed in some timezone
    channel = make_channel(replace(ports, timezone=ZoneInfo(zone)), items=4)
    renditions = [rendition(channel, a) for a in varied_articles(make_snapshot, media)]
    # When articles of every shape arrive (out of order), Then after each delivery the files are
    # what feedgen writes for the same items
    for r in renditions[::-1]:
        channel.deliver(r, attempt(media))
        assert_equivalent(channel)
    # And after a correction and retractions down to an empty feed too
    channel.update(rendition(channel, make_snapshot(article_id=6, revision=2, content_hash="h2",
                                                    title="更正", revised_at=T0 + timedelta(days=1))),
                   attempt(media))
    assert_equivalent(channel)
    for r in renditions:
        channel.retract(r, attempt(media))
        assert_equivalent(channel)
    assert feedparser.parse(written(channel)["atom"]).entries == []


def test_stored_fragments_are_bare_elements_at_feed_depth(ports, media, make_snapshot):
    channel = make_channel(ports)
    channel.deliver(rendition(channel, make_snapshot(cover=media.add_image())), attempt(media))
    with index(channel) as db:
        (frag_rss, frag_atom, key), = db.execute("SELECT rss, atom, frag_key FROM items")
    # No namespace redeclared on the item: prefixes resolve against the root of the feed
    assert b"xmlns" not in frag_rss and b"xmlns" not in frag_atom
    assert frag_rss.startswith(b"    <item>") and frag_rss.endswith(b"    </item>\n")
    assert frag_atom.startswith(b"  <entry>") and frag_atom.endswith(b"  </entry>\n")
    assert b"<atom:updated>" in frag_rss and b"<dc:publisher>" in frag_atom
    assert key == rss_feed.fragment_key(ports.timezone)
    assert frag_rss in written(channel)["rss"] and frag_atom in written(channel)["atom"]


def test_a_late_older_revision_keeps_the_newer_fragments(ports, media, make_snapshot):
    channel = make_channel(ports)
    channel.deliver(rendition(channel, make_snapshot(revision=2, revised_at=T0 + timedelta(hours=1),
                                                     body_html="<p>新</p>")), attempt(media))
    channel.deliver(rendition(channel, make_snapshot(revision=1, body_html="<p>旧</p>")), attempt(media))
    with index(channel) as db:
        (frag_rss, frag_atom), = db.execute("SELECT rss, atom FROM items")
    assert "新".encode() in frag_rss and "旧".encode() not in frag_rss + frag_atom
    assert_equivalent(channel)


def old_index(channel, articles) -> None:
    """An index as the channel wrote it before fragments were stored."""
    channel.directory.mkdir(parents=True)
    rows = []
    for article in articles:
        item = rendition(channel, article).payload
        rows.append((item["guid"], rss._utc_key(item["published"]), rss._utc_key(item["updated"]),
                     json.dumps(item, ensure_ascii=False, sort_keys=True)))
    with index(channel) as db:
        db.executescript(OLD_SCHEMA)
        with db:
            db.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", rows)
            db.execute("INSERT INTO meta VALUES ('updated', ?)", (max(a.revised_at for a in articles).isoformat(),))


def fragment_keys(channel) -> dict[str, str | None]:
    with index(channel) as db:
        return dict(db.execute("SELECT guid, frag_key FROM items"))


def test_an_old_index_is_upgraded_and_rendered_lazily(ports, media, make_snapshot):
    # Given an index from before fragments, holding five items, and a feed of three
    channel = make_channel(ports, items=3)
    old_index(channel, [make_snapshot(article_id=i, first_published_at=T0 + timedelta(hours=i),
                                      revised_at=T0 + timedelta(hours=i)) for i in range(1, 6)])
    # When a new article is delivered
    channel.deliver(rendition(channel, make_snapshot(article_id=9, first_published_at=T0 + timedelta(days=1),
                                                     revised_at=T0 + timedelta(days=1))), attempt(media))
    # Then the columns were added, and only the rows the feed needed got fragments
    with index(channel) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(items)")]
    assert columns == ["guid", "published", "updated", "item", "rss", "atom", "frag_key"]
    key = rss_feed.fragment_key(ports.timezone)
    assert fragment_keys(channel) == {"urn:syndicator:article:9": key, "urn:syndicator:article:5": key,
                                      "urn:syndicator:article:4": key, "urn:syndicator:article:3": None,
                                      "urn:syndicator:article:2": None, "urn:syndicator:article:1": None}
    # And the feeds are what the full rebuild writes
    assert_equivalent(channel)
    # And upgrading again changes nothing
    with index(channel) as db:
        rss.prepare_index(db)
        rss.prepare_index(db)
        assert [row[1] for row in db.execute("PRAGMA table_info(items)")] == columns
    # And an old row brought into the feed by a retraction is rendered then
    channel.retract(rendition(channel, make_snapshot(article_id=9)), attempt(media))
    keys = fragment_keys(channel)
    assert (keys["urn:syndicator:article:3"], keys["urn:syndicator:article:2"]) == (key, None)
    assert_equivalent(channel)


def test_fragments_rendered_for_a_failed_write_are_rolled_back(ports, media, make_snapshot):
    # Given an old index and a feed file that cannot be replaced
    channel = make_channel(ports)
    old_index(channel, [make_snapshot()])
    (channel.directory / "rss.xml").mkdir()
    # When a retraction of an unknown item rewrites the feeds, Then it fails and keeps nothing
    with pytest.raises(Unavailable):
        channel.retract(rendition(channel, make_snapshot(article_id=7)), attempt(media))
    assert fragment_keys(channel) == {"urn:syndicator:article:1": None}
    # And once the obstacle is gone the retry renders and writes
    (channel.directory / "rss.xml").rmdir()
    channel.retract(rendition(channel, make_snapshot(article_id=7)), attempt(media))
    assert fragment_keys(channel) == {"urn:syndicator:article:1": rss_feed.fragment_key(ports.timezone)}
    assert_equivalent(channel)


def test_a_new_timezone_re_renders_the_stored_fragments(ports, media, make_snapshot):
    # Given items stored by a channel writing Asia/Shanghai times
    channel = make_channel(ports)
    for i in (1, 2):
        channel.deliver(rendition(channel, make_snapshot(article_id=i, first_published_at=T0 + timedelta(hours=i))),
                        attempt(media))
    assert b"+0800" in written(channel)["rss"]
    # When the configured timezone changes and one more item arrives
    utc = make_channel(replace(ports, timezone=ZoneInfo("UTC")))
    utc.deliver(rendition(utc, make_snapshot(article_id=3, first_published_at=T0 + timedelta(hours=3))),
                attempt(media))
    # Then every item is written in the new timezone, as the full rebuild would
    assert set(fragment_keys(utc).values()) == {rss_feed.fragment_key(ZoneInfo("UTC"))}
    assert b"+0800" not in written(utc)["rss"] and b"+08:00" not in written(utc)["atom"]
    assert_equivalent(utc)
