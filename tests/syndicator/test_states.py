"""The state machine: every (from, to) pair, the compare-and-set claim, and the event log."""
from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

from syndicator import states
from syndicator.models import Article, Delivery, Event, Revision
from syndicator.states import TRANSITIONS, Conflict, DeliveryState as S, IllegalTransition
from syndicator.store import Store

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'states.db'}")
    store.migrate()
    yield store
    store.dispose()


def _delivery(store: Store, state: S = S.QUEUED) -> int:
    def tx(s):
        a = Article(slug=f"a{datetime.now().timestamp()}".replace(".", ""), current_revision=1,
                    first_published_at=NOW, created_by="t")
        s.add(a)
        s.flush()
        r = Revision(article_id=a.id, number=1, content_hash="h", title="t", body_source="b", body_html="<p>b</p>",
                     created_by="t", tags=[], asset_shas=[])
        s.add(r)
        s.flush()
        d = states.plan(s, actor="t", now=NOW, article_id=a.id, revision_id=r.id, revision=1, channel="rss_main",
                        channel_type="rss", operation="publish")
        if state is not S.QUEUED:  # put it in the wanted state directly, for the table test only
            s.execute(update(Delivery).where(Delivery.id == d.id).values(state=state.value))
        return d.id
    return store.run_write(tx)


@pytest.mark.parametrize("source,target", list(itertools.product(S, S)))
def test_every_pair_is_allowed_exactly_when_the_table_says(store, source, target):
    delivery_id = _delivery(store, source)
    if (source, target) in TRANSITIONS:
        came_from = store.run_write(lambda s: states.transition(s, delivery_id, target, actor="t", now=NOW))
        assert came_from is source
        with store.read() as s:
            assert s.get(Delivery, delivery_id).state == target.value
    else:
        with pytest.raises(IllegalTransition):
            store.run_write(lambda s: states.transition(s, delivery_id, target, actor="t", now=NOW))
        with store.read() as s:
            assert s.get(Delivery, delivery_id).state == source.value


def test_transition_appends_an_event_with_actor_attempt_and_detail(store):
    delivery_id = _delivery(store)
    store.run_write(lambda s: states.transition(s, delivery_id, S.SENDING, actor="worker-1", now=NOW,
                                                lease_expires_at=NOW + timedelta(seconds=60)))
    store.run_write(lambda s: states.transition(s, delivery_id, S.FAILED, actor="worker-1", now=NOW,
                                                detail="ContentRejected: title too long", last_error="x"))
    with store.read() as s:
        events = s.scalars(select(Event).where(Event.delivery_id == delivery_id).order_by(Event.id)).all()
        d = s.get(Delivery, delivery_id)
    assert [(e.from_state, e.to_state) for e in events] == [(None, "queued"), ("queued", "sending"),
                                                            ("sending", "failed")]
    assert events[1].attempt == 1 and events[1].actor == "worker-1"
    assert events[2].detail == "ContentRejected: title too long"
    assert d.attempts == 1 and d.lease_expires_at is None and d.last_error == "x"


def test_claim_is_a_compare_and_set_only_one_claimer_wins(store):
    delivery_id = _delivery(store)
    claim = lambda s: states.transition(s, delivery_id, S.SENDING, actor="w", expect=states.CLAIMABLE,  # noqa: E731
                                        now=NOW, due_by=NOW)
    store.run_write(claim)
    with pytest.raises(Conflict):
        store.run_write(claim)
    with store.read() as s:
        assert s.get(Delivery, delivery_id).attempts == 1


def test_claim_refuses_a_delivery_that_is_not_due_yet(store):
    delivery_id = _delivery(store)
    store.run_write(lambda s: s.execute(update(Delivery).where(Delivery.id == delivery_id)
                                        .values(next_attempt_at=NOW + timedelta(hours=1))))
    with pytest.raises(Conflict):
        store.run_write(lambda s: states.transition(s, delivery_id, S.SENDING, actor="w", now=NOW, due_by=NOW))
    store.run_write(lambda s: states.transition(s, delivery_id, S.SENDING, actor="w", now=NOW,
                                                due_by=NOW + timedelta(hours=2)))


def test_transition_refuses_unknown_columns(store):
    delivery_id = _delivery(store)
    with pytest.raises(TypeError):
        store.run_write(lambda s: states.transition(s, delivery_id, S.CANCELLED, actor="t", attempts=5))


def test_a_failed_transaction_leaves_neither_state_nor_event(store):
    delivery_id = _delivery(store)

    def tx(s):
        states.transition(s, delivery_id, S.SENDING, actor="w", now=NOW)
        raise RuntimeError("crash inside the transaction")
    with pytest.raises(RuntimeError):
        store.run_write(tx)
    with store.read() as s:
        assert s.get(Delivery, delivery_id).state == "queued"
        assert s.scalar(select(Event.id).where(Event.to_state == "sending")) is None
