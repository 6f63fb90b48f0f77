"""The micro-site channel: pages, sanitising, stable archives, incremental writes, retraction."""
from __future__ import annotations

import builtins
import sqlite3
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest
from pydantic import ValidationError

from channels import localfs
from channels.base import Attempt, Rendition
from channels.errors import ContentRejected, Unavailable
from channels.microsite import MicrositeChannel, tag_key

#: Screenshots go where conftest.ARTIFACTS points (not imported: tests/ may or may not be a package).
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
SITE_TITLE = "某省民政厅移动微站"
FOOTER = "主办单位：某省民政厅　地址：省会市民政路1号　备案号：某ICP备00000000号"


def make_channel(ports, **settings) -> MicrositeChannel:
    values = {"title": SITE_TITLE, "footer": FOOTER, "page_size": 5, **settings}
    return MicrositeChannel("m_site", MicrositeChannel.Settings(**values), ports)


@pytest.fixture
def site(ports):
    return make_channel(ports)


def attempt(media, remote_id: str | None = None) -> Attempt:
    return Attempt(delivery_id=1, number=1, reconcile=False, remote_id=remote_id, media=media)


@pytest.fixture
def article(make_snapshot):
    def make(n: int, **overrides):
        """The n-th article of a site, each a minute after the previous one."""
        when = datetime(2026, 11, 1, 1, 0, tzinfo=timezone.utc) + timedelta(minutes=n)
        base = dict(article_id=n, slug=f"a-{n:04d}", title=f"第{n}号通知", first_published_at=when,
                    revised_at=when)
        return make_snapshot(**{**base, **overrides})
    return make


def publish(channel, media, snap, render_ctx):
    rendition = channel.render(snap, render_ctx)
    return channel.deliver(rendition, attempt(media)), rendition


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock" and not p.name.startswith(".index.sqlite")}


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.urls.append(value)


def assert_relative_links_resolve(site_dir: Path) -> None:
    for page in site_dir.rglob("*.html"):
        parser = Links()
        parser.feed(read(page))
        for url in parser.urls:
            if url.startswith(("http:", "https:", "mailto:", "tel:")):
                continue
            assert (page.parent / url).resolve().is_file(), f"{page.relative_to(site_dir)} → {url} is dangling"


# -- settings --------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [{"path": "/srv/www"}, {"path": "../outside"}, {"path": "a/../../b"}, {"path": "."},
                                 {"page_size": 4}, {"page_size": 101}, {"colour": "red"}, {}])
def test_settings_reject_bad_values(bad):
    values = {"title": SITE_TITLE, **bad} if bad else {}
    with pytest.raises(ValidationError):
        MicrositeChannel.Settings(**values)


def test_site_lives_under_path_or_instance_name(ports, media, render_ctx, make_snapshot):
    # Given one site with an explicit path and one without
    explicit = make_channel(ports, path="wap/news")
    default = make_channel(ports)
    # When both publish
    receipt, _ = publish(explicit, media, make_snapshot(), render_ctx)
    publish(default, media, make_snapshot(), render_ctx)
    # Then each writes under its own directory and the receipt names the public URL
    assert (ports.public_dir / "wap/news/a/2026-winter-relief.html").is_file()
    assert (ports.public_dir / "m_site/a/2026-winter-relief.html").is_file()
    assert receipt.remote_id == "2026-winter-relief"
    assert receipt.remote_url == "http://127.0.0.1:8470/wap/news/a/2026-winter-relief.html"


def test_capabilities():
    assert MicrositeChannel.name == "microsite" and MicrositeChannel.display_name == "移动微站"
    assert MicrositeChannel.supports_update and MicrositeChannel.supports_retract
    assert MicrositeChannel.reconcilable


# -- the article page ------------------------------------------------------------------------------

