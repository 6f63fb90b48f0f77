"""Remote channels end to end: real worker processes, Redis, the emulators over HTTP.

Failures end in a clear, specific state with the vendor's reason (visible in `syndicator status`),
and a worker killed after the remote accepted never causes a second post."""
from __future__ import annotations

import os
import random
import subprocess
import sys
from io import BytesIO

import pytest
from PIL import Image
from sqlalchemy import select

from syndicator.emulators.server import EmulatorsConfig, serve_all
from syndicator.models import Delivery, Event
from tests.conftest import write_article
from tests.support.services import REPO, wait_for

pytestmark = pytest.mark.integration

WP_PASSWORD = "abcd EFGH ijkl MNOP qrst UVWX"
WEIBO_TOKEN = "weibo-emulator-token"


@pytest.fixture
def emulators():
    running = serve_all(EmulatorsConfig())
    running.weibo.settings.safe_domains = ["127.0.0.1"]
    yield running
    running.stop()


def remote_channels(urls: dict[str, str], *, wp_password: str = WP_PASSWORD) -> dict:
    return {
        "microsite": {"type": "microsite", "title": "测试微站", "path": "m"},
        "portal": {"type": "portal", "base_url": urls["wordpress"] + "/", "username": "editor",
                   "app_password": wp_password},
        "wechat_main": {"type": "wechat", "api_base": urls["wechat"] + "/", "appid": "wx0123456789abcdef",
                        "secret": "0123456789abcdef0123456789abcdef",
                        "default_cover": str(REPO / "assets" / "wechat-default-cover.jpg")},
        "weibo_main": {"type": "weibo", "api_base": urls["weibo"] + "/", "access_token": WEIBO_TOKEN,
                       "safe_domain": "127.0.0.1", "link_base": "http://127.0.0.1:8470/m/a/"},
    }


def noisy_jpeg(path, size=(1400, 1400)) -> None:
    """A JPEG over WeChat's 1 MB inline-image limit (noise does not compress)."""
    rng = random.Random(7)
    img = Image.frombytes("RGB", size, bytes(rng.getrandbits(8) for _ in range(size[0] * size[1] * 3)))
    buf = BytesIO()
    img.save(buf, "JPEG", quality=95)
    path.write_bytes(buf.getvalue())


