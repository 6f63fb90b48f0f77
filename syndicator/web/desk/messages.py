"""What the desk says to editors: core and channel messages in the visitor's language, and the
flash messages shown after a redirect."""
from __future__ import annotations

import re
from typing import Callable
from urllib.parse import unquote

from fastapi import Request

from syndicator.web.i18n import choose, translator

#: Known English messages of the core and the channels → msgids with placeholders (desk.po has
#: their Chinese). Unknown messages are shown as they are.
_KNOWN: list[tuple[re.Pattern[str], str]] = [(re.compile(p), m) for p, m in [
    (r"(?P<what>.+) is not allowed in an article \(body line (?P<line>\d+)\)",
     "{what} is not allowed in an article (body line {line})"),
    (r"(?P<what>.+) is not allowed in an article", "{what} is not allowed in an article"),
    (r"image (?P<src>.+) is remote; .*", "image {src} is remote; upload the file and refer to it by its name"),
    (r"image (?P<src>.+): cannot read .*", "image {src} is not among the uploaded images"),
    (r"(?:image .+: )?(?P<name>.+) is (?P<n>[\d,]+) bytes, over the limit of (?P<max>[\d,]+) bytes",
     "{name} is {n} bytes, over the limit of {max} bytes"),
    (r"(?:image .+: )?(?P<name>.+) is not a readable image.*", "{name} is not a readable image"),
    (r"(?:image .+: )?(?P<name>.+) is (?P<fmt>\w+); use JPEG, PNG, GIF or WebP",
     "{name} is {fmt}; use JPEG, PNG, GIF or WebP"),
    (r"empty \(.*\)", "Write the article text."),
    (r"(?P<n>\d+) characters, more than the limit of (?P<max>\d+)",
     "{n} characters, more than the limit of {max}"),
    (r"'(?P<slug>[^']+)' is already used by article (?P<id>\d+) «(?P<title>.*)» with different content;.*",
     "“{slug}” is already used by article {id} «{title}» with different content; choose another one, "
     "or correct that article from its page"),
    (r"--at: .* is in the past .*", "The correction time has passed; choose a later time or leave it empty."),
    (r"--at: .* is neither .*", "Not a valid date and time."),
    (r"article \d+ \(.*\) was retracted on .*; it cannot be corrected",
     "This article was retracted; it cannot be corrected."),
    # channel warnings
    (r"title has (?P<n>\d+) characters; WeChat allows at most (?P<max>\d+) \((?P<code>\d+)\)",
     "title has {n} characters; WeChat allows at most {max} ({code})"),
    (r"digest \(summary\) has (?P<n>\d+) characters; WeChat allows at most (?P<max>\d+) \((?P<code>\d+)\)",
     "summary has {n} characters; WeChat allows at most {max} ({code})"),
    (r"author has (?P<n>\d+) characters; WeChat allows at most (?P<max>\d+) \((?P<code>\d+)\)",
     "author has {n} characters; WeChat allows at most {max} ({code})"),
    (r"summary is empty; WeChat shows the first 54 characters of the body as digest",
     "summary is empty; WeChat shows the first 54 characters of the body as digest"),
    (r"article has no cover; the configured default_cover is used",
     "article has no cover; the configured default_cover is used"),
    (r"article has no cover image and no default_cover is configured.*",
     "article has no cover image, and WeChat articles need one"),
    (r"link to (?P<href>.+) turned into text \(WeChat allows links to mp\.weixin\.qq\.com only\)",
     "link to {href} turned into text (WeChat allows links to mp.weixin.qq.com only)"),
    (r"content has (?P<n>\d+) characters of text; WeChat needs fewer than (?P<max>\d+) \((?P<code>\d+)\)",
     "content has {n} characters of text; WeChat needs fewer than {max} ({code})"),
    (r"summary is empty; the status uses the start of the body",
     "summary is empty; the status uses the start of the body"),
    (r"summary truncated to fit (?P<max>\d+) 字 \(kept (?P<kept>\d+) of (?P<n>\d+) characters\)",
     "summary truncated to fit {max} 字 (kept {kept} of {n} characters)"),
    (r"summary dropped and title truncated to fit (?P<max>\d+) 字", "summary dropped and title truncated to fit {max} 字"),
    (r"'#' replaced by '＃' so Weibo does not read a #话题#", "'#' replaced by '＃' so Weibo does not read a #话题#"),
    (r"summary is empty; the feed uses the start of the body", "summary is empty; the feed uses the start of the body"),
    (r"summary is empty; WordPress generates the excerpt from the body",
     "summary is empty; WordPress generates the excerpt from the body"),
    (r"summary is empty; the listing shows the start of the body instead",
     "summary is empty; the listing shows the start of the body instead"),
]]


def localise(message: str, _: Callable[..., str]) -> str:
    """The visitor's-language text of a known core or channel message; others unchanged."""
    message = message.strip()
    for pattern, msgid in _KNOWN:
        match = pattern.fullmatch(message)
        if match:
            values = match.groupdict()
            if values.get("src"):  # Markdown percent-encodes image sources; show what the editor wrote
                values["src"] = unquote(values["src"].strip("'\""))
            return _(msgid, **values)
    return message


def _translator(request: Request) -> Callable[..., str]:
    return translator(choose(request.query_params.get("lang"), request.cookies.get("lang")))


def _flash(request: Request, level: str, text: str) -> None:
    request.session["desk_flash"] = [*request.session.get("desk_flash", []), {"level": level, "text": text}][-3:]


def _take_flash(request: Request) -> list[dict[str, str]]:
    return request.session.pop("desk_flash", [])
