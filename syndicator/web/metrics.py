"""Prometheus `/metrics`: read from the store at scrape time (the store is the truth; workers
in other processes need no shared registry). Optionally behind a bearer token
(`serve.metrics_token`); without one it is open, for a scrape on an internal network."""
from __future__ import annotations

import hmac
from datetime import timedelta

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from pydantic import SecretStr
from sqlalchemy import func, select

from syndicator.models import ChannelStatus, Delivery
from syndicator.runtime import Runtime

#: Upper bounds (seconds) of the publish-to-delivered latency histogram.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)
#: Deliveries newer than this feed the latency histogram (bounded scrape cost).
LATENCY_WINDOW = timedelta(hours=24)


#: The challenge sent with a 401 (RFC 6750).
CHALLENGE = 'Bearer realm="metrics"'


def scrape_allowed(token: SecretStr | None, authorization: str | None) -> bool:
    """Whether a scrape with this `Authorization` header may read `/metrics` (always, with no token).

    Constant-time comparison: its duration does not tell how much of a guessed token was right.
    """
    if token is None:
        return True
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8"),
                               token.get_secret_value().encode("utf-8"))


class StoreCollector(Collector):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self):
        now = self.rt.clock()
        by_state = GaugeMetricFamily("syndicator_deliveries", "Deliveries by channel and state",
                                     labels=["channel", "state"])
        retries = CounterMetricFamily("syndicator_delivery_retries", "Attempts beyond the first, by channel",
                                      labels=["channel"])
        breaker = GaugeMetricFamily("syndicator_breaker_open", "1 while a channel's circuit breaker is open",
                                    labels=["channel"])
        suspended = GaugeMetricFamily("syndicator_channel_suspended", "1 while a channel is suspended",
                                      labels=["channel"])
        queued = GaugeMetricFamily("syndicator_queue_depth", "Deliveries waiting (queued or retry_wait)",
                                   labels=["channel"])
        latency = HistogramMetricFamily("syndicator_delivery_latency_seconds",
                                        "Publish-to-delivered latency of deliveries settled in the last 24 h",
                                        labels=["channel"])
        with self.rt.store.read() as s:
            for channel, state, n in s.execute(select(Delivery.channel, Delivery.state, func.count())
                                               .group_by(Delivery.channel, Delivery.state)):
                by_state.add_metric([channel, state], n)
                if state in ("queued", "retry_wait"):
                    queued.add_metric([channel], n)
            for channel, extra in s.execute(select(Delivery.channel, func.sum(Delivery.attempts - 1))
                                            .where(Delivery.attempts > 1).group_by(Delivery.channel)):
                retries.add_metric([channel], float(extra or 0))
            status = {r.channel: r for r in s.scalars(select(ChannelStatus))}
            settled = s.execute(select(Delivery.channel, Delivery.created_at, Delivery.delivered_at).where(
                Delivery.delivered_at.is_not(None), Delivery.delivered_at >= now - LATENCY_WINDOW)).all()
        for channel in self.rt.config.channels:
            st = status.get(channel)
            breaker.add_metric([channel], 1.0 if st and st.open_until and st.open_until > now else 0.0)
            suspended.add_metric([channel], 1.0 if st and st.suspended else 0.0)
        samples: dict[str, list[float]] = {}
        for channel, created, delivered in settled:
            samples.setdefault(channel, []).append((delivered - created).total_seconds())
        for channel, values in samples.items():
            buckets = [(str(b), float(sum(v <= b for v in values))) for b in LATENCY_BUCKETS]
            buckets.append(("+Inf", float(len(values))))
            latency.add_metric([channel], buckets, sum_value=sum(values))
        yield from (by_state, retries, breaker, suspended, queued, latency)
