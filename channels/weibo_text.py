"""Status text as Weibo measures it: the 140 字 count (contract §2.1) and cutting text to fit it.

Weibo counts a non-ASCII character as 2 units, an ASCII character as 1 and an http(s) link as 20
whatever its length (up to 140 characters), then halves: `weibo_length`. A link is recognised by
`LINK`, which is also how the adapter checks that the article link it appends will count as one.
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from urllib.parse import urlsplit

#: The statuses/share limit in 字, as `weibo_length` counts them (contract §2.1).
MAX_CHARS = 140
#: Half-width units one link counts for, if it is at most URL_MAX_UNITS long. A longer link adds the excess.
URL_UNITS = 20
URL_MAX_UNITS = 140
#: Appended where the summary (or title) was cut.
ELLIPSIS = "…"

#: One host-name label (letters, digits, inner hyphens).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
#: A link as Weibo's counter recognises it (WeCase's pattern, plus https and hyphens in host names).
LINK = re.compile(rf"https?://{_LABEL}(?:\.{_LABEL})+[-A-Za-z0-9_$.+!*()/\\,:@&=?~#%]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Characters dropped from the end of a cut summary before the ellipsis.
_SOFT_END = " ，、；：。,.;:（(《“‘【["
#: Characters that join the one before them (combining marks are checked separately).
_JOINERS = {"\u200d", "\ufe0e", "\ufe0f", *map(chr, range(0x1F3FB, 0x1F400))}


def weibo_length(text: str) -> int:
    """Length in 字 as Weibo counts it (contract §2.1).

    Each non-ASCII character counts 2 units, each ASCII character 1, and each http(s) link 20
    units (a link longer than 140 characters adds the excess). The result is ceil(units / 2).
    """
    units, pos = 0, 0
    for match in LINK.finditer(text):
        units += _units(text[pos:match.start()])
        size = len(match.group())
        units += URL_UNITS if size <= URL_MAX_UNITS else size - URL_MAX_UNITS + URL_UNITS
        pos = match.end()
    return math.ceil((units + _units(text[pos:])) / 2)


def _units(text: str) -> int:
    return sum(1 if ord(ch) < 128 else 2 for ch in text)


def on_domain(url: str, domain: str) -> bool:
    """Whether `url`'s host is `domain` or a subdomain of it."""
    host = (urlsplit(url).hostname or "").lower()
    return host == domain or host.endswith("." + domain)


def one_line(text: str) -> str:
    """One line of text: no control characters, whitespace runs collapsed."""
    return " ".join(_CONTROL.sub(" ", text).split())


def shorten(text: str, keep: int) -> str:
    """The first `keep` characters plus an ellipsis. A character sequence that joins (combining
    mark, ZWJ emoji) is never split. "" if nothing is left."""
    if keep >= len(text):
        return text
    while keep > 0 and (unicodedata.combining(text[keep]) or text[keep] in _JOINERS
                        or text[keep - 1] == "\u200d"):
        keep -= 1
    head = text[:keep].rstrip(_SOFT_END)
    return head + ELLIPSIS if head else ""


def longest(fits: Callable[[int], bool], size: int) -> int | None:
    """The largest k in 0..size with fits(k) (binary search; fits grows with k), None if none."""
    if not fits(0):
        return None
    lo, hi = 0, size
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo
