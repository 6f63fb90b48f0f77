"""Corrections (更正), retractions (撤稿) and expiry (公示期满).

Each is one transaction that records the editorial event (actor, reason, revision hash) and plans
what every channel gets, by the channel's state for this article:

- correction: a channel holding the article (or about to) gets an `update` delivery, applied the
  way the channel can (`Channel.correction_strategy`); if the original publish has not started,
  it is cancelled and only the latest revision is published, once; a channel that never received
  the article gets nothing.
- retraction: pending sends are cancelled; a channel holding the article (or mid-send) gets a
  `retract` delivery.

The pipeline keeps operations on one (article, channel) in order: a later one waits for the
earlier to finish.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from syndicator import states
from syndicator.articles import ArticleDraft, BadInput
from syndicator.models import Article, Asset, Delivery, Revision, utcnow
from syndicator.runtime import Runtime
from syndicator.states import PENDING, DeliveryState as S
from syndicator.views import find_article

#: Note used when the editor gives none.
DEFAULT_NOTE = "本文部分内容有误，现予更正。"
#: `+30m`, `+2h`, `+1d`, `+90s`.
_RELATIVE = re.compile(r"^\+(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


@dataclass(frozen=True)
class EditResult:
    article_id: int
    slug: str
    revision: int
    #: False when nothing was done (identical correction, already retracted).
    changed: bool
    message: str
    planned: tuple[tuple[str, str, int], ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    cancelled: tuple[int, ...] = ()
    due: list[tuple[int, str]] = field(default_factory=list, repr=False)


def parse_when(text: str, *, now: datetime, timezone: str) -> datetime:
    """`+30m`-style offsets or an ISO time (no zone = the site's); must lie in the future."""
    text = text.strip()
    match = _RELATIVE.match(text)
    if match:
        when = now + timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    else:
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise BadInput([f"--at: {text!r} is neither an ISO time (2026-12-01T09:00) nor an offset like +30m"]) \
                from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=ZoneInfo(timezone))
    if when <= now:
        raise BadInput([f"--at: {text!r} is in the past ({when.isoformat()}); give a future time or leave it out"])
    return when


def _local(rt: Runtime, when: datetime) -> str:
    return when.astimezone(rt.ports.timezone).strftime("%Y年%m月%d日 %H:%M")


def _held(rows: list[Delivery]) -> bool:
    return any(d.state == S.DELIVERED.value and d.operation != "retract" for d in rows)


def correct(rt: Runtime, id_or_slug: str, draft: ArticleDraft, *, note: str | None, at: datetime | None,
            actor: str, now: datetime | None = None) -> EditResult:
    """Store a new revision and plan one correction per channel that holds (or will hold) the article."""
    now = now or rt.clock()
    result = rt.store.run_write(lambda s: _correct_tx(s, rt, id_or_slug, draft, note, at, actor, now))
    _wake(rt, result)
    return result


def _correct_tx(session: Session, rt: Runtime, id_or_slug: str, draft: ArticleDraft, note: str | None,
                at: datetime | None, actor: str, now: datetime) -> EditResult:
    article = find_article(session, id_or_slug)
    if article.status == "retracted":
        raise BadInput([f"article {article.id} ({article.slug}) was retracted on {_local(rt, article.retracted_at)} "
                        f"by {article.retracted_by} ({article.retraction_reason}); it cannot be corrected"])
    if draft.slug_given and draft.slug != article.slug:
        raise BadInput([f"{draft.source}: front matter: slug: {draft.slug!r} does not match the article being "
                        f"corrected ({article.slug!r}); remove it or make them equal"])
    current = session.scalar(select(Revision).where(Revision.article_id == article.id,
                                                    Revision.number == article.current_revision))
    if current.content_hash == draft.content_hash:
        return EditResult(article.id, article.slug, current.number, False,
                          f"identical to the live revision {current.number}; nothing to correct")
    due = at if at is not None and at > now else None
    number = current.number + 1
    note_text = rt.ports.templates.get_template("corrections/note.txt").render(
        date=_local(rt, due or now), note=(note or DEFAULT_NOTE).strip(), revision=number).strip()
    for asset in (*draft.assets, *([draft.cover] if draft.cover else [])):
        if session.get(Asset, asset.sha256) is None:
            session.add(Asset(sha256=asset.sha256, mime=asset.mime, filename=asset.filename, size=asset.size,
                              width=asset.width, height=asset.height, data=asset.data, created_at=now))
    revision = Revision(
        article_id=article.id, number=number, content_hash=draft.content_hash, title=draft.title,
        summary=draft.summary, body_source=draft.body_source, body_html=draft.body_html, author=draft.author,
        unit=draft.unit, tags=list(draft.tags), cover_sha=draft.cover.sha256 if draft.cover else None,
        asset_shas=[a.sha256 for a in draft.assets], publish_at=draft.publish_at, expires_at=draft.expires_at,
        note=note_text, created_at=now, created_by=actor)
    session.add(revision)
    session.flush()
    article.current_revision = number
    article.expires_at = draft.expires_at
    states.record(session, "correct", actor=actor, article_id=article.id, now=now, detail={
        "revision": number, "content_hash": draft.content_hash, "previous_hash": current.content_hash,
        "note": note_text, "scheduled_for": due.isoformat() if due else None, "source": draft.source})

    planned, skipped, cancelled, wake = [], [], [], []
    for channel, entry in rt.config.enabled_channels().items():
        rows = session.scalars(select(Delivery).where(Delivery.article_id == article.id,
                                                      Delivery.channel == channel).order_by(Delivery.id)).all()
        pending = [d for d in rows if d.state in {s.value for s in PENDING}]
        not_started = [d for d in pending if d.state in (S.QUEUED.value, S.RETRY_WAIT.value)
                       and d.attempts == 0 and d.operation in ("publish", "update")]
        if due is None and not_started:
            for d in not_started:
                states.transition(session, d.id, S.CANCELLED, actor=actor, now=now,
                                  detail=f"superseded by revision {number} before it was sent")
                cancelled.append(d.id)
            publishes = [d for d in not_started if d.operation == "publish"]
            operation = "publish" if publishes else "update"
            when = min((d.next_attempt_at for d in publishes if d.next_attempt_at), default=None)
        elif _held(rows) or pending:
            operation, when = "update", due
        else:
            skipped.append((channel, "the article never reached this channel"))
            continue
        d = states.plan(session, actor=actor, now=now, detail=f"correction to revision {number}",
                        article_id=article.id, revision_id=revision.id, revision=number, channel=channel,
                        channel_type=entry.type, operation=operation, next_attempt_at=when,
                        enqueued_at=None if when else now)
        planned.append((channel, operation, d.id))
        if when is None:
            wake.append((d.id, channel))
    when_text = f"scheduled for {_local(rt, due)}" if due else "now"
    return EditResult(article.id, article.slug, number, True, f"revision {number} planned {when_text}",
                      tuple(planned), tuple(skipped), tuple(cancelled), wake)


