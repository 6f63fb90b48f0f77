"""WeChat draft box (``draft/*``) and the article validation of contract §1.2.

Content rules emulated: title ≤ 32, author ≤ 16, digest ≤ 128 characters; content < 20 000
characters of text (markup not counted) and < 1 MB of HTML; ``<script>`` and ``on*`` handlers removed; ``<img>`` whose ``src`` is not a
WeChat image host removed; any ``<a href>`` outside ``mp.weixin.qq.com`` → 45166;
``content_source_url`` ≤ 1 KB.
"""
from __future__ import annotations

import html
import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .wechat_errors import WeChatError

if TYPE_CHECKING:
    from .wechat import Call, WeChatEmulator

#: Limits from the draft/add field table (doc revision 2025-12-19). The character limit is applied to
#: the text without tags: applied to raw HTML it would make the 1 MB limit unreachable.
MAX_TITLE = 32
MAX_AUTHOR = 16
MAX_DIGEST = 128
MAX_CONTENT_CHARS = 20_000
MAX_CONTENT_BYTES = 1024 * 1024
MAX_SOURCE_URL_BYTES = 1024
#: Length of the digest WeChat derives from the body when none is given.
AUTO_DIGEST_CHARS = 54
#: Hosts whose images survive in content (what media/uploadimg returns).
WECHAT_IMAGE_HOSTS = ("mmbiz.qpic.cn", "mmbiz.qlogo.cn", "mmecoa.qpic.cn")
#: Hosts a content hyperlink may point to (WeChat articles).
WECHAT_LINK_HOSTS = ("mp.weixin.qq.com",)
#: Article fields kept in the draft box; anything else is ignored.
ARTICLE_FIELDS = ("article_type", "title", "author", "digest", "content", "content_source_url",
                  "thumb_media_id", "need_open_comment", "only_fans_can_comment", "pic_crop_235_1",
                  "pic_crop_1_1", "image_info", "cover_info", "product_info")

_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script\s*>", re.I | re.S)
_ON_ATTR = re.compile(r"""\s+on[a-z]+\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]+)""", re.I)
_IMG = re.compile(r"<img\b[^>]*>", re.I)
_SRC = re.compile(r"""\bsrc\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.I)
_A_HREF = re.compile(r"""<a\b[^>]*?\shref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.I)
_TAG = re.compile(r"<[^>]+>")


@dataclass
class Draft:
    media_id: str
    articles: list[dict[str, Any]]
    create_time: int
    update_time: int
    seq: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _host(url: str) -> str:
    try:
        parts = urlsplit(html.unescape(url.strip()))
    except ValueError:
        return ""
    return (parts.hostname or "").lower() if parts.scheme in ("http", "https") else ""


def clean_content(content: str) -> str:
    """Strip JS and external images; raise 45166 for non-WeChat hyperlinks."""
    for m in _A_HREF.finditer(content):
        href = next(g for g in m.groups() if g is not None)
        if _host(href) not in WECHAT_LINK_HOSTS:
            raise WeChatError(45166, hint=href[:64])
    content = _SCRIPT.sub("", content)
    content = _ON_ATTR.sub("", content)

    def keep_img(m: re.Match[str]) -> str:
        src = _SRC.search(m.group(0))
        url = next((g for g in src.groups() if g is not None), "") if src else ""
        return m.group(0) if _host(url) in WECHAT_IMAGE_HOSTS else ""

    return _IMG.sub(keep_img, content)


def plain_text(content: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(_TAG.sub("", content))).strip()


def validate_article(a: Any, emu: "WeChatEmulator") -> dict[str, Any]:
    """Check one draft article against the field table; return the stored form."""
    if not isinstance(a, dict):
        raise WeChatError(47001)
    kind = a.get("article_type") or "news"
    if kind not in ("news", "newspic"):
        raise WeChatError(40097, hint="article_type")
    title, content = a.get("title"), a.get("content")
    if not isinstance(title, str) or not title:
        raise WeChatError(44003, hint="title")
    if len(title) > MAX_TITLE:
        raise WeChatError(45003)
    if len(a.get("author") or "") > MAX_AUTHOR:
        raise WeChatError(45110)
    if len(a.get("digest") or "") > MAX_DIGEST:
        raise WeChatError(45004)
    if not isinstance(content, str) or not content:
        raise WeChatError(44004)
    text_chars = len(html.unescape(_TAG.sub("", content)))
    if text_chars >= MAX_CONTENT_CHARS or len(content.encode("utf-8")) >= MAX_CONTENT_BYTES:
        raise WeChatError(45002)
    source = a.get("content_source_url") or ""
    if source and (len(source.encode("utf-8")) > MAX_SOURCE_URL_BYTES or not _host(source)):
        raise WeChatError(41039)
    cleaned = clean_content(content)
    if kind == "news":
        if a.get("thumb_media_id") not in emu.materials:
            raise WeChatError(40007, hint="thumb_media_id")
    else:
        images = ((a.get("image_info") or {}).get("image_list")) or []
        if not images or len(images) > 20:
            raise WeChatError(40097, hint="image_info")
        for item in images:
            if (item or {}).get("image_media_id") not in emu.materials:
                raise WeChatError(40007, hint="image_media_id")
    if int(a.get("need_open_comment") or 0) and not emu.settings.comment_privilege:
        raise WeChatError(88000)
    stored = {k: a[k] for k in ARTICLE_FIELDS if k in a}
    stored.update(article_type=kind, content=cleaned, author=a.get("author") or "",
                  digest=a.get("digest") or plain_text(cleaned)[:AUTO_DIGEST_CHARS],
                  content_source_url=source, need_open_comment=int(a.get("need_open_comment") or 0),
                  only_fans_can_comment=int(a.get("only_fans_can_comment") or 0))
    return stored


