"""The embedded broker: kombu's SQLAlchemy transport on an SQLite file, for `syndicator run`
with no server to install.

kombu 5.x passes every transport option to `create_engine`, including the virtual transport's own
`polling_interval`, which SQLAlchemy rejects; this subclass keeps those out of the engine call.
Registered under the `sqla` / `sqlalchemy` aliases when `syndicator.queue` is imported.
"""
from __future__ import annotations

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Channel as _SqlaChannel
from kombu.transport.sqlalchemy import Transport as _SqlaTransport

#: Options meant for the transport itself, not for SQLAlchemy's create_engine.
_TRANSPORT_ONLY = ("polling_interval", "visibility_timeout")


class Channel(_SqlaChannel):
    def _engine_from_config(self):
        options = self.connection.client.transport_options
        saved = {k: options.pop(k) for k in _TRANSPORT_ONLY if k in options}
        try:
            return super()._engine_from_config()
        finally:
            options.update(saved)


class Transport(_SqlaTransport):
    Channel = Channel


def register() -> None:
    for alias in ("sqla", "sqlalchemy"):
        TRANSPORT_ALIASES[alias] = "syndicator.embedded_broker:Transport"
