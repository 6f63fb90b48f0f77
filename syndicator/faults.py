"""Named fault points, so tests can crash a process at an exact step of the delivery path.

A point fires only when the environment variable `SYNDICATOR_FAULT_<POINT>` names a trigger file
and that file exists; the process that claims the file (by renaming it) dies at once with
`os._exit`, like a SIGKILL would leave it. Without the variable a checkpoint costs one dict lookup.
"""
from __future__ import annotations

import os

#: The points the delivery path exposes.
POINTS = ("before_deliver", "after_deliver", "after_commit")


def checkpoint(point: str) -> None:
    trigger = os.environ.get(f"SYNDICATOR_FAULT_{point.upper()}")
    if not trigger:
        return
    try:
        os.rename(trigger, trigger + ".fired")
    except OSError:
        return  # not armed, or another process claimed it
    os._exit(77)
