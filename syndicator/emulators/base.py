"""What the three emulators share: the ASGI wrapper that records and injects faults, the admin API
and an adjustable clock.

Each emulator is an ``Emulator`` subclass; ``emulator.app`` is a Starlette app that serves the
vendor API plus ``/_emulator/ledger`` (GET, DELETE), ``/_emulator/faults`` (GET, PUT = replace,
PATCH = merge), ``/_emulator/clock`` (GET, POST ``{"advance": seconds}``) and
``/_emulator/reset`` (POST).
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Message, Receive, Scope, Send

from .faults import FaultController, Faults
from .ledger import Ledger

#: Path prefix of the admin API; never subject to faults and not recorded as a request.
ADMIN_PREFIX = "/_emulator/"
#: Request headers copied into the ledger (credentials are never recorded).
RECORDED_HEADERS = ("content-type", "content-length", "content-disposition", "content-md5",
                    "x-forwarded-proto", "user-agent")

_PROXY_PAGE = ("<html><head><title>{0}</title></head><body><center><h1>{0}</h1></center>"
               "<hr><center>nginx</center></body></html>")


class Clock:
    """Wall clock with an offset, so tests can expire tokens or roll quotas without sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> float:
        self.offset += seconds
        return self.now()


class Emulator:
    """Base class: owns the ledger, the fault controller, the clock and the Starlette app."""

    #: Name used in ledger entries.
    api = "emulator"
    #: Error injected by ``Faults.error_rate`` when no ``error_code`` is set.
    default_error: int | str = 500

    def __init__(self, ledger: Ledger | None = None, faults: Faults | None = None) -> None:
        self.ledger = ledger or Ledger()
        self.faults = FaultController(faults)
        self.clock = Clock()
        self.lock = threading.RLock()
        #: Set while the server shuts down so hanging requests let go.
        self.stopping = threading.Event()
        self._app: EmulatorApp | None = None

    # -- to be provided by subclasses -------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        raise NotImplementedError

    def fault_response(self, code: int | str, path: str) -> Response:
        """The vendor-shaped error for an injected ``code``."""
        raise NotImplementedError

    def reset_state(self) -> None:
        """Forget all remote state (posts, drafts, counters)."""
        raise NotImplementedError

    def logical_path(self, scope: Scope) -> str:
        """The path fault rules and ledger entries use (WordPress maps ``?rest_route=``)."""
        return scope["path"]

    # -- common -----------------------------------------------------------------------------
    @property
    def app(self) -> "EmulatorApp":
        if self._app is None:
            admin = [
                Route(ADMIN_PREFIX + "ledger", self._admin_ledger, methods=["GET", "DELETE"]),
                Route(ADMIN_PREFIX + "faults", self._admin_faults, methods=["GET", "PUT", "PATCH"]),
                Route(ADMIN_PREFIX + "clock", self._admin_clock, methods=["GET", "POST"]),
                Route(ADMIN_PREFIX + "reset", self._admin_reset, methods=["POST"]),
            ]
            self._app = EmulatorApp(self, routes=admin + self.routes())
            self._app.state.emulator = self
        return self._app

    def reset(self) -> None:
        """Back to a fresh emulator: empty ledger, no faults, real time, no remote state."""
        with self.lock:
            self.ledger.clear()
            self.faults.clear()
            self.clock.offset = 0.0
            self.reset_state()

    def record(self, op: str, id: Any = None, body: Any = None, **extra: Any) -> dict[str, Any]:
        """Record an applied effect of this API."""
        return self.ledger.apply(self.api, op, id=id, body=body, **extra)

    async def _admin_ledger(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.ledger.clear()
            return JSONResponse({"cleared": True})
        snap = self.ledger.snapshot()
        op = request.query_params.get("op")
        if op:
            snap["effects"] = [e for e in snap["effects"] if e["op"] == op]
        return JSONResponse(snap)

    async def _admin_faults(self, request: Request) -> Response:
        if request.method != "GET":
            try:
                data = json.loads(await request.body() or b"{}")
                if request.method == "PUT":
                    self.faults.set(Faults.from_json(data))
                else:
                    self.faults.update(**data)
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(self.faults.get().to_json())

    async def _admin_clock(self, request: Request) -> Response:
        if request.method == "POST":
            data = json.loads(await request.body() or b"{}")
            self.clock.advance(float(data.get("advance", 0)))
        return JSONResponse({"now": self.clock.now(), "offset": self.clock.offset})

    async def _admin_reset(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"reset": True})


