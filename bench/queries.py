"""Status and dashboard queries over 1,000,000 delivery rows.

A fresh SQLite database gets the project's migrations (`Store(url).migrate()`), then 200,000
articles with one revision each and five deliveries each (one per channel of the shipped config),
bulk-inserted in SQL: mostly delivered, with failed, waiting and operator states mixed in, ids and
times in publication order (one article every 150 s, so the last day holds ~2,900 deliveries).
Events are not inserted: only the delivery detail page reads them, by an index. The database is
kept in bench/.cache/ (keyed by the schema head and the row count) and reused by later runs.

Timed through the real read paths: `views.article_status` and `views.list_deliveries` (the CLI and
API: by state, by channel, both, first page and a deep keyset page), and the ops dashboard's own
functions in `syndicator/web/ops.py` (health board, live stamp, attention counts and lists, the
delivery matrix with its filters and search, a delivery's detail). Each is timed again on a copy
with the indexes proposed in RESULTS.md, and SQLite's plan for every statement is kept.
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
from sqlalchemy import event, func, select

from bench.query_proposals import (PROPOSED_INDEXES, REPLACES, SEARCH_TABLE, build_proposed, proposed_attention_list,
                                   proposed_search_ids, proposed_state_article_ids)
from bench.stats import median
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


def build(rows: int, progress: Callable[[str], None]) -> tuple[Path, float | None]:
    """The database with `rows` deliveries (cached); and how long building it took, if it was built."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
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


def _runtime(path: Path) -> Runtime:
    """A runtime over the query database, configured with the shipped config's five channels."""
    config = write_config(path.parent / "queries-config" / "config.yaml", database_url=f"sqlite:///{path}",
                          broker_url="redis://127.0.0.1:9/0",
                          channels={**file_channels(), **http_channels({"wordpress": "http://127.0.0.1:9",
                                                                        "weibo": "http://127.0.0.1:9"}),
                                    "wechat_main": {"type": "wechat", "api_base": "http://127.0.0.1:9/",
                                                    "appid": "wx0123456789abcdef",
                                                    "secret": "0123456789abcdef0123456789abcdef"}})
    return Runtime(load_config(config), store=Store(f"sqlite:///{path}"))


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


def proposed(rt: Runtime, rows: int) -> dict[str, tuple[str, Callable[[], object]]]:
    articles = rows // len(CHANNELS)
    return {
        "proposed_attention_list": ("dashboard", lambda: proposed_attention_list(rt, ops("ATTENTION"))),
        "proposed_attention_list_deep": ("dashboard", lambda: proposed_attention_list(rt, ops("ATTENTION"),
                                                                                      before_id=rows // 2)),
        "proposed_matrix_search_ids": ("dashboard", lambda: proposed_search_ids(rt, f"第{articles // 2}号")),
        "proposed_matrix_failed_ids": ("dashboard", lambda: proposed_state_article_ids(rt, "failed", len(CHANNELS))),
    }


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
        "ops_delivery_detail": ("dashboard", lambda: ops("delivery_detail")(rt, deep)),
        "naive_count_by_channel_state": ("reference", read(rt, dashboard_counts)),
    }


def _plans(rt: Runtime, calls: dict[str, tuple[str, Callable[[], object]]]) -> dict[str, list[str]]:
    """SQLite's plan for each statement a query runs (EXPLAIN QUERY PLAN on the SQL it sent)."""
    plans: dict[str, list[str]] = {}
    engine = rt.store.read_engine
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
            plans[name] = [" / ".join(str(r[3]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params))
                           for sql, params in sent]
    return plans


def _time_all(path: Path, rows: int, repeat: int,
              after: bool = False) -> tuple[dict[str, float], dict[str, list[str]], dict]:
    rt = _runtime(path)
    try:
        with rt.store.read() as session:
            assert session.scalar(select(func.count()).select_from(Delivery)) == rows
        calls = {**queries(rt, rows), **(proposed(rt, rows) if after else {})}
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
    """The slowest status and dashboard query (a query with a proposed replacement timed counts as it)."""
    out = {}
    for kind in ("status", "dashboard"):
        name = max((n for n in timings if kinds.get(n) == kind and timings[n] is not None
                    and REPLACES.get(n) not in timings), key=timings.get)
        out[f"slowest_{kind}"], out[f"{kind}_query_ms"] = name, timings[name]
    return out


def measure(rows: int, repeat: int, progress: Callable[[str], None], with_proposals: bool = True) -> dict:
    path, built_s = build(rows, progress)
    timings, plans, kinds = _time_all(path, rows, repeat)
    result = {"rows": rows, "database": str(path), "built_s": built_s, "repeat": repeat, "ms": timings,
              "kinds": kinds, **_slowest(timings, kinds), "plans": plans}
    if with_proposals:
        after, plans, kinds = _time_all(build_proposed(path, progress), rows, repeat, after=True)
        result["with_proposed_indexes"] = {"indexes": PROPOSED_INDEXES, "search": SEARCH_TABLE, "replaces": REPLACES,
                                           "ms": after, **_slowest(after, kinds), "plans": plans}
    return result
