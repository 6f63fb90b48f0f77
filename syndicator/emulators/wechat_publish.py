"""WeChat free-publish (``freepublish/*``), mass send and the ``PUBLISHJOBFINISH`` push.

A submitted job is ``publish_status`` 1 for ``publish_delay`` seconds, then becomes the configured
outcome (0 success, or 2/3/4 failure); deleting all its articles later makes it 5, ``ban()`` 6.
When a job finishes, the event XML of contract §1.4 is POSTed to ``callback_url`` (plaintext
signature, or AES safe/compat mode via wechatpy's ``WeChatCrypto``), with a timeout and retries,
and every attempt is recorded in the ledger as ``callback/PUBLISHJOBFINISH``.
"""
from __future__ import annotations

import collections
import hashlib
import heapq
import itertools
import logging
import queue
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import requests
import xmltodict
from wechatpy.crypto import WeChatCrypto

from .wechat_drafts import page
from .wechat_errors import WeChatError

if TYPE_CHECKING:
    from .wechat import Call, WeChatEmulator

#: FromUserName of publish events: the "mphelper" openid quoted in the official example.
MPHELPER_OPENID = "oV5CrjpxgaGXNHIQigzNlgLTnwic"
#: First publish_id handed out (the doc example's number).
FIRST_PUBLISH_ID = 2247503051
#: Concurrent callback deliveries (each may wait callback_timeout × callback_tries).
PUSH_WORKERS = 16

log = logging.getLogger(__name__)


