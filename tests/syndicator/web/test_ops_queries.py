"""The ops dashboard's list queries against straightforward references, on SQLite and PostgreSQL:
the attention list (one index walk per state, merged), the matrix by state (the (state, article_id)
walk) and the matrix search (the trigram index of migration 0007, and the newest-first scan for
one- and two-character texts); and migration 0007 itself on a database that already has articles."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from alembic import command
from sqlalchemy import inspect, select, text

from syndicator.config import load_config
from syndicator.models import Article, Delivery, Revision
from syndicator.runtime import Runtime
from syndicator.states import DeliveryState as S
from syndicator.store import Store
from syndicator.web.ops.deliveries import ATTENTION, TABS, delivery_list
from syndicator.web.ops.matrix import matrix
from tests.support.services import PG_ADMIN_DSN, PostgresDatabase, write_config

CHANNELS = {
    "rss_main": {"type": "rss", "title": "测试订阅", "items": 100},
    "microsite": {"type": "microsite", "title": "测试微站", "path": "m"},
    "weibo_main": {"type": "weibo", "api_base": "http://127.0.0.1:9/", "access_token": "weibo-test-token",
                   "safe_domain": "127.0.0.1"},
}
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
#: Titles (and a few slugs) chosen for the search: Chinese, ASCII in both cases, LIKE wildcards,
#: a backslash and a double quote.
TITLES = ["省民政厅部署冬春救助工作", "关于做好婚姻登记工作的通知", "Winter Relief Fund 冬季救助", "WINTER relief",
          "养老服务 100% 覆盖", "养老服务 100 项", "a_b 测试", "axb 测试", "路径 C:\\data\\民政", "引号 \"民政\" 说明",
          "殡葬改革", "民政", "社会救助 50%off", "救", "Fund raising 民政厅"]
SLUGS = ["minzheng-Winter", "Alpha_News", "alpha-news", "relief%2026", "plain"]
#: Search texts: 1, 2 and ≥3 characters; case; `%`, `_`, `\\`, `"`; a text only an old revision has.
SEARCHES = ["救", "民", "民政", "救助", "民政厅", "冬春救助", "winter", "WINTER", "Relief", "wInTeR rElIeF", "fund",
            "%", "_", "100%", "0%", "a_b", "_b", "\\", "C:\\data", "\"民政\"", "\"", "alpha", "ALPHA_news", "a-n",
            "relief%", "%2026", "旧标题", "x", "不存在的文字", "plain", "-"]


def _runtime(tmp_path, url: str) -> Runtime:
    config = load_config(write_config(tmp_path / "config.yaml", database_url=url,
                                      broker_url=f"sqla+sqlite:///{tmp_path / 'b.db'}", public=tmp_path / "public",
                                      channels=CHANNELS))
    rt = Runtime(config, clock=lambda: T0)
    rt.store.migrate()
    return rt


@pytest.fixture
def rt(tmp_path, database_url):
    runtime = _runtime(tmp_path, database_url)
    yield runtime
    runtime.store.dispose()


def seed(rt: Runtime, n_articles: int = 60, seed_: int = 7, prefix: str = "") -> None:
    """Articles (some corrected, so their current title differs from the first) and deliveries in
    every state, interleaved so that later deliveries (updates, retries) belong to older articles."""
    rnd = random.Random(seed_)
    states = [s.value for s in S]
    channels = list(CHANNELS)

    def articles(s):
        ids = []
        for i in range(n_articles):
            title = TITLES[i % len(TITLES)] if i % 4 else f"{TITLES[i % len(TITLES)]} {i}"
            slug = prefix + (f"{SLUGS[i % len(SLUGS)]}-{i}" if i % 3 == 0 else f"article-{i}")
            corrected = i % 7 == 3
            a = Article(slug=slug, status="live", current_revision=2 if corrected else 1, first_published_at=T0,
                        created_at=T0 + timedelta(minutes=i), created_by="editor")
            s.add(a)
            s.flush()
            revs = [Revision(article_id=a.id, number=1, content_hash=f"{i}-1",
                             title="旧标题 " + title if corrected else title,
                             body_source="x", body_html="x", created_at=a.created_at, created_by="editor")]
            if corrected:
                revs.append(Revision(article_id=a.id, number=2, content_hash=f"{i}-2", title=title, body_source="x",
                                     body_html="x", created_at=a.created_at, created_by="editor"))
            s.add_all(revs)
            s.flush()
            ids.append((a.id, revs[-1].id))
        return ids
    ids = rt.store.run_write(articles)

    def deliveries(s):
        # first a publish delivery per article and channel (mostly, not always), then a shuffled
        # tail of updates: newer delivery ids for older articles
        rows = [(a, r, c, "publish") for a, r in ids for c in channels if rnd.random() < 0.9]
        rows += [(a, r, rnd.choice(channels), "update") for a, r in rnd.sample(ids, len(ids) // 2)]
        rows += [(a, r, rnd.choice(channels), "retract") for a, r in rnd.sample(ids, len(ids) // 3)]
        for n, (a, r, c, op) in enumerate(rows):
            st = rnd.choice(states) if rnd.random() < 0.6 else rnd.choice(["failed", "delivered"])
            s.add(Delivery(article_id=a, revision_id=r, revision=1, channel=c, channel_type=CHANNELS[c]["type"],
                           operation=op, state=st, attempts=1, created_at=T0 + timedelta(seconds=n),
                           updated_at=T0 + timedelta(seconds=n), last_error="HTTP 503" if st == "failed" else None))
    rt.store.run_write(deliveries)


def _all(rt: Runtime):
    with rt.store.read() as s:
        articles = {a.id: a for a in s.scalars(select(Article))}
        revisions = {(r.article_id, r.number): r for r in s.scalars(select(Revision))}
        by_id = {r.id: r for r in revisions.values()}
        deliveries = sorted(s.scalars(select(Delivery)), key=lambda d: d.id)
    return articles, revisions, by_id, deliveries


# -- references: the plain definitions, in Python ----------------------------------------------

def ref_delivery_list(data, states, channel, limit, before_id):
    articles, _, by_id, deliveries = data
    rows = [d for d in reversed(deliveries) if d.state in states and (not channel or d.channel == channel)
            and (not before_id or d.id < before_id)][:limit]
    return [(d.id, articles[d.article_id].slug, by_id[d.revision_id].title, d.state, d.channel) for d in rows]


def _folds(q: str, value: str | None) -> bool:
    """Case-insensitive substring (the test data's cased letters are all ASCII)."""
    return value is not None and q.lower() in value.lower()


def ref_matrix(data, state, channel, q, before_id, limit):
    articles, revisions, _, deliveries = data
    latest: dict[tuple[int, str], Delivery] = {}
    for d in deliveries:
        latest[(d.article_id, d.channel)] = d
    out = []
    for a in sorted(articles.values(), key=lambda a: -a.id):
        if before_id and a.id >= before_id:
            continue
        title = revisions[(a.id, a.current_revision)].title
        if q and not (_folds(q, a.slug) or _folds(q, title)):
            continue
        if state and not any(d.state == state for (aid, c), d in latest.items()
                             if aid == a.id and (not channel or c == channel)):
            continue
        out.append((a.id, a.slug, title, {c: d.id for (aid, c), d in latest.items() if aid == a.id}))
        if len(out) == limit:
            break
    return out


def got_matrix(rows):
    return [(r["id"], r["slug"], r["title"], {c: d.id for c, d in r["cells"].items()}) for r in rows]


def pages(fetch, ref, key):
    """Walk every keyset page of `fetch` and of `ref` side by side; the pages must be equal."""
    before, n = None, 0
    while True:
        got, want = fetch(before), ref(before)
        assert got == want, (before, got, want)
        n += len(got)
        if not got:
            return n
        before = key(got[-1])


# -- the attention list and the other list tabs ---------------------------------------------------

def test_delivery_list_walks_each_state_and_matches_the_plain_query(rt):
    seed(rt)
    data = _all(rt)
    for states in [*TABS.values(), ATTENTION[::-1], (S.DELIVERED.value, S.FAILED.value), ()]:
        for channel in (None, "rss_main", "weibo_main"):
            for limit in (1, 4, 50):
                def fetch(before, states=states, channel=channel, limit=limit):
                    return [(r["id"], r["slug"], r["title"], r["state"], r["channel"])
                            for r in delivery_list(rt, states, channel=channel, limit=limit, before_id=before)]
                n = pages(fetch, lambda before, states=states, channel=channel, limit=limit:
                          ref_delivery_list(data, states, channel, limit, before), key=lambda r: r[0])
                assert n == len(ref_delivery_list(data, states, channel, 10**6, None))
    first = delivery_list(rt, ATTENTION)
    assert len(first) == 50 and {r["state"] for r in first} == set(ATTENTION)
    assert set(first[0]) >= {"id", "article_id", "slug", "title", "channel", "type", "operation", "revision",
                             "state", "attempts", "error", "updated_at", "created_at", "next_attempt_at",
                             "remote_url"}


# -- the matrix ------------------------------------------------------------------------------------

def test_matrix_by_state_matches_the_plain_definition_page_by_page(rt):
    seed(rt)
    data = _all(rt)
    deliveries = data[3]
    # the data has what makes a delivery-id walk differ from the article order
    assert any(a.article_id < b.article_id and a.id > b.id for a, b in zip(deliveries[1:], deliveries))
    for state in (None, *(s.value for s in S)):
        for channel in (None, "rss_main", "microsite"):
            for limit in (3, 25):
                n = pages(lambda before, state=state, channel=channel, limit=limit: got_matrix(
                              matrix(rt, state=state, channel=channel, q=None, before_id=before, limit=limit)),
                          lambda before, state=state, channel=channel, limit=limit:
                              ref_matrix(data, state, channel, None, before, limit), key=lambda r: r[0])
                assert state or n == len(data[0])


def test_matrix_search_matches_the_plain_definition(rt):
    seed(rt)
    data = _all(rt)
    found = set()
    for q in SEARCHES:
        for state in (None, "failed", "delivered", "manual"):
            for channel in (None, "weibo_main"):
                for limit in (2, 25):
                    n = pages(lambda before, q=q, state=state, channel=channel, limit=limit: got_matrix(
                                  matrix(rt, state=state, channel=channel, q=q, before_id=before, limit=limit)),
                              lambda before, q=q, state=state, channel=channel, limit=limit:
                                  ref_matrix(data, state, channel, q, before, limit), key=lambda r: r[0])
                    if n:
                        found.add(q)
    # the texts really exercise something: most find articles, the old title and the absent ones none
    assert {"民政", "民政厅", "winter", "WINTER", "100%", "a_b", "\\", "\"", "alpha", "ALPHA_news", "relief%", "救"} <= found
    assert not {"旧标题", "不存在的文字"} & found
    titles = lambda q: {r["title"] for r in matrix(rt, state=None, channel=None, q=q, before_id=None, limit=100)}
    assert titles("100%") and all("100%" in t for t in titles("100%"))
    assert titles("a_b") and all("a_b" in t for t in titles("a_b")) and not any("axb" in t for t in titles("_b"))
    assert titles("winter") == titles("WINTER") and any("Winter" in t for t in titles("winter"))


def test_search_follows_publish_and_correction(rt):
    seed(rt, n_articles=5)

    def correct(s):
        a = s.scalar(select(Article).where(Article.slug == "article-1"))
        s.add(Revision(article_id=a.id, number=2, content_hash="c2", title="更正后的标题 Zebra", body_source="x",
                       body_html="x", created_at=T0, created_by="editor"))
        s.flush()
        a.current_revision = 2
    rt.store.run_write(correct)
    search = lambda q: [r["slug"] for r in matrix(rt, state=None, channel=None, q=q, before_id=None)]
    assert search("更正后的标题") == search("更正") == search("zebra") == ["article-1"]
    assert search("婚姻登记工作") == []  # article-1's first title no longer counts

    def rename(s):
        s.scalar(select(Article).where(Article.slug == "article-2")).slug = "Renamed-Slug"
    rt.store.run_write(rename)
    assert search("renamed-SLUG") == search("sL") == ["Renamed-Slug"]

    def retitle(s):
        a = s.scalar(select(Article).where(Article.slug == "article-4"))
        s.add(Revision(article_id=a.id, number=2, content_hash="c4", title="ÉCOLE Café", body_source="x",
                       body_html="x", created_at=T0, created_by="editor"))
        s.flush()
        a.current_revision = 2
    rt.store.run_write(retitle)
    assert search("Café") == search("CAF") == search("ÉCOLE") == ["article-4"]
    # Beyond ASCII, case is folded as each database's LIKE does: not at all by SQLite's (the
    # trigram index folds it, so its candidates are checked again), by the locale on PostgreSQL.
    assert search("école") == search("CAFÉ") == ([] if rt.store.dialect == "sqlite" else ["article-4"])
    check_search_index(rt.store)


def check_search_index(store: Store) -> None:
    """article_search holds exactly each article's slug and current title, and on SQLite the FTS
    index finds each row by its slug and by its title."""
    with store.write() as s:
        want = set(s.execute(select(Article.id, Article.slug, Revision.title).join(
            Revision, (Revision.article_id == Article.id) & (Revision.number == Article.current_revision))).all())
        assert set(s.execute(text("SELECT id, slug, title FROM article_search")).all()) == want
        if store.dialect == "sqlite":
            s.execute(text("INSERT INTO article_search_fts (article_search_fts) VALUES ('integrity-check')"))
            for id_, *values in want:
                for value in values:
                    if len(value) >= 3:
                        found = s.scalars(text("SELECT rowid FROM article_search_fts WHERE article_search_fts "
                                               "MATCH :q"), {"q": '"' + value.replace('"', '""') + '"'}).all()
                        assert id_ in found, (id_, value)


# -- migration 0007 --------------------------------------------------------------------------------

def _alembic(store: Store, action: str, target: str) -> None:
    cfg = store._alembic()
    with store.write_engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, target)


