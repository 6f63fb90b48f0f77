"""The ops dashboard (运维看板): channel health, the delivery matrix, lists that need an operator,
a delivery's timeline, bulk retry / cancel / mark resolved, alerts, and live updates.

Every page needs the "read" permission (anyone logged in may look); every change needs "operate"
and the session's CSRF token. Numbers are aggregated in SQL over indexed columns and bounded to
the last day (`updated_at` is indexed), so the board stays fast on millions of deliveries; Python
only loops over per-channel results and over one page of rows.

Live updates: `ops.js` polls `/ops/live.json` every 2 s; when its `stamp` changes (a delivery or a
channel moved, or 30 s passed) it re-fetches the page and swaps the `#ops-live` region.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import and_, case, exists, func, literal, or_, select
from sqlalchemy.orm import aliased

from syndicator import alerts as alerting
from syndicator import operations
from syndicator.alerts import recent
from syndicator.models import Article, ChannelStatus, Delivery, Event, Revision
from syndicator.runtime import Runtime
from syndicator.states import RETRYABLE, Conflict, DeliveryState as S, IllegalTransition
from syndicator.users import Principal
from syndicator.web.auth import require
from syndicator.web.pages import page_user, render

router = APIRouter(prefix="/ops", include_in_schema=False)

#: The health board's windows: key and length.
WINDOWS = (("hour", timedelta(hours=1)), ("day", timedelta(days=1)))
#: States that need an operator, in the order the lists show them.
ATTENTION = (S.FAILED.value, S.UNKNOWN.value, S.MANUAL.value)
#: List tabs: key → states.
TABS = {"attention": ATTENTION, "failed": (S.FAILED.value,), "unknown": (S.UNKNOWN.value,),
        "manual": (S.MANUAL.value,), "retry_wait": (S.RETRY_WAIT.value,)}
#: What an operator may do, and from which states (mirrors `operations`).
ACTIONS = {"retry": frozenset(s.value for s in RETRYABLE),
           "resolve": frozenset({S.UNKNOWN.value, S.MANUAL.value}),
           "cancel": frozenset({S.QUEUED.value, S.RETRY_WAIT.value, S.FAILED.value, S.UNKNOWN.value,
                                S.MANUAL.value})}
#: Most deliveries one bulk action may name.
MAX_BULK = 100
MAX_ID = 2**62
MATRIX_PAGE = 25
LIST_PAGE = 50
BOARD_LIST = 20
#: How often the page re-renders even when nothing moved (time windows and alerts age).
TICK_SECONDS = 30
_STATES = tuple(s.value for s in S)
_STATE_PATTERN = "^(|" + "|".join(_STATES) + ")$"
#: Matrix filters that match most cells: scan articles newest first instead of deliveries by state.
_COMMON = frozenset({S.DELIVERED.value, S.CANCELLED.value})


# -- queries ----------------------------------------------------------------------------------------

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


def _delivery_rows(session, q) -> list[dict[str, Any]]:
    rows = session.execute(q).all()
    return [{"id": d.id, "article_id": d.article_id, "slug": slug, "title": title, "channel": d.channel,
             "type": d.channel_type, "operation": d.operation, "revision": d.revision, "state": d.state,
             "attempts": d.attempts, "error": d.last_error, "updated_at": d.updated_at, "created_at": d.created_at,
             "next_attempt_at": d.next_attempt_at, "remote_url": d.remote_url} for d, slug, title in rows]


def delivery_list(rt: Runtime, states: tuple[str, ...], *, channel: str | None = None, limit: int = LIST_PAGE,
                  before_id: int | None = None) -> list[dict[str, Any]]:
    """Deliveries in `states`, newest first (keyset by id), with the article's slug and title."""
    q = (select(Delivery, Article.slug, Revision.title).join(Article, Article.id == Delivery.article_id)
         .join(Revision, Revision.id == Delivery.revision_id).where(Delivery.state.in_(states)))
    if channel:
        q = q.where(Delivery.channel == channel)
    if before_id:
        q = q.where(Delivery.id < before_id)
    with rt.store.read() as session:
        return _delivery_rows(session, q.order_by(Delivery.id.desc()).limit(limit))


def state_counts(rt: Runtime, states: tuple[str, ...]) -> dict[str, int]:
    with rt.store.read() as session:
        return dict(session.execute(select(Delivery.state, func.count()).where(Delivery.state.in_(states))
                                    .group_by(Delivery.state)).all())