class Scheduler:
    """One daemon thread running due calls in time order (a Timer thread per job would not scale)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Any, tuple[Any, ...]]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def call_later(self, delay: float, fn: Any, *args: Any) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), fn, args))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="wechat-publish", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, fn, args = heapq.heappop(self._heap)
            _run_logged(fn, args)


class Workers:
    """Daemon threads draining a queue (unlike ThreadPoolExecutor they never delay interpreter exit)."""

    def __init__(self, count: int, name: str) -> None:
        self._queue: queue.Queue[tuple[Any, tuple[Any, ...]]] = queue.Queue()
        self._count, self._name = count, name
        self._started = False
        self._lock = threading.Lock()

    def submit(self, fn: Any, *args: Any) -> None:
        with self._lock:
            if not self._started:
                for i in range(self._count):
                    threading.Thread(target=self._run, name=f"{self._name}-{i}", daemon=True).start()
                self._started = True
        self._queue.put((fn, args))

    def _run(self) -> None:
        while True:
            fn, args = self._queue.get()
            _run_logged(fn, args)


def _run_logged(fn: Any, args: tuple[Any, ...]) -> None:
    try:
        fn(*args)
    except Exception:  # a background step must not kill its thread
        log.exception("emulator background task %r failed", fn)


@dataclass
class PublishJob:
    publish_id: str
    msg_data_id: str
    articles: list[dict[str, Any]]
    due: float
    outcome: int
    fail_idx: list[int]
    status: int = 1
    article_id: str | None = None
    urls: list[str] = field(default_factory=list)
    deleted: set[int] = field(default_factory=set)
    create_time: int = 0
    update_time: int = 0


class Publisher:
    """``freepublish/*`` and ``message/mass/sendall`` state plus callback delivery."""

    def __init__(self, emu: "WeChatEmulator") -> None:
        self.emu = emu
        self.scheduler = Scheduler()
        self.pushers = Workers(PUSH_WORKERS, "wechat-callback")
        self.reset()

    def reset(self) -> None:
        self.jobs: dict[str, PublishJob] = {}
        self.by_article: dict[str, PublishJob] = {}
        self.mass: dict[str, dict[str, Any]] = {}
        #: Outcomes for the next submits (``next_outcome``), before ``settings.publish_outcome``.
        self.outcomes: collections.deque[tuple[int, list[int]]] = collections.deque()
        self.pending: set[str] = set()
        self._ids = itertools.count(FIRST_PUBLISH_ID)

    def endpoints(self) -> dict[str, tuple[str, Any]]:
        return {"freepublish/submit": ("POST", self.submit), "freepublish/get": ("POST", self.get),
                "freepublish/getarticle": ("POST", self.getarticle),
                "freepublish/batchget": ("POST", self.batchget), "freepublish/delete": ("POST", self.delete),
                "message/mass/sendall": ("POST", self.sendall)}

    # -- state machine ----------------------------------------------------------------------
    def submit(self, call: "Call") -> dict[str, Any]:
        draft = self.emu.drafts.take(call.json().get("media_id"))
        s = self.emu.settings
        outcome, fail_idx = self.outcomes.popleft() if self.outcomes else (s.publish_outcome, list(s.publish_fail_idx))
        now = int(self.emu.clock.now())
        publish_id = next(self._ids)
        job = PublishJob(str(publish_id), str(publish_id + 10**9), draft.articles,
                         time.monotonic() + s.publish_delay, outcome, fail_idx, create_time=now, update_time=now)
        self.jobs[job.publish_id] = job
        self.pending.add(job.publish_id)
        self.emu.record("freepublish/submit", id=job.publish_id,
                        body={"media_id": draft.media_id, "articles": draft.articles})
        self.scheduler.call_later(s.publish_delay, self.finish, job.publish_id)
        return {"errcode": 0, "errmsg": "ok", "publish_id": job.publish_id, "msg_data_id": job.msg_data_id}

    def finish(self, publish_id: str) -> None:
        """Move a due job from 1 to its outcome and push the event (scheduler thread or lazily)."""
        with self.emu.lock:
            job = self.jobs.get(publish_id)
            if job is None or job.status != 1 or time.monotonic() < job.due:
                return
            self.pending.discard(publish_id)
            job.status = job.outcome
            job.update_time = int(self.emu.clock.now())
            if job.status == 0:
                job.article_id = secrets.token_urlsafe(32)
                job.urls = [f"http://mp.weixin.qq.com/s/{secrets.token_urlsafe(16)}" for _ in job.articles]
                self.by_article[job.article_id] = job
            self.emu.record("freepublish/finish", id=job.publish_id,
                            body={"publish_status": job.status, "article_id": job.article_id,
                                  "article_urls": job.urls, "fail_idx": job.fail_idx if job.status in (2, 4) else []})
            xml = event_xml(self.emu, job)
        if self.emu.settings.callback_url:
            self.pushers.submit(self.push, job.publish_id, xml)

    def _due(self) -> None:
        for publish_id in list(self.pending):
            self.finish(publish_id)

    def ban(self, publish_id: str) -> None:
        """The platform bans every article of a published job (status 6)."""
        with self.emu.lock:
            job = self.jobs[publish_id]
            job.status = 6
            self.emu.record("freepublish/ban", id=publish_id)

    # -- endpoints --------------------------------------------------------------------------
    def get(self, call: "Call") -> dict[str, Any]:
        self._due()
        job = self.jobs.get(str(call.json().get("publish_id")))
        if job is None:
            raise WeChatError(40097, hint="publish_id")
        out: dict[str, Any] = {"publish_id": job.publish_id, "publish_status": job.status}
        if job.status == 0:
            out["article_id"] = job.article_id
            out["article_detail"] = {"count": len(job.urls), "item": [
                {"idx": i + 1, "article_url": u} for i, u in enumerate(job.urls)]}
        out["fail_idx"] = job.fail_idx if job.status in (2, 4) else []
        return out

    def _items(self, job: PublishJob, no_content: bool = False) -> list[dict[str, Any]]:
        items = self.emu.drafts.news_items(job.articles, no_content)
        for i, item in enumerate(items):
            item.update(url=job.urls[i], is_deleted=(i + 1) in job.deleted)
        return items

    def getarticle(self, call: "Call") -> dict[str, Any]:
        self._due()
        job = self.by_article.get(call.json().get("article_id"))
        if job is None:
            raise WeChatError(53600)
        return {"news_item": self._items(job)}

    def batchget(self, call: "Call") -> dict[str, Any]:
        self._due()
        offset, count, no_content = page(call.json())
        live = [j for j in self.by_article.values() if j.status == 0]
        live.sort(key=lambda j: (j.update_time, int(j.publish_id)), reverse=True)
        items = [{"article_id": j.article_id,
                  "content": {"news_item": self._items(j, no_content), "create_time": j.create_time,
                              "update_time": j.update_time},
                  "update_time": j.update_time} for j in live[offset:offset + count]]
        return {"total_count": len(live), "item_count": len(items), "item": items}

    def delete(self, call: "Call") -> dict[str, Any]:
        data = call.json()
        job = self.by_article.get(data.get("article_id"))
        if job is None or job.status != 0:
            raise WeChatError(53600)
        index = data.get("index") or 0
        if not isinstance(index, int) or not 0 <= index <= len(job.articles):
            raise WeChatError(40114)
        targets = set(range(1, len(job.articles) + 1)) if index == 0 else {index}
        if targets <= job.deleted:
            raise WeChatError(53600)
        job.deleted |= targets
        if len(job.deleted) == len(job.articles):
            job.status = 5
        self.emu.record("freepublish/delete", id=job.article_id,
                        body={"index": index, "publish_id": job.publish_id, "publish_status": job.status})
        return {"errcode": 0, "errmsg": "ok"}

    def sendall(self, call: "Call") -> dict[str, Any]:
        data = call.json()
        client_id = data.get("clientmsgid")
        if isinstance(client_id, str) and len(client_id.encode()) > 64:
            raise WeChatError(40097, hint="clientmsgid")
        if client_id and client_id in self.mass:
            raise WeChatError(45065, msg_id=self.mass[client_id]["msg_id"])
        if data.get("msgtype") != "mpnews":
            raise WeChatError(40008)
        draft = self.emu.drafts.take((data.get("mpnews") or {}).get("media_id"))
        sent = {"msg_id": 1000000000 + len(self.mass) + 1, "msg_data_id": 2247483000 + len(self.mass) + 1}
        if client_id:
            self.mass[client_id] = sent
        self.emu.record("message/mass/sendall", id=sent["msg_id"],
                        body={"media_id": draft.media_id, "clientmsgid": client_id, "filter": data.get("filter")})
        return {"errcode": 0, "errmsg": "send job submission success", **sent}

    # -- callback ---------------------------------------------------------------------------
    def push(self, publish_id: str, xml: str) -> None:
        """Deliver one event: up to ``callback_tries`` POSTs until ``success`` or an empty body."""
        s = self.emu.settings
        for attempt in range(1, s.callback_tries + 1):
            params, body = signed_request(self.emu, xml)
            outcome: dict[str, Any] = {"attempt": attempt, "mode": s.callback_mode}
            try:
                resp = requests.post(s.callback_url, params=params, data=body.encode("utf-8"),
                                     headers={"Content-Type": "text/xml"}, timeout=s.callback_timeout)
                outcome.update(status=resp.status_code, reply=resp.text[:200],
                               ok=resp.status_code == 200 and resp.text.strip() in ("", "success"))
            except requests.RequestException as exc:
                outcome.update(ok=False, error=type(exc).__name__)
            self.emu.record("callback/PUBLISHJOBFINISH", id=publish_id, body=xml, **outcome)
            if outcome["ok"] or self.emu.stopping.is_set():
                return
            time.sleep(s.callback_retry_delay)


def event_xml(emu: "WeChatEmulator", job: PublishJob) -> str:
    """The PUBLISHJOBFINISH event exactly as documented (contract §1.4)."""
    info = f"<publish_id>{job.publish_id}</publish_id><publish_status>{job.status}</publish_status>"
    if job.status == 0:
        items = "".join(f"<item><idx>{i + 1}</idx><article_url><![CDATA[{u}]]></article_url></item>"
                        for i, u in enumerate(job.urls))
        info += (f"<article_id><![CDATA[{job.article_id}]]></article_id>"
                 f"<article_detail><count>{len(job.urls)}</count>{items}</article_detail>")
    elif job.status in (2, 4):
        info += "".join(f"<fail_idx>{i}</fail_idx>" for i in job.fail_idx)
    return (f"<xml><ToUserName><![CDATA[{emu.settings.original_id}]]></ToUserName>"
            f"<FromUserName><![CDATA[{MPHELPER_OPENID}]]></FromUserName>"
            f"<CreateTime>{int(emu.clock.now())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[PUBLISHJOBFINISH]]></Event><PublishEventInfo>{info}</PublishEventInfo></xml>")


def signed_request(emu: "WeChatEmulator", xml: str) -> tuple[dict[str, str], str]:
    """Query parameters and body of one push in the configured mode."""
    s = emu.settings
    timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**10))
    signature = hashlib.sha1("".join(sorted([s.callback_token, timestamp, nonce])).encode()).hexdigest()
    params = {"signature": signature, "timestamp": timestamp, "nonce": nonce, "openid": MPHELPER_OPENID}
    if s.callback_mode == "plain":
        return params, xml
    crypto = WeChatCrypto(s.callback_token, s.encoding_aes_key, s.appid)
    reply = xmltodict.parse(crypto.encrypt_message(xml, nonce, timestamp))["xml"]
    params.update(encrypt_type="aes", msg_signature=reply["MsgSignature"])
    encrypt = f"<Encrypt><![CDATA[{reply['Encrypt']}]]></Encrypt>"
    if s.callback_mode == "compat":
        return params, xml.replace("</xml>", encrypt + "</xml>")
    return params, f"<xml><ToUserName><![CDATA[{s.original_id}]]></ToUserName>{encrypt}</xml>"