def page(data: dict[str, Any]) -> tuple[int, int, bool]:
    """offset/count/no_content of a batchget body; count must be 1..20."""
    try:
        offset, count = int(data.get("offset", 0)), int(data.get("count", 0))
    except (TypeError, ValueError):
        raise WeChatError(40097, hint="offset/count") from None
    if offset < 0 or not 1 <= count <= 20:
        raise WeChatError(40097, hint="count")
    return offset, count, bool(int(data.get("no_content") or 0))


class Drafts:
    """The draft box: ``draft/add|get|update|delete|batchget|count``."""

    def __init__(self, emu: "WeChatEmulator") -> None:
        self.emu = emu
        self.items: dict[str, Draft] = {}
        self._seq = 0

    def reset(self) -> None:
        self.items.clear()

    def endpoints(self) -> dict[str, tuple[str, Any]]:
        return {"draft/add": ("POST", self.add), "draft/get": ("POST", self.get),
                "draft/update": ("POST", self.update), "draft/delete": ("POST", self.delete),
                "draft/batchget": ("POST", self.batchget), "draft/count": ("GET", self.count)}

    def news_items(self, articles: list[dict[str, Any]], no_content: bool = False) -> list[dict[str, Any]]:
        out = []
        for a in articles:
            item = dict(a, url=f"https://mp.weixin.qq.com/s?tempkey={secrets.token_urlsafe(24)}",
                        thumb_url=self.emu.material_url(a.get("thumb_media_id")))
            if no_content:
                item.pop("content", None)
            out.append(item)
        return out

    def take(self, media_id: Any) -> Draft:
        """Remove and return a draft (publishing or mass-sending consumes it)."""
        draft = self.items.pop(media_id, None) if isinstance(media_id, str) else None
        if draft is None:
            raise WeChatError(40007)
        return draft

    def _find(self, data: dict[str, Any]) -> Draft:
        draft = self.items.get(data.get("media_id")) if isinstance(data.get("media_id"), str) else None
        if draft is None:
            raise WeChatError(40007)
        return draft

    def add(self, call: "Call") -> dict[str, Any]:
        articles = call.json().get("articles")
        if not isinstance(articles, list) or not articles:
            raise WeChatError(44003)
        if len(articles) > self.emu.settings.max_articles:
            raise WeChatError(45008)
        stored = [validate_article(a, self.emu) for a in articles]
        now = int(self.emu.clock.now())
        self._seq += 1
        draft = Draft(secrets.token_urlsafe(48), stored, now, now, self._seq)
        self.items[draft.media_id] = draft
        self.emu.record("draft/add", id=draft.media_id, body={"articles": stored})
        return {"media_id": draft.media_id}

    def get(self, call: "Call") -> dict[str, Any]:
        draft = self._find(call.json())
        return {"news_item": self.news_items(draft.articles), "create_time": draft.create_time,
                "update_time": draft.update_time}

    def update(self, call: "Call") -> dict[str, Any]:
        data = call.json()
        draft = self._find(data)
        index = data.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(draft.articles):
            raise WeChatError(40114)
        if not isinstance(data.get("articles"), dict):
            raise WeChatError(47001, hint="articles must be an object")
        draft.articles[index] = validate_article(data["articles"], self.emu)
        draft.update_time = int(self.emu.clock.now())
        self._seq += 1
        draft.seq = self._seq
        self.emu.record("draft/update", id=draft.media_id, body={"index": index, "article": draft.articles[index]})
        return {"errcode": 0, "errmsg": "ok"}

    def delete(self, call: "Call") -> dict[str, Any]:
        draft = self._find(call.json())
        del self.items[draft.media_id]
        self.emu.record("draft/delete", id=draft.media_id)
        return {"errcode": 0, "errmsg": "ok"}

    def batchget(self, call: "Call") -> dict[str, Any]:
        offset, count, no_content = page(call.json())
        ordered = sorted(self.items.values(), key=lambda d: (d.update_time, d.seq), reverse=True)
        chosen = ordered[offset:offset + count]
        items = [{"media_id": d.media_id,
                  "content": {"news_item": self.news_items(d.articles, no_content),
                              "create_time": d.create_time, "update_time": d.update_time},
                  "update_time": d.update_time} for d in chosen]
        return {"total_count": len(ordered), "item_count": len(items), "item": items}

    def count(self, call: "Call") -> dict[str, Any]:
        return {"total_count": len(self.items)}
