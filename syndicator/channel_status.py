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


# -- circuit breaker -----------------------------------------------------------------------------

def held_back(store: Store, now: datetime) -> list[str]:
    """Channels not to send to now: suspended, or with an open breaker."""
    with store.read() as s:
        return list(s.scalars(select(ChannelStatus.channel).where(
            (ChannelStatus.suspended) | (ChannelStatus.open_until > now))))


def record_failure(store: Store, channel: str, *, threshold: int, cooldown: float, max_cooldown: float,
                   now: datetime, reason: str) -> datetime | None:
    """Count a transient failure; open the breaker at `threshold` in a row. Returns its end if open."""
    from datetime import timedelta

    def tx(session) -> datetime | None:
        row = session.get(ChannelStatus, channel, with_for_update=True)
        if row is None:
            row = ChannelStatus(channel=channel, suspended=False, changed_at=now, changed_by="worker", failures=0)
            session.add(row)
        row.failures = (row.failures or 0) + 1
        if row.failures < threshold:
            return None
        was_open = row.open_until is not None and row.open_until > now
        wait = min(max_cooldown, cooldown * 2 ** (row.failures - threshold))
        row.open_until = now + timedelta(seconds=wait)
        if not was_open:
            states.record(session, "breaker_opened", actor="worker", now=now,
                          detail={"channel": channel, "failures": row.failures, "until": row.open_until.isoformat(),
                                  "last_error": reason})
        return row.open_until

    until = store.run_write(tx)
    if until is not None:
        log.error("circuit breaker open: attempts on this channel are held back",
                  extra={"channel": channel, "until": until.isoformat(), "error": reason})
    return until


def record_success(store: Store, channel: str, now: datetime) -> None:
    """Close the breaker and reset the failure count (called only when it was not already zero)."""
    def tx(session) -> None:
        row = session.get(ChannelStatus, channel)
        if row is not None and (row.failures or row.open_until):
            if row.open_until is not None:
                states.record(session, "breaker_closed", actor="worker", now=now, detail={"channel": channel})
            row.failures, row.open_until = 0, None

    store.run_write(tx)
