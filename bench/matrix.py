"""The throughput matrix (mode × latency × concurrency, repeated and interleaved), the low-load
latency probe, and their summary: medians over repetitions and efficiency against the machine.

Within each repetition and latency, the sequential run and the bare/syndicator pair of every
concurrency run back to back, in an order that rotates from one repetition to the next, so slow
drift of the machine (caches, other tenants) spreads over all modes alike.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from itertools import groupby

from sqlalchemy import select

from bench import bare
from bench.fanout import Run, run_bare, run_sequential, run_syndicator
from bench.services import RedisServer, wait_for
from bench.stats import median, percentile
from bench.systems import Emulators, System
from bench.workload import HTTP_CHANNELS, calls_for
from syndicator.articles import ArticleDraft
from syndicator.models import Delivery, Event
from syndicator.publishing import publish


@dataclass(frozen=True)
class Plan:
    reps: int
    latencies_ms: tuple[int, ...]
    concurrencies: tuple[int, ...]
    #: Aim for runs this long where C/L bounds the rate (articles = C/L · seconds / channels).
    seconds: float
    min_articles: int
    max_articles: int
    #: Articles per mode at each latency of the low-load probe (one article at a time).
    probe_articles: int
    #: Bound on the sequential loop's duration per run.
    sequential_seconds: float


FULL = Plan(reps=5, latencies_ms=(0, 50, 200), concurrencies=(8, 32, 128), seconds=3.0, min_articles=40,
            max_articles=150, probe_articles=20, sequential_seconds=3.0)
QUICK = Plan(reps=2, latencies_ms=(0, 50, 200), concurrencies=(8, 32, 128), seconds=1.0, min_articles=16,
             max_articles=50, probe_articles=8, sequential_seconds=1.0)


def articles_for(plan: Plan, latency_ms: int, concurrency: int) -> int:
    if latency_ms == 0:
        return plan.max_articles
    rate = concurrency / (latency_ms / 1000)
    return max(plan.min_articles, min(plan.max_articles, math.ceil(rate * plan.seconds / len(HTTP_CHANNELS))))


def batch(drafts: list[ArticleDraft], prefix: str, count: int) -> list[ArticleDraft]:
    """`count` of the prepared articles under fresh slugs (same content, new identity)."""
    return [replace(drafts[i % len(drafts)], slug=f"{prefix}-{i}") for i in range(count)]


class Matrix:
    def __init__(self, redis: RedisServer, emulators: Emulators, systems: list[System], drafts: list[ArticleDraft],
                 plan: Plan, progress) -> None:
        self.redis, self.emulators, self.systems, self.drafts, self.plan = redis, emulators, systems, drafts, plan
        self.progress = progress
        self._ids = 0
        #: Per probed delivery: the stages of its latency (see `stage_summary`).
        self.stages: list[dict[str, float]] = []

    def calls(self, system: System, drafts: list[ArticleDraft]) -> list[list]:
        out = []
        for draft in drafts:
            self._ids += 1
            out.append(calls_for(system.rt, draft, 9_000_000 + self._ids))
        return out

    def warm_up(self) -> None:
        """One small untimed batch per worker: imports, connections and templates get loaded."""
        for s in self.systems:
            drafts = batch(self.drafts, f"warm-c{s.concurrency}", 8)
            run_bare(self.redis, self.emulators, s, self.calls(s, drafts), 0.0)
            run_syndicator(self.redis, self.emulators, s, drafts, 0.0)
        run_sequential(self.redis, self.emulators, self.calls(self.systems[0], batch(self.drafts, "warm-seq", 3)), 0.0)

    def run(self) -> list[Run]:
        runs: list[Run] = []
        plan = self.plan
        for rep in range(plan.reps):
            for li, latency_ms in enumerate(plan.latencies_ms):
                latency = latency_ms / 1000
                jobs: list[tuple[str, System | None]] = []
                for ci, system in enumerate(self.systems):
                    pair = [("bare", system), ("syndicator", system)]
                    jobs += reversed(pair) if (rep + li + ci) % 2 else pair
                jobs.insert((rep + li) % (len(jobs) + 1), ("sequential", None))
                cells: dict[int, list[ArticleDraft]] = {}
                for mode, system in jobs:
                    if mode == "sequential":
                        n = max(3, min(plan.max_articles,
                                       math.ceil(plan.sequential_seconds / (len(HTTP_CHANNELS) * (latency + 0.003)))))
                        drafts = batch(self.drafts, f"r{rep}-l{latency_ms}-seq", n)
                        run = run_sequential(self.redis, self.emulators, self.calls(self.systems[0], drafts), latency)
                    else:
                        c = system.concurrency
                        drafts = cells.setdefault(c, batch(self.drafts, f"r{rep}-l{latency_ms}-c{c}",
                                                           articles_for(plan, latency_ms, c)))
                        if mode == "bare":
                            run = run_bare(self.redis, self.emulators, system, self.calls(system, drafts), latency)
                        else:
                            run = run_syndicator(self.redis, self.emulators, system, drafts, latency)
                    runs.append(run)
                    self.progress(f"rep {rep + 1}/{plan.reps} L={latency_ms}ms {mode:<10} C={run.concurrency:<3} "
                                  f"{run.completed}/{run.deliveries} in {run.seconds:.2f}s "
                                  f"({run.figures()['deliveries_per_s'] or 0:.0f}/s)"
                                  + ("" if run.complete else "  INCOMPLETE"))
        return runs

    def probe(self, system: System, latency_ms: int) -> dict[str, list[float]]:
        """Low load: one article at a time, each mode in turn; publish → all delivered, per article."""
        latency = latency_ms / 1000
        out: dict[str, list[float]] = {"sequential": [], "bare": [], "syndicator": []}
        modes = list(out)
        for i in range(self.plan.probe_articles):
            for mode in modes[i % 3:] + modes[:i % 3]:
                self.emulators.reset(latency)
                draft = batch(self.drafts, f"p{latency_ms}-{mode}-{i}", 1)
                if mode == "syndicator":
                    out[mode].append(self.probe_syndicator(system, draft[0]))
                elif mode == "bare":
                    calls = self.calls(system, draft)[0]
                    t = time.time()
                    for call in calls:
                        system.bare_app.send_task(bare.TASK, args=[call.request], queue=bare.queue(call.channel))
                    wait_for(lambda: self.emulators.completed() >= len(calls), 30, "bare probe", 0.002)
                    out[mode].append((max(t for t, _ in self.emulators.completions()) - t) * 1000)
                else:
                    calls = self.calls(system, draft)[0]
                    t = time.time()
                    for call in calls:
                        bare.send(call.request)
                    out[mode].append((time.time() - t) * 1000)
                time.sleep(0.02)
        return out

    def probe_syndicator(self, system: System, draft: ArticleDraft) -> float:
        rt = system.rt
        t = time.time()
        result = publish(rt.store, rt.config, draft, actor="bench:editor", enqueuer=rt.enqueuer)

        def delivered():
            with rt.store.read() as session:
                times = session.scalars(select(Delivery.delivered_at).where(
                    Delivery.id.in_(result.delivery_ids))).all()
            return times if all(times) else None

        times = wait_for(delivered, 30, "syndicator probe", 0.002)
        with rt.store.read() as session:  # where the time went, from the event log
            events = session.execute(select(Event.delivery_id, Event.to_state, Event.at).where(
                Event.delivery_id.in_(result.delivery_ids), Event.to_state.in_(["sending", "delivered"]))).all()
        at = {(e.delivery_id, e.to_state): e.at.timestamp() for e in events}
        for d in result.delivery_ids:
            if (d, "sending") in at and (d, "delivered") in at:
                self.stages.append({"publish_to_attempt_ms": (at[d, "sending"] - t) * 1000,
                                    "attempt_to_sent_ms": (at[d, "delivered"] - at[d, "sending"]) * 1000})
        return (max(x.timestamp() for x in times) - t) * 1000

    def stage_summary(self) -> dict[str, float | None]:
        """Medians over the probed deliveries: publish → attempt started (broker, pickup, gate read), and
        attempt started → the channel answered (claim, render, rendition write, HTTP incl. latency)."""
        stages, self.stages = self.stages, []
        return {k: percentile([s[k] for s in stages], 50) for k in ("publish_to_attempt_ms", "attempt_to_sent_ms")}


def summarize(runs: list[Run], ncpu: int) -> list[dict]:
    """One row per (mode, latency, concurrency): medians over repetitions, and efficiency."""
    rows = []
    key = lambda r: (r.mode, r.latency_ms, r.concurrency)  # noqa: E731
    for (mode, latency_ms, c), group in groupby(sorted(runs, key=key), key=key):
        group = list(group)
        figures = [r.figures() for r in group]
        row = {"mode": mode, "latency_ms": latency_ms, "concurrency": c, "runs": len(group),
               "incomplete_runs": sum(not r.complete for r in group),
               "articles": group[0].articles, "deliveries": group[0].deliveries}
        for name in figures[0]:
            row[name] = median(f[name] for f in figures)
        outcomes: dict[str, int] = {}
        for r in group:
            for k, v in r.outcomes.items():
                outcomes[k] = outcomes.get(k, 0) + v
        if outcomes:
            row["task_outcomes"] = outcomes
        cpu_limit = ncpu * 1000 / row["machine_cpu_ms_per_delivery"] if row["machine_cpu_ms_per_delivery"] else None
        latency_limit = c / (latency_ms / 1000) if latency_ms else math.inf
        limit = min(latency_limit, cpu_limit or math.inf)
        row["cpu_ceiling_per_s"] = cpu_limit
        # One Python process runs Python code on one core at a time (the GIL), whatever its threads.
        worker_ms = row["worker_cpu_ms_per_delivery"]
        row["process_ceiling_per_s"] = 1000 / worker_ms if mode != "sequential" and worker_ms else None
        row["limit_per_s"] = None if math.isinf(limit) else limit
        row["efficiency"] = (row["deliveries_per_s"] / limit) if row["deliveries_per_s"] and row["limit_per_s"] else None
        rows.append(row)
    return rows


def probe_summary(probes: dict[int, dict[str, list[float]]]) -> dict:
    return {str(latency): {mode: {"p50_ms": percentile(v, 50), "p95_ms": percentile(v, 95), "n": len(v)}
                           for mode, v in by_mode.items()} for latency, by_mode in probes.items()}


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))