def test_article_page_shows_title_body_and_escapes_markup_in_text(site, media, render_ctx, make_snapshot):
    # Given a title containing markup
    snap = make_snapshot(title="关于<b>冬春救助</b>的通知 & 说明")
    # When it is published
    publish(site, media, snap, render_ctx)
    page = read(site.site_dir / "a/2026-winter-relief.html")
    # Then the title shows literally and the body, unit, date and tags are on the page
    assert "关于&lt;b&gt;冬春救助&lt;/b&gt;的通知 &amp; 说明" in page
    assert "<b>冬春救助</b>" not in page
    assert "<p>近日，省民政厅召开全省冬春救助工作视频会议。</p>" in page
    assert "<strong>摸清底数</strong>" in page
    assert 'lang="zh-CN"' in page and 'name="viewport"' in page
    assert "发布单位" in page and "省民政厅社会救助处" in page
    assert "2026-11-25 09:30" in page  # 01:30 UTC shown in Asia/Shanghai
    assert f'href="../tag/{tag_key("社会救助")}/index.html">社会救助</a>' in page
    assert "<script" not in page and "://" not in page  # nothing external


def test_hostile_body_is_neutralised(site, media, render_ctx, make_snapshot):
    # Given a body carrying script, event handlers, javascript: links and styles
    body = ('<p onclick="steal()">正文<script>alert(1)</script></p>'
            '<img src="x" onerror="alert(2)"><a href="javascript:alert(3)">点我</a>'
            '<a href="https://www.mca.gov.cn/" target="_blank">民政部</a>'
            '<style>body{display:none}</style><iframe src="https://evil.example/"></iframe>'
            '<div style="position:fixed">块</div>')
    # When it is published
    publish(site, media, make_snapshot(body_html=body), render_ctx)
    page = read(site.site_dir / "a/2026-winter-relief.html")
    # Then nothing executable survives and outside links are opened without an opener
    for bad in ("<script", "alert(", "onerror", "onclick", "javascript:", "<style", "display:none",
                "<iframe", "position:fixed", 'target="_blank"'):
        assert bad not in page, bad
    assert '<a href="https://www.mca.gov.cn/" rel="noopener noreferrer">民政部</a>' in page
    assert "<p>正文</p>" in page


def test_images_are_copied_and_referenced_relatively(site, media, render_ctx, make_snapshot):
    # Given an article with a body image and a cover
    photo, cover = media.add_image("navy"), media.add_image("teal", fmt="PNG")
    snap = make_snapshot(body_html=f'<p>图：</p><figure><img src="asset:{photo.sha256}" alt="会议现场">'
                                   f'<figcaption>会议现场</figcaption></figure>',
                         assets=(photo,), cover=cover)
    # When it is rendered and delivered
    rendition = site.render(snap, render_ctx)
    site.deliver(rendition, attempt(media))
    page = read(site.site_dir / "a/2026-winter-relief.html")
    # Then both images were copied, the page points at them relatively, and they exist
    assert set(rendition.assets) == {photo.sha256, cover.sha256}
    assert f'<img src="../media/{photo.stored_name}" alt="会议现场" loading="lazy">' in page
    assert (site.site_dir / "media" / photo.stored_name).read_bytes() == media.blobs[photo.sha256]
    assert (site.site_dir / "media" / cover.stored_name).is_file()
    assert f'src="media/{cover.stored_name}"' in read(site.site_dir / "index.html")
    assert_relative_links_resolve(site.site_dir)


def test_unknown_asset_and_external_images_are_dropped_with_warnings(site, render_ctx, make_snapshot):
    snap = make_snapshot(body_html=f'<p><img src="asset:{"ab" * 32}"><img src="https://cdn.example/x.png"></p>')
    rendition = site.render(snap, render_ctx)
    assert "cdn.example" not in rendition.payload["page"] and "asset:" not in rendition.payload["page"]
    assert any("not attached" in w for w in rendition.warnings)
    assert any("external image" in w for w in rendition.warnings)
    # An unknown asset's whole <img> goes (as in every channel), not just its src.
    alone = site.render(make_snapshot(body_html=f'<p>图<img src="asset:{"ab" * 32}" alt="缺"></p>'), render_ctx)
    assert "<p>图</p>" in alone.payload["page"] and 'alt="缺"' not in alone.payload["page"]


