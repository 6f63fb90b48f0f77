"""SQL work per delivery, counted in process with SQLAlchemy event listeners (the core stays as is).

A throwaway system with the two HTTP channels publishes a few articles (`publishing.publish`,
without a broker) and runs each delivery the way a worker task does (`pipeline.run`), while
listeners on the store's engines count commits, rollbacks (read sessions end in one), statements
and transactions begun. The result is per delivery (publishing's share spread over its deliveries).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from sqlalchemy import event

from bench.systems import Emulators
from bench.workload import HTTP_CHANNELS, http_channels, write_config
from syndicator import pipeline
from syndicator.articles import ArticleDraft
from syndicator.config import load_config
from syndicator.publishing import publish
from syndicator.runtime import Runtime


def _listen(rt: Runtime, counts: Counter) -> None:
    engines = {id(e): e for e in (rt.store.write_engine, rt.store.read_engine)}.values()
    for engine in engines:
        event.listen(engine, "begin", lambda conn: counts.update(["transactions"]))
        event.listen(engine, "commit", lambda conn: counts.update(["commits"]))
        event.listen(engine, "rollback", lambda conn: counts.update(["rollbacks"]))
        event.listen(engine, "before_cursor_execute", lambda *a: counts.update(["statements"]))


def measure(folder: Path, broker_url: str, emulators: Emulators, drafts: list[ArticleDraft], articles: int) -> dict:
    emulators.reset(0.0)
    path = write_config(folder / "config.yaml", database_url=f"sqlite:///{folder / 'syndicator.db'}",
                        broker_url=broker_url, channels=http_channels(emulators.urls))
    rt = Runtime(load_config(path))
    rt.store.migrate()
    # One untimed article first: channel instances, templates and connections get made.
    warm = publish(rt.store, rt.config, replace(drafts[0], slug="commits-warm"), actor="bench", enqueuer=None)
    for delivery_id in warm.delivery_ids:
        pipeline.run(rt, delivery_id)
    publishing, delivering = Counter(), Counter()
    outcomes: Counter = Counter()
    cpu = {"publish": 0.0, "deliver": 0.0}
    _listen(rt, counts := Counter())
    for i in range(articles):
        counts.clear()
        t = time.thread_time()
        result = publish(rt.store, rt.config, replace(drafts[i % len(drafts)], slug=f"commits-{i}"),
                         actor="bench", enqueuer=None)
        cpu["publish"] += time.thread_time() - t
        publishing.update(counts)
        counts.clear()
        t = time.thread_time()
        for delivery_id in result.delivery_ids:
            outcomes[pipeline.run(rt, delivery_id)] += 1
        cpu["deliver"] += time.thread_time() - t
        delivering.update(counts)
    rt.store.dispose()
    deliveries = articles * len(HTTP_CHANNELS)
    per = lambda c, k: c[k] / deliveries  # noqa: E731
    return {
        "deliveries": deliveries, "outcomes": dict(outcomes),
        "sql_commits_per_delivery": per(publishing, "commits") + per(delivering, "commits"),
        "sql_statements_per_delivery": per(publishing, "statements") + per(delivering, "statements"),
        "sql_transactions_per_delivery": per(publishing, "transactions") + per(delivering, "transactions"),
        "publish": {k: per(publishing, k) for k in ("commits", "rollbacks", "statements", "transactions")},
        "deliver": {k: per(delivering, k) for k in ("commits", "rollbacks", "statements", "transactions")},
        "in_process_cpu_ms_per_delivery": {k: v * 1000 / deliveries for k, v in cpu.items()},
    }