def matrix(rt: Runtime, *, state: str | None, channel: str | None, q: str | None, before_id: int | None,
           limit: int = MATRIX_PAGE) -> list[dict[str, Any]]:
    """Articles (newest first) × channels; each cell is the article's latest delivery on that channel.

    With a state filter, only articles whose latest delivery on `channel` (or on any channel) is in
    that state. Rare states are found through the state index; common ones (delivered, cancelled)
    by walking articles newest first and probing each one's few deliveries.
    """
    later = aliased(Delivery)
    matches_q = None
    if q:
        like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        title = select(Revision.title).where(Revision.article_id == Article.id,
                                             Revision.number == Article.current_revision).scalar_subquery()
        matches_q = or_(Article.slug.like(like, escape="\\"), title.like(like, escape="\\"))
    with rt.store.read() as session:
        if state:
            latest = ~exists().where(later.article_id == Delivery.article_id, later.channel == Delivery.channel,
                                     later.id > Delivery.id)
            if state in _COMMON:
                # Probe each article's few deliveries through ix_deliveries_article. On SQLite `|| ''`
                # keeps the planner (it has no statistics) from using the state or channel index
                # instead, which would scan every delivered row once per article; PostgreSQL's
                # statistics get it right, and the expression would only spoil its estimates.
                plain = (lambda c: c.concat("")) if rt.store.dialect == "sqlite" else (lambda c: c)
                probe = select(literal(1)).select_from(Delivery).where(
                    Delivery.article_id == Article.id, plain(Delivery.state) == state, latest,
                    *([plain(Delivery.channel) == channel] if channel else []))
                ids_q = select(Article.id.label("id")).where(probe.exists())
                if matches_q is not None:
                    ids_q = ids_q.where(matches_q)
            else:
                cond = [Delivery.state == state, latest, *([Delivery.channel == channel] if channel else [])]
                ids_q = select(Delivery.article_id.label("id")).where(*cond).distinct()
                if matches_q is not None:
                    ids_q = ids_q.join(Article, Article.id == Delivery.article_id).where(matches_q)
        else:
            ids_q = select(Article.id.label("id"))
            if matches_q is not None:
                ids_q = ids_q.where(matches_q)
        column = ids_q.selected_columns[0]
        if before_id:
            ids_q = ids_q.where(column < before_id)
        ids = list(session.scalars(ids_q.order_by(column.desc()).limit(limit)))
        if not ids:
            return []
        articles = {a.id: a for a in session.execute(
            select(Article.id, Article.slug, Article.status, Article.created_at, Article.created_by, Revision.title)
            .join(Revision, (Revision.article_id == Article.id) & (Revision.number == Article.current_revision))
            .where(Article.id.in_(ids)))}
        cells: dict[int, dict[str, Any]] = {}
        for d in session.execute(select(Delivery.id, Delivery.article_id, Delivery.channel, Delivery.state,
                                        Delivery.operation, Delivery.attempts, Delivery.last_error,
                                        Delivery.updated_at).where(Delivery.article_id.in_(ids))
                                 .order_by(Delivery.id)):
            cells.setdefault(d.article_id, {})[d.channel] = d  # ordered by id: the latest wins
    return [{"id": i, "slug": articles[i].slug, "title": articles[i].title, "status": articles[i].status,
             "created_at": articles[i].created_at, "created_by": articles[i].created_by,
             "cells": cells.get(i, {})} for i in ids if i in articles]


def delivery_detail(rt: Runtime, delivery_id: int) -> dict[str, Any] | None:
    with rt.store.read() as session:
        d = session.get(Delivery, delivery_id)
        if d is None:
            return None
        article = session.get(Article, d.article_id)
        title = session.scalar(select(Revision.title).where(Revision.id == d.revision_id))
        events = session.scalars(select(Event).where(Event.delivery_id == delivery_id).order_by(Event.id)).all()
        siblings = session.execute(select(Delivery.id, Delivery.channel, Delivery.operation, Delivery.revision,
                                          Delivery.state, Delivery.updated_at)
                                   .where(Delivery.article_id == d.article_id).order_by(Delivery.id)).all()
        return {"d": d, "article": article, "title": title, "siblings": siblings,
                "events": [{"at": e.at, "actor": e.actor, "kind": e.kind, "from_state": e.from_state,
                            "to_state": e.to_state,
                            "attempt": e.attempt, "detail": e.detail, "detail_pretty": _pretty(e.detail)}
                           for e in events],
                "rendition": _pretty(d.rendition) or d.rendition}


