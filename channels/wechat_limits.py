"""What WeChat accepts in a draft and its images (contract §1.2), checked before anything is sent.

`render` lists every problem it can see in the payload (`rejected`), so ops read them all at once;
`deliver` checks the image bytes themselves before uploading them.
"""
from __future__ import annotations

from typing import Any

from channels.base import AssetRef
from channels.errors import ContentRejected
from channels.wechat_html import text_length

#: Field limits of draft/add (contract §1.2, doc revision 2025-12-19).
MAX_TITLE, MAX_AUTHOR, MAX_DIGEST = 32, 16, 128
MAX_CONTENT_CHARS, MAX_CONTENT_BYTES = 20_000, 1024 * 1024
MAX_SOURCE_URL_BYTES = 1024
#: media/uploadimg takes JPEG/PNG under 1 MB; a cover (permanent image material) up to 10 MB.
MAX_IMAGE_BYTES, MAX_COVER_BYTES = 1024 * 1024, 10 * 1024 * 1024
#: Image types WeChat takes in articles: mime → (leading bytes, upload file extension).
IMAGE_KINDS = {"image/jpeg": (b"\xff\xd8\xff", ".jpg"), "image/png": (b"\x89PNG\r\n\x1a\n", ".png")}
#: Bytes an `asset:<sha256>` marker may grow by when replaced with an mmbiz URL (for the 1 MB check).
URL_ALLOWANCE = 256


def content_problems(content: str, urls: int) -> list[str]:
    """Content limits of draft/add; `urls` markers will each grow by up to URL_ALLOWANCE bytes."""
    problems = []
    chars = text_length(content)
    size = len(content.encode()) + URL_ALLOWANCE * urls
    if chars >= MAX_CONTENT_CHARS:
        problems.append(f"content has {chars} characters of text; WeChat needs fewer than "
                        f"{MAX_CONTENT_CHARS} (45002)")
    if size >= MAX_CONTENT_BYTES:
        problems.append(f"content is about {size} bytes; WeChat needs less than 1 MB (45002)")
    return problems


def image_problems(asset: AssetRef | None, what: str, limit: int) -> list[str]:
    """What WeChat would refuse about an image (`what`: "image" or "cover") by its declared type and size."""
    if asset is None:
        return [f"{what} is not stored with the article"]
    name = asset.filename or asset.sha256[:12]
    problems = []
    if asset.mime not in IMAGE_KINDS:
        problems.append(f"{what} {name} is {asset.mime}; WeChat takes JPEG or PNG (40005)")
    if asset.size >= limit:
        problems.append(f"{what} {name} is {asset.size} bytes; WeChat needs less than "
                        f"{limit // (1024 * 1024)} MB (40009)")
    return problems


def checked_upload(meta: dict[str, Any], data: bytes, what: str, limit: int) -> tuple[bytes, str, str]:
    """The bytes about to be uploaded, checked by content: JPEG or PNG and under `limit`; with the
    upload file name and mime. Raises ContentRejected naming every problem."""
    mime = next((m for m, (magic, _) in IMAGE_KINDS.items() if data.startswith(magic)), None)
    name = meta.get("filename") or meta["sha256"][:12]
    problems = [] if mime else [f"{what} {name} ({meta['mime']}) is not a JPEG or PNG file (40005)"]
    problems += image_problems(AssetRef(meta["sha256"], mime or meta["mime"], name, len(data)), what, limit)
    if problems:
        raise ContentRejected("not sent to WeChat: " + "; ".join(dict.fromkeys(problems)))
    return data, f"{meta['sha256'][:16]}{IMAGE_KINDS[mime][1]}", mime
