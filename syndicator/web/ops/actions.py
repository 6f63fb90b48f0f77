"""Operator actions: retry, resolve and cancel, one delivery or a bulk selection, through the core."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from syndicator import operations
from syndicator.models import Delivery
from syndicator.states import RETRYABLE, Conflict, DeliveryState as S, IllegalTransition
from syndicator.runtime import Runtime
from syndicator.users import Principal

#: What an operator may do, and from which states (mirrors `operations`).
ACTIONS = {"retry": frozenset(s.value for s in RETRYABLE),
           "resolve": frozenset({S.UNKNOWN.value, S.MANUAL.value}),
           "cancel": frozenset({S.QUEUED.value, S.RETRY_WAIT.value, S.FAILED.value, S.UNKNOWN.value,
                                S.MANUAL.value})}
#: Most deliveries one bulk action may name.
MAX_BULK = 100
MAX_ID = 2**62


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
