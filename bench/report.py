"""The headline figures, the targets of the issue, and the readable tables."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.stats import median, rounded

#: Latency (ms) at which the throughput targets are read.
TARGET_LATENCY_MS = 50
#: The issue's targets: figure → (comparison, bound, what it means).
TARGETS: dict[str, tuple[str, float, str]] = {
    "throughput_ratio_vs_bare_celery": (">=", 0.85, "syndicator / bare Celery deliveries/s at 50 ms, worst concurrency"),
    "p50_fanout_ms": ("<=", TARGET_LATENCY_MS + 30, "low-load publish → all delivered at 50 ms (slowest channel + 30 ms)"),
    "added_cpu_ms_per_delivery": ("<=", 1.0, "CPU ms per delivery over bare Celery (median of all cells)"),
    "archive_growth_ratio_10k": ("<=", 1.2, "one more publish+deliver with 10,000 archived vs none"),
    "status_query_ms_1m": ("<=", 50.0, "slowest status/list query at 1,000,000 deliveries"),
    "dashboard_query_ms_1m": ("<=", 50.0, "count-by-state dashboard aggregate at 1,000,000 deliveries"),
}


def _row(rows: list[dict], mode: str, latency: int, concurrency: int) -> dict | None:
    return next((r for r in rows if r["mode"] == mode and r["latency_ms"] == latency
                 and r["concurrency"] == concurrency), None)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """Every figure the issue names, flat, for the JSON line."""
    out: dict[str, Any] = {}
    fan = results.get("fanout") or {}
    rows = fan.get("rows", [])
    if rows:
        cs = sorted({r["concurrency"] for r in rows if r["mode"] != "sequential"})
        seq = _row(rows, "sequential", TARGET_LATENCY_MS, 1) or {}
        ratio, speedup, added, eff = {}, {}, [], {}
        for c in cs:
            syn, bare = _row(rows, "syndicator", TARGET_LATENCY_MS, c) or {}, _row(rows, "bare", TARGET_LATENCY_MS, c) or {}
            ratio[str(c)] = _ratio(syn.get("deliveries_per_s"), bare.get("deliveries_per_s"))
            speedup[str(c)] = _ratio(syn.get("deliveries_per_s"), seq.get("deliveries_per_s"))
            eff[str(c)] = syn.get("efficiency")
        for r in rows:
            if r["mode"] == "syndicator":
                bare = _row(rows, "bare", r["latency_ms"], r["concurrency"])
                if bare and r["cpu_ms_per_delivery"] is not None and bare["cpu_ms_per_delivery"] is not None:
                    added.append(r["cpu_ms_per_delivery"] - bare["cpu_ms_per_delivery"])
        known = [v for v in ratio.values() if v is not None]
        out["throughput_ratio_vs_bare_celery"] = min(known) if known else None
        out["throughput_ratio_vs_bare_celery_by_concurrency"] = ratio
        known = [v for v in speedup.values() if v is not None]
        out["speedup_vs_sequential"] = min(known) if known else None
        out["speedup_vs_sequential_by_concurrency"] = speedup
        out["added_cpu_ms_per_delivery"] = median(added)
        out["efficiency_vs_machine_limit_by_concurrency"] = eff
        for mode in ("syndicator", "bare", "sequential"):
            at = [r for r in rows if r["mode"] == mode and r["latency_ms"] == TARGET_LATENCY_MS]
            out[f"{mode}_deliveries_per_s_50ms"] = {str(r["concurrency"]): r["deliveries_per_s"] for r in at}
            out[f"{mode}_articles_per_s_50ms"] = {str(r["concurrency"]): r["articles_per_s"] for r in at}
            out[f"{mode}_cpu_ms_per_delivery"] = median(r["cpu_ms_per_delivery"] for r in rows if r["mode"] == mode)
            out[f"{mode}_redis_commands_per_delivery"] = median(r["redis_commands_per_delivery"] for r in rows
                                                                if r["mode"] == mode)
            for q in ("p50", "p95", "p99"):
                out[f"{mode}_{q}_ms_under_load_50ms"] = {str(r["concurrency"]): r[f"{q}_ms"] for r in at}
        out["peak_rss_mb_per_worker"] = fan.get("peak_rss_mb")
    probe = (fan.get("low_load") or {}).get(str(TARGET_LATENCY_MS))
    if probe:
        out["p50_fanout_ms"] = probe["syndicator"]["p50_ms"]
        out["p50_fanout_target_ms"] = TARGET_LATENCY_MS + 30
        out["p50_fanout_bare_ms"] = probe["bare"]["p50_ms"]
        out["p50_fanout_sequential_ms"] = probe["sequential"]["p50_ms"]
        out["p50_fanout_stages_ms"] = (fan.get("low_load_syndicator_stages") or {}).get(str(TARGET_LATENCY_MS))
    commits = (results.get("commits") or {}).get("shipped")
    if commits:
        out["sql_commits_per_delivery"] = commits["sql_commits_per_delivery"]
        out["sql_statements_per_delivery"] = commits["sql_statements_per_delivery"]
        out["sql_transactions_per_delivery"] = commits["sql_transactions_per_delivery"]
    growth = results.get("growth")
    if growth:
        for n, ratios in growth["ratios_vs_empty"].items():
            key = {"100": "100", "1000": "1k", "10000": "10k"}[n]
            out[f"archive_growth_ratio_{key}"] = ratios.get("total_ms")
            out[f"archive_growth_ratio_{key}_by_phase"] = {k: v for k, v in ratios.items() if k != "total_ms"}
        out["archive_growth_ratio_10k_vs_100"] = growth["ratios_vs_100"]["10000"]["total_ms"]
        out["archive_growth_cpu_ratio_10k"] = growth["ratios_vs_empty"]["10000"]["total_cpu_ms"]
    queries = results.get("queries")
    if queries:
        out["status_query_ms_1m"] = queries["status_query_ms"]
        out["status_query_slowest_1m"] = queries["slowest_status"]
        out["dashboard_query_ms_1m"] = queries["dashboard_query_ms"]
        out["dashboard_query_slowest_1m"] = queries["slowest_dashboard"]
        proposed = queries.get("with_proposed_indexes")
        if proposed:
            out["status_query_ms_1m_with_proposals"] = proposed["status_query_ms"]
            out["dashboard_query_ms_1m_with_proposals"] = proposed["dashboard_query_ms"]
            out["dashboard_query_slowest_1m_with_proposals"] = proposed["slowest_dashboard"]
    before = results.get("before")
    if before:
        cs = [k for k in before if k.startswith("C=")]
        for name in ("before", "after"):
            out[f"before_after_throughput_ratio_vs_bare_{name}"] = min(before[c][name]["ratio_vs_bare"] for c in cs)
            out[f"before_after_added_cpu_ms_per_delivery_{name}"] = median(
                before[c][name]["added_cpu_ms_per_delivery"] for c in cs)
            out[f"before_after_p50_fanout_ms_{name}"] = before["low_load_p50_ms"][name]
        out["before_after"] = {c: {name: {k: rounded(v, 3) for k, v in fig.items()} for name, fig in before[c].items()}
                               for c in cs}
        out["before_ref"] = before["ref"]
    out["targets"] = targets(out)
    return out


def targets(figures: dict[str, Any]) -> dict[str, dict]:
    out = {}
    for name, (op, bound, meaning) in TARGETS.items():
        value = figures.get(name)
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        out[name] = {"value": rounded(value, 3), "target": f"{op} {bound}", "met": met, "meaning": meaning}
    return out


# -- tables ---------------------------------------------------------------------------------------

def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[_fmt(c) if not isinstance(c, str) else c for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def render(results: dict[str, Any], figures: dict[str, Any], out: Callable[[str], None]) -> None:
    m = results["machine"]
    out(f"syndicator benchmark ({results['mode']}) — {m['nproc']} CPUs, {m['memory_gb']} GB, Python {m['python']}, "
        f"Redis {m.get('redis', '?')}, SQLite {m['sqlite']}, database {results['database']}, "
        f"commit {m['commit']}{' (dirty)' if m['dirty'] else ''}, {results['seconds']:.0f} s, load average "
        f"{m['load_before'][0]:.1f} before / {results['load_after'][0]:.1f} after")
    fan = results.get("fanout") or {}
    if fan.get("rows"):
        out("\nThroughput and latency (median of repetitions; latency = publish → all of an article's deliveries done)")
        rows = sorted(fan["rows"], key=lambda r: (r["latency_ms"], r["concurrency"], r["mode"]))
        out(table(["L ms", "C", "mode", "articles", "deliv/s", "art/s", "p50 ms", "p95 ms", "p99 ms", "CPU ms/d",
                   "machine CPU ms/d", "redis cmd/d", "limit/s", "effic.", "1-process limit/s", "deferred"],
                  [[r["latency_ms"], r["concurrency"], r["mode"], r["articles"], r["deliveries_per_s"],
                    r["articles_per_s"], r["p50_ms"], r["p95_ms"], r["p99_ms"], r["cpu_ms_per_delivery"],
                    r["machine_cpu_ms_per_delivery"], r["redis_commands_per_delivery"], r["limit_per_s"],
                    _fmt(r["efficiency"], 2), r.get("process_ceiling_per_s"),
                    (r.get("task_outcomes") or {}).get("deferred", "")]
                   for r in rows]))
        out("  CPU ms/d: worker + publishing/enqueueing thread; machine: + emulator + redis-server. limit = min(C/L, "
            "CPUs × 1000 / machine CPU ms/d); 1-process limit = 1000 / worker CPU ms/d (one Python process, GIL); "
            "deferred: messages sent back for 1 s by the per-channel thread cap")
    if fan.get("low_load"):
        out("\nLow load (one article at a time): publish → all delivered, ms")
        stages = fan.get("low_load_syndicator_stages", {})
        out(table(["L ms", "sequential p50", "bare p50", "syndicator p50", "syndicator p95", "→ attempt", "attempt → sent"],
                  [[int(lat), p["sequential"]["p50_ms"], p["bare"]["p50_ms"], p["syndicator"]["p50_ms"],
                    p["syndicator"]["p95_ms"], stages.get(lat, {}).get("publish_to_attempt_ms"),
                    stages.get(lat, {}).get("attempt_to_sent_ms")] for lat, p in fan["low_load"].items()]))
        out("  syndicator per delivery (medians, event log): publish → attempt started; attempt started → the "
            "channel answered (includes the emulator latency)")
    if fan.get("peak_rss_mb"):
        out("\nPeak RSS per worker process, MiB: " + ", ".join(f"{k} {v:.0f}" for k, v in fan["peak_rss_mb"].items()))
    if (results.get("commits") or {}).get("shipped"):
        c = results["commits"]["shipped"]
        out(f"\nSQL per delivery (in process, SQLite): {c['sql_commits_per_delivery']:.2f} commits, "
            f"{c['sql_transactions_per_delivery']:.2f} transactions, {c['sql_statements_per_delivery']:.1f} statements "
            f"(publishing: {c['publish']['commits']:.2f} commits; delivering: {c['deliver']['commits']:.2f} commits, "
            f"{c['deliver']['statements']:.1f} statements)")
    if results.get("growth"):
        out("\nGrowth: one more article published and delivered in process (median ms)")
        levels = results["growth"]["levels"]
        out(table(["archive", "publish", "rss_main", "microsite", "total", "vs empty", "CPU total", "CPU vs empty"],
                  [[r["archive"], r["publish_ms"], r.get("rss_main_ms"), r.get("microsite_ms"), r["total_ms"],
                    _fmt(r["total_ms"] / levels[0]["total_ms"], 2), r["total_cpu_ms"],
                    _fmt(r["total_cpu_ms"] / levels[0]["total_cpu_ms"], 2)] for r in levels]))
    if results.get("queries"):
        q = results["queries"]
        after = (q.get("with_proposed_indexes") or {}).get("ms", {})  # results of older runs
        out(f"\nQueries over {q['rows']:,} deliveries on {q.get('dialect', 'sqlite')} (median ms"
            + ("; 'proposed' = on a copy with the indexes and search table proposed in RESULTS.md)" if after else ")"))
        names = [*q["ms"], *(k for k in after if k not in q["ms"])]
        out(table(["query", "kind", "ms", *(["proposed"] if after else [])],
                  [[k, q.get("kinds", {}).get(k, "dashboard"), q["ms"].get(k), *([after.get(k)] if after else [])]
                   for k in names]))
    if results.get("before"):
        v = results["before"]
        out(f"\nBefore/after: the worker of commit {v['ref']} ('before') and of this checkout ('after'), "
            f"{v['latency_ms']} ms latency: throughput vs bare Celery, added CPU, p95 under load; low-load p50 at C="
            f"{v['low_load_concurrency']}")
        names = list(v["low_load_p50_ms"])
        rows = []
        for c in (k for k in v if k.startswith("C=")):
            rows += [[c, n, _fmt(v[c][n]["ratio_vs_bare"], 2), v[c][n]["added_cpu_ms_per_delivery"], v[c][n]["p95_ms"],
                      v["low_load_p50_ms"][n] if c.endswith(f"={v['low_load_concurrency']}") else None] for n in names]
        out(table(["C", "worker", "× bare", "added CPU ms/d", "p95 ms", "low-load p50 ms"], rows))
    out("\nTargets")
    out(table(["figure", "value", "target", "met"],
              [[k, _fmt(t["value"], 3), t["target"], {True: "yes", False: "NO", None: "-"}[t["met"]]]
               for k, t in figures["targets"].items()]))
    if results.get("errors"):
        out("\nSections that failed: " + "; ".join(results["errors"]))
