"""How the dashboard templates format times, durations, rates and sparklines."""
from __future__ import annotations

from datetime import datetime

from syndicator.runtime import Runtime
from syndicator.web.ops.actions import ACTIONS

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