def test_correction_note_shows_a_dated_notice(site, render_ctx, make_snapshot):
    snap = make_snapshot(revision=2, correction_note="原文第二段中“11月”应为“12月”。",
                         revised_at=datetime(2026, 11, 26, 2, 15, tzinfo=timezone.utc))
    page = site.render(snap, render_ctx).payload["page"]
    assert "更正说明" in page and "原文第二段中“11月”应为“12月”。" in page
    assert "2026-11-26 10:15" in page
    assert page.index("更正说明") < page.index('class="article-title"')


def test_missing_summary_is_a_warning_and_listing_uses_the_body(site, render_ctx, make_snapshot):
    rendition = site.render(make_snapshot(summary=""), render_ctx)
    assert any("summary" in w for w in rendition.warnings)
    assert rendition.payload["entry"]["summary"].startswith("近日，省民政厅召开")


def test_render_is_pure(site, ports, media, render_ctx, make_snapshot, monkeypatch):
    # Given templates already loaded once, a clock that must not be read and no file access allowed
    photo = media.add_image()
    snap = make_snapshot(body_html=f'<p><img src="asset:{photo.sha256}"></p>', assets=(photo,))
    first = site.render(snap, render_ctx)
    monkeypatch.setattr(site, "ports", replace(ports, clock=lambda: pytest.fail("render read the clock")))

    def no_open(*args, **kwargs):
        raise AssertionError(f"render opened {args[:1]}")
    monkeypatch.setattr(builtins, "open", no_open)
    # When it renders again
    second = site.render(snap, render_ctx)
    monkeypatch.undo()
    # Then it produced the same rendition without touching files, media or the public directory
    assert second == first
    assert Rendition.from_json(second.to_json()) == second
    assert media.reads == []
    assert not ports.public_dir.exists()


def test_unsafe_slug_is_rejected(site, render_ctx, make_snapshot):
    with pytest.raises(ContentRejected):
        site.render(make_snapshot(slug="../../etc/passwd"), render_ctx)


# -- listings --------------------------------------------------------------------------------------

def test_index_is_newest_first_and_archive_pages_are_stable(site, media, render_ctx, article):
    # Given a full first archive page (page_size 5)
    for n in range(1, 6):
        publish(site, media, article(n), render_ctx)
    page1 = (site.site_dir / "page/1.html").read_bytes()
    # When article 6 is published
    publish(site, media, article(6), render_ctx)
    # Then the front page lists the newest five, newest first, and links to the older ones
    index = read(site.site_dir / "index.html")
    titles = [f"第{n}号通知" for n in (6, 5, 4, 3, 2)]
    positions = [index.index(t) for t in titles]
    assert positions == sorted(positions) and "第1号通知" not in index
    assert 'href="page/1.html"' in index
    # And page 2 now exists while page 1 is byte-identical
    assert "第6号通知" in read(site.site_dir / "page/2.html")
    assert (site.site_dir / "page/1.html").read_bytes() == page1
    assert all(f"第{n}号通知" in page1.decode() for n in range(1, 6))
    assert_relative_links_resolve(site.site_dir)


def test_tag_pages_list_the_tag_text_and_its_articles(site, media, render_ctx, article):
    # Given articles with overlapping tags
    publish(site, media, article(1, tags=("养老服务",)), render_ctx)
    publish(site, media, article(2, tags=("养老服务", "社会救助")), render_ctx)
    publish(site, media, article(3, tags=("社会救助",)), render_ctx)
    # Then each tag has a front page and an archive page with only its articles, newest first
    elderly = site.site_dir / "tag" / tag_key("养老服务")
    front = read(elderly / "index.html")
    assert "养老服务" in front and "标签" in front
    assert front.index("第2号通知") < front.index("第1号通知") and "第3号通知" not in front
    assert "第1号通知" in read(elderly / "page/1.html")
    assert tag_key("养老服务").isascii() and tag_key("养老服务") != tag_key("社会救助")
    assert_relative_links_resolve(site.site_dir)