class EmulatorApp(Starlette):
    """Starlette app that records every request and applies the emulator's faults first.

    Faults are handled here, outside Starlette's middleware, because dropping a connection needs
    the server's own ``send`` (uvicorn's transport).
    """

    def __init__(self, emulator: Emulator, routes: list[BaseRoute]) -> None:
        super().__init__(routes=routes)
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ADMIN_PREFIX):
            await super().__call__(scope, receive, send)
            return
        emu = self.emulator
        body = await _read_body(receive)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
                   if k.decode("latin-1") in RECORDED_HEADERS}
        path = emu.logical_path(scope)
        entry = emu.ledger.record_request(emu.api, scope["method"], path,
                                          scope.get("query_string", b"").decode("latin-1"), headers, body)
        entry["raw_path"] = scope["path"]
        decision = emu.faults.decide(path, scope["method"], emu.default_error)

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
            await send(message)

        if decision.latency:
            entry["fault"] = "latency"
            await asyncio.sleep(decision.latency)
        if not decision.after_apply:
            if decision.hang is not None:
                # Never applied: answered 504 when the hang ends or is lifted (the client is usually gone).
                entry["fault"] = "hang"
                await self._hang(decision.hang)
                if emu.stopping.is_set():
                    return await _drop(send)
                return await _send_page(recording_send, 504, "504 Gateway Time-out")
            elif decision.down == "drop":
                entry["fault"] = "down:drop"
                return await _drop(send)
            elif decision.down == "503":
                entry["fault"] = "down:503"
                return await _send_page(recording_send, 503, "503 Service Temporarily Unavailable")
        if decision.code is not None:
            entry["fault"] = f"code:{decision.code}"
            await emu.fault_response(decision.code, path)(scope, _replay(body, receive), recording_send)
            return
        if not decision.after_apply or (decision.hang is None and decision.down is None):
            await super().__call__(scope, _replay(body, receive), recording_send)
            return
        # The request is handled (effect applied), then the answer is delayed or lost.
        held: list[Message] = []

        async def holding_send(message: Message) -> None:
            held.append(message)

        await super().__call__(scope, _replay(body, receive), holding_send)
        if decision.hang is not None:
            entry["fault"] = "hang-after-apply"
            await self._hang(decision.hang)
            for message in held:
                await recording_send(message)
        elif decision.down == "drop":
            entry["fault"] = "down:drop-after-apply"
            await _drop(send)
        else:
            entry["fault"] = "down:503-after-apply"
            await _send_page(recording_send, 503, "503 Service Temporarily Unavailable")

    async def _hang(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; False if released early (faults changed or server stopping)."""
        emu = self.emulator
        generation = emu.faults.generation
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if emu.faults.generation != generation or emu.stopping.is_set():
                return False
            await asyncio.sleep(min(0.05, left))
        return True


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_page(send: Send, status: int, title: str) -> None:
    """An HTML error page as a reverse proxy in front of the service would send it."""
    body = _PROXY_PAGE.format(title).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/html"), (b"content-length", str(len(body)).encode()),
                            (b"server", b"nginx")]})
    await send({"type": "http.response.body", "body": body})


async def _drop(send: Send) -> None:
    """Close the TCP connection without any response (uvicorn's transport behind ``send``)."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise ConnectionAbortedError("emulator fault: connection dropped")
    transport.close()
    if hasattr(cycle, "disconnected"):
        cycle.disconnected = True  # tell uvicorn not to answer 500 on the closed socket
    await asyncio.sleep(0)
