"""How a WeChat publish job ended, from `freepublish/get` or the `PUBLISHJOBFINISH` push (§1.4).

Both answers carry the same fields, JSON in one case and XML in the other: xmltodict turns every
value into a string and one `<item>`/`<fail_idx>` into a scalar, several into a list, so
`job_outcome` accepts both shapes. Pushes are authenticated here: the plain `signature`
(sha1 over the sorted callback token, timestamp and nonce) always, and in safe mode the
`msg_signature` over the encrypted body, which wechatpy's `WeChatCrypto` checks and decrypts.
"""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import xmltodict
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException

from channels.base import Receipt
from channels.errors import AuthInvalid, ContentRejected, DeliveryError, NotFound, Unavailable

#: publish_status values that end a job without an article (contract §1.2 freepublish/get).
FAILED_STATUS = {2: "原创校验失败 (originality check failed)", 3: "常规失败 (general failure)",
                 4: "平台审核不通过 (platform review rejected it)"}
#: publish_status values of a job whose articles were taken down after it succeeded.
REMOVED_STATUS = {5: "用户删除 (all its articles were deleted after publishing)",
                  6: "系统封禁 (banned by the platform after publishing)"}
#: What WeChat expects back from a push it should not resend.
ACK = b"success"


@dataclass(frozen=True)
class CallbackResult:
    """What the web route answers WeChat (`reply`) and what it settles (`outcome` for `job_id`)."""

    reply: bytes
    #: The publish_id the event is about; None for events that are not PUBLISHJOBFINISH.
    job_id: str | None
    #: Final receipt or error for the job; None when there is nothing to settle.
    outcome: Receipt | DeliveryError | None


def job_outcome(publish_id: str, status: Any, article_id: Any, detail: Any,
                fail_idx: Any) -> Receipt | DeliveryError | None:
    """A pending receipt (1), the article's receipt (0), the error (2–6), or None if unreadable."""
    try:
        status = int(status)
    except (TypeError, ValueError):
        return None
    if status == 1:
        return Receipt(remote_id=publish_id, pending=True)
    if status == 0:
        items = [i for i in as_list(detail.get("item") if isinstance(detail, dict) else None) if isinstance(i, dict)]
        ours = next((i for i in items if str(i.get("idx")).strip() == "1"), items[0] if items else {})
        if not article_id:
            return Unavailable(f"publish job {publish_id} succeeded but WeChat gave no article_id yet")
        return Receipt(remote_id=str(article_id).strip(), remote_url=(ours.get("article_url") or "").strip() or None,
                       detail={"publish_id": publish_id})
    if status in FAILED_STATUS:
        failed = ", ".join(str(i).strip() for i in as_list(fail_idx)) or "-"
        hint = "; resubmitting needs an operator's approval" if status == 3 else ""
        return ContentRejected(f"publish job {publish_id} failed: {FAILED_STATUS[status]}; fail_idx {failed}{hint}",
                               code=f"publish_status {status}")
    if status in REMOVED_STATUS:
        return NotFound(f"publish job {publish_id} was removed remotely: {REMOVED_STATUS[status]}",
                        code=f"publish_status {status}")
    return None


def as_list(value: Any) -> list[Any]:
    """xmltodict gives one child as a scalar/dict and several as a list."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def check_signature(token: str | None, query: Mapping[str, str]) -> str:
    """Plain `signature` = sha1(sorted([token, timestamp, nonce])); returns the token."""
    if token is None:
        raise AuthInvalid("callback_token is not configured for this WeChat channel")
    signature, timestamp, nonce = (query.get(k) or "" for k in ("signature", "timestamp", "nonce"))
    expected = hashlib.sha1("".join(sorted([token, timestamp, nonce])).encode()).hexdigest()
    if not (signature and timestamp and nonce) or not hmac.compare_digest(expected, signature.lower()):
        raise AuthInvalid("callback signature does not match (forged or wrong callback_token)")
    return token


def read_push(query: Mapping[str, str], body: bytes, *, token: str | None, aes_key: str | None,
              appid: str) -> CallbackResult:
    """Authenticate and decode one push; PUBLISHJOBFINISH becomes its job's outcome."""
    token = check_signature(token, query)
    if query.get("encrypt_type", "raw").lower() == "aes":
        if aes_key is None:
            raise AuthInvalid("encrypted push, but no encoding_aes_key is configured")
        if not query.get("msg_signature"):
            raise AuthInvalid("encrypted push without msg_signature")
        try:
            xml = WeChatCrypto(token, aes_key, appid).decrypt_message(
                body, query["msg_signature"], query["timestamp"], query["nonce"])
        except InvalidSignatureException:
            raise AuthInvalid("callback msg_signature does not match (forged or wrong callback_token)") from None
        except InvalidAppIdException:
            raise AuthInvalid("encrypted push is for another appid") from None
        except Exception as exc:  # noqa: BLE001 - malformed XML, base64 or padding
            raise ContentRejected(f"cannot decrypt the callback body ({type(exc).__name__})") from None
    elif aes_key is not None:
        raise AuthInvalid("safe mode is configured (encoding_aes_key); refusing a plaintext push")
    else:
        xml = body
    try:
        msg = xmltodict.parse(xml).get("xml")
    except Exception as exc:  # noqa: BLE001 - expat errors
        raise ContentRejected(f"callback body is not WeChat XML ({type(exc).__name__})") from None
    if not isinstance(msg, dict) or str(msg.get("Event") or "").strip() != "PUBLISHJOBFINISH":
        return CallbackResult(reply=ACK, job_id=None, outcome=None)
    info = msg.get("PublishEventInfo")
    publish_id = str(info.get("publish_id") or "").strip() if isinstance(info, dict) else ""
    if not publish_id:
        raise ContentRejected("PUBLISHJOBFINISH without PublishEventInfo/publish_id")
    outcome = job_outcome(publish_id, info.get("publish_status"), info.get("article_id"),
                          info.get("article_detail"), info.get("fail_idx"))
    if isinstance(outcome, Receipt) and outcome.pending:
        outcome = None  # not finished: nothing to settle
    return CallbackResult(reply=ACK, job_id=publish_id, outcome=outcome)