def test_tag_archive_pages_are_stable_too(site, media, render_ctx, article):
    for n in range(1, 6):
        publish(site, media, article(n, tags=("慈善",) if n % 2 else ("慈善", "婚姻登记")), render_ctx)
    tag_dir = site.site_dir / "tag" / tag_key("慈善")
    before = (tag_dir / "page/1.html").read_bytes()
    publish(site, media, article(6, tags=("慈善",)), render_ctx)
    assert (tag_dir / "page/1.html").read_bytes() == before
    assert "第6号通知" in read(tag_dir / "page/2.html")
    marriage = read(site.site_dir / "tag" / tag_key("婚姻登记") / "index.html")
    assert "第2号通知" in marriage and "第6号通知" not in marriage


def test_update_keeps_the_sequence_and_replaces_the_content(site, media, render_ctx, article):
    # Given six articles, the first on archive page 1
    for n in range(1, 7):
        publish(site, media, article(n), render_ctx)
    # When article 1 is corrected
    fixed = article(1, revision=2, title="第1号通知（修订）", correction_note="更正发布日期。")
    receipt = site.update(site.render(fixed, render_ctx), attempt(media, remote_id="a-0001"))
    # Then it keeps its number and page; page 1 shows the new title; page 2 is unaffected
    assert receipt.detail["seq"] == 1
    assert "第1号通知（修订）" in read(site.site_dir / "a/a-0001.html")
    assert "更正说明" in read(site.site_dir / "a/a-0001.html")
    assert "第1号通知（修订）" in read(site.site_dir / "page/1.html")
    assert "第1号通知（修订）" not in read(site.site_dir / "page/2.html")


def test_a_correction_shows_a_dated_notice_and_updates_every_listing(site, media, render_ctx, article):
    # Given two published articles sharing a tag
    publish(site, media, article(1), render_ctx)
    publish(site, media, article(2), render_ctx)
    # When article 1 is corrected: new title and summary, a note, revised the next day
    fixed = article(1, revision=2, title="第1号通知（更正后）", summary="更正后的摘要：申请截止日期延至12月31日。",
                    correction_note="原文截止日期“12月1日”应为“12月31日”。",
                    revised_at=datetime(2026, 11, 26, 2, 15, tzinfo=timezone.utc))
    receipt = site.update(site.render(fixed, render_ctx), attempt(media, remote_id="a-0001"))
    # Then the page carries the dated notice (Asia/Shanghai) above the corrected title
    page = read(site.site_dir / "a/a-0001.html")
    assert "更正说明" in page and "原文截止日期“12月1日”应为“12月31日”。" in page
    assert '<time datetime="2026-11-26T10:15:00+08:00">2026-11-26 10:15</time>' in page
    assert page.index("更正说明") < page.index('<h1 class="article-title">第1号通知（更正后）</h1>')
    # And the front page, its archive page and the tag pages list the new title and summary in its old place
    for listing in ("index.html", "page/1.html", f"tag/{tag_key('社会救助')}/index.html",
                    f"tag/{tag_key('社会救助')}/page/1.html"):
        text = read(site.site_dir / listing)
        assert "第1号通知（更正后）" in text and "更正后的摘要：申请截止日期延至12月31日。" in text, listing
        assert "要求各市州摸清底数" not in text.split("第1号通知（更正后）")[1], listing  # old summary gone
        assert text.index("第2号通知") < text.index("第1号通知（更正后）"), listing
        assert '<time datetime="2026-11-01">2026-11-01</time>' in text, listing  # first-published date kept
    assert receipt.detail["seq"] == 1 and receipt.remote_id == "a-0001"
    with sqlite3.connect(site.site_dir / ".index.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM articles").fetchone()[0] == 2


def test_a_removed_tag_drops_from_that_tags_pages(site, media, render_ctx, article):
    # Given an article tagged 社会救助 and 冬春救助
    publish(site, media, article(1, tags=("社会救助", "冬春救助")), render_ctx)
    publish(site, media, article(2, tags=("冬春救助",)), render_ctx)
    winter = site.site_dir / "tag" / tag_key("冬春救助")
    assert "第1号通知" in read(winter / "index.html")
    # When it is updated without 冬春救助
    site.update(site.render(article(1, revision=2, tags=("社会救助",)), render_ctx), attempt(media, "a-0001"))
    # Then it is gone from that tag's pages and still on the other tag's
    assert "第1号通知" not in read(winter / "index.html")
    assert "第1号通知" not in read(winter / "page/1.html")
    assert "第2号通知" in read(winter / "index.html")
    assert "第1号通知" in read(site.site_dir / "tag" / tag_key("社会救助") / "index.html")


