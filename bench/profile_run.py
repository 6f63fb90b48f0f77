"""`python -m bench --profile`: py-spy the syndicator worker and the bare Celery worker while each
delivers the same batch (emulator latency 0, so the workers are busy), then print where the CPU
went (GIL samples) and, for syndicator, where its threads wait (all threads). Collapsed stacks and
the summary land in bench/profiles/.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import profile
from bench.fanout import run_bare, run_syndicator
from bench.matrix import batch
from bench.services import RedisServer
from bench.systems import Emulators, start_systems, stop_systems
from bench.workload import calls_for, make_drafts


def main(quick: bool = False, concurrency: int = 8) -> int:
    articles = 150 if quick else 400
    tmp = Path(tempfile.mkdtemp(prefix="syndicator-profile-"))
    redis = RedisServer(tmp / "redis").start()
    emulators = Emulators(tmp).start()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    summary = {}
    try:
        drafts = make_drafts(tmp / "articles", "base", 40)
        (system,) = start_systems(tmp, redis, emulators, [concurrency], "sqlite")
        try:
            warm = batch(drafts, "warm", 10)
            run_bare(redis, emulators, system, [calls_for(system.rt, d, 1000 + i) for i, d in enumerate(warm)], 0.0)
            run_syndicator(redis, emulators, system, warm, 0.0)
            for mode, flag in (("syndicator", "--gil"), ("syndicator", "--idle"), ("bare", "--gil")):
                work = batch(drafts, f"prof-{mode}{flag}", articles)
                calls = [calls_for(system.rt, d, 5000 + i) for i, d in enumerate(work)]
                worker = system.syn if mode == "syndicator" else system.bare
                out = profile.OUT / f"{stamp}-{mode}{flag[1:]}-c{concurrency}.txt"
                recorder = profile.Recorder(worker.pid, out, seconds=60, flags=(flag,))
                run = (run_syndicator(redis, emulators, system, work, 0.0) if mode == "syndicator"
                       else run_bare(redis, emulators, system, calls, 0.0))
                recorder.stop()
                figures = run.figures()
                summary[f"{mode} {flag}"] = {"deliveries": run.completed, "deliveries_per_s": figures["deliveries_per_s"],
                                 "worker_cpu_ms_per_delivery": figures["worker_cpu_ms_per_delivery"],
                                 **(profile.summarize(out) if out.exists() else {"error": "no py-spy output"})}
        finally:
            stop_systems([system])
    finally:
        emulators.stop()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    path = profile.OUT / f"{stamp}-summary.json"
    path.write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    json.dump(summary, sys.stdout, indent=1, ensure_ascii=False)
    print(f"\nwritten: {path}")
    return 0
