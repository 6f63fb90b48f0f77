"""Helpers shared by the emulator tests: images, a callback receiver, polling."""
from __future__ import annotations

import io
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

from PIL import Image


def image(fmt: str = "JPEG", size: tuple[int, int] = (32, 24), pad_to: int | None = None) -> bytes:
    """A real image; ``pad_to`` appends bytes after the image data to reach an exact length."""
    buf = io.BytesIO()
    Image.new("RGB", size, "red").save(buf, fmt)
    data = buf.getvalue()
    if pad_to is not None:
        assert pad_to >= len(data)
        data += b"\0" * (pad_to - len(data))
    return data


class CallbackReceiver:
    """A tiny HTTP server standing in for the developer's WeChat callback URL.

    ``replies`` holds (status, body, delay) answers to use in order; when empty it answers
    ``200 success``. Every request is kept in ``received`` as (query dict, body bytes).
    """

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.replies: deque[tuple[int, str, float]] = deque()
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._cond:
                    receiver.received.append((dict(parse_qsl(urlsplit(self.path).query)), body))
                    receiver._cond.notify_all()
                    status, text, delay = receiver.replies.popleft() if receiver.replies else (200, "success", 0)
                time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(text.encode())))
                    self.end_headers()
                    self.wfile.write(text.encode())
                except OSError:
                    pass  # the emulator gave up (timeout) before we answered

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/wechat/callback"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def wait(self, count: int = 1, timeout: float = 5.0) -> list[tuple[dict[str, str], bytes]]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.received) >= count, timeout):
                raise TimeoutError(f"{len(self.received)} of {count} callbacks received")
            return list(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def eventually(check: Callable[[], Any], timeout: float = 3.0, interval: float = 0.02) -> Any:
    """Poll ``check`` until it returns a truthy value; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            assert value, f"condition not met within {timeout}s (last: {value!r})"
            return value
        time.sleep(interval)
