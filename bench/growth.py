"""Growth: what publishing one more article costs when the archive already holds N articles.

For each N, a fresh system with the two local file channels (RSS/Atom feed and micro-site) is
seeded with N delivered articles: rows in syndicator's database (articles, revisions, deliveries,
events) and items in each channel's own listing store (`.index.sqlite`), bulk-inserted in the shape
the adapters write, from entries the adapters rendered. Then, in process, each of a series of new
articles is published (`publishing.publish`) and its deliveries run (`pipeline.run`, what a worker
task calls), timed phase by phase. The feed and the micro-site must stay flat: they rewrite a fixed
set of files per delivery, whatever the archive size.
"""
from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import insert, select

from bench.stats import median
from bench.workload import TAGS, file_channels, snapshot, write_config
from channels import rss
from channels.base import RenderContext
from channels.microsite import tag_key
from channels.microsite_index import SCHEMA as SITE_SCHEMA
from syndicator import pipeline
from syndicator.articles import ArticleDraft
from syndicator.config import load_config
from syndicator.models import Article, Delivery, Event, Revision
from syndicator.publishing import publish
from syndicator.runtime import Runtime

LEVELS = (0, 100, 1_000, 10_000)


def _seed_sql(rt: Runtime, template: ArticleDraft, n: int, start: datetime) -> None:
    articles, revisions, deliveries, events = [], [], [], []
    for i in range(1, n + 1):
        at = start + timedelta(minutes=i)
        articles.append(dict(id=i, slug=f"old-{i}", status="live", current_revision=1, first_published_at=at,
                             created_at=at, created_by="bench:seed", source=f"old-{i}.md"))
        revisions.append(dict(id=i, article_id=i, number=1, content_hash=f"{i:064x}", title=f"{template.title}{i}",
                              summary=template.summary, body_source=template.body_source, body_html=template.body_html,
                              author=template.author, unit=template.unit,
                              tags=[TAGS[i % len(TAGS)], TAGS[(i * 3 + 1) % len(TAGS)]], asset_shas=[],
                              created_at=at, created_by="bench:seed"))
        for k, (name, entry) in enumerate(rt.config.enabled_channels().items()):
            did = 2 * i - 1 + k
            deliveries.append(dict(id=did, article_id=i, revision_id=i, revision=1, channel=name,
                                   channel_type=entry.type, operation="publish", state="delivered", attempts=1,
                                   remote_id=f"old-{i}", created_at=at, updated_at=at, delivered_at=at))
            events += [dict(at=at, actor="bench:seed", kind="transition", article_id=i, delivery_id=did,
                            from_state=a, to_state=b, attempt=int(b != "queued"))
                       for a, b in ((None, "queued"), ("queued", "sending"), ("sending", "delivered"))]
    if n:
        with rt.store.write() as session:
            for model, rows in ((Article, articles), (Revision, revisions), (Delivery, deliveries), (Event, events)):
                session.execute(insert(model), rows)


def _seed_rss(rt: Runtime, template: ArticleDraft, n: int, start: datetime) -> None:
    channel = rt.channel("rss_main")
    channel.directory.mkdir(parents=True, exist_ok=True)
    payload = channel.render(snapshot(template, 1, start), RenderContext(now=start, ports=rt.ports)).payload
    rows = []
    for i in range(1, n + 1):
        at = (start + timedelta(minutes=i)).isoformat()
        item = {**payload, "guid": f"urn:syndicator:article:{i}", "title": f"{payload['title']}{i}",
                "published": at, "updated": at}
        rows.append(rss.index_row(item, rt.ports.timezone))  # the row a delivery stores, XML fragments included
    with closing(sqlite3.connect(channel.directory / ".index.sqlite")) as db:
        rss.prepare_index(db)
        with db:
            db.executemany(rss.UPSERT_SQL, rows)


