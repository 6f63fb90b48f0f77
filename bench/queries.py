"""Status and dashboard queries over 1,000,000 delivery rows.

A fresh database gets the project's migrations (`Store(url).migrate()`), then 200,000 articles
with one revision each and five deliveries each (one per channel of the shipped config),
bulk-inserted in SQL: mostly delivered, with failed, waiting and operator states mixed in, ids and
times in publication order (one article every 150 s, so the last day holds ~2,900 deliveries).
The migrations' triggers fill the article search index as the rows go in. Events are not
inserted: only the delivery detail page reads them, by an index.

SQLite (the default): the database is kept in bench/.cache/ (keyed by the schema head and the row
count) and reused by later runs. PostgreSQL (`--db postgresql`, admin DSN $SYNDICATOR_BENCH_PG):
the same rows in a database named after the row count and schema head, kept on the server and
reused the same way (ANALYZEd once filled).

Timed through the real read paths: `views.article_status` and `views.list_deliveries` (the CLI and
API: by state, by channel, both, first page and a deep keyset page), and the ops dashboard's own
functions in `syndicator/web/ops/` (health board, live stamp, attention counts and lists, the
delivery matrix with its filters and searches — a rare and a common text of three characters or
more, which the trigram index answers, and two-character Chinese texts, which scan articles newest
first: a common one stops at once, a rare one reads every article — and a delivery's detail). The
database's plan for every statement is kept.
"""
from __future__ import annotations

import importlib
import sqlite3
import time
import types
from collections.abc import Callable
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, func, select, text

from bench.stats import median
from bench.systems import PG_ADMIN_DSN
from bench.workload import file_channels, http_channels, write_config
from syndicator.config import load_config
from syndicator.models import Delivery
from syndicator.runtime import Runtime
from syndicator.store import MIGRATIONS, Store
from syndicator.views import article_status, find_article, list_deliveries

#: The shipped config's channel instances and their types.
CHANNELS = (("rss_main", "rss"), ("microsite", "microsite"), ("portal", "portal"), ("wechat_main", "wechat"),
            ("weibo_main", "weibo"))
#: Per mille of deliveries in each state (the rest: delivered).
STATE_MIX = (("failed", 15), ("retry_wait", 5), ("queued", 5), ("unknown", 3), ("manual", 2), ("submitted", 2),
             ("cancelled", 3))
#: Seeded times: article x was published at START + x · STEP seconds.
START, STEP = 1704067200, 150
CACHE = Path(__file__).resolve().parent / ".cache"


def _state_sql() -> str:
    cases, edge = [], 0
    for state, share in STATE_MIX:
        edge += share
        cases.append(f"WHEN h < {edge} THEN '{state}'")
    return f"CASE {' '.join(cases)} ELSE 'delivered' END"