def _search_objects(store: Store) -> set[str]:
    with store.read_engine.connect() as conn:
        names = set(inspect(conn).get_table_names())
        if store.dialect == "sqlite":
            names |= set(conn.scalars(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")))
        else:
            names |= set(conn.scalars(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")))
            names |= set(conn.scalars(text("SELECT indexname FROM pg_indexes WHERE tablename = 'article_search'")))
        names |= {i["name"] for i in inspect(conn).get_indexes("deliveries")}
    return {n for n in names if "article_search" in n or n == "ix_deliveries_state_article"}


def test_migration_0007_indexes_existing_articles_and_downgrades_cleanly(tmp_path, database_url):
    store = Store(database_url)
    try:
        _alembic(store, "upgrade", "0006")
        assert not _search_objects(store)
        rt = Runtime(load_config(write_config(tmp_path / "config.yaml", database_url=database_url,
                                              broker_url=f"sqla+sqlite:///{tmp_path / 'b.db'}",
                                              public=tmp_path / "public", channels=CHANNELS)), store=store)
        seed(rt, n_articles=30)  # written before the search table exists
        data = _all(rt)
        rt.store.migrate()
        assert rt.store.current_revision() == "0007"
        objects = _search_objects(store)
        assert {"article_search", "ix_deliveries_state_article"} <= objects
        if store.dialect == "sqlite":
            assert {"article_search_fts", "article_search_article_ai", "article_search_revision_ai"} <= objects
        else:
            assert {"ix_article_search_slug_trgm", "ix_article_search_title_trgm", "article_search_article",
                    "article_search_revision"} <= objects
        for q in ("民政厅", "民政", "winter", "100%", "旧标题", "alpha"):
            got = got_matrix(matrix(rt, state=None, channel=None, q=q, before_id=None, limit=100))
            assert got == ref_matrix(data, None, None, q, None, 100), q
        assert got_matrix(matrix(rt, state=None, channel=None, q="民政厅", before_id=None, limit=100))
        check_search_index(store)

        _alembic(store, "downgrade", "0006")
        assert not _search_objects(store)
        seed(rt, n_articles=3, seed_=8, prefix="after-")  # articles can still be written: no trigger is left behind
        _alembic(store, "upgrade", "head")
        data = _all(rt)
        for q in ("民政厅", "民政", "Winter"):
            got = got_matrix(matrix(rt, state=None, channel=None, q=q, before_id=None, limit=200))
            assert got == ref_matrix(data, None, None, q, None, 200) and got, q
        check_search_index(store)
    finally:
        store.dispose()


def test_migration_0007_succeeds_without_pg_trgm_and_search_still_works(tmp_path):
    """A PostgreSQL role that may not create extensions: no trigram indexes, same answers."""
    import psycopg
    from sqlalchemy.engine import make_url

    db = PostgresDatabase()
    role = db.name + "_owner"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'CREATE DATABASE "{db.name}" OWNER "{role}"')
        conn.execute(f'REVOKE CREATE ON DATABASE "{db.name}" FROM "{role}", PUBLIC')
    url = make_url(db.url).set(username=role).render_as_string(hide_password=False)
    rt = None
    try:
        rt = _runtime(tmp_path, url)
        objects = _search_objects(rt.store)
        assert "article_search" in objects and not {o for o in objects if o.endswith("_trgm")}
        seed(rt, n_articles=30)
        data = _all(rt)
        for q in ("民政厅", "民政", "WINTER", "a_b"):
            for state in (None, "failed"):
                got = got_matrix(matrix(rt, state=state, channel=None, q=q, before_id=None, limit=100))
                assert got == ref_matrix(data, state, None, q, None, 100), (q, state)
    finally:
        if rt is not None:
            rt.store.dispose()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')
