"""Where a worker's time goes: py-spy samples of a live worker process during a timed run.

`python -m bench --profile` starts one concurrency level, then records the syndicator worker and
the bare Celery worker while each delivers the same batch, and writes the collapsed stacks to
bench/profiles/ next to a summary: the share of samples per library (by the innermost frame) and
the project functions with the largest inclusive share. `--gil` samples only the thread holding
the GIL (where the CPU goes); `--idle` samples every thread, waiting ones too (where threads wait).
py-spy is found on PATH, at $PY_SPY, or in /tmp/benchtools/bin (`pip install --target`).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

#: Where profiles are written (git-ignored).
OUT = Path(__file__).resolve().parent / "profiles"
#: Innermost-frame file patterns → the library that spent the sample.
LIBRARIES = (("sqlalchemy", "sqlalchemy"), ("sqlite3", "sqlite"), ("psycopg", "psycopg"),
             ("kombu", "celery/kombu"), ("celery", "celery/kombu"), ("billiard", "celery/kombu"),
             ("redis", "redis client"), ("pythonjsonlogger", "logging"), ("logging", "logging"),
             ("json", "json"), ("requests", "http client"), ("urllib3", "http client"), ("http/", "http client"),
             ("socket", "http client"), ("jinja2", "templates"), ("pydantic", "pydantic"),
             ("syndicator/", "syndicator"), ("channels/", "channels"), ("threading", "threads"))
_FRAME = re.compile(r"^(?P<fn>.*) \((?P<file>[^:()]+)(?::\d+)?\)$")


def py_spy() -> str | None:
    for candidate in (os.environ.get("PY_SPY"), shutil.which("py-spy"), "/tmp/benchtools/bin/py-spy"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


class Recorder:
    """`py-spy record --format raw` on one process, for a bounded time."""

    def __init__(self, pid: int, out: Path, seconds: float, rate: int = 250, flags: tuple[str, ...] = ()) -> None:
        binary = py_spy()
        if binary is None:
            raise RuntimeError("py-spy not found: pip install --target /tmp/benchtools py-spy (or set PY_SPY)")
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([binary, "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate),
                                      "--duration", str(int(seconds)), "--output", str(out), "--nonblocking", *flags],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # py-spy attaches

    def stop(self) -> None:
        """Stop sampling now; py-spy writes what it has on SIGINT (as on Ctrl-C)."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _frames(stack: str) -> list[tuple[str, str]]:
    out = []
    for part in stack.split(";"):
        m = _FRAME.match(part.strip())
        if m:
            out.append((m["fn"], m["file"]))
    return out


def summarize(path: Path, top: int = 25) -> dict:
    """Library shares (innermost frame) and the project functions with the largest inclusive share."""
    libraries: Counter = Counter()
    inclusive: Counter = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = _frames(stack)
        if not frames:
            continue
        total += n
        leaf_file = frames[-1][1]
        libraries[next((name for pattern, name in LIBRARIES if pattern in leaf_file), "other")] += n
        for fn, file in set(frames):
            if file.startswith(("syndicator/", "channels/", "bench/")) or "/syndicator/" in file \
                    or "/channels/" in file or "/bench/" in file:
                inclusive[f"{fn} ({file.split('/main/')[-1]})"] += n
    return {"samples": total,
            "by_library_pct": {k: round(100 * v / total, 1) for k, v in libraries.most_common()},
            "project_inclusive_pct": {k: round(100 * v / total, 1) for k, v in inclusive.most_common(top)}}