# -- retraction ------------------------------------------------------------------------------------

def test_retract_writes_a_withdrawal_page_and_drops_the_article_everywhere(site, media, render_ctx, article):
    # Given two published articles
    publish(site, media, article(1), render_ctx)
    _, rendition = publish(site, media, article(2), render_ctx)
    # When the second is retracted with a reason
    retraction = Rendition(payload={**rendition.payload, "reason": "信息有误，待核实后重新发布"})
    receipt = site.retract(retraction, attempt(media, remote_id="a-0002"))
    # Then its page is a withdrawal notice, a .gone marker exists, and no listing shows it
    page = read(site.site_dir / "a/a-0002.html")
    assert "已撤回" in page and "信息有误，待核实后重新发布" in page and "第2号通知" in page
    assert "近日，省民政厅召开" not in page
    assert (site.site_dir / "a/a-0002.gone").is_file()
    for listing in ("index.html", "page/1.html", f"tag/{tag_key('社会救助')}/index.html",
                    f"tag/{tag_key('社会救助')}/page/1.html"):
        text = read(site.site_dir / listing)
        assert "第2号通知" not in text and "第1号通知" in text, listing
    assert receipt.remote_id == "a-0002"
    # And retracting again changes nothing
    before = files_of(site.site_dir)
    site.retract(retraction, attempt(media, remote_id="a-0002"))
    assert files_of(site.site_dir) == before


def test_retract_shows_the_reason_from_the_snapshot_and_the_date(site, media, render_ctx, article):
    # Given a published article
    publish(site, media, article(1), render_ctx)
    publish(site, media, article(2), render_ctx)
    # When the core renders the retract from a snapshot carrying the reason (with markup in it)
    retraction = site.render(article(2, retraction_reason=" 数据有误<b>待核实</b>，\n暂停发布 "), render_ctx)
    assert retraction.payload["reason"] == "数据有误<b>待核实</b>，\n暂停发布"
    site.retract(retraction, attempt(media, remote_id="a-0002"))
    # Then the withdrawal page names the article, the reason (as text) and when (Asia/Shanghai)
    page = read(site.site_dir / "a/a-0002.html")
    assert "《第2号通知》" in page and "撤回原因：数据有误&lt;b&gt;待核实&lt;/b&gt;，\n暂停发布" in page
    assert '<time datetime="2026-11-25T16:00:00+08:00">2026-11-25 16:00</time>' in page
    assert "<b>待核实</b>" not in page and "近日，省民政厅召开" not in page
    # And the .gone marker holds the same time, and the listings drop the article
    assert read(site.site_dir / "a/a-0002.gone").strip() == "2026-11-25T16:00:00+08:00"
    assert "第2号通知" not in read(site.site_dir / "index.html")


def test_a_retraction_without_a_reason_shows_no_reason_line(site, media, render_ctx, article):
    publish(site, media, article(1), render_ctx)
    assert "reason" not in site.render(article(1), render_ctx).payload  # a publish carries none
    retraction = site.render(article(1, retraction_reason="  "), render_ctx)  # the core sends "" when none was given
    assert retraction.payload["reason"] is None
    site.retract(retraction, attempt(media, remote_id="a-0001"))
    page = read(site.site_dir / "a/a-0001.html")
    assert "已撤回" in page and "撤回原因" not in page
    assert (site.site_dir / "a/a-0001.gone").is_file()


def test_retracting_something_absent_is_success(site, media):
    receipt = site.retract(Rendition(payload={"slug": "never-published"}), attempt(media, "never-published"))
    assert receipt.remote_id == "never-published"
    assert not (site.site_dir / "a/never-published.html").exists()


