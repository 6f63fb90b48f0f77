"""``wp/v2/media``: uploads as a raw body (``Content-Type`` + ``Content-Disposition``) or multipart
field ``file``, with core's error codes, plus serving the stored files under ``/wp-content/uploads``.

Size limits are layered as on a real host: the web server (``server_max_body`` → HTML 413), PHP
(``post_max_size`` drops the body → ``rest_upload_no_data``; ``upload_max_filesize`` fails a multipart
upload → ``rest_upload_unknown_error``) and multisite's ``fileupload_maxk`` (``rest_upload_file_too_big``).
"""
from __future__ import annotations

import hashlib
import io
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from .bodies import is_multipart, parse_multipart, sniff_image
from .wordpress import Ctx, WPError
from .wordpress_posts import WPPost, sanitize_slug, wp_date

if TYPE_CHECKING:
    from .wordpress import WordPressEmulator

#: Default allowed upload types (subset of ``get_allowed_mime_types()``); SVG is not among them.
ALLOWED: dict[str, str] = {
    "jpg": "image/jpeg", "jpeg": "image/jpeg", "jpe": "image/jpeg", "png": "image/png", "gif": "image/gif",
    "webp": "image/webp", "bmp": "image/bmp", "pdf": "application/pdf", "txt": "text/plain",
    "mp3": "audio/mpeg", "mp4": "video/mp4",
}
#: Sniffed image kind → (extension, MIME type) used when WordPress corrects a wrong extension.
IMAGE_KINDS = {"jpeg": ("jpg", "image/jpeg"), "png": ("png", "image/png"), "gif": ("gif", "image/gif"),
               "webp": ("webp", "image/webp"), "bmp": ("bmp", "image/bmp")}
NOT_ALLOWED = "Sorry, you are not allowed to upload this file type."


def filename_from_disposition(value: str) -> str | None:
    """``WP_REST_Attachments_Controller::get_filename_from_disposition`` (``filename*`` ignored)."""
    value = value.strip()
    if ";" not in value:
        return None
    attributes = {}
    for part in value.split(";", 1)[1].split(";"):
        if "=" in part:
            key, val = part.split("=", 1)
            attributes[key.strip()] = val.strip()
    name = attributes.get("filename", "").strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1]
    return name or None


