"""One timed delivery of a batch of articles in each of the three modes.

- sequential: the driver makes each (article, channel) HTTP call in turn;
- bare: one bare Celery task per (article, channel), carrying the request (bench/bare.py);
- syndicator: `publishing.publish` per article (SQL transaction + one message per delivery), real
  `syndicator worker` processes do the rest.

Every mode sends the same articles to the same emulators. A run records when each article was
published, when each of its deliveries was done (syndicator: `delivered_at` in SQL; bare and
sequential: when the emulator's answer left), and what it cost: CPU seconds of the worker, of the
publishing thread, of the emulator and of redis-server (from /proc), and Redis commands
(INFO commandstats).
"""
from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import func, select

from bench import bare
from bench.services import Process, RedisServer, counter_delta, wait_for
from bench.stats import percentile
from bench.systems import Emulators, System
from bench.workload import Call
from syndicator.articles import ArticleDraft
from syndicator.models import Delivery
from syndicator.publishing import publish
from syndicator.queue import PUBLISH_RETRY_POLICY
from syndicator.states import TERMINAL

#: Commands our own measuring sends to Redis, left out of the counts.
OWN_COMMANDS = {"info"}
#: How often a run looks whether everything was delivered (seconds).
POLL = 0.02
#: What `pipeline.run` returned, as the Celery worker logs it.
_OUTCOME = re.compile(r"succeeded in [0-9.e-]+s: '(\w+)'")


@dataclass
class Run:
    mode: str
    latency_ms: int
    concurrency: int
    articles: int
    deliveries: int
    completed: int
    #: First publish → last delivery done.
    seconds: float
    #: Per article: publish → all of its deliveries done (articles not fully delivered are left out).
    latencies_ms: list[float]
    #: CPU milliseconds over the run: worker, driver (publishing / enqueueing / the sequential loop),
    #: emulator, redis.
    cpu_ms: dict[str, float]
    redis_calls: dict[str, int]
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.completed == self.deliveries

    def figures(self) -> dict[str, float | None]:
        n = max(self.completed, 1)
        own = self.cpu_ms.get("worker", 0.0) + self.cpu_ms.get("driver", 0.0)
        return {
            "deliveries_per_s": self.completed / self.seconds if self.seconds > 0 else None,
            "articles_per_s": len(self.latencies_ms) / self.seconds if self.seconds > 0 else None,
            "p50_ms": percentile(self.latencies_ms, 50), "p95_ms": percentile(self.latencies_ms, 95),
            "p99_ms": percentile(self.latencies_ms, 99),
            "worker_cpu_ms_per_delivery": self.cpu_ms.get("worker", 0.0) / n,
            "driver_cpu_ms_per_delivery": self.cpu_ms.get("driver", 0.0) / n,
            "cpu_ms_per_delivery": own / n,
            "machine_cpu_ms_per_delivery": sum(self.cpu_ms.values()) / n,
            "redis_commands_per_delivery": sum(self.redis_calls.values()) / n,
        }


class Meter:
    """CPU time of the processes involved and Redis command counts, between start() and stop()."""

    def __init__(self, redis: RedisServer, emulators: Emulators, worker: Process | None) -> None:
        self.redis, self.processes = redis, {"emulator": emulators.process, "redis": redis}
        if worker is not None:
            self.processes["worker"] = worker

    def start(self) -> Meter:
        self.calls0 = self.redis.commandstats()
        self.cpu0 = {k: p.cpu() for k, p in self.processes.items()}
        return self

    def stop(self) -> tuple[dict[str, float], dict[str, int]]:
        cpu = {k: (p.cpu() - self.cpu0[k]) * 1000 for k, p in self.processes.items()}
        calls = counter_delta(self.calls0, self.redis.commandstats())
        return cpu, {k: v for k, v in calls.items() if k not in OWN_COMMANDS}


def _timeout(deliveries: int, latency: float, concurrency: int) -> float:
    return min(300.0, 30 + 5 * deliveries * (latency + 0.02) / concurrency)


def _worker_outcomes(worker: Process, offset: int) -> dict[str, int]:
    with open(worker.log, "rb") as fh:
        fh.seek(offset)
        text = fh.read().decode("utf-8", "replace")
    return dict(Counter(_OUTCOME.findall(text)))


