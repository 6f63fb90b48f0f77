"""The emulated channels, in a process of their own: `python -m bench.emulators URLS_FILE`.

Serves the Weibo and WordPress emulators (syndicator/emulators) on free loopback ports, with the
hourly posting limits lifted (a benchmark posts thousands of statuses an hour) and 127.0.0.1 as
the Weibo safe domain. Each is wrapped in `Completions`, which notes when every successful API
answer left and for which article, so bare Celery and the sequential loop (which keep no state)
can be timed the same way for every mode. Extra admin routes, beside the emulators' own:

    POST /_bench/reset {"latency": 0.05}   forget everything, then answer every call after 50 ms
    GET  /_bench/completions?since=N       {"count": n, "items": [[unix_time, article_key], ...]}
"""
from __future__ import annotations

import json
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

from syndicator.emulators import EmulatorServer, WeiboEmulator, WeiboSettings, WeiboToken, WordPressEmulator

#: The Weibo access token the benchmark's channel uses.
WEIBO_TOKEN = "bench-weibo-token"
#: The WordPress user and application password the portal channel uses (the emulator's default).
WP_USER, WP_PASSWORD = "editor", "abcd EFGH ijkl MNOP qrst UVWX"
#: The article link at the end of a Weibo status: …/m/a/<slug>.html (the micro-site page).
_WEIBO_LINK = re.compile(r"/m/a/([A-Za-z0-9_-]+)\.html")


def weibo_key(body: bytes) -> str:
    """The article slug a statuses/share call is about."""
    status = parse_qs(body.decode("utf-8", "replace")).get("status", [""])[0]
    match = _WEIBO_LINK.search(status)
    return f"weibo:{match.group(1)}" if match else ""


def wordpress_key(body: bytes) -> str:
    """The post slug a posts create call carries (`s-<article id>`)."""
    try:
        return f"wordpress:{json.loads(body)['slug']}"
    except (ValueError, KeyError, TypeError):
        return ""


class Completions:
    """ASGI wrapper around one emulator: records (time, article key) of every 2xx API answer."""

    def __init__(self, emulator, key_of: Callable[[bytes], str]) -> None:
        self.emulator = emulator  # EmulatorServer releases hanging requests through it
        self.inner = emulator.app
        self.key_of = key_of
        self.items: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith("/_emulator/"):
            await self.inner(scope, receive, send)
            return
        if path.startswith("/_bench/"):
            await self._admin(scope, receive, send)
            return
        chunks: list[bytes] = []
        status = 0

        async def recording_receive():
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
            return message

        async def recording_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body") and 200 <= status < 300:
                done = time.time()
                with self.lock:
                    self.items.append((done, self.key_of(b"".join(chunks))))

        await self.inner(scope, recording_receive, recording_send)

    async def _admin(self, scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/_bench/reset":
            latency = float(json.loads(body or b"{}").get("latency", 0.0))
            self.emulator.reset()
            self.emulator.faults.update(latency=latency)
            with self.lock:
                self.items = []
            answer = {"reset": True, "latency": latency}
        else:
            since = int(parse_qs(scope.get("query_string", b"").decode()).get("since", ["0"])[0])
            with self.lock:
                answer = {"count": len(self.items), "items": self.items[since:]}
        data = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})


def main(urls_file: Path) -> None:
    weibo = WeiboEmulator(WeiboSettings(
        safe_domains=["127.0.0.1"], user_hourly_posts=10**9, ip_hourly_requests=10**9,
        tokens={WEIBO_TOKEN: WeiboToken(uid=5000000001, expires_at=time.time() + 30 * 86400)}))
    wordpress = WordPressEmulator()
    servers = {"weibo": EmulatorServer(Completions(weibo, weibo_key)),
               "wordpress": EmulatorServer(Completions(wordpress, wordpress_key))}
    urls = {name: server.start() for name, server in servers.items()}
    urls_file.write_text(json.dumps(urls))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    for server in servers.values():
        server.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
