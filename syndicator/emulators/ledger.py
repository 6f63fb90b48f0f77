"""The emulator ledger: every request received and every effect applied, in order.

The reliability checker joins *intended* deliveries (SQL) with *applied* effects (this ledger);
tests query it to assert exactly-once behaviour. One ledger may be shared by several emulators,
every entry names its ``api``.
"""
from __future__ import annotations

import fnmatch
import hashlib
import threading
import time
from typing import Any, Callable

#: Request bodies longer than this are kept only as size + sha256 in the ledger.
MAX_BODY_BYTES = 64 * 1024


class Ledger:
    """Thread-safe, append-only record of requests and applied effects."""

    def __init__(self, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.max_body_bytes = max_body_bytes
        self._lock = threading.Condition()
        self._effects: list[dict[str, Any]] = []
        self._requests: list[dict[str, Any]] = []
        self._seq = 0

    # -- writing ---------------------------------------------------------------------------
    def apply(self, api: str, op: str, id: Any = None, body: Any = None, **extra: Any) -> dict[str, Any]:
        """Record an effect the emulated service applied (a post created, a draft deleted …)."""
        with self._lock:
            self._seq += 1
            entry = {"seq": self._seq, "api": api, "op": op, "id": id, "body": body,
                     "at": time.time(), **extra}
            self._effects.append(entry)
            self._lock.notify_all()
            return entry

    def record_request(self, api: str, method: str, path: str, query: str, headers: dict[str, str],
                       body: bytes) -> dict[str, Any]:
        """Record a received request; the caller fills in ``status``/``fault`` when known."""
        kept = body if len(body) <= self.max_body_bytes else None
        with self._lock:
            self._seq += 1
            entry = {"seq": self._seq, "api": api, "method": method, "path": path, "query": query,
                     "headers": headers, "body": kept, "body_size": len(body),
                     "body_sha256": hashlib.sha256(body).hexdigest(), "at": time.time(),
                     "status": None, "fault": None}
            self._requests.append(entry)
            self._lock.notify_all()
            return entry

    def clear(self) -> None:
        with self._lock:
            self._effects.clear()
            self._requests.clear()

    # -- reading ---------------------------------------------------------------------------
    def effects(self, op: str | None = None, api: str | None = None, id: Any = None,
                where: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        """Applied effects, oldest first; ``op`` may be a glob (``"draft/*"``)."""
        with self._lock:
            items = list(self._effects)
        return [e for e in items if _match(e, api=api, op=op, id=id, where=where)]

    def requests(self, path: str | None = None, method: str | None = None, api: str | None = None,
                 where: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        """Received requests, oldest first; ``path`` may be a glob (``"/cgi-bin/draft/*"``)."""
        with self._lock:
            items = list(self._requests)
        out = []
        for r in items:
            if api is not None and r["api"] != api:
                continue
            if method is not None and r["method"] != method.upper():
                continue
            if path is not None and not fnmatch.fnmatchcase(r["path"], path):
                continue
            if where is not None and not where(r):
                continue
            out.append(r)
        return out

    def count(self, op: str | None = None, api: str | None = None, id: Any = None) -> int:
        return len(self.effects(op=op, api=api, id=id))

    def last(self, op: str | None = None, api: str | None = None) -> dict[str, Any] | None:
        found = self.effects(op=op, api=api)
        return found[-1] if found else None

    def wait_for(self, op: str, count: int = 1, timeout: float = 5.0, api: str | None = None,
                 where: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        """Block until at least ``count`` matching effects exist; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [e for e in self._effects if _match(e, api=api, op=op, id=None, where=where)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(found)} of {count} {op!r} effects after {timeout}s")
                self._lock.wait(left)

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """A JSON-safe copy (bytes bodies become text or a size note)."""
        with self._lock:
            return {"effects": [_jsonable(e) for e in self._effects],
                    "requests": [_jsonable(r) for r in self._requests]}


def _match(e: dict[str, Any], api: str | None, op: str | None, id: Any,
           where: Callable[[dict[str, Any]], bool] | None) -> bool:
    if api is not None and e["api"] != api:
        return False
    if op is not None and not fnmatch.fnmatchcase(e["op"], op):
        return False
    if id is not None and str(e["id"]) != str(id):
        return False
    return where is None or bool(where(e))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return f"<{len(value)} bytes>"
    return value
