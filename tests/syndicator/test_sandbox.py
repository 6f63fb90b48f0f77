"""`syndicator sandbox` serves the three emulators, configured from the channels that use them."""
from __future__ import annotations

import signal
import subprocess
import sys

import requests
import yaml

from syndicator.config import load_config
from syndicator.sandbox import emulators_config
from tests.support.services import REPO, free_port, wait_for


def shipped_with_free_ports(tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    for api in ("wechat", "weibo", "wordpress"):
        config["sandbox"][f"{api}_port"] = free_port()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path, config


def test_emulators_take_their_credentials_from_the_configured_channels(tmp_path):
    path, _ = shipped_with_free_ports(tmp_path)
    settings = emulators_config(load_config(path))
    assert settings.wechat.appid == "wx0123456789abcdef"
    assert settings.wechat.callback_url == "http://127.0.0.1:8470/wechat/callback/wechat_main"
    assert "weibo-emulator-token" in settings.weibo.tokens and settings.weibo.safe_domains == ["127.0.0.1"]
    assert settings.wordpress.users[0].login == "editor"


def test_sandbox_command_serves_ledgers_until_interrupted(tmp_path):
    path, config = shipped_with_free_ports(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "syndicator.cli", "--config", str(path), "sandbox"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines: list[str] = []
        wait_for(lambda: lines.append(proc.stdout.readline()) or "Ctrl-C" in lines[-1] or proc.poll() is not None,
                 30, "the sandbox to start")
        for api in ("wechat", "weibo", "wordpress"):
            url = f"http://127.0.0.1:{config['sandbox'][f'{api}_port']}/_emulator/ledger"
            assert requests.get(url, timeout=5).json()["effects"] == []
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 0
