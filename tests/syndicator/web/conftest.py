"""A running syndicator for browser tests: `syndicator run` on the shipped config (embedded
broker, sandbox emulators), everything on free ports, with one user per role."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.services import REPO, free_port, wait_for

SYNDICATOR = str(Path(sys.executable).parent / "syndicator")
#: Password of every test user (the user is named after the role: editor, ops, admin …).
PASSWORD = "browser-test-password"


@dataclass
class RunningApp:
    url: str
    config: Path
    sandbox: dict[str, int]

    def emulator(self, api: str) -> str:
        return f"http://127.0.0.1:{self.sandbox[api]}"


@pytest.fixture(scope="module")
def running_app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app")
    config = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    port = free_port()
    config["serve"]["port"] = port
    config["site"]["base_url"] = f"http://127.0.0.1:{port}/"
    config["delivery"].update(sweep_interval=0.5, requeue_after=2, poll_interval=0.5, lease_seconds=5)
    for api, channel, key in (("wechat", "wechat_main", "api_base"), ("weibo", "weibo_main", "api_base"),
                              ("wordpress", "portal", "base_url")):
        config["sandbox"][f"{api}_port"] = free_port()
        config["channels"][channel][key] = f"http://127.0.0.1:{config['sandbox'][f'{api}_port']}/"
    config["sandbox"]["wechat_publish_delay"] = 0.5
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    (tmp / "examples").symlink_to(REPO / "examples")
    (tmp / "assets").symlink_to(REPO / "assets")
    env = {**os.environ, "SYNDICATOR_ACTOR": "test:setup"}
    for role in ("editor", "reviewer", "publisher", "ops", "admin"):
        subprocess.run([SYNDICATOR, "--config", str(path), "user", "add", role, "--role", role], input=PASSWORD + "\n",
                       text=True, check=True, capture_output=True, cwd=tmp, env=env)
    proc = subprocess.Popen([SYNDICATOR, "--config", str(path), "run"], cwd=tmp, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    wait_for(lambda: lines.append(proc.stdout.readline()) or "Press Ctrl-C" in lines[-1] or proc.poll() is not None,
             60, "syndicator run")
    assert proc.poll() is None, "".join(lines)
    yield RunningApp(f"http://127.0.0.1:{port}", path,
                     {api: config["sandbox"][f"{api}_port"] for api in ("wechat", "weibo", "wordpress")})
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def login(chromium, running_app):
    """Open a new page logged in as the given role (phone or desktop viewport)."""
    pages = []

    def open_as(role: str, viewport: dict | None = None):
        page = chromium.new_page(viewport=viewport or {"width": 1366, "height": 900})
        pages.append(page)
        page.goto(running_app.url + "/login")
        page.fill("input[name=username]", role)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_load_state()
        return page

    yield open_as
    for page in pages:
        page.close()
