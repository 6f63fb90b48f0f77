"""What every mode delivers: realistic articles, the channel set, configs, and the one HTTP call per
(article, channel) that bare Celery and the sequential loop make.

The articles are the sample quarterly bulletin (Chinese, a table, ~2 KB, no images) with a new
title, slug and tags each, read through `syndicator.articles.read_article` like a real publish.
The channels are the two whose delivery is one HTTP request to an emulator: the WordPress portal
(`POST wp/v2/posts`) and Weibo (`statuses/share`). Bare Celery and the sequential loop send the
bytes syndicator's own adapters render for the article, so all modes make the same calls.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from bench.emulators import WEIBO_TOKEN, WP_PASSWORD, WP_USER
from bench.services import REPO
from channels.base import ArticleSnapshot, RenderContext
from syndicator.articles import ArticleDraft, read_article

#: The body every benchmark article carries (front matter stripped).
SAMPLE = REPO / "examples" / "articles" / "2026-q3-info-bulletin.md"
#: Tags drawn from, two per article, as a civil-affairs office would use them.
TAGS = ["社会救助", "养老服务", "儿童福利", "社会组织", "区划地名", "婚姻登记", "殡葬管理", "慈善事业",
        "社会事务", "政策解读"]
TOPICS = ["政务信息报送情况通报", "冬春救助工作部署", "养老服务补贴公示", "社会组织年检结果", "婚姻登记服务提示",
          "慈善募捐备案公告", "区划调整工作通知", "儿童福利机构检查"]
#: Where the micro-site is served; the Weibo status links to it, so it must be on the safe domain.
SITE_URL = "http://127.0.0.1:8470/"
#: The fan-out channels of the throughput runs: one HTTP request per delivery.
HTTP_CHANNELS = ("portal", "weibo_main")


def body_text() -> str:
    text = SAMPLE.read_text(encoding="utf-8")
    return text.split("---", 2)[2].strip()


def write_articles(folder: Path, prefix: str, count: int, *, offset: int = 0) -> list[Path]:
    """`count` article files with distinct slugs `<prefix>-<n>`, titles and tag pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    body = body_text()
    paths = []
    for n in range(offset, offset + count):
        meta = {"title": f"{TOPICS[n % len(TOPICS)]}（{prefix}第{n}号）",
                "summary": f"第{n}号：各市州民政局共向省厅上报政务信息417条，省厅门户网站采用233条，采用率55.9%。"
                           "现将各市州报送、采用和新媒体同步发布情况予以通报。",
                "author": "周晓宁", "unit": "省民政厅办公室",
                "tags": [TAGS[n % len(TAGS)], TAGS[(n * 3 + 1) % len(TAGS)]], "slug": f"{prefix}-{n}"}
        path = folder / f"{prefix}-{n}.md"
        path.write_text("---\n" + yaml.safe_dump(meta, allow_unicode=True) + "---\n\n" + body + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def read_drafts(paths: list[Path]) -> list[ArticleDraft]:
    return [read_article(p, max_image_bytes=10 * 1024 * 1024, max_body_chars=200_000) for p in paths]


def make_drafts(folder: Path, prefix: str, count: int) -> list[ArticleDraft]:
    return read_drafts(write_articles(folder, prefix, count))


def snapshot(draft: ArticleDraft, article_id: int, now: datetime | None = None) -> ArticleSnapshot:
    """The snapshot syndicator would build for revision 1 of `draft`."""
    now = now or datetime.now(timezone.utc)
    return ArticleSnapshot(article_id=article_id, slug=draft.slug, revision=1, content_hash=draft.content_hash,
                           title=draft.title, summary=draft.summary, body_html=draft.body_html,
                           author=draft.author, unit=draft.unit, tags=tuple(draft.tags), cover=None, assets=(),
                           first_published_at=now, revised_at=now)


def http_channels(urls: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Channel instances of the throughput runs, pointed at the emulators."""
    return {
        "portal": {"type": "portal", "base_url": urls["wordpress"], "username": WP_USER, "app_password": WP_PASSWORD},
        "weibo_main": {"type": "weibo", "api_base": urls["weibo"] + "/", "access_token": WEIBO_TOKEN,
                       "safe_domain": "127.0.0.1"},
    }


def file_channels() -> dict[str, dict[str, Any]]:
    """The local file channels of the growth runs."""
    return {"rss_main": {"type": "rss", "title": "省民政厅 · 信息发布", "items": 50},
            "microsite": {"type": "microsite", "title": "省民政厅移动微站", "path": "m"}}


def write_config(path: Path, *, database_url: str, broker_url: str, channels: dict[str, dict[str, Any]],
                 concurrency: int = 8, worker: dict[str, Any] | None = None) -> Path:
    """A config.yaml like the shipped one: thread pool, default delivery policy, no sandbox."""
    data = {
        "database_url": database_url,
        "broker_url": broker_url,
        "paths": {"var": str(path.parent / "var"), "public": str(path.parent / "public")},
        "site": {"name": "基准测试", "base_url": SITE_URL},
        "worker": {"pool": "threads", "concurrency": concurrency, **(worker or {})},
        "channels": channels,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@dataclass(frozen=True)
class Call:
    """One delivery as a plain HTTP request (JSON-serialisable, so it can ride in a Celery message)."""

    channel: str
    key: str
    request: dict[str, Any]


def calls_for(rt, draft: ArticleDraft, article_id: int) -> list[Call]:
    """The request each HTTP channel's adapter would send for this article, rendered by the adapter."""
    ctx = RenderContext(now=rt.clock(), ports=rt.ports)
    snap = snapshot(draft, article_id, ctx.now)
    calls = []
    for name in HTTP_CHANNELS:
        channel = rt.channel(name)
        payload = channel.render(snap, ctx).payload
        settings = channel.settings
        if name == "portal":
            fields = {"title": payload["title"], "content": payload["content"], "excerpt": payload["excerpt"],
                      "slug": payload["slug"], "date_gmt": payload["date_gmt"], "featured_media": 0,
                      "status": payload["status"]}
            request = {"method": "POST", "url": f"{settings.base_url}/wp-json/wp/v2/posts",
                       "body": json.dumps(fields, ensure_ascii=False),
                       "headers": {"Content-Type": "application/json; charset=utf-8"},
                       "auth": [settings.username, settings.app_password.get_secret_value()]}
            key = f"wordpress:{payload['slug']}"
        else:
            request = {"method": "POST", "url": settings.api_base + "2/statuses/share.json",
                       "data": {"status": payload["status"], "rip": settings.rip,
                                "access_token": settings.access_token.get_secret_value()}}
            key = f"weibo:{draft.slug}"
        calls.append(Call(name, key, request))
    return calls
