"""WeChat error codes as the emulator answers them: HTTP 200, ``{"errcode", "errmsg": "… rid: …"}``."""
from __future__ import annotations

import secrets
from typing import Any

#: errmsg texts (vendor wording where known; contract §1.2/§1.3 and wechatpy 1.8.18 constants).
ERRMSG: dict[int, str] = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40004: "invalid media type",
    40005: "invalid file type",
    40006: "invalid meida size",
    40007: "invalid media_id",
    40008: "invalid message type",
    40009: "invalid image size",
    40013: "invalid appid",
    40097: "invalid args",
    40114: "invalid index value",
    40125: "invalid appsecret",
    40164: "invalid ip, not in whitelist",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    41005: "media data missing",
    41039: "invalid content_source_url",
    42001: "access_token expired",
    43001: "require GET method",
    43002: "require POST method",
    44002: "empty post data",
    44003: "empty news data",
    44004: "empty content",
    45002: "content size out of limit",
    45003: "title size out of limit",
    45004: "description size out of limit",
    45008: "article size out of limit",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit  mustslower  retry next minute",
    45065: "clientmsgid exist",
    45110: "author size out of limit",
    45166: "invalid content",
    47001: "data format error",
    48001: "api unauthorized",
    48006: "forbid to clear quota because of reaching the limit",
    50002: "user limited",
    53503: "该草稿未通过发布检查",
    53504: "需前往公众平台官网使用草稿",
    53505: "请手动保存成功后再发表",
    53600: "Article ID 无效",
    88000: "without comment privilege",
}


class WeChatError(Exception):
    """Raised by endpoint handlers; becomes an errcode body. ``extra`` fields join the body."""

    def __init__(self, errcode: int, hint: str | None = None, **extra: Any) -> None:
        super().__init__(errcode, hint)
        self.errcode = errcode
        self.hint = hint
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return error_body(self.errcode, self.hint, **self.extra)


def rid() -> str:
    """A request id in WeChat's ``xxxxxxxx-xxxxxxxx-xxxxxxxx`` form."""
    return "-".join(secrets.token_hex(4) for _ in range(3))


def error_body(errcode: int, hint: str | None = None, **extra: Any) -> dict[str, Any]:
    msg = ERRMSG.get(errcode, "error")
    if hint:
        msg = f"{msg} hint: [{hint}]"
    return {"errcode": errcode, "errmsg": f"{msg} rid: {rid()}", **extra}