def status_text(system, slug: str) -> str:
    out = subprocess.run([sys.executable, "-m", "syndicator.cli", "--config", str(system.config_path), "status",
                          slug], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_failures_end_in_clear_states_with_the_vendors_reason(make_system, tmp_path, emulators):
    # Given a wrong portal password, an expired Weibo token and an article with an oversized image
    system = make_system(channels=remote_channels(emulators.urls, wp_password="wrong pass word"),
                         site={"base_url": "http://127.0.0.1:8470/"})
    emulators.weibo.expire_token(WEIBO_TOKEN)
    folder = tmp_path / "in"
    folder.mkdir()
    noisy_jpeg(folder / "big.jpg")
    assert (folder / "big.jpg").stat().st_size > 1024 * 1024
    system.worker()
    system.beat()
    # When it is published
    system.publish(write_article(folder, "bad-day", title="测试失败处理", body="正文。\n\n![大图](big.jpg)"))
    system.wait_settled(4)
    text = status_text(system, "bad-day")
    with system.rt.store.read() as s:
        rows = {d.channel: d for d in s.scalars(select(Delivery))}
    # Then each failure is specific and shows the vendor's reason; the healthy channel is delivered
    assert rows["microsite"].state == "delivered"
    assert rows["portal"].state == "failed" and "incorrect_password" in rows["portal"].last_error
    assert rows["weibo_main"].state == "failed" and "21327" in rows["weibo_main"].last_error
    assert rows["wechat_main"].state == "failed" and "1 MB" in rows["wechat_main"].last_error.replace("1MB", "1 MB")
    for channel in ("portal", "weibo_main", "wechat_main"):
        assert rows[channel].last_error in text
    # And nothing was posted where it failed
    assert emulators.ledger.effects(op="posts/create") == []
    assert emulators.ledger.effects(op="statuses/share") == []
    assert emulators.ledger.effects(op="draft/add") == []
    # And the channels with refused credentials are suspended, not retried
    assert "suspended" in rows["portal"].last_error and "suspended" in rows["weibo_main"].last_error


def test_a_rejected_body_fails_with_the_vendors_code(make_system, tmp_path, emulators):
    # Given WeChat refuses the content of the next draft (45166, e.g. a link it does not allow)
    system = make_system(channels=remote_channels(emulators.urls), site={"base_url": "http://127.0.0.1:8470/"})
    emulators.wechat.faults.force(45166, path="/cgi-bin/draft/add")
    system.worker()
    # When an article is published
    system.publish(write_article(tmp_path / "in", "rejected-body", title="内容被拒"))
    system.wait_settled(4, timeout=60)
    with system.rt.store.read() as s:
        wechat = s.scalar(select(Delivery).where(Delivery.channel == "wechat_main"))
    # Then the WeChat delivery failed with 45166 and the others were delivered
    assert wechat.state == "failed" and "45166" in wechat.last_error
    assert "45166" in status_text(system, "rejected-body")
    assert system.states() == {"delivered": 3, "failed": 1}


def test_worker_killed_after_the_remote_accepted_does_not_post_twice(make_system, tmp_path, emulators):
    # Given workers armed to die right after each remote applied a delivery (R2), one kill per channel
    system = make_system(channels=remote_channels(emulators.urls), site={"base_url": "http://127.0.0.1:8470/"},
                         worker={"concurrency": 1})
    triggers = [tmp_path / f"after_deliver-{i}.trigger" for i in range(4)]
    system.beat()
    system.publish(write_article(tmp_path / "in", "killed-once", title="崩溃重试"))
    # When, for each of the four channels in turn, a worker dies after the remote accepted
    for trigger in triggers:
        trigger.write_text("armed")
        worker = system.worker(env={"SYNDICATOR_FAULT_AFTER_DELIVER": str(trigger)}, wait_ready=False)
        wait_for(lambda: worker.proc.poll() is not None or system.states().get("delivered", 0) >= 4, 60,
                 "the armed worker to die")
        worker.kill()
    system.worker()
    system.wait_settled(4, timeout=90)
    # Then every delivery is delivered, and each remote holds exactly one post
    assert system.states() == {"delivered": 4}
    assert len(emulators.ledger.effects(op="posts/create")) == 1
    assert len(emulators.ledger.effects(op="statuses/share")) == 1
    assert len(emulators.ledger.effects(op="freepublish/submit")) == 1
    with system.rt.store.read() as s:
        lost = s.scalars(select(Event.detail).where(Event.to_state == "retry_wait")).all()
    assert sum("lease expired" in (d or "") for d in lost) >= 2


def test_token_expiry_under_load_fetches_one_token_per_expiry(make_system, tmp_path, emulators):
    # Given a worker with 8 threads and 12 articles for WeChat (R13)
    channels = {"wechat_main": remote_channels(emulators.urls)["wechat_main"]}
    system = make_system(channels=channels, site={"base_url": "http://127.0.0.1:8470/"})
    emulators.wechat.settings.publish_delay = 0.2
    system.worker()
    system.beat()
    for i in range(6):
        system.publish(write_article(tmp_path / "in", f"tok-a{i}", title=f"令牌{i}"))
    wait_for(lambda: system.states().get("delivered", 0) + system.states().get("submitted", 0) >= 6, 60,
             "first batch submitted")
    # When every token expires mid-run and 6 more articles go out at once
    emulators.wechat.expire_tokens()
    for i in range(6):
        system.publish(write_article(tmp_path / "in", f"tok-b{i}", title=f"过期{i}"))
    system.wait_settled(12, timeout=90)
    # Then all are delivered with one token fetch per expiry
    assert system.states() == {"delivered": 12}
    fetches = emulators.ledger.effects(op="stable_token") + emulators.ledger.effects(op="token")
    assert len(fetches) == 2, fetches


def test_a_channel_answering_5xx_opens_its_breaker_without_holding_back_the_others(make_system, tmp_path,
                                                                                  emulators):
    # Given Weibo answering 503 to everything (R7), and a short breaker cooldown
    from syndicator.emulators.faults import Faults

    channels = remote_channels(emulators.urls)
    system = make_system(channels={"microsite": channels["microsite"], "weibo_main": channels["weibo_main"]},
                         site={"base_url": "http://127.0.0.1:8470/"},
                         delivery={"breaker_threshold": 3, "breaker_cooldown": 1, "breaker_max_cooldown": 2,
                                   "max_attempts": 50})
    emulators.weibo.faults.set(Faults(down="503"))
    system.worker()
    system.beat()
    for i in range(6):
        system.publish(write_article(tmp_path / "in", f"r7-{i}", title=f"熔断{i}"))
    # Then the micro-site delivers everything while Weibo's breaker opens
    wait_for(lambda: len([d for d in rows_of(system) if d.channel == "microsite" and d.state == "delivered"]) == 6,
             60, "the micro-site deliveries")
    wait_for(lambda: opened(system), 60, "the breaker to open")
    assert not emulators.ledger.effects(op="statuses/share")
    # When Weibo recovers, every post goes out once after the cooldown
    emulators.weibo.faults.clear()
    system.wait_settled(12, timeout=90)
    assert system.states() == {"delivered": 12}
    assert len(emulators.ledger.effects(op="statuses/share")) == 6


def rows_of(system):
    with system.rt.store.read() as s:
        return s.scalars(select(Delivery)).all()


def opened(system) -> bool:
    with system.rt.store.read() as s:
        return s.scalar(select(Event.id).where(Event.kind == "breaker_opened")) is not None