def _fill(path: Path, rows: int) -> None:
    articles = rows // len(CHANNELS)
    ts = f"printf('%s.000000', datetime({START} + x * {STEP}, 'unixepoch'))"
    channel_case = " ".join(f"WHEN {i} THEN '{c}'" for i, (c, _) in enumerate(CHANNELS))
    type_case = " ".join(f"WHEN {i} THEN '{t}'" for i, (_, t) in enumerate(CHANNELS))
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        with db:
            db.execute(f"""
                WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {articles})
                INSERT INTO articles (id, slug, status, current_revision, first_published_at, created_at, created_by,
                                      source)
                SELECT x, 'a-' || x, 'live', 1, {ts}, {ts}, 'bench:seed', 'a-' || x || '.md' FROM n""")
            db.execute(f"""
                WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {articles})
                INSERT INTO revisions (id, article_id, number, content_hash, title, summary, body_source, body_html,
                                       author, unit, tags, asset_shas, created_at, created_by)
                SELECT x, x, 1, printf('%064x', x), '关于第' || x || '号政务信息的通报', '摘要', '正文',
                       '<p>正文</p>', '周晓宁', '省民政厅办公室', '["政务信息"]', '[]', {ts}, 'bench:seed' FROM n""")
            db.execute(f"""
                WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {articles}),
                     k(c) AS (SELECT 0 UNION ALL SELECT c + 1 FROM k WHERE c < {len(CHANNELS) - 1}),
                     d AS (SELECT (x - 1) * {len(CHANNELS)} + c + 1 AS id, x, c, {ts} AS ts,
                                  ((x * 2654435761 + c * 40503) % 1000) AS h FROM n, k)
                INSERT INTO deliveries (id, article_id, revision_id, revision, channel, channel_type, operation, state,
                                        attempts, next_attempt_at, enqueued_at, reconcile, remote_id, remote_url,
                                        last_error, rendition, created_at, updated_at, delivered_at)
                SELECT id, x, x, 1, CASE c {channel_case} END, CASE c {type_case} END, 'publish', st,
                       CASE WHEN st IN ('queued', 'cancelled') THEN 0 ELSE 1 END,
                       CASE WHEN st = 'retry_wait' THEN ts END, ts, 0,
                       CASE WHEN st = 'delivered' THEN 'r-' || id END,
                       CASE WHEN st = 'delivered' THEN 'https://www.example.gov.cn/p/' || id END,
                       CASE WHEN st IN ('failed', 'unknown', 'manual', 'retry_wait')
                            THEN 'Unavailable: portal answered HTTP 503' END,
                       '{{"payload": {{"title": "关于第' || x || '号政务信息的通报"}}, "warnings": [], "assets": []}}',
                       ts, ts, CASE WHEN st = 'delivered' THEN ts END
                FROM (SELECT *, {_state_sql()} AS st FROM d)""")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _pg_fill(url: str, rows: int) -> None:
    """The same rows as `_fill`, on PostgreSQL."""
    articles = rows // len(CHANNELS)
    ts = f"to_timestamp({START} + x * {STEP})"
    channel_case = " ".join(f"WHEN {i} THEN '{c}'" for i, (c, _) in enumerate(CHANNELS))
    type_case = " ".join(f"WHEN {i} THEN '{t}'" for i, (_, t) in enumerate(CHANNELS))
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"""
                INSERT INTO articles (id, slug, status, current_revision, first_published_at, created_at, created_by,
                                      source)
                SELECT x, 'a-' || x, 'live', 1, {ts}, {ts}, 'bench:seed', 'a-' || x || '.md'
                FROM generate_series(1, {articles}) AS x""")
            conn.exec_driver_sql(f"""
                INSERT INTO revisions (id, article_id, number, content_hash, title, summary, body_source, body_html,
                                       author, unit, tags, asset_shas, created_at, created_by)
                SELECT x, x, 1, lpad(to_hex(x), 64, '0'), '关于第' || x || '号政务信息的通报', '摘要', '正文',
                       '<p>正文</p>', '周晓宁', '省民政厅办公室', '["政务信息"]', '[]', {ts}, 'bench:seed'
                FROM generate_series(1, {articles}) AS x""")
            conn.exec_driver_sql(f"""
                WITH d AS (SELECT (x - 1) * {len(CHANNELS)} + c + 1 AS id, x, c, {ts} AS ts,
                                  mod(x::bigint * 2654435761 + c * 40503, 1000) AS h
                           FROM generate_series(1, {articles}) AS x, generate_series(0, {len(CHANNELS) - 1}) AS c)
                INSERT INTO deliveries (id, article_id, revision_id, revision, channel, channel_type, operation, state,
                                        attempts, next_attempt_at, enqueued_at, reconcile, remote_id, remote_url,
                                        last_error, rendition, created_at, updated_at, delivered_at)
                SELECT id, x, x, 1, CASE c {channel_case} END, CASE c {type_case} END, 'publish', st,
                       CASE WHEN st IN ('queued', 'cancelled') THEN 0 ELSE 1 END,
                       CASE WHEN st = 'retry_wait' THEN ts END, ts, false,
                       CASE WHEN st = 'delivered' THEN 'r-' || id END,
                       CASE WHEN st = 'delivered' THEN 'https://www.example.gov.cn/p/' || id END,
                       CASE WHEN st IN ('failed', 'unknown', 'manual', 'retry_wait')
                            THEN 'Unavailable: portal answered HTTP 503' END,
                       '{{"payload": {{"title": "关于第' || x || '号政务信息的通报"}}, "warnings": [], "assets": []}}',
                       ts, ts, CASE WHEN st = 'delivered' THEN ts END
                FROM (SELECT *, {_state_sql()} AS st FROM d) AS s ORDER BY id""")
            for table in ("articles", "revisions", "deliveries"):
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}")
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    finally:
        engine.dispose()


