"""Before/after for the proposed core changes: the shipped worker next to workers running the
prototypes of bench/variants.py, at one emulator latency (50 ms), interleaved, each compared with
bare Celery at the same concurrency — throughput, CPU per delivery, low-load latency.
"""
from __future__ import annotations

from pathlib import Path

from bench.fanout import Run, run_bare, run_syndicator
from bench.matrix import Matrix, Plan, articles_for, batch, cpu_count, summarize
from bench.services import RedisServer
from bench.stats import percentile
from bench.systems import Emulators, System, start_system, stop_systems, wait_ready

#: Variant → (patches from bench/variants.py, whether deferral is off: channel_concurrency = C).
VARIANTS = {"shipped": ("", False), "no_defer": ("", True), "write_lock": ("write_lock", False),
            "lean": ("lean", False), "lean+no_defer": ("lean", True)}
#: The combination proposed in RESULTS.md (write_lock measured on its own, not proposed).
PROPOSED = "lean+no_defer"
#: First Redis database number the variant systems use (one each).
FIRST_REDIS_DB = 4


def measure(folder: Path, redis: RedisServer, emulators: Emulators, drafts, plan: Plan, progress,
            concurrencies: tuple[int, ...] = (8, 32), latency_ms: int = 50) -> dict:
    systems: dict[tuple[str, int], System] = {}
    db = FIRST_REDIS_DB
    for c in concurrencies:
        for name, (patches, no_defer) in VARIANTS.items():
            systems[(name, c)] = start_system(folder / f"{name}-c{c}", db, redis, emulators, c, "sqlite", patches,
                                              {"channel_concurrency": c} if no_defer else None,
                                              with_bare=name == "shipped")
            db += 1
    try:
        wait_ready(list(systems.values()))
        matrix = Matrix(redis, emulators, [], drafts, plan, progress)
        for (name, c), system in systems.items():
            run_syndicator(redis, emulators, system, batch(drafts, f"vwarm-{name}-{c}", 8), 0.0)
            if system.bare is not None:
                run_bare(redis, emulators, system, matrix.calls(system, batch(drafts, f"vwarm-bare-{c}", 8)), 0.0)
        runs: list[Run] = []
        latency = latency_ms / 1000
        for rep in range(plan.reps):
            for c in concurrencies:
                jobs = ["bare", *VARIANTS]
                jobs = jobs[rep % len(jobs):] + jobs[:rep % len(jobs)]
                cell = batch(drafts, f"v{rep}-c{c}", articles_for(plan, latency_ms, c))
                for name in jobs:
                    if name == "bare":
                        system = systems[("shipped", c)]
                        run = run_bare(redis, emulators, system, matrix.calls(system, cell), latency)
                    else:
                        run = run_syndicator(redis, emulators, systems[(name, c)], cell, latency)
                        run.mode = name
                    runs.append(run)
                    progress(f"variants rep {rep + 1}/{plan.reps} C={c:<3} {name:<10} {run.completed}/{run.deliveries}"
                             f" {run.figures()['deliveries_per_s'] or 0:.0f}/s")
        probes: dict[str, list[float]] = {name: [] for name in VARIANTS}
        c = concurrencies[0]
        for i in range(plan.probe_articles):
            for name in probes:
                emulators.reset(latency)
                draft = batch(drafts, f"vp-{name}-{i}", 1)[0]
                probes[name].append(matrix.probe_syndicator(systems[(name, c)], draft))
    finally:
        stop_systems(list(systems.values()))
    rows = summarize(runs, cpu_count())
    by = {(r["mode"], r["concurrency"]): r for r in rows}
    out = {"latency_ms": latency_ms, "rows": rows,
           "low_load_p50_ms": {name: percentile(v, 50) for name, v in probes.items()}, "low_load_concurrency": c}
    for c in concurrencies:
        bare = by[("bare", c)]
        out[f"C={c}"] = {name: {"ratio_vs_bare": by[(name, c)]["deliveries_per_s"] / bare["deliveries_per_s"],
                                "added_cpu_ms_per_delivery": by[(name, c)]["cpu_ms_per_delivery"]
                                - bare["cpu_ms_per_delivery"],
                                "p95_ms": by[(name, c)]["p95_ms"]} for name in VARIANTS}
    return out
