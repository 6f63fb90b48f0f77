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

from syndicator.web.ops.health import WINDOWS, health
from syndicator.web.ops.routes import router

__all__ = ["WINDOWS", "health", "router"]
