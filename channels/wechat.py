"""微信公众号: each article becomes a draft (`draft/add`) that is free-published (`freepublish/submit`).

Publishing is asynchronous: `deliver` returns a pending receipt holding the `publish_id`; `poll`
(`freepublish/get`) or the `PUBLISHJOBFINISH` push (`handle_callback`) reports how the job ended.
No WeChat API edits a published article (contract §1.6), so `update` applies a correction the way
the instance's `correction` setting says: "republish" deletes the published article (index 1 only —
index 0 would delete every article of the message) and publishes the corrected revision, with its
更正说明 at the top, as a new article (new article_id and URL); "notice" keeps the original and
publishes a short 「更正」 article linking to it. `retract` deletes every article the channel holds
for it (`attempt.held()`: after "notice" corrections the notices and the original), index 1 only;
an article already gone (53600, e.g. replaced by a republish) counts as deleted.

None of the create calls is idempotent. The `阅读原文` link (`content_source_url`) carries a marker
`sid=<instance>-a<article>-r<revision>` that WeChat hands back in `draft/batchget` and
`freepublish/batchget`, so a retry after an ambiguous failure finds what the last attempt left
behind instead of posting twice (contract §1.7). A correction notice carries
`sid=<instance>-a<article>-r<revision>-notice`. A republish deletes the old article before it creates
the new draft, so a reconcile that finds the new revision's marker (published or draft) knows the
delete is done and neither deletes nor publishes again.

The marker and the search for it live in `channels.wechat_markers`; WeChat's field and image limits
in `channels.wechat_limits`.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import html
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

from markupsafe import Markup
from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from channels.base import (ASSET_SCHEME, ArticleSnapshot, AssetRef, Attempt, Channel, ChannelSettings, Receipt,
                           RenderContext, Rendition, rewrite_images)
from channels.errors import (AuthInvalid, ContentRejected, DeliveryError, NotFound, OutcomeUnknown, PermanentError,
                             Unavailable)
from channels.wechat_api import WeChatAPI
from channels.wechat_events import CallbackResult, as_list, check_signature, job_outcome, read_push
from channels.wechat_html import to_wechat_html
# IMAGE_KINDS, MAX_CONTENT_BYTES, MAX_SOURCE_URL_BYTES, URL_ALLOWANCE and RECONCILE_PAGES are only
# re-exported: they were importable from this module before wechat_limits and wechat_markers were split off.
from channels.wechat_limits import (IMAGE_KINDS, MAX_AUTHOR, MAX_CONTENT_BYTES, MAX_CONTENT_CHARS,  # noqa: F401
                                    MAX_COVER_BYTES, MAX_DIGEST, MAX_IMAGE_BYTES, MAX_SOURCE_URL_BYTES, MAX_TITLE,
                                    URL_ALLOWANCE, checked_upload, content_problems, image_problems)
from channels.wechat_markers import (NOTICE_SID_SUFFIX, RECONCILE_PAGES, find_earlier, find_marked,  # noqa: F401
                                     is_notice, source_url)

#: How long the draft media_id made for a marker is remembered, for a reconcile after a lost answer.
DRAFT_NOTE_TTL = 7 * 86400
#: freepublish/delete index of our article: 1-based; 0 or omitted deletes every article of the message.
RETRACT_INDEX = 1
#: Title prefix of a correction notice article.
NOTICE_PREFIX = "「更正」"
#: Stand-in for the original article's URL in a rendered notice; deliver puts the real URL there.
ORIGINAL_URL_MARK = "wechat:original-article-url"
#: `update`'s step before draft/add: (api, content) → (content to send, receipt details).
Prepare = Callable[[WeChatAPI, str], tuple[str, dict[str, Any]]]


class WeChatChannel(Channel):
    """Publishes each article as a one-article message of a WeChat Official Account."""

    name = "wechat"
    display_name = "微信公众号"
    supports_update = True
    supports_retract = True
    reconcilable = True
    settles_async = True
    #: The default; each instance chooses with its `correction` setting (see `correction_strategy`).
    correction = "republish"
    max_title_chars = MAX_TITLE
    max_body_chars = MAX_CONTENT_CHARS
    rate_limit = "per-API daily quota (45009, resets 00:00 CST) and per-minute quota (45011)"
    requires = ("wechatpy",)

    class Settings(ChannelSettings):
        model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

        api_base: str = "https://api.weixin.qq.com/"
        appid: str = Field(min_length=1)
        secret: SecretStr
        token_mode: Literal["stable", "classic"] = "stable"
        #: Token of the callback URL (mp.weixin.qq.com → 基本配置 → 服务器配置).
        callback_token: SecretStr | None = None
        #: EncodingAESKey; set = safe mode (encrypted pushes only).
        encoding_aes_key: SecretStr | None = None
        author: str = Field("", max_length=MAX_AUTHOR)
        #: Base of the 阅读原文 link (`<source_base><slug>.html`); default the micro-site page.
        source_base: str | None = None
        need_open_comment: bool = False
        #: JPEG used as cover when an article has none; without it a coverless article is refused.
        default_cover: str | None = None
        #: How `update` applies a correction: "republish" deletes the published article and publishes
        #: the corrected one (new URL); "notice" keeps it and publishes a 「更正」 notice linking to it.
        correction: Literal["republish", "notice"] = "republish"
        timeout: float = Field(15, gt=0)

        @field_validator("api_base", "source_base")
        @classmethod
        def _http_url(cls, value: str | None) -> str | None:
            if value is not None and not re.match(r"https?://[^/\s]+", value):
                raise ValueError("must be an absolute http(s) URL")
            return value

        @model_validator(mode="after")
        def _aes_key_shape(self) -> WeChatChannel.Settings:
            # Checked here, not in a field validator, so the error never echoes the key.
            key = self.encoding_aes_key.get_secret_value() if self.encoding_aes_key else None
            if key is not None and not _valid_aes_key(key):
                raise ValueError("encoding_aes_key must be the 43-character EncodingAESKey from the MP console")
            if key is not None and self.callback_token is None:
                raise ValueError("encoding_aes_key needs callback_token as well")
            return self

    settings: WeChatChannel.Settings

    def __init__(self, instance: str, settings: ChannelSettings, ports: Any) -> None:
        super().__init__(instance, settings, ports)
        self._client_api: WeChatAPI | None = None

    def correction_strategy(self) -> str:
        return self.settings.correction

    # -- render (pure) -------------------------------------------------------------------------
    def render(self, article: ArticleSnapshot, ctx: RenderContext) -> Rendition:
        s = self.settings
        marked = rewrite_images(article.body_html, article.asset, lambda asset: ASSET_SCHEME + asset.sha256)
        body = to_wechat_html(marked.html, marked.used)
        warnings, rejected = [*marked.warnings, *body.warnings], []
        correction = None
        if article.revision > 1 or (article.correction_note or "").strip():
            revised = article.revised_at.astimezone(ctx.ports.timezone)
            correction = {"text": (article.correction_note or "").strip() or "本文内容已更正。",
                          "date": revised.strftime("%Y-%m-%d %H:%M")}
        content = ctx.ports.templates.get_template("wechat/article.html").render(
            body=Markup(body.html), correction=correction, unit=article.unit.strip())
        title, author, digest = article.title.strip(), (s.author or article.author).strip(), article.summary.strip()
        if not title:
            rejected.append("title is empty (44003)")
        if len(title) > MAX_TITLE:
            rejected.append(f"title has {len(title)} characters; WeChat allows at most {MAX_TITLE} (45003)")
        author_problems = ([f"author has {len(author)} characters; WeChat allows at most {MAX_AUTHOR} (45110)"]
                           if len(author) > MAX_AUTHOR else [])
        rejected += author_problems
        if len(digest) > MAX_DIGEST:
            rejected.append(f"digest (summary) has {len(digest)} characters; WeChat allows at most "
                            f"{MAX_DIGEST} (45004)")
        if not digest:
            warnings.append("summary is empty; WeChat shows the first 54 characters of the body as digest")
        rejected += content_problems(content, len(body.images))
        images = []
        for sha in body.images:
            rejected.extend(image_problems(marked.used[sha], "image", MAX_IMAGE_BYTES))
            images.append(_asset_json(marked.used[sha]))
        cover, cover_problems, cover_warnings = self._render_cover(article)
        rejected += cover_problems
        warnings += cover_warnings
        sid = f"{self.instance}-a{article.article_id}-r{article.revision}"
        link = (f"{s.source_base.rstrip('/')}/{article.slug}.html" if s.source_base
                else ctx.ports.public_url(f"m/a/{article.slug}.html"))
        source, source_problems = source_url(link, sid)
        rejected += source_problems
        payload = {"sid": sid, "title": title, "author": author, "digest": digest, "content": content,
                   "content_source_url": source, "need_open_comment": int(s.need_open_comment),
                   "cover": cover, "images": images, "rejected": rejected}
        if correction is not None:
            # What `update` needs for either strategy; the strategy is fixed here so that every
            # attempt of the delivery applies the correction the same way.
            payload["correction_strategy"] = s.correction
            payload["notice"] = self._render_notice(article, ctx, correction, title, author, link,
                                                    cover, cover_problems + author_problems)
            if s.correction == "notice" and payload["notice"]["rejected"]:
                warnings += [f"correction notice: {r}" for r in payload["notice"]["rejected"]]
        assets = tuple(dict.fromkeys([*body.images, *([article.cover.sha256] if article.cover else [])]))
        return Rendition(payload=payload, warnings=tuple(rejected + warnings), assets=assets)

    def _render_cover(self, article: ArticleSnapshot) -> tuple[dict[str, Any] | None, list[str], list[str]]:
        """The cover as the payload names it, what is wrong with it, and warnings."""
        if article.cover:
            return _asset_json(article.cover), image_problems(article.cover, "cover", MAX_COVER_BYTES), []
        if self.settings.default_cover:
            return {"default": True}, [], ["article has no cover; the configured default_cover is used"]
        return None, ["article has no cover image and no default_cover is configured "
                      "(WeChat news articles need one)"], []

    def _render_notice(self, article: ArticleSnapshot, ctx: RenderContext, correction: dict[str, str], title: str,
                       author: str, link: str, cover: dict[str, Any] | None, problems: list[str]) -> dict[str, Any]:
        """The 「更正」 article of the "notice" strategy, shaped like the payload `deliver` sends.

        Its content links to the original article through ORIGINAL_URL_MARK: the original's URL is
        known only to the remote, so `update` looks it up and puts it in.
        """
        room = MAX_TITLE - len(NOTICE_PREFIX)
        short = title if len(title) <= room else title[:room - 1] + "…"
        published = article.first_published_at.astimezone(ctx.ports.timezone)
        content = ctx.ports.templates.get_template("wechat/correction_notice.html").render(
            title=title, text=correction["text"], date=correction["date"],
            published=f"{published.year}年{published.month}月{published.day}日",
            original_url=Markup(ORIGINAL_URL_MARK), unit=article.unit.strip())
        digest = f"更正：{correction['text']}"
        digest = digest if len(digest) <= MAX_DIGEST else digest[:MAX_DIGEST - 1] + "…"
        sid = f"{self.instance}-a{article.article_id}-r{article.revision}{NOTICE_SID_SUFFIX}"
        source, source_problems = source_url(link, sid)
        problems = problems + source_problems + content_problems(content, 1)
        return {"sid": sid, "title": NOTICE_PREFIX + short, "author": author, "digest": digest, "content": content,
                "content_source_url": source, "need_open_comment": int(self.settings.need_open_comment),
                "cover": cover, "images": [], "rejected": list(dict.fromkeys(problems))}

    # -- deliver --------------------------------------------------------------------------------
    def deliver(self, rendition: Rendition, attempt: Attempt) -> Receipt:
        return self._publish(rendition.payload, attempt)

    def _publish(self, p: dict[str, Any], attempt: Attempt, prepare: Prepare | None = None) -> Receipt:
        """Draft + submit of payload `p`, or what an earlier attempt left behind when reconciling.

        `prepare(api, content)` runs once nothing of `p` was found remotely, after the uploads and right
        before `draft/add`: it may act remotely (delete the old article) and returns the content to send
        plus details for the receipt.
        """
        if p.get("rejected"):
            raise ContentRejected("not sent to WeChat: " + "; ".join(p["rejected"]))
        images = {m["sha256"]: checked_upload(m, attempt.media.read(m["sha256"]), "image", MAX_IMAGE_BYTES)
                  for m in p["images"]}
        cover = self._cover_bytes(p["cover"], attempt)
        api = self._api()
        media_id: str | None = None
        if attempt.reconcile:
            found = self._reconcile(api, p["sid"])
            if isinstance(found, Receipt):
                return found
            media_id = found
        reused = media_id is not None
        detail: dict[str, Any] = {}
        if media_id is None:
            urls = {sha: api.upload_image(sha, *blob) for sha, blob in images.items()}
            assets = {m["sha256"]: AssetRef(**m) for m in p["images"]}
            content = rewrite_images(p["content"], assets.get, lambda asset: urls[asset.sha256]).html
            if prepare is not None:
                api.add_cover(*cover)  # upload before prepare acts, so little can fail after it
                content, detail = prepare(api, content)
            media_id = self._add_draft(api, p, content, cover)
        try:
            result = api.call("freepublish/submit", {"media_id": media_id}, ambiguous=True)
        except ContentRejected as exc:
            if reused and exc.code == 40007:  # the draft left the box since we listed it
                raise OutcomeUnknown(f"draft for {p['sid']} vanished before it was submitted; it may have "
                                     "been published — reconcile again") from None
            raise
        publish_id = result.get("publish_id")
        if publish_id in (None, ""):
            raise OutcomeUnknown(f"freepublish/submit answered without publish_id for {p['sid']}")
        return Receipt(remote_id=str(publish_id), pending=True,
                       detail={"media_id": media_id, "sid": p["sid"], "reused_draft": reused, **detail})

    # -- update (corrections) --------------------------------------------------------------------
    def update(self, rendition: Rendition, attempt: Attempt) -> Receipt:
        """Apply a correction; `attempt.remote_id` is the article_id of the article being corrected.

        "republish": delete that article (index 1), then publish the corrected revision as a new article.
        "notice": keep it and publish the 「更正」 notice linking to it. Either way the receipt is pending
        on the new publish job, which `poll` / the callback settle with the new article_id and URL.
        """
        p = rendition.payload
        strategy = p.get("correction_strategy") or self.correction_strategy()
        if strategy == "notice":
            notice = p.get("notice")
            if not notice:
                raise ContentRejected("this rendition carries no correction notice (it was rendered from a first "
                                      "revision without a correction note)")
            return self._publish(notice, attempt,
                                 lambda api, content: self._link_original(api, notice["sid"], attempt, content))
        return self._publish(p, attempt, lambda api, content: self._delete_replaced(api, p["sid"], attempt, content))

    def _delete_replaced(self, api: WeChatAPI, sid: str, attempt: Attempt,
                         content: str) -> tuple[str, dict[str, Any]]:
        """Delete the article a republish replaces: `attempt.remote_id`, else the newest of an earlier revision."""
        old = attempt.remote_id
        if not old:
            hit = find_earlier(api, sid)
            old = str(hit[0]["article_id"]) if hit else None
        if not old:
            return content, {"replaced": None}
        try:
            api.call("freepublish/delete", {"article_id": old, "index": RETRACT_INDEX})
        except NotFound:  # 53600: already deleted (by an earlier attempt or by hand)
            return content, {"replaced": old, "already_gone": True}
        return content, {"replaced": old, "deleted_index": RETRACT_INDEX}

    def _link_original(self, api: WeChatAPI, sid: str, attempt: Attempt, content: str) -> tuple[str, dict[str, Any]]:
        """Put the original article's URL into the notice's content."""
        article_id, url = self._original(api, sid, attempt.remote_id)
        return content.replace(ORIGINAL_URL_MARK, html.escape(url)), {"original": article_id, "original_url": url}

    def _original(self, api: WeChatAPI, sid: str, remote_id: str | None) -> tuple[str, str]:
        """article_id and URL of the live article a notice corrects.

        `remote_id` unless it is gone or is itself a notice (the last delivery of a notice-mode
        correction); then the newest live article carrying an earlier revision's marker.
        """
        if remote_id:
            try:
                data = api.call("freepublish/getarticle", {"article_id": remote_id})
            except NotFound:  # 53600
                data = {}
            news = [n for n in as_list(data.get("news_item")) if isinstance(n, dict)]
            first = news[0] if news else {}
            url = str(first.get("url") or "").strip()
            source = html.unescape(str(first.get("content_source_url") or ""))
            if url and not first.get("is_deleted") and not is_notice(source):
                return remote_id, url
        hit = find_earlier(api, sid)
        if hit and str(hit[1].get("url") or "").strip():
            return str(hit[0]["article_id"]), str(hit[1]["url"]).strip()
        raise NotFound(f"the WeChat article to correct ({remote_id or 'no article_id on record'}) is gone and no "
                       "live article of an earlier revision was found: the correction notice has nothing to link to")

    def _add_draft(self, api: WeChatAPI, p: dict[str, Any], content: str,
                   cover: tuple[str, bytes, str, str]) -> str:
        article = {"article_type": "news", "title": p["title"], "author": p["author"], "digest": p["digest"],
                   "content": content, "content_source_url": p["content_source_url"],
                   "thumb_media_id": api.add_cover(*cover), "need_open_comment": p["need_open_comment"],
                   "only_fans_can_comment": 0}
        try:
            result = api.call("draft/add", {"articles": [article]}, ambiguous=True)
        except ContentRejected as exc:
            if exc.code != 40007:
                raise
            # The cached cover media_id was deleted from the material library: upload it again, once.
            article["thumb_media_id"] = api.add_cover(*cover, fresh=True)
            result = api.call("draft/add", {"articles": [article]}, ambiguous=True)
        media_id = result.get("media_id")
        if not media_id:
            raise OutcomeUnknown(f"draft/add answered without media_id for {p['sid']}")
        api.remember(f"draft:{p['sid']}", media_id, DRAFT_NOTE_TTL)
        return media_id

    def _reconcile(self, api: WeChatAPI, sid: str) -> Receipt | str | None:
        """What an earlier attempt left: the published article, a draft to submit, or nothing."""
        hit = find_marked(api, "freepublish/batchget", sid)
        if hit:
            item, news = hit
            return Receipt(remote_id=str(item["article_id"]), remote_url=news.get("url"),
                           detail={"sid": sid, "reconciled": "published"})
        noted = api.recall(f"draft:{sid}")
        if noted:
            try:
                api.call("draft/get", {"media_id": noted})
                return noted
            except ContentRejected as exc:
                if exc.code != 40007:
                    raise
            raise OutcomeUnknown(f"the draft made for {sid} was submitted, but no published article carries the "
                                 "marker yet: the publish job may still be running (or failed) — checking again later")
        hit = find_marked(api, "draft/batchget", sid)
        return str(hit[0]["media_id"]) if hit else None

    # -- poll / retract --------------------------------------------------------------------------
    def poll(self, rendition: Rendition, attempt: Attempt) -> Receipt:
        if not attempt.remote_id:
            raise NotFound("no publish_id to poll")
        data = self._api().call("freepublish/get", {"publish_id": attempt.remote_id})
        outcome = job_outcome(str(data.get("publish_id") or attempt.remote_id), data.get("publish_status"),
                              data.get("article_id"), data.get("article_detail"), data.get("fail_idx"))
        if outcome is None:
            raise Unavailable(f"freepublish/get: unexpected publish_status {data.get('publish_status')!r}")
        if isinstance(outcome, DeliveryError):
            raise outcome
        return outcome

    def retract(self, rendition: Rendition, attempt: Attempt) -> Receipt:
        """Delete every article held for this one (newest first): the original, and after "notice"
        corrections each 「更正」 notice too. Already gone (53600) counts as deleted, so a retry after a
        crash part-way through just finishes the job. The receipt lists what was deleted and what was gone."""
        api = self._api()
        held = attempt.held()
        if not held:
            hit = find_marked(api, "freepublish/batchget", rendition.payload["sid"])
            if not hit:
                raise NotFound(f"no published WeChat article carries {rendition.payload['sid']}; nothing to retract")
            held = (str(hit[0]["article_id"]),)
        deleted, gone = [], []
        for article_id in held:
            try:
                api.call("freepublish/delete", {"article_id": article_id, "index": RETRACT_INDEX})
            except NotFound:  # 53600: already deleted (by a republish, an earlier attempt or by hand)
                gone.append(article_id)
            else:
                deleted.append(article_id)
        return Receipt(remote_id=held[0], detail={"deleted": deleted, "already_gone": gone,
                                                  "deleted_index": RETRACT_INDEX})

    # -- callback (called by the core's web route) --------------------------------------------------
    def verify_url(self, query: Mapping[str, str]) -> str:
        """GET URL verification of the callback: check `signature`, return `echostr`."""
        check_signature(_reveal(self.settings.callback_token), query)
        echostr = query.get("echostr")
        if echostr is None:
            raise AuthInvalid("callback URL verification without echostr")
        return echostr

    def handle_callback(self, query: Mapping[str, str], body: bytes) -> CallbackResult:
        """A verified push: PUBLISHJOBFINISH → the job's outcome (mapped as `poll` maps it); others
        → job_id None. The reply is always `success`; bad signatures raise AuthInvalid."""
        s = self.settings
        return read_push(query, body, token=_reveal(s.callback_token), aes_key=_reveal(s.encoding_aes_key),
                         appid=s.appid)

    # -- internals ------------------------------------------------------------------------------
    def _api(self) -> WeChatAPI:
        if self._client_api is None:
            if self.ports.tokens is None:
                raise PermanentError("the WeChat channel needs the shared token cache (ports.tokens)")
            s = self.settings
            self._client_api = WeChatAPI(api_base=s.api_base, appid=s.appid, secret=s.secret.get_secret_value(),
                                         token_mode=s.token_mode, timeout=s.timeout, tokens=self.ports.tokens,
                                         clock=self.ports.clock)
        return self._client_api

    def _cover_bytes(self, cover: dict[str, Any] | None, attempt: Attempt) -> tuple[str, bytes, str, str]:
        if cover is None:
            raise ContentRejected("not sent to WeChat: article has no cover image")
        if cover.get("default"):
            path = self.ports.config_path(self.settings.default_cover or "")
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise PermanentError(f"default_cover {path} cannot be read: {exc.strerror}") from None
            meta = {"sha256": hashlib.sha256(data).hexdigest(), "mime": "image/jpeg", "filename": path.name}
        else:
            meta = cover
            data = attempt.media.read(cover["sha256"])
        blob, filename, mime = checked_upload(meta, data, "cover", MAX_COVER_BYTES)
        return meta["sha256"], blob, filename, mime


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def _asset_json(asset: AssetRef) -> dict[str, Any]:
    return {"sha256": asset.sha256, "mime": asset.mime, "filename": asset.filename, "size": asset.size}


def _valid_aes_key(key: str) -> bool:
    try:
        return len(key) == 43 and len(base64.b64decode(key + "=", validate=True)) == 32
    except (binascii.Error, ValueError):
        return False