def _pretty(text: str | None) -> str | None:
    """Indented JSON for a JSON object or list; None for anything else (shown as it is)."""
    if not text or text[:1] not in "{[":
        return None
    try:
        return json.dumps(json.loads(text), ensure_ascii=False, indent=2, sort_keys=True)
    except ValueError:
        return None


# -- operator actions -------------------------------------------------------------------------------

@dataclass
class BulkResult:
    action: str
    done: list[int] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    #: Other deliveries of the same article and channel that a retry re-queued too.
    also: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "done": self.done, "conflicts": self.conflicts, "also": self.also}


class BadRequest(Exception):
    def __init__(self, status: int, message: str, **values: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.values = status, message, values


def parse_ids(raw: list[str]) -> list[int]:
    """Delivery ids from a form: 1–MAX_BULK positive integers; duplicates dropped, order kept."""
    if not raw:
        raise BadRequest(422, "Select at least one delivery.")
    if len(raw) > MAX_BULK:
        raise BadRequest(422, "At most {n} deliveries at once.", n=MAX_BULK)
    ids: list[int] = []
    for value in raw:
        value = str(value).strip()
        if not value.isascii() or not value.isdigit() or len(value) > 19 or not 1 <= int(value) <= MAX_ID:
            raise BadRequest(422, "Not a delivery id: {value}", value=value[:40])
        if int(value) not in ids:
            ids.append(int(value))
    return ids


def apply_action(rt: Runtime, action: str, ids: list[int], who: Principal, note: str = "") -> BulkResult:
    """Check every id exists first (else nothing is done), then act on each through the core."""
    with rt.store.read() as session:
        rows = {r.id: r for r in session.execute(select(Delivery.id, Delivery.article_id, Delivery.channel,
                                                        Delivery.state).where(Delivery.id.in_(ids)))}
    missing = [i for i in ids if i not in rows]
    if missing:
        raise BadRequest(404, "No such delivery: {ids}", ids=", ".join(f"#{i}" for i in missing))
    result = BulkResult(action)
    for delivery_id in ids:
        row = rows[delivery_id]
        if row.state not in ACTIONS[action]:
            result.conflicts.append({"id": delivery_id, "state": row.state})
            continue
        try:
            if action == "retry":
                moved = operations.retry(rt, str(row.article_id), channel=row.channel, actor=who.actor)
                if delivery_id not in moved:
                    raise Conflict(f"delivery {delivery_id} moved")
                result.also += [i for i in moved if i != delivery_id and i not in ids and i not in result.also]
            elif action == "resolve":
                operations.resolve(rt, delivery_id, actor=who.actor, note=note)
            else:
                operations.cancel(rt, delivery_id, actor=who.actor, note=note)
        except (Conflict, IllegalTransition):
            with rt.store.read() as session:
                now_state = session.scalar(select(Delivery.state).where(Delivery.id == delivery_id))
            result.conflicts.append({"id": delivery_id, "state": now_state})
            continue
        result.done.append(delivery_id)
    return result


# -- presentation helpers ---------------------------------------------------------------------------

class Helpers:
    """Formatting for templates (passed in the context; the shared Jinja2 environment is left alone)."""

    def __init__(self, rt: Runtime, now: datetime, _) -> None:
        self.rt, self.now, self._ = rt, now, _
        self.tz = rt.ports.timezone

    def time(self, value: datetime | None) -> str:
        if value is None:
            return "—"
        local = value.astimezone(self.tz)
        if local.date() == self.now.astimezone(self.tz).date():
            return local.strftime("%H:%M:%S")
        return local.strftime("%Y-%m-%d %H:%M")

    def full_time(self, value: datetime | None) -> str:
        return value.astimezone(self.tz).strftime("%Y-%m-%d %H:%M:%S %Z") if value else ""

    def ago(self, value: datetime | None) -> str:
        if value is None:
            return "—"
        seconds = (self.now - value).total_seconds()
        if seconds < 0:
            return self.within(value)
        if seconds < 60:
            return self._("just now")
        if seconds < 3600:
            return self._("{n} min ago", n=int(seconds // 60))
        if seconds < 86400:
            return self._("{n} h ago", n=int(seconds // 3600))
        return self._("{n} d ago", n=int(seconds // 86400))

    def within(self, value: datetime) -> str:
        seconds = (value - self.now).total_seconds()
        if seconds < 3600:
            return self._("in {n} min", n=max(int(seconds // 60), 1))
        if seconds < 86400:
            return self._("in {n} h", n=int(seconds // 3600))
        return self._("in {n} d", n=int(seconds // 86400))

    @staticmethod
    def duration(seconds: float | None) -> str:
        if seconds is None:
            return "—"
        if seconds < 10:
            return f"{seconds:.1f} s"
        if seconds < 120:
            return f"{seconds:.0f} s"
        if seconds < 7200:
            return f"{seconds / 60:.1f} min"
        return f"{seconds / 3600:.1f} h"

    @staticmethod
    def percent(value: float | None) -> str:
        if value is None:
            return "—"
        if value >= 1:
            return "100%"
        return f"{value * 100:.1f}%"

    @staticmethod
    def rate_class(value: float | None) -> str:
        if value is None:
            return "idle"
        return "good" if value >= 0.98 else ("fair" if value >= 0.9 else "poor")

    @staticmethod
    def spark(buckets: list[list[int]]) -> list[dict[str, int]]:
        """Bars of a 24-hour sparkline (viewBox 0 0 96 28): delivered, failed on top."""
        top = max((d + f for d, f in buckets), default=0) or 1
        bars = []
        for i, (d, f) in enumerate(buckets):
            hd = round(26 * d / top) if d else 0
            hf = round(26 * f / top) if f else 0
            if d and not hd:
                hd = 1
            if f and not hf:
                hf = 1
            bars.append({"x": i * 4, "hd": hd, "yd": 28 - hd, "hf": hf, "yf": 28 - hd - hf})
        return bars

    @staticmethod
    def safe_url(url: str | None) -> str | None:
        """Only http(s) links become links (remote URLs come from channels)."""
        return url if url and url.startswith(("http://", "https://")) else None

    @staticmethod
    def allowed(action: str, state: str) -> bool:
        return state in ACTIONS[action]


def _page(request: Request, template: str, who: Principal, status_code: int = 200, live: bool = True,
          **context: Any) -> HTMLResponse:
    from syndicator.web.i18n import choose, translator

    rt: Runtime = request.app.state.runtime
    now = rt.clock()
    _ = translator(choose(request.query_params.get("lang"), request.cookies.get("lang")))
    flash = request.session.pop("ops_flash", None)
    counts = state_counts(rt, ATTENTION)
    return render(request, template, status_code=status_code, h=Helpers(rt, now, _), now=now, who=who,
                  can_operate=who.may("operate"), flash=flash, attention_counts=counts,
                  attention_total=sum(counts.values()), stamp=live_stamp(rt, now),
                  channels=list(rt.config.channels), states=_STATES, rt_alerts=rt.config.alerts, live=live,
                  **context)


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _error(request: Request, who: Principal, exc: BadRequest) -> Response:
    if _wants_json(request):
        return JSONResponse({"detail": exc.message.format(**exc.values)}, status_code=exc.status)
    return _page(request, "web/ops/error.html", who, status_code=exc.status, live=False, message=exc.message,
                 values=exc.values)


def _safe_next(target: str | None, default: str) -> str:
    if target and target.startswith("/ops") and not target.startswith("//") and "\\" not in target \
            and len(target) <= 500:
        return target
    return default


# -- pages ------------------------------------------------------------------------------------------

@router.get("")
def board(request: Request, who: Principal = page_user("read")) -> HTMLResponse:
    rt: Runtime = request.app.state.runtime
    now = rt.clock()
    rows = health(rt, now)
    totals = {key: {k: sum(r["windows"][key][k] for r in rows) for k in ("delivered", "failed", "unknown",
                                                                           "retried", "settled")}
              for key, _ in WINDOWS}
    for t in totals.values():
        t["success_rate"] = t["delivered"] / t["settled"] if t["settled"] else None
    current = alerting.evaluate(rt, now)
    return _page(request, "web/ops/board.html", who, health=rows, totals=totals, alerts=current,
                 queue=sum(r["queue"] for r in rows), in_flight=sum(r["in_flight"] for r in rows),
                 attention=delivery_list(rt, ATTENTION, limit=BOARD_LIST), next_url="/ops")


@router.get("/matrix")
def matrix_page(request: Request, who: Principal = page_user("read"),
                state: str = Query("", pattern=_STATE_PATTERN), channel: str = Query("", max_length=40),
                q: str = Query("", max_length=80), before: int | None = Query(None, ge=1, le=MAX_ID)) -> Response:
    rt: Runtime = request.app.state.runtime
    if channel and channel not in rt.config.channels:
        raise HTTPException(422, detail=[{"loc": ["query", "channel"], "msg": f"unknown channel {channel!r}"}])
    q = q.strip()
    rows = matrix(rt, state=state or None, channel=channel or None, q=q or None, before_id=before, limit=MATRIX_PAGE)
    shown = [channel] if channel else list(rt.config.channels)
    filters = {k: v for k, v in (("state", state), ("channel", channel), ("q", q)) if v}
    more = "/ops/matrix?" + urlencode({**filters, "before": rows[-1]["id"]}) if len(rows) == MATRIX_PAGE else None
    newest = "/ops/matrix?" + urlencode(filters) if before is not None else None
    return _page(request, "web/ops/matrix.html", who, rows=rows, shown=shown, f_state=state, f_channel=channel,
                 f_q=q, more=more, newest=newest)


@router.get("/deliveries")
def deliveries_page(request: Request, who: Principal = page_user("read"),
                    tab: str = Query("attention", pattern="^(" + "|".join(TABS) + ")$"),
                    channel: str = Query("", max_length=40),
                    before: int | None = Query(None, ge=1, le=MAX_ID)) -> Response:
    rt: Runtime = request.app.state.runtime
    if channel and channel not in rt.config.channels:
        raise HTTPException(422, detail=[{"loc": ["query", "channel"], "msg": f"unknown channel {channel!r}"}])
    rows = delivery_list(rt, TABS[tab], channel=channel or None, before_id=before)
    more = None
    if len(rows) == LIST_PAGE:
        more = "/ops/deliveries?" + urlencode({k: v for k, v in (("tab", tab), ("channel", channel),
                                                                  ("before", rows[-1]["id"])) if v})
    counts = state_counts(rt, tuple(s for states in TABS.values() for s in states))
    tab_counts = {key: sum(counts.get(s, 0) for s in states) for key, states in TABS.items()}
    here = "/ops/deliveries?" + urlencode({k: v for k, v in (("tab", tab), ("channel", channel)) if v})
    return _page(request, "web/ops/deliveries.html", who, rows=rows, tab=tab, tabs=list(TABS), tab_counts=tab_counts,
                 f_channel=channel, more=more, next_url=here)


@router.get("/deliveries/{delivery_id}")
def delivery_page(request: Request, delivery_id: int = Path(ge=1, le=MAX_ID),
                  who: Principal = page_user("read")) -> Response:
    detail = delivery_detail(request.app.state.runtime, delivery_id)
    if detail is None:
        return _error(request, who, BadRequest(404, "No such delivery: {ids}", ids=f"#{delivery_id}"))
    return _page(request, "web/ops/delivery.html", who, **detail, next_url=f"/ops/deliveries/{delivery_id}")


async def _act(request: Request, who: Principal, action: str, raw_ids: list[str], default_next: str) -> Response:
    rt: Runtime = request.app.state.runtime
    form = await request.form()
    note = str(form.get("note") or "").strip()
    try:
        if action not in ACTIONS:
            raise BadRequest(422, "Unknown action: {value}", value=action[:40])
        if len(note) > 500:
            raise BadRequest(422, "The note is too long (at most {n} characters).", n=500)
        ids = parse_ids(raw_ids)
        from starlette.concurrency import run_in_threadpool

        result = await run_in_threadpool(apply_action, rt, action, ids, who, note)
    except BadRequest as exc:
        return _error(request, who, exc)
    if _wants_json(request):
        return JSONResponse(result.to_json())
    request.session["ops_flash"] = result.to_json()
    return RedirectResponse(_safe_next(str(form.get("next") or ""), default_next), status_code=303)


@router.post("/deliveries/bulk")
async def bulk(request: Request, who: Principal = page_user("operate")) -> Response:
    form = await request.form()
    return await _act(request, who, str(form.get("action") or ""), [str(v) for v in form.getlist("ids")],
                      "/ops/deliveries")


@router.post("/deliveries/{delivery_id}/{action}")
async def single(request: Request, delivery_id: int = Path(ge=1, le=MAX_ID),
                 action: str = Path(pattern="^(retry|resolve|cancel)$"),
                 who: Principal = page_user("operate")) -> Response:
    return await _act(request, who, action, [str(delivery_id)], f"/ops/deliveries/{delivery_id}")


@router.get("/live.json")
def live(request: Request, who: Principal = require("read")) -> JSONResponse:
    rt: Runtime = request.app.state.runtime
    now = rt.clock()
    counts = state_counts(rt, ATTENTION)
    return JSONResponse({"stamp": live_stamp(rt, now), "at": now.isoformat(), "attention": sum(counts.values()),
                         "counts": counts}, headers={"Cache-Control": "no-store"})
