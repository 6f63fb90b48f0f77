"""Suspending and resuming channel instances.

A channel whose credentials are refused (a revoked Weibo token, a wrong WeChat secret) is
suspended: its deliveries stay queued instead of failing one after another, and ops are told
(an ERROR log line and an event). An operator resumes it once the account is fixed.
"""
from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select

from syndicator import states
from syndicator.models import ChannelStatus, utcnow
from syndicator.store import Store

log = logging.getLogger(__name__)


def suspended(store: Store) -> dict[str, str]:
    """Suspended channel → reason."""
    with store.read() as s:
        return {r.channel: r.reason or "" for r in s.scalars(select(ChannelStatus).where(ChannelStatus.suspended))}


def is_suspended(store: Store, channel: str) -> bool:
    with store.read() as s:
        return bool(s.scalar(select(ChannelStatus.suspended).where(ChannelStatus.channel == channel)))


def set_suspended(store: Store, channel: str, suspend: bool, *, reason: str | None, actor: str,
                  now: datetime | None = None) -> bool:
    """Suspend or resume; returns False when it already was in that state."""
    now = now or utcnow()

    def tx(session) -> bool:
        row = session.get(ChannelStatus, channel)
        if row is None:
            row = ChannelStatus(channel=channel, suspended=False, changed_at=now, changed_by=actor)
            session.add(row)
        if row.suspended == suspend:
            return False
        row.suspended, row.reason, row.changed_at, row.changed_by = suspend, reason, now, actor
        states.record(session, "channel_suspended" if suspend else "channel_resumed", actor=actor, now=now,
                      detail={"channel": channel, "reason": reason})
        return True

    changed = store.run_write(tx)
    if changed and suspend:
        log.error("channel suspended: deliveries wait until an operator resumes it",
                  extra={"channel": channel, "reason": reason})
    return changed
