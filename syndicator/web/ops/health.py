"""The health board's numbers: per channel, the last hour and day (counts, success rate, latency
percentiles, a 24-hour sparkline), queue, breaker, credential expiry and last error; and the
stamp the live updates poll."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select

from syndicator import alerts as alerting
from syndicator.alerts import recent
from syndicator.models import ChannelStatus, Delivery, Revision
from syndicator.runtime import Runtime
from syndicator.states import DeliveryState as S
from syndicator.web.ops.deliveries import ATTENTION

#: The health board's windows: key and length.
WINDOWS = (("hour", timedelta(hours=1)), ("day", timedelta(days=1)))
#: How often the page re-renders even when nothing moved (time windows and alerts age).
TICK_SECONDS = 30


def _seconds(rt: Runtime, later, earlier):
    """SQL: seconds between two timestamps (portable between SQLite and PostgreSQL)."""
    if rt.store.dialect == "sqlite":
        return (func.julianday(later) - func.julianday(earlier)) * 86400.0
    return func.extract("epoch", later - earlier)


def _hours_since(rt: Runtime, column, since: datetime):
    """SQL: whole hours from `since` to `column` (the sparkline's bucket)."""
    from sqlalchemy import Integer, cast

    start = literal(since, type_=Delivery.updated_at.type)
    if rt.store.dialect == "sqlite":
        return cast((func.julianday(column) - func.julianday(start)) * 24, Integer)
    return cast(func.floor(func.extract("epoch", column - start) / 3600), Integer)


def latency_percentiles(rt: Runtime, session, since: datetime) -> dict[str, dict[str, float | int]]:
    """Channel → nearest-rank p50/p95 of due-to-delivered seconds for deliveries delivered since `since`."""
    r = recent(rt, since)
    due = case((Revision.publish_at > r.c.created_at, Revision.publish_at), else_=r.c.created_at)
    lat = _seconds(rt, r.c.delivered_at, due)
    ranked = (select(r.c.channel, lat.label("s"),
                     func.row_number().over(partition_by=r.c.channel, order_by=lat).label("rn"),
                     func.count().over(partition_by=r.c.channel).label("n"))
              .join(Revision, Revision.id == r.c.revision_id)
              .where(r.c.state == S.DELIVERED.value, r.c.delivered_at >= since).subquery())
    rank50, rank95 = (50 * ranked.c.n + 99) // 100, (95 * ranked.c.n + 99) // 100
    rows = session.execute(select(ranked.c.channel, func.max(case((ranked.c.rn == rank50, ranked.c.s))),
                                  func.max(case((ranked.c.rn == rank95, ranked.c.s))), func.max(ranked.c.n))
                           .group_by(ranked.c.channel)).all()
    return {c: {"p50": max(float(p50 or 0), 0.0), "p95": max(float(p95 or 0), 0.0), "n": int(n)}
            for c, p50, p95, n in rows}


def health(rt: Runtime, now: datetime) -> list[dict[str, Any]]:
    """One row per configured channel: last hour and last day, queue, breaker, credential, last error."""
    day = now - timedelta(days=1)
    windows = {key: now - length for key, length in WINDOWS}
    expiry = alerting.credential_expiry(rt)
    with rt.store.read() as session:
        r = recent(rt, day)
        counts: dict[str, dict[str, dict[str, int]]] = {}
        cols = []
        for key, since in windows.items():
            touched = r.c.updated_at >= since
            cols += [
                func.sum(case((and_(touched, r.c.state == S.DELIVERED.value, r.c.delivered_at >= since), 1), else_=0)),
                func.sum(case((and_(touched, r.c.state == S.FAILED.value), 1), else_=0)),
                func.sum(case((and_(touched, r.c.state == S.UNKNOWN.value), 1), else_=0)),
                func.sum(case((and_(touched, or_(r.c.attempts > 1, r.c.state == S.RETRY_WAIT.value)), 1), else_=0)),
            ]
        for row in session.execute(select(r.c.channel, *cols).group_by(r.c.channel)):
            values = [int(v or 0) for v in row[1:]]
            counts[row[0]] = {key: dict(zip(("delivered", "failed", "unknown", "retried"), values[i * 4:i * 4 + 4]))
                              for i, key in enumerate(windows)}
        latency = {key: latency_percentiles(rt, session, since) for key, since in windows.items()}
        current: dict[str, dict[str, int]] = {}
        for channel, state, n in session.execute(
                select(Delivery.channel, Delivery.state, func.count()).where(Delivery.state.in_(
                    [S.QUEUED.value, S.RETRY_WAIT.value, S.SENDING.value, S.SUBMITTED.value, *ATTENTION]))
                .group_by(Delivery.channel, Delivery.state)):
            current.setdefault(channel, {})[state] = n
        ranked = (select(r.c.id, r.c.channel, r.c.last_error, r.c.updated_at,
                         func.row_number().over(partition_by=r.c.channel,
                                                order_by=(r.c.updated_at.desc(), r.c.id.desc())).label("rn"))
                  .where(r.c.last_error.is_not(None)).subquery())
        last_error = {e.channel: e for e in session.execute(select(ranked).where(ranked.c.rn == 1))}
        hour = _hours_since(rt, r.c.updated_at, day)
        spark: dict[str, list[list[int]]] = {}
        for channel, bucket, delivered, failed in session.execute(
                select(r.c.channel, hour.label("h"),
                       func.sum(case((r.c.state == S.DELIVERED.value, 1), else_=0)),
                       func.sum(case((r.c.state.in_((S.FAILED.value, S.UNKNOWN.value)), 1), else_=0)))
                .where(r.c.state.in_((S.DELIVERED.value, S.FAILED.value, S.UNKNOWN.value)))
                .group_by(r.c.channel, hour)):
            if bucket is not None and 0 <= int(bucket) < 24:
                spark.setdefault(channel, [[0, 0] for _ in range(24)])[int(bucket)] = [int(delivered or 0),
                                                                                          int(failed or 0)]
        status = {st.channel: st for st in session.scalars(select(ChannelStatus))}
    rows = []
    for name, entry in rt.config.channels.items():
        st = status.get(name)
        windows_out = {}
        for key, _ in WINDOWS:
            c = counts.get(name, {}).get(key, {"delivered": 0, "failed": 0, "unknown": 0, "retried": 0})
            settled = c["delivered"] + c["failed"] + c["unknown"]
            lat = latency[key].get(name)
            windows_out[key] = {**c, "settled": settled,
                                "success_rate": (c["delivered"] / settled) if settled else None,
                                "p50": lat["p50"] if lat else None, "p95": lat["p95"] if lat else None}
        cur = current.get(name, {})
        open_until = st.open_until if st and st.open_until and st.open_until > now else None
        expires = expiry.get(name)
        err = last_error.get(name)
        rows.append({
            "name": name, "type": entry.type, "enabled": entry.enabled,
            "windows": windows_out,
            "queue": cur.get(S.QUEUED.value, 0) + cur.get(S.RETRY_WAIT.value, 0),
            "in_flight": cur.get(S.SENDING.value, 0) + cur.get(S.SUBMITTED.value, 0),
            "attention": sum(cur.get(s, 0) for s in ATTENTION),
            "suspended": bool(st and st.suspended), "suspended_reason": st.reason if st and st.suspended else None,
            "breaker": "open" if open_until else ("half" if st and st.failures else "closed"),
            "breaker_open_until": open_until, "consecutive_failures": st.failures if st else 0,
            "credential_expires_at": expires,
            "credential_days": ((expires - now).total_seconds() / 86400) if expires else None,
            "last_error": err.last_error if err else None, "last_error_at": err.updated_at if err else None,
            "last_error_delivery": err.id if err else None,
            "spark": spark.get(name, [[0, 0] for _ in range(24)]),
        })
    return rows


def live_stamp(rt: Runtime, now: datetime) -> str:
    """Changes whenever a delivery or a channel's status moves (and every TICK_SECONDS)."""
    with rt.store.read() as session:
        # one aggregate per query, so each is a single index lookup
        newest = (session.scalar(select(func.max(Delivery.updated_at))), session.scalar(select(func.max(Delivery.id))))
        cs = session.execute(select(func.max(ChannelStatus.changed_at), func.sum(ChannelStatus.failures),
                                    func.max(ChannelStatus.open_until), func.count())).one()
    raw = json.dumps([str(v) for v in (*newest, *cs, int(now.timestamp() // TICK_SECONDS))])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]
