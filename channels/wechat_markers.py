"""The `sid` marker in an article's 阅读原文 link, and finding what carries it (contract §1.7).

None of WeChat's create calls is idempotent, but `draft/batchget` and `freepublish/batchget` hand
back each article's `content_source_url`. So the link carries `sid=<instance>-a<article>-r<revision>`
(`-notice` appended for a correction notice), and a retry after an ambiguous failure, a retract
without an article_id or a correction looking for the article it replaces pages through those
lists for it.
"""
from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from channels.wechat_api import WeChatAPI
from channels.wechat_events import as_list
from channels.wechat_limits import MAX_SOURCE_URL_BYTES

#: How far back reconciliation pages through drafts / published messages (20 per page).
RECONCILE_PAGES = 5
#: Suffix of a correction notice's marker (after the revision's own marker).
NOTICE_SID_SUFFIX = "-notice"
#: Our marker: instance and article, then revision, then the notice suffix for a correction notice.
_SID = re.compile(r"(?P<article>.+-a\d+)-r(?P<revision>\d+)(?:" + re.escape(NOTICE_SID_SUFFIX) + ")?")
#: A 阅读原文 link carrying a correction notice's marker.
_NOTICE_MARKER = re.compile(r"[?&]sid=[^&#]*" + re.escape(NOTICE_SID_SUFFIX) + r"(?:[&#]|$)")
#: A batchget item and its first article.
Found = tuple[dict[str, Any], dict[str, Any]]


def source_url(link: str, sid: str) -> tuple[str, list[str]]:
    """The 阅读原文 link carrying the marker `sid`, and what WeChat would refuse about it."""
    source = f"{link}{'&' if '?' in link else '?'}sid={quote(sid, safe='')}"
    problems = []
    if not re.match(r"https?://", source):
        problems.append(f"阅读原文 link {link[:60]} is not http(s): set source_base or site.base_url (41039)")
    if len(source.encode()) > MAX_SOURCE_URL_BYTES:
        problems.append(f"阅读原文 link is longer than {MAX_SOURCE_URL_BYTES} bytes (41039)")
    return source, problems


def is_notice(source: str) -> bool:
    """Whether a 阅读原文 link carries a correction notice's marker."""
    return bool(_NOTICE_MARKER.search(source))


def find_marked(api: WeChatAPI, path: str, sid: str) -> Found | None:
    """Page through draft/ or freepublish/batchget for the item whose first article carries `sid`."""
    marker = re.compile(r"[?&]sid=" + re.escape(quote(sid, safe="")) + r"(?:[&#]|$)")
    return _scan(api, path, lambda url: bool(marker.search(url)))


def find_earlier(api: WeChatAPI, sid: str) -> Found | None:
    """The newest live published article carrying the marker of an earlier revision of `sid`'s article
    (correction notices excluded)."""
    parts = _SID.fullmatch(sid)
    if parts is None:
        return None
    revision = int(parts.group("revision"))
    marker = re.compile(r"[?&]sid=" + re.escape(quote(parts.group("article"), safe="")) + r"-r(\d+)(?:[&#]|$)")

    def earlier(url: str) -> bool:
        found = marker.search(url)
        return found is not None and int(found.group(1)) < revision
    return _scan(api, "freepublish/batchget", earlier)


def _scan(api: WeChatAPI, path: str, match: Callable[[str], bool]) -> Found | None:
    """Page through draft/ or freepublish/batchget (newest first) for the first live item whose first
    article's 阅读原文 link satisfies `match`."""
    for page in range(RECONCILE_PAGES):
        data = api.call(path, {"offset": page * 20, "count": 20, "no_content": 1})
        items = as_list(data.get("item"))
        for item in items:
            news = as_list(((item or {}).get("content") or {}).get("news_item"))
            first = news[0] if news and isinstance(news[0], dict) else {}
            url = html.unescape(str(first.get("content_source_url") or ""))
            if match(url) and not first.get("is_deleted"):
                return item, first
        if len(items) < 20 or (page + 1) * 20 >= int(data.get("total_count") or 0):
            return None
    return None
