"""Alerts: conditions ops must know about, shown on the dashboard and POSTed to a webhook.

    unsettled            a delivery not settled `alerts.unsettled_minutes` after it was due
    channel_failing      `alerts.failures_in_a_row` failed outcomes in a row on one channel
    channel_suspended    a channel refused its credentials and waits for an operator
    credential_expiring  a channel credential expires within `alerts.credential_days` (or has)

`evaluate(rt, now)` only reads (a handful of aggregate queries on indexed columns, bounded to the
last day, so it stays cheap on millions of deliveries). `notify(rt, alerts)` POSTs the alerts that
were not sent yet, and the ones that cleared, as one JSON document; what was sent is kept in the
shared token cache (`rt.ports.tokens`), so every condition is sent once until it clears, across
processes and restarts. A failed POST is retried on a later check (after a short back-off).
`check(rt)` does both and never raises: it is what the sweeper calls.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from sqlalchemy import case, func, or_, select

from syndicator.models import Article, ChannelStatus, Delivery, Revision
from syndicator.runtime import Runtime
from syndicator.states import PENDING, DeliveryState as S

log = logging.getLogger(__name__)

#: Most per-delivery "unsettled" alerts one evaluation returns (the oldest first).
MAX_UNSETTLED = 200
#: States that count as a failed outcome of an attempt (retry_wait: the last attempt failed).
FAILED_OUTCOMES = (S.FAILED.value, S.UNKNOWN.value, S.RETRY_WAIT.value)
#: Outcomes looked at for "failing repeatedly": settled (or re-tried) within this window.
OUTCOME_WINDOW = timedelta(days=1)
#: Token-cache keys: what was sent (key → summary), the back-off after a failed POST, the lock.
STATE_KEY = "alerts:sent"
BACKOFF_KEY = "alerts:backoff"
CHECKED_KEY = "alerts:checked"
LOCK_KEY = "alerts"
#: How long the record of sent alerts is kept (a condition lasting longer is sent again).
STATE_TTL = 30 * 86400.0
#: After a failed POST, wait this long before trying again.
BACKOFF_SECONDS = 60.0


@dataclass(frozen=True)
class Alert:
    kind: str
    #: Identifies the condition: the same key while it lasts, so it is sent once.
    key: str
    #: warning | critical
    severity: str
    channel: str
    #: When the condition began (the delivery's due time, the first failure in the run, the expiry).
    since: datetime | None = None
    delivery_id: int | None = None
    article_id: int | None = None
    slug: str | None = None
    state: str | None = None
    count: int | None = None
    error: str | None = None
    expires_at: datetime | None = None

    def message(self, _: Callable[..., str] | None = None, now: datetime | None = None,
                tz: tzinfo | None = None) -> str:
        """One line for people, in the language of the translator `_` (English without one), times in `tz`."""
        _ = _ or _english
        if self.kind == "unsettled":
            minutes = int(((now or datetime.now(self.since.tzinfo)) - self.since).total_seconds() // 60) \
                if self.since else 0
            return _("{channel}: delivery #{id} of “{slug}” is still {state} {minutes} min after it was due",
                     channel=self.channel, id=self.delivery_id, slug=self.slug, state=_(self.state or ""),
                     minutes=minutes)
        if self.kind == "channel_failing":
            return _("{channel}: {count} failed attempts in a row", channel=self.channel, count=self.count)
        if self.kind == "channel_suspended":
            return _("{channel} is suspended until an operator resumes it", channel=self.channel)
        if self.kind == "credential_expiring":
            day = self.expires_at.astimezone(tz or timezone.utc).strftime("%Y-%m-%d %H:%M %Z") \
                if self.expires_at else "?"
            if self.severity == "critical" and self.expires_at and now and self.expires_at <= now:
                return _("{channel}: the credential expired at {when}", channel=self.channel, when=day)
            return _("{channel}: the credential expires at {when}", channel=self.channel, when=day)
        return f"{self.channel}: {self.kind}"

    def to_json(self, _: Callable[..., str] | None = None, now: datetime | None = None,
                tz: tzinfo | None = None) -> dict[str, Any]:
        data = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(self).items()}
        data["message"] = self.message(_, now, tz)
        return {k: v for k, v in data.items() if v is not None}


def _english(message: str, **values: object) -> str:
    return message.format(**values) if values else message


# -- evaluation (read only) -----------------------------------------------------------------------

#: Columns of `recent()`.
_RECENT_COLUMNS = ("id", "article_id", "revision_id", "channel", "state", "attempts", "created_at", "updated_at",
                   "delivered_at", "last_error")


def recent(rt: Runtime, since: datetime):
    """Deliveries changed since `since`, as a subquery read through the `updated_at` index.

    On SQLite the index is named (`INDEXED BY`): without statistics its planner prefers an
    equality on `state` or the GROUP BY order of (channel, state) — scanning most of the table for
    'delivered' — even though a one-day range of `updated_at` is the narrow side. PostgreSQL plans
    from its statistics.
    """
    from sqlalchemy import bindparam, text

    from syndicator.models import UTCDateTime

    hint = " INDEXED BY ix_deliveries_updated" if rt.store.dialect == "sqlite" else ""
    sql = text(f"SELECT {', '.join(_RECENT_COLUMNS)} FROM deliveries{hint} WHERE updated_at >= :recent_since")
    table = Delivery.__table__.c
    return (sql.bindparams(bindparam("recent_since", since, type_=UTCDateTime()))
            .columns(*(table[c] for c in _RECENT_COLUMNS)).subquery("recent"))


def due_time():
    """SQL: when a delivery was due — the press (its creation), or the scheduled publish time if later."""
    return case((Revision.publish_at > Delivery.created_at, Revision.publish_at), else_=Delivery.created_at)


def evaluate(rt: Runtime, now: datetime | None = None) -> list[Alert]:
    """Every alert that holds at `now`, most severe kinds first. Reads only."""
    now = now or rt.clock()
    settings = rt.config.alerts
    alerts: list[Alert] = []
    with rt.store.read() as session:
        status = {r.channel: r for r in session.scalars(select(ChannelStatus))}
        # Suspended and expiring credentials first: they explain the rest.
        for name in rt.config.channels:
            st = status.get(name)
            if st is not None and st.suspended:
                alerts.append(Alert("channel_suspended", f"channel_suspended:{name}", "critical", name,
                                    since=st.changed_at, error=st.reason))
        alerts.extend(_credentials(rt, now, settings.credential_days))
        alerts.extend(_failing(session, rt, now, settings.failures_in_a_row, status))
        alerts.extend(_unsettled(session, now, settings.unsettled_minutes))
    return alerts


def _credentials(rt: Runtime, now: datetime, days: float) -> list[Alert]:
    out = []
    for name, expires in credential_expiry(rt).items():
        if expires is None or expires > now + timedelta(days=days):
            continue
        expired = expires <= now
        out.append(Alert("credential_expiring", f"credential:{name}:{expires.isoformat()}:"
                                                f"{'expired' if expired else 'expiring'}",
                         "critical" if expired or expires <= now + timedelta(days=1) else "warning", name,
                         since=expires, expires_at=expires))
    return out


def credential_expiry(rt: Runtime) -> dict[str, datetime | None]:
    """Channel → when its credential expires (from its settings), for the enabled channels."""
    from channels.registry import ChannelUnavailable, load_type

    out: dict[str, datetime | None] = {}
    for name, entry in rt.config.enabled_channels().items():
        try:
            settings = load_type(entry.type).Settings.model_validate(entry.model_extra or {})
        except (ChannelUnavailable, ValueError):
            continue
        out[name] = getattr(settings, "token_expires_at", None) or getattr(settings, "credential_expires_at", None)
    return out


def _failing(session, rt: Runtime, now: datetime, in_a_row: int, status: dict[str, ChannelStatus]) -> list[Alert]:
    """Channels whose last `in_a_row` outcomes all failed (or whose breaker counted as many)."""
    r = recent(rt, now - OUTCOME_WINDOW)
    ranked = select(
        r.c.channel, r.c.state, r.c.updated_at, r.c.last_error,
        func.row_number().over(partition_by=r.c.channel, order_by=(r.c.updated_at.desc(), r.c.id.desc())).label("rn"),
    ).where(r.c.attempts >= 1, r.c.state.in_((S.DELIVERED.value, *FAILED_OUTCOMES))).subquery()
    rows = session.execute(select(ranked.c.channel, ranked.c.state, ranked.c.updated_at, ranked.c.last_error)
                           .where(ranked.c.rn <= in_a_row).order_by(ranked.c.channel, ranked.c.rn)).all()
    latest: dict[str, list] = {}
    for row in rows:
        latest.setdefault(row.channel, []).append(row)
    out = []
    for name in rt.config.channels:
        outcomes = latest.get(name, [])
        run = len(outcomes) if outcomes and all(o.state in FAILED_OUTCOMES for o in outcomes) else 0
        st = status.get(name)
        breaker = st.failures if st is not None and st.failures else 0
        if max(run, breaker) < in_a_row:
            continue
        error = next((o.last_error for o in outcomes if o.last_error), None)
        since = outcomes[-1].updated_at if run >= in_a_row else None
        open_breaker = st is not None and st.open_until is not None and st.open_until > now
        out.append(Alert("channel_failing", f"channel_failing:{name}", "critical" if open_breaker else "warning",
                         name, since=since, count=max(run, breaker), error=error))
    return out


def _unsettled(session, now: datetime, minutes: float) -> list[Alert]:
    due = due_time()
    rows = session.execute(
        select(Delivery.id, Delivery.article_id, Delivery.channel, Delivery.state, Delivery.last_error,
               Article.slug, due.label("due"))
        .join(Revision, Revision.id == Delivery.revision_id).join(Article, Article.id == Delivery.article_id)
        .where(Delivery.state.in_([s.value for s in PENDING]), due <= now - timedelta(minutes=minutes),
               # still scheduled (publish_at or a correction's --at in the future): not late
               or_(Delivery.state != S.QUEUED.value, Delivery.next_attempt_at.is_(None),
                   Delivery.next_attempt_at <= now))
        .order_by(due, Delivery.id).limit(MAX_UNSETTLED)).all()
    return [Alert("unsettled", f"unsettled:{r.id}", "warning", r.channel, since=r.due, delivery_id=r.id,
                  article_id=r.article_id, slug=r.slug, state=r.state, error=r.last_error) for r in rows]


# -- notification ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class NotifyResult:
    sent: tuple[str, ...] = ()
    resolved: tuple[str, ...] = ()
    #: Why nothing was POSTed: "no webhook", "nothing new", "backing off", or the error.
    skipped: str | None = None


def notify(rt: Runtime, alerts: list[Alert], *, now: datetime | None = None) -> NotifyResult:
    """POST the alerts not sent yet and the ones that cleared, as one JSON document; remember them."""
    import requests

    from syndicator.web.i18n import DEFAULT_LANGUAGE, translator

    url = rt.config.alerts.webhook_url
    if url is None:
        return NotifyResult(skipped="no webhook")
    now = now or rt.clock()
    tokens = rt.ports.tokens
    with tokens.lock(LOCK_KEY, timeout=10):
        if tokens.get(BACKOFF_KEY):
            return NotifyResult(skipped="backing off")
        try:
            previous: dict[str, dict] = json.loads(tokens.get(STATE_KEY) or "{}")
        except ValueError:
            previous = {}
        current = {a.key: a for a in alerts}
        new = [a for key, a in current.items() if key not in previous]
        cleared = [dict(previous[key], key=key) for key in previous if key not in current]
        if not new and not cleared:
            return NotifyResult(skipped="nothing new")
        _, tz = translator(DEFAULT_LANGUAGE), rt.ports.timezone
        lines = [_("Syndicator alert")] + [("⚠ " if a.severity == "critical" else "• ") + a.message(_, now, tz)
                                             for a in new]
        lines += ["✓ " + _("Cleared: {text}", text=c.get("message", c["key"])) for c in cleared]
        payload = {"source": "syndicator", "site": rt.config.site.name, "at": now.isoformat(),
                   "text": "\n".join(lines), "alerts": [a.to_json(_, now, tz) for a in new], "resolved": cleared}
        try:
            response = requests.post(url.get_secret_value(), json=payload, timeout=rt.config.alerts.webhook_timeout,
                                     headers={"User-Agent": "syndicator-alerts/1"})
            response.raise_for_status()
        except requests.RequestException as exc:
            why = f"{type(exc).__name__}" + (f" (HTTP {exc.response.status_code})" if getattr(exc, "response", None)
                                             is not None else "")
            log.warning("alert webhook failed; will try again", extra={"error": why, "alerts": len(new)})
            tokens.set(BACKOFF_KEY, why, BACKOFF_SECONDS)
            return NotifyResult(skipped=f"webhook failed: {why}")
        sent = {key: {"kind": a.kind, "channel": a.channel, "message": a.message(_, now, tz)}
                for key, a in current.items()}
        tokens.set(STATE_KEY, json.dumps(sent, ensure_ascii=False), STATE_TTL)
    log.info("alerts sent", extra={"sent": len(new), "resolved": len(cleared)})
    return NotifyResult(sent=tuple(a.key for a in new), resolved=tuple(c["key"] for c in cleared))


def check(rt: Runtime, *, now: datetime | None = None, min_interval: float = 15.0) -> NotifyResult:
    """Evaluate and notify, at most every `min_interval` seconds; never raises (the sweeper calls it)."""
    try:
        if rt.config.alerts.webhook_url is None:
            return NotifyResult(skipped="no webhook")
        tokens = rt.ports.tokens
        if min_interval > 0:
            if tokens.get(CHECKED_KEY):
                return NotifyResult(skipped="checked recently")
            tokens.set(CHECKED_KEY, "1", min_interval)
        now = now or rt.clock()
        return notify(rt, evaluate(rt, now), now=now)
    except Exception as exc:  # alerting must never stop the sweeper
        log.exception("alert check failed")
        return NotifyResult(skipped=f"error: {type(exc).__name__}")