def _head() -> str:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()


def build(rows: int, progress: Callable[[str], None]) -> tuple[Path, float | None]:
    """The database with `rows` deliveries (cached); and how long building it took, if it was built."""
    head = _head()
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"deliveries-{rows}-{head}.sqlite"
    if path.exists():
        return path, None
    progress(f"queries: building a database with {rows:,} deliveries (cached in {CACHE.name}/ for later runs)")
    t = time.perf_counter()
    tmp = path.with_suffix(".building")
    for stale in CACHE.glob(f"deliveries-{rows}-*"):  # other schema heads, half-built files
        stale.unlink()
    store = Store(f"sqlite:///{tmp}")
    store.migrate()
    store.dispose()
    _fill(tmp, rows)
    tmp.rename(path)
    return path, time.perf_counter() - t


def build_pg(rows: int, progress: Callable[[str], None]) -> tuple[str, float | None]:
    """The PostgreSQL database with `rows` deliveries (kept on the server for later runs, like the
    SQLite cache); its URL, and how long building it took, if it was built."""
    name = f"syn_bench_queries_{rows}_{_head()}"
    url = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + name
    admin = create_engine(PG_ADMIN_DSN.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            names = set(conn.scalars(text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
                                     {"p": f"syn_bench_queries_{rows}_%"}))
            building_name = f"{name}_building"  # renamed to `name` once filled: a half-built one is never reused
            if name in names:
                return url, None
            progress(f"queries: building a PostgreSQL database with {rows:,} deliveries (kept as {name})")
            t = time.perf_counter()
            for stale in names:  # other schema heads, half-built ones
                conn.exec_driver_sql(f'DROP DATABASE "{stale}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{building_name}"')
        building = url.rsplit("/", 1)[0] + "/" + building_name
        store = Store(building)
        store.migrate()
        store.dispose()
        _pg_fill(building, rows)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{building_name}" RENAME TO "{name}"')
        return url, time.perf_counter() - t
    finally:
        admin.dispose()


#: A query is timed at most `repeat` times, and no longer than this once it has 3 timings (seconds).
TIME_BUDGET = 4.0
#: Where the ops dashboard's query functions may live (a module, or a package being split up).
OPS_MODULES = ("syndicator.web.ops", "syndicator.web.ops.health", "syndicator.web.ops.deliveries",
               "syndicator.web.ops.matrix")
def now_for(rows: int) -> datetime:
    """"now" for the dashboard's time windows: a minute after the newest seeded delivery."""
    return datetime.fromtimestamp(START + STEP * (rows // len(CHANNELS)) + 60, timezone.utc)


def _timed(fn: Callable[[], object], repeat: int) -> float:
    times: list[float] = []
    started = time.perf_counter()
    for i in range(repeat + 1):
        t = time.perf_counter()
        fn()
        if i:  # the first call warms caches and statement compilation
            times.append((time.perf_counter() - t) * 1000)
        if len(times) >= 3 and time.perf_counter() - started > TIME_BUDGET:
            break
    return median(times)


def _runtime(url: str) -> Runtime:
    """A runtime over the query database, configured with the shipped config's five channels."""
    config = write_config(CACHE / "queries-config" / "config.yaml", database_url=url,
                          broker_url="redis://127.0.0.1:9/0",
                          channels={**file_channels(), **http_channels({"wordpress": "http://127.0.0.1:9",
                                                                        "weibo": "http://127.0.0.1:9"}),
                                    "wechat_main": {"type": "wechat", "api_base": "http://127.0.0.1:9/",
                                                    "appid": "wx0123456789abcdef",
                                                    "secret": "0123456789abcdef0123456789abcdef"}})
    return Runtime(load_config(config), store=Store(url))


def read(rt: Runtime, fn: Callable) -> Callable[[], object]:
    """A query of syndicator.views (which takes a session) as a call with its own read session."""
    def call() -> object:
        with rt.store.read() as session:
            return fn(session)
    return call


def dashboard_counts(session) -> list:
    """Deliveries per channel and state over the whole table (what a naive dashboard would run)."""
    return session.execute(select(Delivery.channel, Delivery.state, func.count())
                           .group_by(Delivery.channel, Delivery.state)).all()


def ops(name: str):
    """A function or constant of the ops dashboard, wherever it lives now."""
    for module in OPS_MODULES:
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if found is not None and not isinstance(found, types.ModuleType):
            return found
    raise LookupError(f"the ops dashboard has no {name} (looked in {', '.join(OPS_MODULES)})")


def queries(rt: Runtime, rows: int) -> dict[str, tuple[str, Callable[[], object]]]:
    """name → (kind, call). Kinds: status (views, the CLI and API), dashboard (syndicator/web/ops,
    what the ops pages run), reference (a naive aggregate, for comparison only)."""
    articles = rows // len(CHANNELS)
    deep, deep_article = rows // 2, articles // 2
    slug, now = f"a-{deep_article}", now_for(rows)
    return {
        "status": ("status", read(rt, lambda s: article_status(s, find_article(s, slug)))),
        "list_state_failed": ("status", read(rt, lambda s: list_deliveries(s, state="failed"))),
        "list_state_failed_deep": ("status", read(rt, lambda s: list_deliveries(s, state="failed", before_id=deep))),
        "list_state_delivered": ("status", read(rt, lambda s: list_deliveries(s, state="delivered"))),
        "list_state_delivered_deep": ("status", read(rt, lambda s: list_deliveries(s, state="delivered",
                                                                                 before_id=deep))),
        "list_channel": ("status", read(rt, lambda s: list_deliveries(s, channel="weibo_main"))),
        "list_channel_deep": ("status", read(rt, lambda s: list_deliveries(s, channel="weibo_main", before_id=deep))),
        "list_channel_state": ("status", read(rt, lambda s: list_deliveries(s, channel="portal", state="failed"))),
        "list_all": ("status", read(rt, lambda s: list_deliveries(s))),
        "list_all_deep": ("status", read(rt, lambda s: list_deliveries(s, before_id=deep))),
        "ops_health_board": ("dashboard", lambda: ops("health")(rt, now)),
        "ops_live_stamp": ("dashboard", lambda: ops("live_stamp")(rt, now)),
        "ops_attention_counts": ("dashboard", lambda: ops("state_counts")(rt, ops("ATTENTION"))),
        "ops_attention_list": ("dashboard", lambda: ops("delivery_list")(rt, ops("ATTENTION"))),
        "ops_attention_list_deep": ("dashboard", lambda: ops("delivery_list")(rt, ops("ATTENTION"), before_id=deep)),
        "ops_retry_wait_by_channel": ("dashboard", lambda: ops("delivery_list")(rt, ("retry_wait",), channel="portal")),
        "ops_matrix": ("dashboard", lambda: ops("matrix")(rt, state=None, channel=None, q=None, before_id=None)),
        "ops_matrix_deep": ("dashboard", lambda: ops("matrix")(rt, state=None, channel=None, q=None,
                                                               before_id=deep_article)),
        "ops_matrix_failed": ("dashboard", lambda: ops("matrix")(rt, state="failed", channel=None, q=None,
                                                                 before_id=None)),
        "ops_matrix_delivered_channel": ("dashboard", lambda: ops("matrix")(rt, state="delivered", channel="weibo_main",
                                                                            q=None, before_id=None)),
        "ops_matrix_search": ("dashboard", lambda: ops("matrix")(rt, state=None, channel=None,
                                                                 q=f"第{deep_article}号", before_id=None)),
        "ops_matrix_search_common": ("dashboard", lambda: ops("matrix")(rt, state=None, channel=None, q="政务信息",
                                                                        before_id=None)),
        "ops_matrix_search_2char_common": ("dashboard", lambda: ops("matrix")(rt, state=None, channel=None, q="政务",
                                                                              before_id=None)),
        "ops_matrix_search_2char_rare": ("dashboard", lambda: ops("matrix")(rt, state=None, channel=None, q="民政",
                                                                            before_id=None)),
        "ops_matrix_failed_search": ("dashboard", lambda: ops("matrix")(rt, state="failed", channel=None,
                                                                        q=f"第{deep_article}号", before_id=None)),
        "ops_delivery_detail": ("dashboard", lambda: ops("delivery_detail")(rt, deep)),
        "naive_count_by_channel_state": ("reference", read(rt, dashboard_counts)),
    }


def _plans(rt: Runtime, calls: dict[str, tuple[str, Callable[[], object]]]) -> dict[str, list[str]]:
    """The database's plan for each statement a query runs (EXPLAIN [QUERY PLAN] on the SQL it sent)."""
    plans: dict[str, list[str]] = {}
    engine = rt.store.read_engine
    sqlite = rt.store.dialect == "sqlite"
    for name, (_, fn) in calls.items():
        sent: list[tuple[str, object]] = []

        def capture(conn, cursor, statement, parameters, context, executemany) -> None:
            if statement.lstrip().upper().startswith(("SELECT", "WITH")):
                sent.append((statement, parameters))

        event.listen(engine, "before_cursor_execute", capture)
        try:
            fn()
        finally:
            event.remove(engine, "before_cursor_execute", capture)
        with engine.connect() as conn:
            plans[name] = [" / ".join(str(r[3] if sqlite else r[0]).strip()
                                      for r in conn.exec_driver_sql(("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ")
                                                                    + sql, params))
                           for sql, params in sent]
    return plans


def _time_all(url: str, rows: int, repeat: int) -> tuple[dict[str, float], dict[str, list[str]], dict]:
    rt = _runtime(url)
    try:
        with rt.store.read() as session:
            assert session.scalar(select(func.count()).select_from(Delivery)) == rows
        calls = queries(rt, rows)
        missing = set()
        for name, (_, fn) in calls.items():
            try:
                fn()
            except LookupError:  # the dashboard moved or renamed it: report, do not fail the section
                missing.add(name)
        calls = {k: v for k, v in calls.items() if k not in missing}
        timings = {name: _timed(fn, repeat) for name, (_, fn) in calls.items()}
        timings.update(dict.fromkeys(missing))
        return timings, _plans(rt, calls), {name: kind for name, (kind, _) in calls.items()}
    finally:
        rt.store.dispose()


def _slowest(timings: dict[str, float], kinds: dict[str, str]) -> dict:
    """The slowest status and the slowest dashboard query."""
    out = {}
    for kind in ("status", "dashboard"):
        name = max((n for n in timings if kinds.get(n) == kind and timings[n] is not None), key=timings.get)
        out[f"slowest_{kind}"], out[f"{kind}_query_ms"] = name, timings[name]
    return out


def measure(rows: int, repeat: int, progress: Callable[[str], None], database: str = "sqlite") -> dict:
    if database == "postgresql":
        url, built_s = build_pg(rows, progress)
        where = url.rsplit("/", 1)[1]
    else:
        path, built_s = build(rows, progress)
        url, where = f"sqlite:///{path}", str(path)
    timings, plans, kinds = _time_all(url, rows, repeat)
    return {"rows": rows, "database": where, "dialect": database, "built_s": built_s, "repeat": repeat,
            "ms": timings, "kinds": kinds, **_slowest(timings, kinds), "plans": plans}