class Media:
    """Attachments: create, read, force-delete, and the uploaded bytes."""

    def __init__(self, emu: "WordPressEmulator") -> None:
        self.emu = emu
        self.files: dict[str, tuple[bytes, str]] = {}

    def reset(self) -> None:
        self.files = {}

    # -- endpoints ----------------------------------------------------------------------------
    def create(self, ctx: Ctx) -> Response:
        s, headers = self.emu.settings, ctx.request.headers
        if s.server_max_body is not None and len(ctx.body) > s.server_max_body:
            return HTMLResponse("<html><head><title>413 Request Entity Too Large</title></head><body><center>"
                                "<h1>413 Request Entity Too Large</h1></center><hr><center>nginx</center>"
                                "</body></html>", status_code=413)
        if not self.emu.can(ctx.user, "upload_files"):
            raise WPError("rest_cannot_create", "Sorry, you are not allowed to create posts as this user.",
                          ctx.auth_status())
        body = ctx.body if len(ctx.body) <= s.php_post_max_size else b""
        ctype = headers.get("content-type", "")
        md5 = headers.get("content-md5", "").strip()
        files = {}
        if is_multipart(ctype) and body:
            try:
                files = {k: p for k, p in parse_multipart(body, ctype).items() if p.filename is not None}
            except ValueError:
                files = {}
        if files:
            part = files.get("file")
            if part is None:
                raise WPError("rest_upload_no_data", "No data supplied.", 400)
            if md5 and md5 != hashlib.md5(part.data).hexdigest():
                raise WPError("rest_upload_hash_mismatch", "Content hash did not match expected.", 412)
            if len(part.data) > s.php_upload_max_filesize:
                raise WPError("rest_upload_unknown_error",
                              "The uploaded file exceeds the upload_max_filesize directive in php.ini.", 500)
            self._check_size(part.data)
            name, data, fail_code = part.filename or "", part.data, "rest_upload_unknown_error"
        else:
            data = b"" if is_multipart(ctype) else body
            if not data:
                raise WPError("rest_upload_no_data", "No data supplied.", 400)
            if not ctype:
                raise WPError("rest_upload_no_content_type", "No Content-Type supplied.", 400)
            disposition = headers.get("content-disposition")
            if not disposition:
                raise WPError("rest_upload_no_content_disposition", "No Content-Disposition supplied.", 400)
            name = filename_from_disposition(disposition) or ""
            if not name:
                raise WPError("rest_upload_invalid_disposition",
                              "Invalid Content-Disposition supplied. Content-Disposition needs to be formatted "
                              "as `attachment; filename=\"image.png\"` or similar.", 400)
            if md5 and md5 != hashlib.md5(data).hexdigest():
                raise WPError("rest_upload_hash_mismatch", "Content hash did not match expected.", 412)
            self._check_size(data)
            fail_code = "rest_upload_sideload_error"
        name, mime = self._check_type(name, data, fail_code)
        post = self._store(ctx, name, mime, data)
        return JSONResponse(self.render(post, ctx, "edit"), status_code=201,
                            headers={"Location": ctx.rest_url(f"/wp/v2/media/{post.id}")})

    def get(self, ctx: Ctx, id: str) -> Response:
        post = self.emu.posts.find(id, "attachment")
        context = ctx.params.get("context", "view")
        if context == "edit" and not self.emu.posts.can_edit(ctx.user, post):
            raise WPError("rest_forbidden_context", "Sorry, you are not allowed to edit this post.", ctx.auth_status())
        return JSONResponse(self.render(post, ctx, context))

    def delete(self, ctx: Ctx, id: str) -> Response:
        return self.emu.posts.delete(ctx, id, "attachment")

    async def serve_file(self, request: Request) -> Response:
        with self.emu.lock:
            found = self.files.get(request.path_params["file"])
        if found is None:
            return HTMLResponse("<h1>Not Found</h1>", status_code=404)
        return Response(found[0], media_type=found[1])

    # -- helpers ------------------------------------------------------------------------------
    def _check_size(self, data: bytes) -> None:
        limit = self.emu.settings.max_upload_kb
        if limit is not None and len(data) > limit * 1024:
            raise WPError("rest_upload_file_too_big",
                          f"This file is too big. Files must be less than {limit} KB in size.", 400)

    @staticmethod
    def _check_type(name: str, data: bytes, fail_code: str) -> tuple[str, str]:
        """``wp_check_filetype_and_ext``: allowed extension; images must really be images."""
        stem, _, ext = name.rpartition(".")
        mime = ALLOWED.get(ext.lower()) if stem else None
        if mime is None:
            raise WPError(fail_code, NOT_ALLOWED, 500)
        if mime.startswith("image/"):
            kind = sniff_image(data)
            if kind not in IMAGE_KINDS:
                raise WPError(fail_code, NOT_ALLOWED, 500)
            real_ext, mime = IMAGE_KINDS[kind]
            if mime != ALLOWED[ext.lower()]:
                name = f"{stem}.{real_ext}"
        return name, mime

    def _store(self, ctx: Ctx, name: str, mime: str, data: bytes) -> WPPost:
        now = self.emu.clock.now()
        folder = datetime.fromtimestamp(now, self.emu.posts.tz).strftime("%Y/%m")
        stem, _, ext = name.rpartition(".")
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-") or "file"
        candidate, n = f"{stem}.{ext}", 1
        while f"{folder}/{candidate}" in self.files:
            candidate, n = f"{stem}-{n}.{ext}", n + 1
        path = f"{folder}/{candidate}"
        self.files[path] = (data, mime)
        width = height = None
        if mime.startswith("image/"):
            try:
                from PIL import Image

                width, height = Image.open(io.BytesIO(data)).size
            except Exception:  # Pillow may lack a codec; dimensions are informative only
                pass
        p = ctx.params
        title = p.get("title")
        title = title.get("raw", "") if isinstance(title, dict) else (title or stem)
        post = WPPost(self.emu.next_id(), "attachment", "inherit", "", ctx.user.id, now, now,  # type: ignore[union-attr]
                      title=str(title))
        post.slug = self.emu.posts.unique_slug(sanitize_slug(stem) or str(post.id), post.id, "attachment")
        post.extra = {"mime_type": mime, "file": path, "filesize": len(data), "width": width, "height": height,
                      "alt_text": str(p.get("alt_text", "")), "caption": str(p.get("caption", "")),
                      "description": str(p.get("description", "")), "parent": p.get("post")}
        self.emu.items[post.id] = post
        self.emu.record("media/create", id=post.id, body={"file": path, "mime_type": mime, "size": len(data),
                                                          "sha256": hashlib.sha256(data).hexdigest()})
        return post

    def render(self, post: WPPost, ctx: Ctx, context: str = "view") -> dict[str, Any]:
        tz, x = self.emu.posts.tz, post.extra
        source = f"{ctx.home}/wp-content/uploads/{x['file']}"
        out: dict[str, Any] = {
            "id": post.id, "date": wp_date(post.date_gmt, tz), "date_gmt": wp_date(post.date_gmt, timezone.utc),
            "guid": {"rendered": source}, "modified": wp_date(post.modified_gmt, tz),
            "modified_gmt": wp_date(post.modified_gmt, timezone.utc), "slug": post.slug, "status": post.status,
            "type": "attachment", "link": f"{ctx.home}/?attachment_id={post.id}", "title": {"rendered": post.title},
            "author": post.author, "comment_status": "open", "ping_status": "closed", "template": "", "meta": {},
            "description": {"rendered": f"<p class=\"attachment\">{x['description']}</p>\n"},
            "caption": {"rendered": f"<p>{x['caption']}</p>\n" if x["caption"] else ""},
            "alt_text": x["alt_text"], "media_type": "image" if x["mime_type"].startswith("image/") else "file",
            "mime_type": x["mime_type"], "post": x["parent"], "source_url": source,
            "media_details": {"width": x["width"], "height": x["height"], "file": x["file"],
                              "filesize": x["filesize"], "sizes": {}, "image_meta": {}},
        }
        if context == "edit":
            out["title"]["raw"] = post.title
            out["caption"] = {"raw": x["caption"], "rendered": out["caption"]}
            out["description"]["raw"] = x["description"]
            out["guid"]["raw"] = source
        return out

