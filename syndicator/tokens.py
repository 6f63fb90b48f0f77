"""The shared token cache port: one place all workers read access tokens from, with a lock so
exactly one process refreshes a token when it expires (WeChat invalidates the old token on every
refresh, so per-worker refreshes would invalidate each other).

Redis in production (the broker's Redis unless `token_cache_url` names another); a locked
directory of small files on the embedded default, where every process runs on one machine.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

#: Prefix of every key this port writes in Redis.
REDIS_PREFIX = "syndicator:token:"


class TokenLockTimeout(Exception):
    """Another process held the refresh lock for longer than the caller would wait."""


class TokenCache(Protocol):
    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str, ttl: float) -> None: ...

    def delete(self, key: str) -> None: ...

    def lock(self, key: str, timeout: float = 15) -> contextmanager: ...


class RedisTokenCache:
    def __init__(self, url: str) -> None:
        import redis

        self.redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    def get(self, key: str) -> str | None:
        value = self.redis.get(REDIS_PREFIX + key)
        return value.decode() if value is not None else None

    def set(self, key: str, value: str, ttl: float) -> None:
        self.redis.set(REDIS_PREFIX + key, value, px=max(int(ttl * 1000), 1))

    def delete(self, key: str) -> None:
        self.redis.delete(REDIS_PREFIX + key)

    @contextmanager
    def lock(self, key: str, timeout: float = 15) -> Iterator[None]:
        from redis.exceptions import LockError

        lock = self.redis.lock(REDIS_PREFIX + "lock:" + key, timeout=timeout * 2, blocking_timeout=timeout)
        if not lock.acquire():
            raise TokenLockTimeout(f"token refresh lock for {key!r} busy for {timeout}s")
        try:
            yield
        finally:
            try:
                lock.release()
            except LockError:
                pass  # expired while we held it; the next refresher takes over


class FileTokenCache:
    """Tokens as small files under one directory; `flock` for the refresh lock (one machine)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key: str, suffix: str) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.directory / (hashlib.sha256(key.encode()).hexdigest()[:32] + suffix)

    def get(self, key: str) -> str | None:
        try:
            data = json.loads(self._path(key, ".json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return data["value"] if data["expires_at"] > time.time() else None

    def set(self, key: str, value: str, ttl: float) -> None:
        from channels.localfs import atomic_write

        path = self._path(key, ".json")
        atomic_write(path, json.dumps({"value": value, "expires_at": time.time() + ttl}))
        path.chmod(0o600)

    def delete(self, key: str) -> None:
        self._path(key, ".json").unlink(missing_ok=True)

    @contextmanager
    def lock(self, key: str, timeout: float = 15) -> Iterator[None]:
        with open(self._path(key, ".lock"), "a+b") as fh:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TokenLockTimeout(f"token refresh lock for {key!r} busy for {timeout}s") from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def token_cache_for(url: str | None, broker_url: str, var_dir: Path) -> TokenCache:
    """Redis if configured (or if the broker is Redis), else files under var/tokens."""
    url = url or (broker_url if broker_url.startswith(("redis://", "rediss://")) else None)
    if url and url.startswith(("redis://", "rediss://")):
        return RedisTokenCache(url)
    if url and url.startswith("file://"):
        return FileTokenCache(Path(url[len("file://"):]))
    return FileTokenCache(var_dir / "tokens")