def _seed_microsite(rt: Runtime, template: ArticleDraft, n: int, start: datetime) -> None:
    channel = rt.channel("microsite")
    channel.site_dir.mkdir(parents=True, exist_ok=True)
    entry = channel.render(snapshot(template, 1, start), RenderContext(now=start, ports=rt.ports)).payload["entry"]
    articles, tags, tag_seq = [], [], {}
    for i in range(1, n + 1):
        pair = [TAGS[i % len(TAGS)], TAGS[(i * 3 + 1) % len(TAGS)]]
        slug = f"old-{i}"
        articles.append((slug, i, json.dumps({**entry, "slug": slug, "title": f"{entry['title']}{i}", "tags": pair},
                                             ensure_ascii=False, sort_keys=True)))
        for tag in dict.fromkeys(pair):
            key = tag_key(tag)
            tag_seq[key] = tag_seq.get(key, 0) + 1
            tags.append((key, slug, tag_seq[key], tag))
    with closing(sqlite3.connect(channel.site_dir / ".index.sqlite")) as db:
        db.executescript(SITE_SCHEMA)
        with db:
            db.executemany("INSERT INTO articles (slug, seq, entry) VALUES (?, ?, ?)", articles)
            db.executemany("INSERT INTO tags (key, slug, seq, tag) VALUES (?, ?, ?, ?)", tags)


def _publish_one(rt: Runtime, draft: ArticleDraft) -> dict[str, float]:
    """Publish and deliver one article in process: wall milliseconds per phase, and CPU in total."""
    t0, cpu0 = time.perf_counter(), time.thread_time()
    result = publish(rt.store, rt.config, draft, actor="bench:editor", enqueuer=None)
    out = {"publish_ms": (time.perf_counter() - t0) * 1000}
    with rt.store.read() as session:
        channels = dict(session.execute(select(Delivery.id, Delivery.channel)
                                        .where(Delivery.id.in_(result.delivery_ids))).all())
    for delivery_id in result.delivery_ids:
        t = time.perf_counter()
        state = pipeline.run(rt, delivery_id)
        if state != "delivered":
            raise RuntimeError(f"growth: delivery {delivery_id} ended {state}")
        out[f"{channels[delivery_id]}_ms"] = (time.perf_counter() - t) * 1000
    out["total_ms"] = (time.perf_counter() - t0) * 1000
    out["total_cpu_ms"] = (time.thread_time() - cpu0) * 1000
    return out


def prepare(folder: Path, broker_url: str, template: ArticleDraft, n: int) -> tuple[Runtime, float]:
    """A system whose archive holds `n` delivered articles, warmed up; and the seconds seeding took."""
    path = write_config(folder / "config.yaml", database_url=f"sqlite:///{folder / 'syndicator.db'}",
                        broker_url=broker_url, channels=file_channels())
    rt = Runtime(load_config(path))
    rt.store.migrate()
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    t = time.perf_counter()
    _seed_sql(rt, template, n, start)
    _seed_rss(rt, template, n, start)
    _seed_microsite(rt, template, n, start)
    seeded = time.perf_counter() - t
    _publish_one(rt, replace(template, slug=f"warm-{n}"))  # templates, connections, first page files
    return rt, seeded


def measure(folder: Path, broker_url: str, drafts: list[ArticleDraft], samples: int, progress) -> dict:
    """Every archive size is prepared first; then the new articles go to each size in turn
    (rotating order), so a busy moment of the machine falls on all sizes alike."""
    systems = {n: prepare(folder / f"archive-{n}", broker_url, drafts[0], n) for n in LEVELS}
    timings: dict[int, list[dict[str, float]]] = {n: [] for n in LEVELS}
    for i in range(samples):
        for n in LEVELS[i % len(LEVELS):] + LEVELS[:i % len(LEVELS)]:
            timings[n].append(_publish_one(systems[n][0], replace(drafts[i % len(drafts)], slug=f"new-{n}-{i}")))
    rows = []
    for n in LEVELS:
        systems[n][0].store.dispose()
        row = {"archive": n, "samples": samples, "seed_s": round(systems[n][1], 2)}
        for phase in timings[n][0]:
            row[phase] = median(x[phase] for x in timings[n])
        rows.append(row)
        progress(f"growth: archive {n:>6}: one more article {row['total_ms']:.1f} ms, CPU {row['total_cpu_ms']:.1f} ms "
                 f"(rss {row.get('rss_main_ms', 0):.1f}, microsite {row.get('microsite_ms', 0):.1f}, "
                 f"publish {row['publish_ms']:.1f})")
    def ratios(base: dict) -> dict:
        return {str(row["archive"]): {phase: row[phase] / base[phase] for phase in base
                                      if phase.endswith("_ms") and base[phase]}
                for row in rows if row["archive"] > base["archive"]}

    # vs 100: the feed (50 items) and the listing pages (20 entries) are full from there on, so this
    # isolates the archive size from the fixed-size outputs filling up.
    return {"levels": rows, "ratios_vs_empty": ratios(rows[0]), "ratios_vs_100": ratios(rows[1])}