def run_syndicator(redis: RedisServer, emulators: Emulators, system: System, drafts: list[ArticleDraft],
                   latency: float) -> Run:
    emulators.reset(latency)
    rt = system.rt
    log_offset = system.syn.log.stat().st_size
    meter = Meter(redis, emulators, system.syn).start()
    published: dict[int, float] = {}
    ids: list[int] = []
    cpu0, t0 = time.thread_time(), time.time()
    for draft in drafts:
        t = time.time()
        result = publish(rt.store, rt.config, draft, actor="bench:editor", enqueuer=rt.enqueuer)
        published[result.article_id] = t
        ids += result.delivery_ids
    driver_cpu = (time.thread_time() - cpu0) * 1000
    lo, hi = min(ids), max(ids)
    terminal = [s.value for s in TERMINAL]

    def settled() -> bool:
        with rt.store.read() as session:
            return session.scalar(select(func.count()).select_from(Delivery).where(
                Delivery.id.between(lo, hi), Delivery.state.in_(terminal))) >= len(ids)

    try:
        wait_for(settled, _timeout(len(ids), latency, system.concurrency), "syndicator deliveries", POLL)
    except TimeoutError:
        pass
    cpu, calls = meter.stop()
    cpu["driver"] = driver_cpu
    with rt.store.read() as session:
        rows = session.execute(select(Delivery.article_id, Delivery.state, Delivery.delivered_at)
                               .where(Delivery.id.between(lo, hi))).all()
    done: dict[int, list[float]] = {}
    for row in rows:
        if row.state == "delivered" and row.delivered_at is not None:
            done.setdefault(row.article_id, []).append(row.delivered_at.timestamp())
    per_article = len(ids) // len(drafts)
    latencies = [(max(times) - published[a]) * 1000 for a, times in done.items() if len(times) == per_article]
    finished = [t for times in done.values() for t in times]
    return Run("syndicator", round(latency * 1000), system.concurrency, len(drafts), len(ids), len(finished),
               (max(finished) - t0) if finished else float("inf"), latencies, cpu, calls,
               _worker_outcomes(system.syn, log_offset))


def run_bare(redis: RedisServer, emulators: Emulators, system: System, articles: list[list[Call]],
             latency: float) -> Run:
    emulators.reset(latency)
    app = system.bare_app
    expected = sum(len(calls) for calls in articles)
    meter = Meter(redis, emulators, system.bare).start()
    published: list[float] = []
    cpu0, t0 = time.thread_time(), time.time()
    with app.producer_or_acquire() as producer:
        for calls in articles:
            published.append(time.time())
            for call in calls:
                app.send_task(bare.TASK, args=[call.request], queue=bare.queue(call.channel), producer=producer,
                              retry=True, retry_policy=PUBLISH_RETRY_POLICY)
    driver_cpu = (time.thread_time() - cpu0) * 1000
    try:
        wait_for(lambda: emulators.completed() >= expected, _timeout(expected, latency, system.concurrency),
                 "bare Celery deliveries", POLL)
    except TimeoutError:
        pass
    cpu, calls_made = meter.stop()
    cpu["driver"] = driver_cpu
    items = emulators.completions()
    done = {key: t for t, key in items}
    latencies = []
    for t_pub, calls in zip(published, articles):
        times = [done.get(c.key) for c in calls]
        if all(times):
            latencies.append((max(times) - t_pub) * 1000)
    return Run("bare", round(latency * 1000), system.concurrency, len(articles), expected, len(items),
               (max(t for t, _ in items) - t0) if items else float("inf"), latencies, cpu, calls_made)


def run_sequential(redis: RedisServer, emulators: Emulators, articles: list[list[Call]], latency: float) -> Run:
    emulators.reset(latency)
    meter = Meter(redis, emulators, None).start()
    latencies = []
    cpu0, t0 = time.thread_time(), time.time()
    for calls in articles:
        t = time.time()
        for call in calls:
            bare.send(call.request)
        latencies.append((time.time() - t) * 1000)
    seconds = time.time() - t0
    driver_cpu = (time.thread_time() - cpu0) * 1000
    cpu, calls_made = meter.stop()
    cpu["driver"] = driver_cpu
    n = sum(len(calls) for calls in articles)
    return Run("sequential", round(latency * 1000), 1, len(articles), n, n, seconds, latencies, cpu, calls_made)
