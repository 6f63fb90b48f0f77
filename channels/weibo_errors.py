"""Weibo's answers translated once into `channels.errors` (contract §2.2).

`vendor_error` maps an `error_code` through the `ERRORS` table, `http_error` handles answers that are
not Weibo's own JSON (a proxy page, a gateway failure) and `transport_error` a request that got no
answer. A failure after `statuses/share` was sent is `UnavailableAfterSend`: Weibo is failing and
the post may exist, so the next attempt reconciles.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
from urllib3.exceptions import NewConnectionError

from channels.errors import (AuthInvalid, ContentRejected, DeliveryError, ManualActionRequired, OutcomeUnknown,
                             PermanentError, RateLimited, Unavailable)

_REAUTH = "the access token is expired or revoked: the account must be re-authorised (OAuth) and the new " \
          "token put in the configuration"
#: Weibo error_code → (error class, what it means here). Contract §2.2.
ERRORS: dict[int, tuple[type[DeliveryError], str]] = {
    **dict.fromkeys((10001, 10002, 10003, 10009, 10010, 10011), (Unavailable, "Weibo is failing or busy")),
    **dict.fromkeys((10022, 10023, 10024, 20016), (RateLimited, "rate limit reached")),
    **dict.fromkeys((21327, 21332, 21301, *range(21314, 21320)), (AuthInvalid, _REAUTH)),
    21321: (AuthInvalid, "the app is unaudited and over its user limit: fix the app on open.weibo.com"),
    10014: (AuthInvalid, "the app lacks permission for this API: fix the app on open.weibo.com"),
    **dict.fromkeys((10006, 10008, 10016, 10017, 10018),
                    (ContentRejected, "Weibo refused the request (an adapter or configuration bug)")),
    20005: (ContentRejected, "the cover image was refused: unsupported image type (JPEG, GIF or PNG only)"),
    20006: (ContentRejected, "the cover image was refused: image too large"),
    20007: (ContentRejected, "the cover image was refused: no image in the multipart body"),
    20012: (ContentRejected, "the status is too long for Weibo (over 140 字)"),
    **dict.fromkeys((20017, 20019), (ContentRejected, "duplicate: the account already posted this status")),
    20018: (ContentRejected, "moderation: the link was judged an illegal website; a person must look at it"),
    20020: (ContentRejected, "moderation: the status was judged advertising; a person must look at it"),
    20021: (ContentRejected, "moderation: the content was judged illegal; a person must look at it"),
    20022: (ContentRejected, "moderation: the posting IP was judged abnormal; a person must look at it"),
    20031: (ContentRejected, "moderation: Weibo asks for a captcha; a person must post or verify by hand"),
}
#: "Update success, server slow": the post was accepted, its id comes later (contract §2.2).
SERVER_SLOW = 20032
#: Repeat content: on a reconciling retry, the earlier attempt was posted.
DUPLICATE = (20017, 20019)
#: statuses/destroy: the post does not exist (any more), which is what retract wants.
GONE = 20101


class UnavailableAfterSend(Unavailable, OutcomeUnknown):
    """The share was sent, then the answer was lost or was a server failure.

    Weibo is failing (Unavailable: back off, count towards a breaker), and the post may have been
    applied (OutcomeUnknown: the next attempt must reconcile, which 20019 makes safe).
    """


class ManualRemovalRequired(ManualActionRequired):
    """Weibo will not delete this post for the app (or its id is unknown): a person must delete it,
    at `url` when the id is known. The core parks the delivery as a manual task."""


@dataclass(frozen=True)
class Answer:
    """One HTTP answer from Weibo: status and the JSON object, if the body was one."""

    status: int
    body: dict[str, Any] | None
    headers: Any

    @property
    def code(self) -> int | str | None:
        """error_code as an int (Weibo sometimes sends a string), None on success."""
        raw = self.body.get("error_code") if self.body else None
        if raw in (None, "", 0, "0"):
            return None
        try:
            return int(str(raw).strip())
        except ValueError:
            return str(raw)


def vendor_error(answer: Answer, where: str, *, text: str, share: bool, safe_domain: str,
                 clock: Callable[[], datetime]) -> DeliveryError:
    """The classified error for a Weibo error answer. `where` names instance and endpoint, `text` is
    Weibo's own message (token redacted)."""
    code = answer.code
    cls, meaning = ERRORS.get(code, (None, "")) if isinstance(code, int) else (None, "")
    if cls is None:  # not in the table: a server failure if 5xx, else for a person to read
        cls = Unavailable if answer.status >= 500 else PermanentError
        meaning = f"unrecognised Weibo error (HTTP {answer.status})"
    if code == 10017 and "domain" in text.lower():
        meaning += f"; the link must be on the app's 安全域名 (safe_domain {safe_domain})"
    message = f"{where}: {meaning} — Weibo says {text!r}"
    if cls is RateLimited:
        retry = next_window(clock())
        return RateLimited(f"{message}; next window in {retry:.0f}s", retry_after=retry, code=code)
    if cls is Unavailable and share:
        cls = UnavailableAfterSend
    return cls(message, code=code)


def http_error(answer: Answer, where: str, *, share: bool, clock: Callable[[], datetime]) -> DeliveryError:
    """An answer that is not Weibo's: a proxy or gateway page, or a success without JSON. `where`
    names the instance and the URL."""
    said = f"{where} answered HTTP {answer.status} without a Weibo JSON body"
    if answer.status == 429:
        retry = _retry_after(answer.headers) or next_window(clock())
        return RateLimited(f"{said}; retry in {retry:.0f}s", retry_after=retry, code=429)
    if answer.status >= 500:
        cls = UnavailableAfterSend if share else Unavailable
        return cls(f"{said}{'; the status may have been posted' if share else ''}", code=answer.status)
    if 200 <= answer.status < 300:
        return OutcomeUnknown(f"{said}; the status may have been posted") if share \
            else Unavailable(said, code=answer.status)
    return PermanentError(f"{said}; check api_base", code=answer.status)


def transport_error(exc: requests.RequestException, who: str, url: str, *, share: bool, timeout: float,
                    detail: str) -> DeliveryError:
    """A request that got no answer; `detail` describes `exc` with the token redacted."""
    if not _was_sent(exc):
        return Unavailable(f"{who}: cannot reach {url}: {detail}")
    what = f"no answer within {timeout:g}s" if isinstance(exc, requests.Timeout) else "the connection broke"
    if share:
        return UnavailableAfterSend(f"{who}: {what} after the status was sent to {url}; "
                                    f"it may have been posted: {detail}")
    return Unavailable(f"{who}: {what} from {url}: {detail}")


def next_window(now: datetime) -> float:
    """Seconds until the next clock hour (Weibo's limits are hourly), at least a minute."""
    return max(60.0, 3600.0 - now.timestamp() % 3600)


def _retry_after(headers: Any) -> float | None:
    try:
        return max(float(headers.get("Retry-After", "")), 1.0)
    except (TypeError, ValueError):
        return None


def _was_sent(exc: requests.RequestException) -> bool:
    """False only when the request surely never left: no connection, TLS failure, bad URL."""
    if isinstance(exc, (requests.ConnectTimeout, requests.exceptions.SSLError, requests.exceptions.ProxyError,
                        requests.exceptions.InvalidURL, requests.exceptions.MissingSchema)):
        return False
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return not isinstance(reason, NewConnectionError)