def test_publishing_again_after_retraction_restores_the_article(site, media, render_ctx, article):
    _, rendition = publish(site, media, article(1), render_ctx)
    site.retract(rendition, attempt(media, "a-0001"))
    receipt = site.deliver(rendition, attempt(media))
    assert receipt.detail["seq"] == 1
    assert not (site.site_dir / "a/a-0001.gone").exists()
    assert "第1号通知" in read(site.site_dir / "index.html")


# -- delivery properties ---------------------------------------------------------------------------

def test_redelivery_is_idempotent(site, media, render_ctx, article):
    # Given a delivered article with an image
    photo = media.add_image()
    snap = article(1, body_html=f'<p><img src="asset:{photo.sha256}"></p>', assets=(photo,))
    _, rendition = publish(site, media, snap, render_ctx)
    before = files_of(site.site_dir)
    # When the same rendition is delivered again (a retry after an unknown outcome)
    again = Rendition.from_json(rendition.to_json())
    site.deliver(again, Attempt(delivery_id=1, number=2, reconcile=True, remote_id=None, media=media))
    # Then the files are byte-identical and the index holds one entry
    assert files_of(site.site_dir) == before
    with sqlite3.connect(site.site_dir / ".index.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM articles").fetchone()[0] == 1


def test_concurrent_deliveries_all_land(site, media, render_ctx, article):
    # Given ten renditions
    renditions = [site.render(article(n), render_ctx) for n in range(1, 11)]
    errors: list[BaseException] = []

    def run(r):
        try:
            site.deliver(r, attempt(media))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    # When ten threads deliver them at once
    threads = [threading.Thread(target=run, args=(r,)) for r in renditions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then every article has a distinct number and is listed
    assert errors == []
    with sqlite3.connect(site.site_dir / ".index.sqlite") as db:
        seqs = sorted(s for (s,) in db.execute("SELECT seq FROM articles"))
    assert seqs == list(range(1, 11))
    listed = read(site.site_dir / "page/1.html") + read(site.site_dir / "page/2.html")
    assert all(f"第{n}号通知" in listed for n in range(1, 11))


def test_publishing_into_a_large_site_rewrites_a_constant_handful_of_files(ports, media, render_ctx,
                                                                         monkeypatch, article):
    # Given a site with 200 articles
    site = make_channel(ports, page_size=20)
    for n in range(1, 201):
        publish(site, media, article(n, tags=("社会救助", f"专题{n % 7}")), render_ctx)
    written: list[Path] = []
    real = localfs.atomic_write

    def counting(path, data):
        changed = real(path, data)
        if changed:
            written.append(path.relative_to(site.site_dir))
        return changed
    monkeypatch.setattr(localfs, "atomic_write", counting)
    # When article 201 is published
    publish(site, media, article(201, tags=("社会救助", "专题1")), render_ctx)
    # Then only its page, the front page, one archive page (and the new empty next one at most)
    # and each tag's front and archive page changed
    names = sorted(map(str, written))
    assert "a/a-0201.html" in names and "index.html" in names and "page/11.html" in names
    assert len(names) <= 1 + 1 + 2 + 2 * 2, names
    assert not any(n.startswith("page/") and n != "page/11.html" for n in names)


def test_storage_failure_is_unavailable_naming_the_path(ports, media, render_ctx, make_snapshot):
    # Given a site directory that cannot be created (a file is in the way)
    ports.public_dir.mkdir(parents=True)
    (ports.public_dir / "m_site").write_text("not a directory")
    site = make_channel(ports)
    # When delivering, Then the error is transient and names the path
    with pytest.raises(Unavailable, match="m_site"):
        site.deliver(site.render(make_snapshot(), render_ctx), attempt(media))


# -- in a real browser -----------------------------------------------------------------------------

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.mark.browser
def test_pages_render_in_headless_chromium(ports, media, render_ctx, article):
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("chromium is not installed")
    # Given a small site with covers, a rich article with a correction, and an archive
    site = make_channel(ports)
    topics = ["全省养老服务质量提升行动推进会召开", "2026年度社会组织年报工作启动",
              "婚姻登记“跨省通办”试点扩大至全省", "省民政厅开展冬季流浪乞讨人员救助专项行动",
              "关于做好低保边缘家庭认定工作的通知", "全省儿童福利机构优化提质和创新转型工作推进"]
    colors = ["#5b7fa6", "#9a6b4f", "#6d8f6a", "#8a7aa8", "#a0894e", "#4f8a8b"]
    for n, (topic, color) in enumerate(zip(topics, colors), start=1):
        cover = media.add_image(color, size=(320, 200)) if n % 2 else None
        publish(site, media, article(n, title=topic, cover=cover, unit="省民政厅办公室",
                                     summary=f"{topic}，进一步提升基本民生保障水平，推动民政事业高质量发展。"),
                render_ctx)
    photo = media.add_image("#7d93ad", size=(640, 400))
    body = (f"<p>11月24日，省民政厅召开全省冬春救助工作视频会议，对2026年冬春困难群众救助工作进行部署。</p>"
            f"<h2>一、摸清底数，精准识别</h2><p>各地要对低保对象、特困人员、低保边缘家庭等开展走访排查，"
            f"做到<strong>不漏一户、不落一人</strong>。</p>"
            f"<figure><img src=\"asset:{photo.sha256}\" alt=\"会议现场\" width=\"640\" height=\"400\">"
            f"<figcaption>全省冬春救助工作视频会议现场</figcaption></figure>"
            f"<h2>二、加大资金保障力度</h2><table><thead><tr><th>项目</th><th>标准（元/月）</th></tr></thead>"
            f"<tbody><tr><td>城市低保</td><td>850</td></tr><tr><td>农村低保</td><td>620</td></tr></tbody></table>"
            f"<blockquote><p>困难群众温暖过冬，是检验民生保障成色的试金石。</p></blockquote>"
            f"<ul><li>开通24小时救助热线</li><li>设立临时救助站点</li></ul>"
            f"<p>详见<a href=\"https://www.mca.gov.cn/\">民政部网站</a>。</p>")
    snap = article(7, slug="2026-winter-relief", title="省民政厅部署2026年冬春困难群众救助工作",
                   body_html=body, assets=(photo,), revision=2, correction_note="第二部分表格中农村低保标准已更正为620元/月。",
                   revised_at=datetime(2026, 11, 25, 3, 0, tzinfo=timezone.utc))
    publish(site, media, snap, render_ctx)
    site.retract(Rendition(payload={"slug": "a-0002", "reason": "内容需进一步核实"}), attempt(media, "a-0002"))
    pages = {"article": site.site_dir / "a/2026-winter-relief.html", "index": site.site_dir / "index.html",
             "tag": site.site_dir / "tag" / tag_key("社会救助") / "index.html",
             "archive": site.site_dir / "page/1.html", "withdrawn": site.site_dir / "a/a-0002.html"}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # When Chromium opens them over file:// at a phone and a desktop size
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            for label, viewport in (("phone", {"width": 390, "height": 844}),
                                    ("desktop", {"width": 1280, "height": 900})):
                page = browser.new_page(viewport=viewport, device_scale_factor=2 if label == "phone" else 1)
                failed: list[str] = []
                page.on("requestfailed", lambda req: failed.append(req.url))
                for name, path in pages.items():
                    page.goto(path.as_uri())
                    # Then the title is visible, the stylesheet applied, and nothing failed to load
                    title = page.locator("h1").first
                    assert title.is_visible()
                    expected = {"article": snap.title, "index": "最新发布", "tag": "社会救助", "archive": "往期文章",
                                "withdrawn": "已撤回"}[name]
                    assert expected in title.inner_text()
                    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != "rgba(0, 0, 0, 0)"
                    width = page.evaluate("document.documentElement.scrollWidth")
                    assert width <= viewport["width"], f"{name} overflows horizontally at {label}"
                    page.screenshot(path=str(ARTIFACTS / f"microsite-{name}-{label}.png"), full_page=True)
                assert failed == []
                page.close()
        finally:
            browser.close()
