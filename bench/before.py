"""Before/after: the `syndicator worker` of an earlier commit next to this checkout's, interleaved.

The earlier commit (`--before REF`, default `BEFORE_REF`: the last commit before the lean delivery
path) is exported with `git archive` into the run's temporary directory; its worker runs on its own
code and creates its own schema. Both are fed the same articles at one emulator latency (50 ms),
at each concurrency, next to bare Celery, and probed one article at a time for the low-load
latency. Publishing happens in the bench process with this checkout's code for both, so the
comparison is of the workers (publishing's own before/after is timed in process by `commits`).
"""
from __future__ import annotations

import subprocess
import tarfile
from io import BytesIO
from pathlib import Path

from bench.fanout import Run, run_bare, run_syndicator
from bench.matrix import Matrix, Plan, articles_for, batch, cpu_count, summarize
from bench.services import REPO, RedisServer
from bench.stats import percentile
from bench.systems import Emulators, System, start_system, stop_systems, wait_ready

#: The last commit before the lean delivery path (session 1's final state).
BEFORE_REF = "ee5f30b"
#: First Redis database number the before/after systems use (one each).
FIRST_REDIS_DB = 4


def export(ref: str, folder: Path) -> Path:
    """The tree of `ref`, written to `folder` (no worktree, nothing left in the repository)."""
    archive = subprocess.run(["git", "archive", "--format=tar", ref], cwd=REPO, check=True, capture_output=True).stdout
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def measure(folder: Path, redis: RedisServer, emulators: Emulators, drafts, plan: Plan, progress,
            ref: str = BEFORE_REF, concurrencies: tuple[int, ...] = (8, 32, 128), latency_ms: int = 50) -> dict:
    sources = {"before": export(ref, folder / "before-src"), "after": REPO}
    systems: dict[tuple[str, int], System] = {}
    db = FIRST_REDIS_DB
    for c in concurrencies:
        for name, source in sources.items():
            systems[(name, c)] = start_system(folder / f"{name}-c{c}", db, redis, emulators, c, "sqlite", source,
                                              with_bare=name == "after")
            db += 1
    try:
        wait_ready(list(systems.values()))
        matrix = Matrix(redis, emulators, [], drafts, plan, progress)
        for (name, c), system in systems.items():
            run_syndicator(redis, emulators, system, batch(drafts, f"bwarm-{name}-{c}", 8), 0.0)
            if system.bare is not None:
                run_bare(redis, emulators, system, matrix.calls(system, batch(drafts, f"bwarm-bare-{c}", 8)), 0.0)
        runs: list[Run] = []
        latency = latency_ms / 1000
        for rep in range(plan.reps):
            for c in concurrencies:
                jobs = ["bare", *sources]
                jobs = jobs[rep % len(jobs):] + jobs[:rep % len(jobs)]
                cell = batch(drafts, f"b{rep}-c{c}", articles_for(plan, latency_ms, c))
                for name in jobs:
                    if name == "bare":
                        system = systems[("after", c)]
                        run = run_bare(redis, emulators, system, matrix.calls(system, cell), latency)
                    else:
                        run = run_syndicator(redis, emulators, systems[(name, c)], cell, latency)
                        run.mode = name
                    runs.append(run)
                    progress(f"before/after rep {rep + 1}/{plan.reps} C={c:<3} {name:<6} {run.completed}/"
                             f"{run.deliveries} {run.figures()['deliveries_per_s'] or 0:.0f}/s")
        probes: dict[str, list[float]] = {name: [] for name in sources}
        c = concurrencies[0]
        for i in range(plan.probe_articles):
            for name in probes:
                emulators.reset(latency)
                draft = batch(drafts, f"bp-{name}-{i}", 1)[0]
                probes[name].append(matrix.probe_syndicator(systems[(name, c)], draft))
    finally:
        stop_systems(list(systems.values()))
    rows = summarize(runs, cpu_count())
    by = {(r["mode"], r["concurrency"]): r for r in rows}
    out = {"ref": ref, "latency_ms": latency_ms, "rows": rows,
           "low_load_p50_ms": {name: percentile(v, 50) for name, v in probes.items()}, "low_load_concurrency": c}
    for c in concurrencies:
        bare = by[("bare", c)]
        out[f"C={c}"] = {name: {"ratio_vs_bare": by[(name, c)]["deliveries_per_s"] / bare["deliveries_per_s"],
                                "added_cpu_ms_per_delivery": by[(name, c)]["cpu_ms_per_delivery"]
                                - bare["cpu_ms_per_delivery"],
                                "p95_ms": by[(name, c)]["p95_ms"]} for name in sources}
    return out
