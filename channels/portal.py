"""The portal CMS: one WordPress post per article over the REST API (contract §3), or a signed
JSON webhook for portals that are not WordPress.

WordPress mode (``mode: wordpress``)
    REST base ``<base_url>/wp-json/wp/v2/`` or, with ``rest_route: true`` (plain permalinks),
    ``<base_url>/?rest_route=/wp/v2/…``; HTTP Basic with an Application Password (which WordPress
    honours only over HTTPS or with ``WP_ENVIRONMENT_TYPE=local``). Images are uploaded once per
    site: each upload is remembered by content hash in the shared token cache (``ports.tokens``,
    under a per-hash lock) and checked with ``GET media/<id>`` before reuse — the emulator has no
    ``GET media?slug=`` collection to look them up remotely. The post slug ``<slug_prefix><id>`` is
    the idempotency key: an attempt after an unknown outcome first looks the slug up and updates
    the post it finds instead of creating a second one. Update is ``POST posts/<id>`` in place
    (editorial status untouched); retract is ``DELETE posts/<id>`` (trash, or ``force=true``).

Generic mode (``mode: generic``) — the protocol a non-WordPress portal implements::

    POST   <endpoint>              publish   + Idempotency-Key: <slug>
    PUT    <endpoint>/<remote_id>  update
    DELETE <endpoint>/<remote_id>  retract   (empty body; 2xx, 404 and 410 all mean "gone")

    Content-Type: application/json; charset=utf-8
    X-Syndicator-Delivery: <delivery id>
    X-Syndicator-Signature: sha256=<hex HMAC-SHA256 of the raw body bytes, key hmac_secret>

    body: {"slug", "article_id", "revision", "title", "content", "excerpt", "status", "date_gmt",
           "cover": <sha256>|null, "media": [{"sha256", "mime", "filename", "size", "width",
           "height", "data": <base64>}]}
    answer: 2xx {"id": …, "url": …}

Images stay in ``content`` as ``<img src="asset:<sha256>">`` for the receiver to store and rewrite.
A repeated POST with the same Idempotency-Key must answer with the item created first: that is
how the retry after an unknown outcome avoids a duplicate. Errors map by HTTP status as in
WordPress mode; ``{"code", "message"}`` in an error body is shown to ops.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Literal, NoReturn

import requests
from pydantic import Field, SecretStr, field_validator, model_validator
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from channels.base import (ASSET_SCHEME, ArticleSnapshot, AssetRef, Attempt, Channel, ChannelSettings,
                           MediaSource, Ports, Receipt, RenderContext, Rendition, rewrite_images)
from channels.errors import (AuthInvalid, ContentRejected, DeliveryError, NotFound, OutcomeUnknown,
                             RateLimited, Unavailable)

log = logging.getLogger(__name__)

_URL = re.compile(r"^https?://[^/\s?#@]+(/[^\s?#]*)?$")
#: 401 codes that mean the credentials themselves are wrong (any other 401 means they were ignored).
BAD_CREDENTIALS = {"incorrect_password", "invalid_username", "invalid_email", "rest_not_logged_in"}
#: Upload refusals that no retry can fix: the image itself must change.
UPLOAD_REJECTED = {"rest_upload_file_too_big", "rest_upload_limited_space", "rest_upload_user_quota_exceeded",
                   "rest_upload_sideload_error", "rest_upload_no_data"}
#: How long an uploaded image's id is remembered (it is re-checked before every reuse anyway).
MEDIA_TTL = 30 * 86400
#: Wait when a 429 carries no usable Retry-After.
DEFAULT_RETRY_AFTER = 60.0
CREDENTIALS_IGNORED = ("WordPress ignored the credentials: Application Passwords are unavailable (the site is "
                       "not served over HTTPS and WP_ENVIRONMENT_TYPE is not 'local') or the web server strips "
                       "the Authorization header (Apache: CGIPassAuth On)")
NO_ROUTE = "no REST route here: wrong base_url or permalinks; try rest_route: true"


class PortalChannel(Channel):
    """Publishes each article as one post on the provincial portal (WordPress or a signed webhook)."""

    name = "portal"
    display_name = "门户网站"
    supports_update = True
    supports_retract = True
    reconcilable = True

    class Settings(ChannelSettings):
        mode: Literal["wordpress", "generic"] = "wordpress"
        #: The WordPress site, e.g. https://www.example.gov.cn (credentials never go in the URL).
        base_url: str | None = None
        #: Plain permalinks: reach the API as /?rest_route=/wp/v2/… instead of /wp-json/wp/v2/….
        rest_route: bool = False
        username: str | None = None
        app_password: SecretStr | None = None
        status: Literal["publish", "draft", "pending"] = "publish"
        delete: Literal["trash", "force"] = "trash"
        timeout: float = Field(15, gt=0, le=300)
        slug_prefix: str = Field("s-", pattern=r"^[a-z][a-z0-9-]*$")
        #: Generic mode: the receiver's collection URL and the key that signs every body.
        endpoint: str | None = None
        hmac_secret: SecretStr | None = None

        @field_validator("base_url", "endpoint")
        @classmethod
        def _http_url(cls, value: str | None) -> str | None:
            if value is not None and not _URL.match(value):
                raise ValueError("must be an http(s) URL without credentials, query or fragment")
            return value.rstrip("/") if value else value

        @model_validator(mode="after")
        def _mode_needs(self) -> PortalChannel.Settings:
            needed = (("base_url", "username", "app_password") if self.mode == "wordpress"
                      else ("endpoint", "hmac_secret"))
            values = {k: getattr(self, k) for k in needed}
            missing = [k for k, v in values.items()
                       if not (v.get_secret_value() if isinstance(v, SecretStr) else v)]
            if missing:
                raise ValueError(f"mode {self.mode!r} needs {', '.join(missing)}")
            return self

    settings: PortalChannel.Settings

    def __init__(self, instance: str, settings: ChannelSettings, ports: Ports) -> None:
        super().__init__(instance, settings, ports)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "syndicator-portal/1"
        s = self.settings
        if s.mode == "wordpress":
            self.session.auth = (s.username, s.app_password.get_secret_value())  # type: ignore[union-attr]
        site = s.base_url if s.mode == "wordpress" else s.endpoint
        self._media_prefix = f"portal:media:{hashlib.sha256(str(site).encode()).hexdigest()[:16]}:"
        self._cache = ports.tokens if ports.tokens is not None else _LocalCache()

    # -- render (pure) ------------------------------------------------------------------------

    def render(self, article: ArticleSnapshot, ctx: RenderContext) -> Rendition:
        # Stored images stay markers (lower-cased) until deliver knows their URLs on the site.
        images = rewrite_images(article.body_html, article.asset, lambda asset: ASSET_SCHEME + asset.sha256)
        content, media, warnings = images.html, dict(images.used), list(images.warnings)
        if article.revision > 1:
            if article.correction_note:
                note = html.escape(article.correction_note.strip(), quote=False)
                content = f'<p class="correction"><strong>更正说明：</strong>{note}</p>' + content
            else:
                warnings.append(f"revision {article.revision} has no correction note; readers see no notice")
        if article.cover:
            media.setdefault(article.cover.sha256, article.cover)
        title = article.title.strip()
        if not title:
            title = article.slug
            warnings.append("title is empty; the portal shows the article slug")
        excerpt = article.summary.strip()
        if not excerpt:
            warnings.append("summary is empty; WordPress generates the excerpt from the body")
        published = article.first_published_at
        published = published if published.tzinfo else published.replace(tzinfo=timezone.utc)
        payload = {
            "slug": f"{self.settings.slug_prefix}{article.article_id}",
            "article_id": article.article_id,
            "revision": article.revision,
            "title": title,
            "content": content,
            "excerpt": excerpt,
            "status": self.settings.status,
            # WordPress reads date_gmt as naive UTC.
            "date_gmt": published.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
            "cover": article.cover.sha256 if article.cover else None,
            "media": [asdict(a) for a in media.values()],
        }
        return Rendition(payload=payload, warnings=tuple(warnings), assets=tuple(media))

    # -- operations ---------------------------------------------------------------------------

    def deliver(self, rendition: Rendition, attempt: Attempt) -> Receipt:
        if self.settings.mode == "generic":
            return self._generic_send("POST", rendition, attempt)
        p = rendition.payload
        found = self._find_post(p["slug"]) if attempt.reconcile else None
        fields = self._post_fields(p, attempt.media, with_status=True)
        if found is not None:
            log.warning("portal post already exists; updating it instead of creating another",
                        extra={"delivery_id": attempt.delivery_id, "post_id": found["id"], "slug": p["slug"]})
            post = self._call("POST", f"posts/{found['id']}", json_body=fields)
        else:
            post = self._call("POST", "posts", json_body=fields, creating=True)
        return self._post_receipt(post, reconciled=found is not None)

    def update(self, rendition: Rendition, attempt: Attempt) -> Receipt:
        """Rewrite the post in place: same id and URL, `modified` bumps, status left to the editors."""
        if self.settings.mode == "generic":
            return self._generic_send("PUT", rendition, attempt)
        post_id = attempt.remote_id or self._id_by_slug(rendition.payload["slug"])
        if post_id is None:
            raise NotFound(f"portal {self.instance}: no post with slug {rendition.payload['slug']!r} to update")
        fields = self._post_fields(rendition.payload, attempt.media, with_status=False)
        return self._post_receipt(self._call("POST", f"posts/{post_id}", json_body=fields))

    def retract(self, rendition: Rendition, attempt: Attempt) -> Receipt:
        """Trash (or with `delete: force`, delete) the post; a post already gone counts as done."""
        if self.settings.mode == "generic":
            return self._generic_send("DELETE", rendition, attempt)
        post_id = attempt.remote_id or self._id_by_slug(rendition.payload["slug"])
        if post_id is None:  # never created, or already in the trash (lookups exclude it)
            return Receipt(remote_id=rendition.payload["slug"], detail={"result": "absent"})
        force = self.settings.delete == "force"
        try:
            self._call("DELETE", f"posts/{post_id}", params={"force": "true"} if force else None)
        except NotFound as exc:
            if exc.code not in ("rest_already_trashed", "rest_post_invalid_id"):
                raise
            return Receipt(remote_id=str(post_id), detail={"result": "already gone", "code": exc.code})
        return Receipt(remote_id=str(post_id), detail={"result": "deleted" if force else "trashed"})

    # -- WordPress ----------------------------------------------------------------------------

    def _url(self, route: str) -> str:
        base = self.settings.base_url
        return f"{base}/?rest_route=/wp/v2/{route}" if self.settings.rest_route else f"{base}/wp-json/wp/v2/{route}"

    def _call(self, method: str, route: str, *, params: dict[str, Any] | None = None, json_body: Any = None,
              data: bytes | None = None, headers: dict[str, str] | None = None, creating: bool = False,
              image: AssetRef | None = None) -> Any:
        """One REST call; returns the decoded JSON or raises the classified error."""
        what = f"{method} /wp/v2/{route}"
        if json_body is not None:
            data = json.dumps(json_body, ensure_ascii=False).encode()
            headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        resp = self._send(method, self._url(route), what, creating, params=params, data=data, headers=headers)
        if resp.status_code >= 300:
            self._raise(what, resp, creating=creating, image=image)
        try:
            return resp.json()
        except ValueError:
            raise AuthInvalid(f"portal {self.instance}: {what} answered HTTP {resp.status_code} with "
                              f"{_snippet(resp.text)!r}, not JSON: is base_url the WordPress site? "
                              f"{NO_ROUTE}") from None

    def _send(self, method: str, url: str, what: str, creating: bool, **kw: Any) -> requests.Response:
        try:
            return self.session.request(method, url, timeout=self.settings.timeout, allow_redirects=False, **kw)
        except requests.RequestException as exc:
            kind = f"no answer within {self.settings.timeout:g}s" if isinstance(exc, requests.Timeout) \
                else f"{type(exc).__name__}: {exc}"
            if creating and not _never_sent(exc):
                raise OutcomeUnknown(f"portal {self.instance}: {what}: {kind} after the request was sent; it may "
                                     "have been applied — the next attempt looks the slug up first") from exc
            raise Unavailable(f"portal {self.instance}: {what}: {kind}") from exc

    def _raise(self, what: str, resp: requests.Response, *, creating: bool, image: AssetRef | None) -> NoReturn:
        raise _classify(f"portal {self.instance}: {what}", resp, creating=creating, image=image,
                        wordpress=self.settings.mode == "wordpress", now=self.ports.clock())

    def _find_post(self, slug: str) -> dict[str, Any] | None:
        """The live (non-trashed) post carrying our slug, seen with the editor's rights."""
        found = self._call("GET", "posts", params={"slug": slug, "status": "any", "context": "edit",
                                                   "per_page": 100})
        matches = sorted((p for p in found if isinstance(p, dict) and p.get("slug") == slug), key=lambda p: p["id"])
        return matches[0] if matches else None

    def _id_by_slug(self, slug: str) -> str | None:
        found = self._find_post(slug)
        return str(found["id"]) if found else None

    def _post_fields(self, p: dict[str, Any], source: MediaSource, with_status: bool) -> dict[str, Any]:
        assets = {m["sha256"]: AssetRef(**m) for m in p["media"]}
        uploaded = {sha: self._ensure_media(asset, source) for sha, asset in assets.items()}
        content = rewrite_images(p["content"], assets.get, lambda asset: uploaded[asset.sha256]["source_url"]).html
        fields = {"title": p["title"], "content": content, "excerpt": p["excerpt"],
                  "slug": p["slug"], "date_gmt": p["date_gmt"],
                  "featured_media": uploaded[p["cover"]]["id"] if p.get("cover") else 0}
        if with_status:
            fields["status"] = p["status"]
        return fields

    def _ensure_media(self, asset: AssetRef, source: MediaSource) -> dict[str, Any]:
        """The site's attachment for these bytes: reused while it still exists, else uploaded once."""
        key = self._media_prefix + asset.sha256
        with self._locked(key):
            cached = self._cache_op("read", self._cache.get, key)
            if cached:
                try:
                    current = self._call("GET", f"media/{json.loads(cached)['id']}")
                    return {"id": current["id"], "source_url": current["source_url"]}
                except NotFound:
                    log.info("cached portal media is gone; uploading again", extra={"sha256": asset.sha256})
            try:
                data = source.read(asset.sha256)
            except LookupError as exc:
                raise ContentRejected(f"portal {self.instance}: image {asset.filename} is not stored: "
                                      f"{exc}") from exc
            name = f"syn-{asset.sha256[:32]}{asset.ext}"  # ASCII and deterministic (it becomes the slug)
            uploaded = self._call("POST", "media", data=data, image=asset, headers={
                "Content-Type": asset.mime, "Content-Disposition": f'attachment; filename="{name}"',
                "Content-MD5": hashlib.md5(data).hexdigest()},
                params={"title": asset.filename.rsplit(".", 1)[0] or name})
            entry = {"id": uploaded["id"], "source_url": uploaded["source_url"]}
            try:
                self._cache.set(key, json.dumps(entry), MEDIA_TTL)
            except Exception:  # the upload stands; at worst the next article uploads the image again
                log.warning("portal media uploaded but not cached", exc_info=True, extra={"sha256": asset.sha256})
            log.info("portal media uploaded", extra={"sha256": asset.sha256, "media_id": entry["id"]})
            return entry

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """Hold the shared per-image lock, so two workers never upload the same bytes."""
        with ExitStack() as stack:
            self._cache_op("lock", stack.enter_context, self._cache.lock(key, timeout=self.settings.timeout + 5))
            yield

    def _cache_op(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # lock timeout, cache server down: nothing was sent yet
            raise Unavailable(f"portal {self.instance}: media cache {what} failed: "
                              f"{type(exc).__name__}: {exc}") from exc

    def _post_receipt(self, post: dict[str, Any], reconciled: bool = False) -> Receipt:
        return Receipt(remote_id=str(post["id"]), remote_url=post.get("link"),
                       detail={"status": post.get("status"), "featured_media": post.get("featured_media"),
                               **({"reconciled": True} if reconciled else {})})

    # -- generic webhook ----------------------------------------------------------------------

    def _generic_send(self, method: str, rendition: Rendition, attempt: Attempt) -> Receipt:
        s, p = self.settings, rendition.payload
        url = s.endpoint
        body = b""
        headers = {"X-Syndicator-Delivery": str(attempt.delivery_id)}
        if method == "POST":
            headers["Idempotency-Key"] = p["slug"]
        else:
            if not attempt.remote_id:
                raise NotFound(f"portal {self.instance}: no remote id known for {p['slug']!r}; nothing to "
                               f"{'update' if method == 'PUT' else 'retract'}")
            url = f"{url}/{attempt.remote_id}"
        if method != "DELETE":
            media = []
            for m in p["media"]:
                try:
                    data = attempt.media.read(m["sha256"])
                except LookupError as exc:
                    raise ContentRejected(f"portal {self.instance}: image {m['filename']} is not stored") from exc
                media.append({**m, "data": base64.b64encode(data).decode()})
            body = json.dumps({**p, "media": media}, ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json; charset=utf-8"
        secret = s.hmac_secret.get_secret_value().encode()  # type: ignore[union-attr]
        headers["X-Syndicator-Signature"] = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        what = f"{method} {url}"
        resp = self._send(method, url, what, method == "POST", data=body, headers=headers)
        if method == "DELETE" and resp.status_code in (404, 410):
            return Receipt(remote_id=str(attempt.remote_id), detail={"result": "already gone"})
        if resp.status_code >= 300:
            self._raise(what, resp, creating=method == "POST", image=None)
        if method == "DELETE":
            return Receipt(remote_id=str(attempt.remote_id), detail={"result": "deleted"})
        try:
            answer = resp.json()
            return Receipt(remote_id=str(answer["id"]), remote_url=answer.get("url"))
        except (ValueError, KeyError, TypeError):
            error = OutcomeUnknown if method == "POST" else Unavailable
            raise error(f"portal {self.instance}: {what} answered HTTP {resp.status_code} without a JSON id: "
                        f"{_snippet(resp.text)!r}") from None


def _classify(where: str, resp: requests.Response, *, creating: bool, image: AssetRef | None,
              wordpress: bool, now: datetime) -> DeliveryError:
    """Contract §3.3: the vendor's answer → one error of the tree, with its code and message."""
    status = resp.status_code
    code, message, data = _vendor(resp)
    said = f"{where} answered HTTP {status}" + (f" {code}" if code else "") + f": {message}"
    picture = (f"image {image.filename} ({image.size} bytes, sha256 {image.sha256[:12]}…) rejected by the "
               "portal") if image else ""
    if 300 <= status < 400:
        return AuthInvalid(f"{said}; redirected to {resp.headers.get('Location')!r}: set base_url to the final "
                           "https address (a redirect would drop the credentials or turn POST into GET)", code=code)
    if status == 429:
        return RateLimited(said, retry_after=_retry_after(resp.headers.get("Retry-After"), now), code=code)
    if wordpress and status == 404 and code in (None, "rest_no_route"):
        return AuthInvalid(f"{said} — {NO_ROUTE}", code=code)
    if not wordpress and status == 404 and creating:
        return AuthInvalid(f"{said} — check the endpoint URL", code=code)
    if image and (status == 413 or code in UPLOAD_REJECTED):
        return ContentRejected(f"{picture}: {said}", code=code)
    if status == 413:
        return ContentRejected(f"{said} — the request is larger than the portal accepts", code=code)
    if status == 401:
        if wordpress and code not in BAD_CREDENTIALS:
            return AuthInvalid(f"{said} — {CREDENTIALS_IGNORED}", code=code)
        return AuthInvalid(f"{said} — check the {'username and app_password' if wordpress else 'hmac_secret'}",
                           code=code)
    if status == 403:
        return AuthInvalid(f"{said} — the portal user lacks this permission", code=code)
    # An anonymous `status=any` lookup: "Status is forbidden." (WordPress answers 400 here, not 401).
    forbidden_status = "forbidden" in str((data.get("params") or {}).get("status", ""))
    if wordpress and code == "rest_invalid_param" and forbidden_status:
        return AuthInvalid(f"{said} — {CREDENTIALS_IGNORED}", code=code)
    if status == 412:
        return Unavailable(f"{said} (upload damaged in transit; it is sent again)", code=code)
    if code == "rest_trash_not_supported":
        return AuthInvalid(f"{said} — the site has no trash (EMPTY_TRASH_DAYS = 0); set delete: force", code=code)
    if status in (404, 410):
        return NotFound(said, code=code)
    if 400 <= status < 500:
        return ContentRejected(said, code=code)
    if creating and code != "db_insert_error":
        # A proxy's 502/504 or a PHP fatal after the insert: the post may exist.
        return OutcomeUnknown(f"{said}; it may have been applied — the next attempt looks the slug up first",
                              code=code)
    return Unavailable(said, code=code)


def _vendor(resp: requests.Response) -> tuple[str | None, str, dict[str, Any]]:
    """(code, message, data) from a JSON error body, or the gist of an HTML page."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and (body.get("code") or body.get("message") or body.get("error")):
        code = body.get("code") or (body.get("error") if isinstance(body.get("error"), str) else None)
        message = body.get("message") or body.get("error_description") or body.get("detail") or ""
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        return (str(code) if code else None), _snippet(str(message)), data
    return None, _snippet(resp.text) or (resp.reason or ""), {}


def _snippet(text: str, limit: int = 200) -> str:
    plain = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())
    return plain if len(plain) <= limit else plain[:limit] + "…"


def _retry_after(value: str | None, now: datetime) -> float:
    """Retry-After as seconds (delta or HTTP date), else the default."""
    if not value:
        return DEFAULT_RETRY_AFTER
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max((parsedate_to_datetime(value) - now).total_seconds(), 0.0)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request provably never left: no connection could be made."""
    if isinstance(exc, (requests.ConnectTimeout, requests.exceptions.InvalidURL,
                        requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema)):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


class _LocalCache:
    """Stands in for the shared token cache when none is injected: dedupes within this process only
    (entries never expire here; each is re-checked on the site before reuse anyway)."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._lock = threading.RLock()

    def get(self, key: str) -> str | None:
        return self._values.get(key)

    def set(self, key: str, value: str, ttl: float) -> None:
        self._values[key] = value

    def lock(self, key: str, timeout: float = 15) -> threading.RLock:
        return self._lock
