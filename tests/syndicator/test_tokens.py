"""The shared token cache: many threads and processes asking at once cause one refresh."""
from __future__ import annotations

import threading
import time

import pytest

from syndicator.tokens import FileTokenCache, RedisTokenCache, TokenLockTimeout, token_cache_for


@pytest.fixture(params=["redis", "file"])
def cache(request, tmp_path, redis_url):
    return RedisTokenCache(redis_url) if request.param == "redis" else FileTokenCache(tmp_path / "tokens")


def test_get_set_delete_and_expiry(cache):
    assert cache.get("wx:app1") is None
    cache.set("wx:app1", "tok-1", ttl=0.3)
    assert cache.get("wx:app1") == "tok-1"
    time.sleep(0.4)
    assert cache.get("wx:app1") is None
    cache.set("wx:app1", "tok-2", ttl=60)
    cache.delete("wx:app1")
    assert cache.get("wx:app1") is None


def test_sixteen_threads_refresh_once(cache):
    fetches = []

    def token() -> str:
        value = cache.get("wx:app")
        if value:
            return value
        with cache.lock("wx:app", timeout=10):
            value = cache.get("wx:app")
            if value is None:
                time.sleep(0.05)  # a slow token endpoint
                fetches.append(1)
                value = f"tok-{len(fetches)}"
                cache.set("wx:app", value, ttl=60)
        return value
    results = []
    threads = [threading.Thread(target=lambda: results.append(token())) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fetches) == 1 and set(results) == {"tok-1"}


def test_a_held_lock_times_out_clearly(cache):
    held, release = threading.Event(), threading.Event()

    def holder():
        with cache.lock("busy", timeout=5):
            held.set()
            release.wait(5)
    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    with pytest.raises(TokenLockTimeout, match="busy"):
        with cache.lock("busy", timeout=0.2):
            pass
    release.set()
    t.join()


def test_choice_follows_configuration(tmp_path, redis_url):
    assert isinstance(token_cache_for(None, redis_url, tmp_path), RedisTokenCache)
    assert isinstance(token_cache_for(None, "sqla+sqlite:///x.db", tmp_path), FileTokenCache)
    assert isinstance(token_cache_for(f"file://{tmp_path}/t", "redis://x", tmp_path), FileTokenCache)
