"""The README's quick start, as a new user runs it: `syndicator run` on the shipped config (embedded
SQLite broker, no server to install), then `syndicator publish … --wait 60 --json` in another shell."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import feedparser
import pytest
import requests
import yaml

from tests.conftest import ARTIFACTS
from tests.support.services import REPO, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser]
SYNDICATOR = str(Path(sys.executable).parent / "syndicator")


@pytest.fixture
def shipped(tmp_path):
    """The shipped config.yaml and examples, in a fresh folder, on a free port."""
    config = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    port = free_port()
    config["serve"]["port"] = port
    config["site"]["base_url"] = f"http://127.0.0.1:{port}/"
    # The sandbox emulators on free ports too, and the channels pointed at them.
    for api, channel, key in (("wechat", "wechat_main", "api_base"), ("weibo", "weibo_main", "api_base"),
                              ("wordpress", "portal", "base_url")):
        config["sandbox"][f"{api}_port"] = free_port()
        config["channels"][channel][key] = f"http://127.0.0.1:{config['sandbox'][f'{api}_port']}/"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    (tmp_path / "examples").symlink_to(REPO / "examples")
    return path


def test_run_then_publish_delivers_feed_and_page(shipped, chromium):
    # Given `syndicator run` on the shipped config
    env = {**os.environ, "SYNDICATOR_ACTOR": "editor:wang"}
    run = subprocess.Popen([SYNDICATOR, "--config", str(shipped), "run"], cwd=shipped.parent, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    try:
        wait_for(lambda: (lines.append(run.stdout.readline()) or "Press Ctrl-C" in lines[-1]
                          or run.poll() is not None), 60, "syndicator run to start")
        assert run.poll() is None, "".join(lines)
        # When an example is published from another shell and we wait for it
        article = REPO / "examples" / "articles" / "2026-winter-relief.md"
        out = subprocess.run([SYNDICATOR, "--config", str(shipped), "publish", str(article), "--wait", "60",
                              "--json"], cwd=shipped.parent, env=env, capture_output=True, text=True, timeout=90)
        # Then it exits 0 with all five channels delivered, each with a remote id and URL
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        by_channel = {d["channel"]: d for d in data["deliveries"]}
        assert {c: d["state"] for c, d in by_channel.items()} == {
            c: "delivered" for c in ("rss_main", "microsite", "portal", "wechat_main", "weibo_main")}
        assert all(d["remote_id"] and d["remote_url"] for d in by_channel.values())

        # And each emulator applied exactly one post
        sandbox = yaml.safe_load(shipped.read_text(encoding="utf-8"))["sandbox"]

        def effects(api: str, op: str) -> list:
            url = f"http://127.0.0.1:{sandbox[f'{api}_port']}/_emulator/ledger"
            return [e for e in requests.get(url, timeout=10).json()["effects"] if e["op"] == op]
        assert len(effects("wordpress", "posts/create")) == 1
        assert len(effects("weibo", "statuses/share")) == 1
        assert len(effects("wechat", "freepublish/submit")) == 1
        assert len(effects("wechat", "draft/add")) == 1
        assert by_channel["portal"]["remote_id"] == str(effects("wordpress", "posts/create")[0]["id"])

        # And the feed at its remote_url parses cleanly and holds the item
        feed_url = by_channel["rss_main"]["remote_url"]
        assert feed_url.startswith("http://127.0.0.1:")
        response = requests.get(feed_url, timeout=10)
        assert response.headers["content-type"].startswith("application/rss+xml")
        feed = feedparser.parse(response.content)
        assert feed.bozo == 0
        assert [e.title for e in feed.entries] == [data["article"]["title"]]

        # And the page at its remote_url shows the article in a real browser
        page = chromium.new_page(viewport={"width": 390, "height": 844})
        page.goto(by_channel["microsite"]["remote_url"])
        assert page.locator("h1").first.inner_text().strip() == data["article"]["title"]
        assert page.locator("img").count() >= 1
        assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "quickstart-article-phone.png"), full_page=False)
        page.close()

        # And the publisher's name is recorded as the owner of the publish
        from syndicator.config import load_config
        from syndicator.store import Store
        from sqlalchemy import select
        from syndicator.models import Event

        store = Store(load_config(shipped).db_url)
        with store.read() as s:
            assert s.scalar(select(Event.actor).where(Event.kind == "publish")) == "editor:wang"
            # And the WeChat delivery went through "submitted" and was settled by the callback
            wechat = s.execute(select(Event.from_state, Event.to_state, Event.actor).where(
                Event.delivery_id == by_channel["wechat_main"]["id"]).order_by(Event.id)).all()
        store.dispose()
        assert [(f, t) for f, t, _ in wechat] == [(None, "queued"), ("queued", "sending"),
                                                  ("sending", "submitted"), ("submitted", "delivered")]
        assert wechat[-1].actor == "wechat_main:callback"
    finally:
        # When Ctrl-C is pressed, Then everything stops cleanly
        run.send_signal(signal.SIGINT)
        rest, _ = run.communicate(timeout=60)
    assert run.returncode == 0, "".join(lines) + rest
    assert "stopped" in rest
    leftovers = subprocess.run(["pgrep", "-f", "--", f"--config {shipped}"], capture_output=True, text=True).stdout
    assert leftovers.strip() == "", "worker or beat outlived `syndicator run`"
