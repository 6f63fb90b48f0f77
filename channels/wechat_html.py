"""Article HTML → the HTML WeChat's article editor keeps (contract §1.2).

WeChat drops class attributes and `<style>` blocks, filters images that were not uploaded through
`media/uploadimg`, and refuses the whole draft (45166) when the body links outside
`mp.weixin.qq.com`. So every kept tag gets an inline `style`, stored images stay `asset:<sha256>`
markers (as `channels.base.rewrite_images` left them) that `deliver` swaps for the uploaded URLs,
other images are dropped and outside links become plain text with the address after them.
"""
from __future__ import annotations

import html
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from lxml import etree
from lxml import html as lhtml

from channels.base import ASSET_SCHEME

#: Inline style per tag; the house look of the office's WeChat articles.
STYLES: dict[str, str] = {
    "p": "margin:0 0 1em;line-height:1.75;font-size:16px;color:#333;text-align:justify;",
    "h1": "margin:1.4em 0 .8em;font-size:19px;line-height:1.5;font-weight:bold;color:#b0171f;",
    "h2": "margin:1.4em 0 .8em;font-size:18px;line-height:1.5;font-weight:bold;color:#b0171f;",
    "h3": "margin:1.2em 0 .6em;font-size:17px;line-height:1.5;font-weight:bold;color:#333;",
    "h4": "margin:1em 0 .5em;font-size:16px;line-height:1.5;font-weight:bold;color:#333;",
    "h5": "margin:1em 0 .5em;font-size:16px;line-height:1.5;font-weight:bold;color:#333;",
    "h6": "margin:1em 0 .5em;font-size:16px;line-height:1.5;font-weight:bold;color:#333;",
    "strong": "font-weight:bold;",
    "b": "font-weight:bold;",
    "em": "font-style:italic;",
    "i": "font-style:italic;",
    "u": "text-decoration:underline;",
    "s": "text-decoration:line-through;",
    "blockquote": "margin:0 0 1em;padding:8px 12px;border-left:3px solid #d9d9d9;background:#f7f7f7;"
                  "color:#555;font-size:15px;line-height:1.7;",
    "ul": "margin:0 0 1em;padding-left:1.5em;line-height:1.75;font-size:16px;color:#333;",
    "ol": "margin:0 0 1em;padding-left:1.5em;line-height:1.75;font-size:16px;color:#333;",
    "li": "margin:0 0 .3em;",
    "img": "display:block;max-width:100%;height:auto;margin:0 auto 1em;",
    "figure": "margin:0 0 1em;",
    "figcaption": "margin:-.5em 0 1em;font-size:14px;color:#888;text-align:center;",
    "table": "width:100%;margin:0 0 1em;border-collapse:collapse;font-size:14px;",
    "th": "border:1px solid #d9d9d9;padding:6px;background:#f5f5f5;font-weight:bold;",
    "td": "border:1px solid #d9d9d9;padding:6px;",
    "hr": "margin:1.5em 0;border:0;border-top:1px solid #e5e5e5;",
    "pre": "margin:0 0 1em;padding:8px;background:#f7f7f7;font-size:13px;white-space:pre-wrap;",
    "code": "font-family:Menlo,Consolas,monospace;font-size:14px;",
    "a": "color:#576b95;text-decoration:none;",
}
#: Tags kept (with the style above, if any); any other tag is unwrapped and its text kept.
KEPT_TAGS = frozenset(STYLES) | {"br", "thead", "tbody", "tr", "sup", "sub", "span", "section"}
#: Tags removed together with their content.
DROPPED_TAGS = frozenset({"script", "style", "iframe", "object", "embed", "video", "audio", "source",
                          "form", "input", "button", "select", "textarea", "noscript", "svg", "math",
                          "link", "meta", "head", "title", "template", "canvas"})
#: Attributes kept per tag; everything else (class, id, style, on*, data-*) goes.
KEPT_ATTRS: dict[str, frozenset[str]] = {
    "img": frozenset({"src", "alt"}), "a": frozenset({"href"}), "ol": frozenset({"start"}),
    "td": frozenset({"colspan", "rowspan"}), "th": frozenset({"colspan", "rowspan"}),
}
#: Hosts an article body may link to (other hyperlinks make draft/add answer 45166).
WECHAT_LINK_HOSTS = ("mp.weixin.qq.com",)
#: Hosts of images WeChat keeps (what media/uploadimg and add_material return).
WECHAT_IMAGE_HOSTS = ("mmbiz.qpic.cn", "mmbiz.qlogo.cn", "mmecoa.qpic.cn")
_TAG = re.compile(r"<[^>]+>")


@dataclass
class WeChatBody:
    """The converted body, the stored images it shows (first use first) and what was changed."""

    html: str
    images: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _host(url: str) -> str:
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return ""
    return (parts.hostname or "").lower() if parts.scheme in ("http", "https") else ""


def _append_text(el: lhtml.HtmlElement, text: str) -> None:
    if len(el):
        el[-1].tail = (el[-1].tail or "") + text
    else:
        el.text = (el.text or "") + text


def to_wechat_html(body_html: str, stored: Collection[str]) -> WeChatBody:
    """Convert sanitised article HTML whose stored images are `asset:<sha256>` markers; `stored`
    holds those sha256 (any other image is dropped)."""
    out = WeChatBody(html="")
    if not body_html.strip():
        return out
    root = lhtml.fragment_fromstring(body_html, create_parent="section")
    for el in list(root.iterdescendants()):
        if el.getparent() is None:
            continue  # inside a subtree already removed
        if not isinstance(el.tag, str):  # comments, processing instructions
            el.drop_tree()
            continue
        tag = el.tag.lower()
        if tag in DROPPED_TAGS:
            el.drop_tree()
            continue
        if tag == "img":
            if not _keep_image(el, stored, out):
                el.drop_tree()
                continue
        elif tag == "a":
            href = (el.get("href") or "").strip()
            if _host(href) not in WECHAT_LINK_HOSTS:
                if href and _host(href) and href not in el.text_content():
                    _append_text(el, f"（{href}）")
                if href:
                    out.warnings.append(f"link to {href[:80]} turned into text (WeChat allows links to "
                                        "mp.weixin.qq.com only)")
                el.drop_tag()
                continue
        elif tag not in KEPT_TAGS:
            el.drop_tag()
            continue
        allowed = KEPT_ATTRS.get(tag, frozenset())
        for name in list(el.attrib):
            if name.lower() not in allowed:
                del el.attrib[name]
        if tag in STYLES:
            el.set("style", STYLES[tag])
    text = html.escape(root.text or "", quote=False)
    out.html = text + "".join(etree.tostring(child, encoding="unicode", method="html") for child in root)
    return out


def _keep_image(el: lhtml.HtmlElement, stored: Collection[str], out: WeChatBody) -> bool:
    src = (el.get("src") or "").strip()
    sha = src.removeprefix(ASSET_SCHEME)
    if sha != src and sha in stored:
        if sha not in out.images:
            out.images.append(sha)
        return True
    if _host(src) in WECHAT_IMAGE_HOSTS:
        return True
    out.warnings.append(f"external image {src[:80] or '(no src)'} dropped (WeChat shows only uploaded images)")
    return False


def text_length(content: str) -> int:
    """Characters of text WeChat counts against the 20 000 limit (tags not counted)."""
    return len(html.unescape(_TAG.sub("", content)))
