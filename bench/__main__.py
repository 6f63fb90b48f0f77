"""`python -m bench [--quick] [--db sqlite|postgresql] [--only SECTIONS] [--profile]`

Runs on demand, never in CI. Starts its own redis-server, emulators and worker processes on
loopback, measures, prints readable tables, and ends with one JSON line holding every figure.
Progress goes to stderr, so stdout is the tables and the JSON line only.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from bench import before, commits, growth, queries, report
from bench.matrix import FULL, QUICK, Matrix, Plan, cpu_count, probe_summary, summarize
from bench.services import REPO, RedisServer
from bench.systems import Emulators, start_systems, stop_systems
from bench.workload import make_drafts

SECTIONS = ("fanout", "before", "commits", "growth", "queries")
#: --quick leaves the before/after runs out (run them with --only before).
QUICK_SECTIONS = ("fanout", "commits", "growth", "queries")


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine(redis: RedisServer | None) -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    meminfo = Path("/proc/meminfo").read_text().split()
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"nproc": cpu_count(), "cpu": model, "memory_gb": round(int(meminfo[1]) / 1024 / 1024, 1),
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "redis": redis.version() if redis else None, "os": platform.platform(),
            "commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", ".",
                                                                                ":!bench")),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "load_before": os.getloadavg()}


def run_fanout(tmp: Path, redis: RedisServer, emulators: Emulators, drafts, plan: Plan, database: str) -> dict:
    systems = start_systems(tmp / "fanout", redis, emulators, list(plan.concurrencies), database)
    try:
        matrix = Matrix(redis, emulators, systems, drafts, plan, progress)
        progress(f"fan-out: workers up (C = {', '.join(map(str, plan.concurrencies))}); warming up")
        matrix.warm_up()
        runs = matrix.run()
        probes, stages = {}, {}
        for latency in plan.latencies_ms:
            progress(f"low load: {plan.probe_articles} articles per mode at {latency} ms")
            probes[latency] = matrix.probe(systems[0], latency)
            stages[str(latency)] = matrix.stage_summary()
        result = {"plan": plan.__dict__, "rows": summarize(runs, cpu_count()), "low_load": probe_summary(probes),
                  "low_load_syndicator_stages": stages,
                  "runs": [{**r.__dict__, "latencies_ms": None, "figures": r.figures()} for r in runs],
                  "peak_rss_mb": {f"{kind} C={s.concurrency}": p.memory()["peak_rss"]
                                  for s in systems for kind, p in (("syndicator", s.syn), ("bare", s.bare))}}
        return result
    finally:
        stop_systems(systems)


def details(results: dict) -> dict:
    """Every section's figures for the JSON line (the per-run records of the matrix left out)."""
    out = {k: results.get(k) for k in SECTIONS}
    if out["fanout"]:
        out["fanout"] = {k: v for k, v in out["fanout"].items() if k != "runs"}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmark syndicator against bare Celery "
                                     "and a sequential loop; ends with one JSON line holding every figure.")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and articles (under 3 minutes)")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite",
                        help="database of the throughput runs and query timings (postgresql: $SYNDICATOR_BENCH_PG "
                             "admin DSN)")
    parser.add_argument("--only", help=f"comma-separated sections: {', '.join(SECTIONS)} (default: all; "
                                       f"--quick: {', '.join(QUICK_SECTIONS)})")
    parser.add_argument("--reps", type=int, help="repetitions of the throughput matrix")
    parser.add_argument("--before", default=before.BEFORE_REF,
                        help=f"commit whose worker the before/after section runs (default {before.BEFORE_REF})")
    parser.add_argument("--rows", type=int, default=1_000_000, help="delivery rows for the query timings")
    parser.add_argument("--profile", action="store_true", help="py-spy the workers instead (bench/profile_run.py)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    args = parser.parse_args(argv)
    if args.profile:
        from bench.profile_run import main as profile_main

        return profile_main(quick=args.quick)

    plan = QUICK if args.quick else FULL
    if args.reps:
        plan = replace(plan, reps=args.reps)
    chosen = args.only or ",".join(QUICK_SECTIONS if args.quick else SECTIONS)
    sections = [s.strip() for s in chosen.split(",") if s.strip()]
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="syndicator-bench-"))
    results: dict = {"mode": "quick" if args.quick else "full", "database": args.db, "errors": []}
    redis = RedisServer(tmp / "redis").start()
    emulators = Emulators(tmp).start()
    try:
        results["machine"] = machine(redis)
        drafts = make_drafts(tmp / "articles", "base", 40)

        def section(name: str, fn) -> None:
            if name not in sections:
                return
            progress(f"{name} …")
            try:
                results[name] = fn()
            except Exception as exc:  # one broken section must not hide the others' figures
                traceback.print_exc(file=sys.stderr)
                results["errors"].append(f"{name}: {type(exc).__name__}: {exc}")

        section("fanout", lambda: run_fanout(tmp, redis, emulators, drafts, plan, args.db))
        section("before", lambda: before.measure(tmp / "before", redis, emulators, drafts,
                                                 replace(plan, reps=min(plan.reps, 3)), progress, args.before))
        section("commits", lambda: {"shipped": commits.measure(tmp / "commits", redis.url(14), emulators, drafts,
                                                               10 if args.quick else 50)})
        section("growth", lambda: growth.measure(tmp / "growth", redis.url(15), drafts, 15 if args.quick else 41,
                                                 progress))
        section("queries", lambda: queries.measure(args.rows, 5 if args.quick else 15, progress, args.db))
    finally:
        emulators.stop()
        redis.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            progress(f"kept {tmp}")
    results["seconds"] = time.monotonic() - started
    results["load_after"] = os.getloadavg()
    figures = report.headline(results)
    report.render(results, figures, print)
    print(json.dumps({**figures, "machine": {**results["machine"], "load_after": results["load_after"]},
                      "mode": results["mode"],
                      "database": results["database"], "seconds": round(results["seconds"], 1),
                      "errors": results["errors"], "details": details(results)},
                     ensure_ascii=False, default=str))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
