"""Fixtures for the emulator tests: emulators on free ports and a WeChat callback receiver."""
from __future__ import annotations

from typing import Any

import pytest
from emulator_helpers import CallbackReceiver

from syndicator.emulators.server import EmulatorServer


@pytest.fixture
def serve() -> Any:
    """``serve(emulator) -> base_url``; every server is stopped after the test."""
    servers: list[EmulatorServer] = []

    def start(emulator: Any) -> str:
        server = EmulatorServer(emulator)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def receiver() -> Any:
    rec = CallbackReceiver()
    yield rec
    rec.close()