def retract(rt: Runtime, id_or_slug: str, *, reason: str, actor: str, now: datetime | None = None) -> EditResult:
    """Withdraw an article everywhere it went; cancel what has not been sent."""
    now = now or rt.clock()
    reason = reason.strip()
    if not reason:
        raise BadInput(["--reason: give the reason for the retraction (it is recorded and shown)"])
    result = rt.store.run_write(lambda s: _retract_tx(s, rt, id_or_slug, reason, actor, now))
    _wake(rt, result)
    return result


def _retract_tx(session: Session, rt: Runtime, id_or_slug: str, reason: str, actor: str,
                now: datetime) -> EditResult:
    article = find_article(session, id_or_slug)
    won = session.execute(update(Article).where(Article.id == article.id, Article.status == "live").values(
        status="retracted", retracted_at=now, retracted_by=actor, retraction_reason=reason)).rowcount
    session.refresh(article)
    if not won:
        return EditResult(article.id, article.slug, article.current_revision, False,
                          f"already retracted on {_local(rt, article.retracted_at)} by {article.retracted_by} "
                          f"({article.retraction_reason}); nothing to do")
    current = session.scalar(select(Revision).where(Revision.article_id == article.id,
                                                    Revision.number == article.current_revision))
    states.record(session, "retract", actor=actor, article_id=article.id, now=now, detail={
        "reason": reason, "revision": current.number, "content_hash": current.content_hash})
    planned, skipped, cancelled, wake = [], [], [], []
    channels = rt.config.channels
    names = session.scalars(select(Delivery.channel).where(Delivery.article_id == article.id).distinct()).all()
    for channel in sorted(names):
        rows = session.scalars(select(Delivery).where(Delivery.article_id == article.id,
                                                      Delivery.channel == channel).order_by(Delivery.id)).all()
        uncertain = False
        for d in rows:
            if d.state in (S.QUEUED.value, S.RETRY_WAIT.value):
                uncertain |= d.reconcile
                states.transition(session, d.id, S.CANCELLED, actor=actor, now=now,
                                  detail="the article was retracted before this was sent")
                cancelled.append(d.id)
        in_flight = any(d.state in (S.SENDING.value, S.SUBMITTED.value) for d in rows)
        if not (_held(rows) or in_flight or uncertain):
            skipped.append((channel, "nothing reached this channel"))
            continue
        entry = channels.get(channel)
        if entry is None or not entry.enabled:
            skipped.append((channel, "channel is no longer enabled in config.yaml; withdraw it there by hand"))
            continue
        d = states.plan(session, actor=actor, now=now, detail=f"retraction: {reason}", article_id=article.id,
                        revision_id=current.id, revision=current.number, channel=channel,
                        channel_type=entry.type, operation="retract", enqueued_at=now)
        planned.append((channel, "retract", d.id))
        wake.append((d.id, channel))
    return EditResult(article.id, article.slug, current.number, True, f"retracted: {reason}", tuple(planned),
                      tuple(skipped), tuple(cancelled), wake)


def expire_due(rt: Runtime, now: datetime | None = None) -> list[int]:
    """Retract every live article whose display window (公示期) has ended; returns their ids."""
    now = now or rt.clock()
    with rt.store.read() as session:
        due = session.execute(select(Article.id, Article.expires_at).where(
            Article.status == "live", Article.expires_at.is_not(None), Article.expires_at <= now)).all()
    done = []
    for row in due:
        result = retract(rt, str(row.id), actor="scheduler", now=now,
                         reason=f"公示期满（截止 {_local(rt, row.expires_at)}），自动撤回")
        if result.changed:
            done.append(row.id)
    return done


def _wake(rt: Runtime, result: EditResult) -> None:
    if result.due:
        rt.enqueuer.forget(rt.enqueuer.enqueue(result.due))
