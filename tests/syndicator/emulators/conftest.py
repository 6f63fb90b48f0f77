"""Fixtures for the emulator tests: emulators on free ports and a WeChat callback receiver.

uvicorn needs ~0.15 s to stop, so the servers are started once per session and each test plugs its
own fresh emulator into one (``serve``); ``EmulatorServer`` itself is exercised by its own tests.
"""
from __future__ import annotations

from typing import Any

import pytest
from emulator_helpers import CallbackReceiver
from starlette.responses import PlainTextResponse

from syndicator.emulators.server import EmulatorServer


class Slot:
    """ASGI app forwarding to the emulator the current test placed in it."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.app is None:
            await PlainTextResponse("no emulator plugged in", status_code=503)(scope, receive, send)
            return
        await self.app(scope, receive, send)


@pytest.fixture(scope="session")
def _servers() -> Any:
    pool: list[tuple[Slot, EmulatorServer]] = []
    yield pool
    for _, server in pool:
        server.stop()


@pytest.fixture
def serve(_servers: list[tuple[Slot, EmulatorServer]]) -> Any:
    """``serve(emulator) -> base_url`` on a loopback port of its own for this test."""
    used: list[tuple[Slot, Any]] = []

    def start(emulator: Any) -> str:
        if len(used) == len(_servers):
            slot = Slot()
            server = EmulatorServer(slot)
            server.start()
            _servers.append((slot, server))
        slot, server = _servers[len(used)]
        slot.app = emulator.app
        used.append((slot, emulator))
        return server.base_url

    yield start
    for slot, emulator in used:
        emulator.stopping.set()  # release requests a fault keeps hanging
        slot.app = None


@pytest.fixture
def receiver() -> Any:
    rec = CallbackReceiver()
    yield rec
    rec.close()
