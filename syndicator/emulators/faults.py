"""Fault injection settings shared by all emulators, changeable at runtime.

``Faults`` is plain data (what the admin API's ``PUT /_emulator/faults`` accepts and ``GET``
returns); ``FaultController`` holds the current value, the seeded RNG and the forced-error
counters, and decides per request what to inject.
"""
from __future__ import annotations

import fnmatch
import random
import threading
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

#: How long a "hang" keeps the request open unless told otherwise (longer than client timeouts).
DEFAULT_HANG_SECONDS = 30.0


@dataclass
class Force:
    """Answer ``code`` (vendor error code, or an HTTP status for WordPress) instead of handling.

    ``path`` is a glob over the emulator's logical path (``/cgi-bin/draft/add``, ``/2/statuses/*``,
    ``/wp/v2/posts*``); ``times`` is how many matching calls get it (None = until cleared).
    """

    code: int | str
    path: str | None = None
    method: str | None = None
    times: int | None = 1


@dataclass
class Faults:
    """What to inject. All defaults mean "behave normally"."""

    #: Extra seconds before every request is handled.
    latency: float = 0.0
    #: Probability 0..1 that a request fails with ``error_code`` (or the API's generic transient code).
    error_rate: float = 0.0
    error_code: int | str | None = None
    #: Seed for the error-rate RNG; the same seed and call order give the same failures.
    seed: int | None = 0
    #: Forced errors, checked in order before the error rate.
    force: list[Force] = field(default_factory=list)
    #: Keep requests open for ``hang_seconds`` or until the faults change, then answer 504 without
    #: applying anything (with ``after_apply``: apply, then hold the real answer as long).
    hang: bool = False
    hang_seconds: float = DEFAULT_HANG_SECONDS
    #: Service down: ``"503"`` answers HTTP 503, ``"drop"`` closes the connection without a response.
    down: Literal["503", "drop"] | None = None
    #: Apply ``hang``/``down`` *after* the request was handled: the effect is applied, the answer lost.
    after_apply: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Faults":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        data = dict(data)
        data["force"] = [f if isinstance(f, Force) else Force(**f) for f in data.get("force") or []]
        faults = cls(**data)
        faults.validate()
        return faults

    def validate(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be within 0..1")
        if self.latency < 0 or self.hang_seconds < 0:
            raise ValueError("latency and hang_seconds must be >= 0")
        if self.down not in (None, "503", "drop"):
            raise ValueError("down must be null, '503' or 'drop'")


@dataclass
class Decision:
    """What to do with one request."""

    latency: float = 0.0
    code: int | str | None = None
    hang: float | None = None
    down: str | None = None
    after_apply: bool = False


class FaultController:
    """The live fault settings of one emulator (thread-safe)."""

    def __init__(self, faults: Faults | None = None) -> None:
        self._lock = threading.Lock()
        self._faults = Faults()
        self._rng = random.Random(0)
        #: Bumped on every change, so a hanging request notices that the fault was lifted.
        self.generation = 0
        self.set(faults or Faults())

    def get(self) -> Faults:
        with self._lock:
            return replace(self._faults, force=[replace(f) for f in self._faults.force])

    def set(self, faults: Faults) -> None:
        """Replace all settings (and re-seed the RNG)."""
        faults.validate()
        with self._lock:
            self._faults = faults
            self._rng = random.Random(faults.seed)
            self.generation += 1

    def update(self, **changes: Any) -> None:
        """Change some settings, keep the rest (``faults.update(latency=0.2)``)."""
        current = self.get().to_json()
        current.update(changes)
        self.set(Faults.from_json(current))

    def force(self, code: int | str, path: str | None = None, times: int | None = 1,
              method: str | None = None) -> None:
        """Answer ``code`` for the next ``times`` calls (matching ``path``, if given)."""
        with self._lock:
            self._faults.force.append(Force(code, path=path, method=method, times=times))
            self.generation += 1

    def clear(self) -> None:
        self.set(Faults())

    def decide(self, path: str, method: str, default_error: int | str) -> Decision:
        """Consume counters and the RNG for one request and return what to inject."""
        with self._lock:
            f = self._faults
            d = Decision(latency=f.latency, after_apply=f.after_apply)
            if f.hang:
                d.hang = f.hang_seconds
            d.down = f.down
            for rule in list(f.force):
                if rule.path is not None and not fnmatch.fnmatchcase(path, rule.path):
                    continue
                if rule.method is not None and rule.method.upper() != method.upper():
                    continue
                d.code = rule.code
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times <= 0:
                        f.force.remove(rule)
                return d
            if f.error_rate > 0 and self._rng.random() < f.error_rate:
                d.code = f.error_code if f.error_code is not None else default_error
            return d
