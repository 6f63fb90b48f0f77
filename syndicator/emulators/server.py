"""Run emulators on loopback with uvicorn in background threads.

    server = EmulatorServer(WeChatEmulator())
    base_url = server.start()          # "http://127.0.0.1:<free port>"
    ...
    server.stop()

``serve_all(EmulatorsConfig())`` starts WeChat, Weibo and WordPress together.
"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from .base import Emulator, EmulatorApp
from .ledger import Ledger
from .wechat import WeChatEmulator, WeChatSettings
from .weibo import WeiboEmulator, WeiboSettings
from .wordpress import WordPressEmulator, WordPressSettings

#: Seconds to wait for uvicorn to start listening or to stop.
START_TIMEOUT = 10.0


class EmulatorServer:
    """One ASGI app (usually an ``Emulator``) served by uvicorn on ``host:port`` (0 = free port)."""

    def __init__(self, app: Emulator | EmulatorApp | Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.emulator: Emulator | None = app if isinstance(app, Emulator) else getattr(app, "emulator", None)
        self.app = app.app if isinstance(app, Emulator) else app
        self.host, self.port = host, port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        """Start serving and wait until the socket accepts connections; returns the base URL."""
        if self._thread is not None:
            return self.base_url
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on such sockets, and without it
        # every keep-alive response stalls ~40 ms on Nagle + delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                http="h11", loop="asyncio", timeout_graceful_shutdown=1,
                                timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        if self.emulator is not None:
            self.emulator.stopping.clear()
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"emulator:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"emulator on {self.base_url} did not start")
            time.sleep(0.01)
        return self.base_url

    def stop(self, wait: bool = True) -> None:
        """Stop serving (hanging requests are released first); ``wait=False`` only asks."""
        if self._server is None or self._thread is None:
            return
        if self.emulator is not None:
            self.emulator.stopping.set()
        self._server.should_exit = True
        if wait:
            self._thread.join(START_TIMEOUT)
            self._server = self._thread = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class EmulatorsConfig:
    """Settings for ``serve_all``; a port of 0 picks a free one."""

    wechat: WeChatSettings = field(default_factory=WeChatSettings)
    weibo: WeiboSettings = field(default_factory=WeiboSettings)
    wordpress: WordPressSettings = field(default_factory=WordPressSettings)
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=lambda: {"wechat": 0, "weibo": 0, "wordpress": 0})
    #: One ledger for all three (entries carry ``api``), handy for the reliability checker.
    shared_ledger: bool = True


@dataclass
class RunningEmulators:
    """What ``serve_all`` started: base URLs, the emulator objects and their servers."""

    urls: dict[str, str]
    wechat: WeChatEmulator
    weibo: WeiboEmulator
    wordpress: WordPressEmulator
    servers: dict[str, EmulatorServer]
    ledger: Ledger | None = None

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop(wait=False)
        for server in self.servers.values():
            server.stop()

    def __enter__(self) -> "RunningEmulators":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_all(config: EmulatorsConfig | None = None) -> RunningEmulators:
    """Start the WeChat, Weibo and WordPress emulators; ``.urls`` maps name → base URL."""
    config = config or EmulatorsConfig()
    ledger = Ledger() if config.shared_ledger else None
    emulators: dict[str, Emulator] = {
        "wechat": WeChatEmulator(config.wechat, ledger),
        "weibo": WeiboEmulator(config.weibo, ledger),
        "wordpress": WordPressEmulator(config.wordpress, ledger),
    }
    servers: dict[str, EmulatorServer] = {}
    try:
        for name, emu in emulators.items():
            servers[name] = EmulatorServer(emu, config.host, config.ports.get(name, 0))
            servers[name].start()
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return RunningEmulators(urls={n: s.base_url for n, s in servers.items()}, servers=servers,
                            ledger=ledger, **emulators)  # type: ignore[arg-type]
