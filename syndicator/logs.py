"""Structured (JSON) logs: one object per line, with article and delivery ids as fields."""
from __future__ import annotations

import logging
import os
import sys

from pythonjsonlogger.json import JsonFormatter

#: Set SYNDICATOR_LOG_FORMAT=text for human-oriented lines in a terminal.
FORMAT_ENV = "SYNDICATOR_LOG_FORMAT"


def setup_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get(FORMAT_ENV, "json") == "text":
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                           rename_fields={"levelname": "level", "asctime": "time"}))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
