"""config.yaml: validated on load; each error names the file, the key path and what was expected."""
from __future__ import annotations

import subprocess
import sys

import pytest

from syndicator.config import ConfigError, load_config
from tests.support.services import REPO

GOOD = """
database_url: sqlite:///var/s.db
broker_url: sqla+sqlite:///var/b.db
channels:
  rss_main: {type: rss, title: 订阅}
  microsite: {type: microsite, title: 微站}
"""


def write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_config_loads_and_resolves_relative_paths_against_its_folder():
    config = load_config(REPO / "config.yaml")
    assert set(config.enabled_channels()) >= {"rss_main", "microsite"}
    assert config.db_url == f"sqlite:///{REPO / 'var' / 'syndicator.db'}"
    assert config.public_dir == REPO / "var" / "public"


@pytest.mark.parametrize("text,expected", [
    (GOOD.replace("title: 订阅}", "title: 订阅, items: lots}"),
     "channels.rss_main.items: Input should be a valid integer"),
    (GOOD + "worker: {concurrency: 0}\n", "worker.concurrency: Input should be greater than or equal to 1"),
    (GOOD + "delivery: {lease_seconds: soon}\n", "delivery.lease_seconds: Input should be a valid number"),
    (GOOD + "colour: blue\n", "colour: unknown key"),
    (GOOD.replace("type: rss", "type: fax"), "channels.rss_main.type: unknown channel type 'fax'"),
    (GOOD.replace("rss_main", "RSS-Main"), "channels: channel name 'RSS-Main' must be lowercase"),
    (GOOD + "site: {base_url: ftp://x}\n", "site.base_url: must be an http:// or https:// URL"),
    (GOOD + "site: {timezone: Mars/Olympus}\n", "site.timezone: unknown time zone"),
    ("channels: {}\n", "channels: at least one channel is required"),
    ("database_url: x\n", "channels: Field required"),
    (GOOD.replace("title: 微站}", "title: 微站, path: /etc}"), "channels.microsite.path"),
])
def test_invalid_values_name_file_key_and_expectation(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_broken_yaml_names_the_line(tmp_path):
    path = write(tmp_path, GOOD + "worker:\n  pool: [threads\n")
    with pytest.raises(ConfigError, match=r"config.yaml: not valid YAML at line \d+"):
        load_config(path)


def test_secret_references_resolve_from_the_environment(tmp_path, monkeypatch):
    path = write(tmp_path, GOOD.replace("sqla+sqlite:///var/b.db", "redis://:${SYN_TEST_PW}@127.0.0.1:1/0"))
    with pytest.raises(ConfigError, match="broker_url: environment variable SYN_TEST_PW is not set"):
        load_config(path)
    monkeypatch.setenv("SYN_TEST_PW", "s3cret")
    assert load_config(path).broker_url == "redis://:s3cret@127.0.0.1:1/0"


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")


def test_cli_exits_2_with_the_message_for_a_broken_config(tmp_path):
    path = write(tmp_path, GOOD + "worker: {concurrency: many}\n")
    out = subprocess.run([sys.executable, "-m", "syndicator.cli", "--config", str(path), "deliveries"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"{path}: worker.concurrency: Input should be a valid integer" in out.stderr
    assert "Traceback" not in out.stderr


def test_secret_reference_may_name_a_fallback(tmp_path, monkeypatch):
    path = write(tmp_path, GOOD.replace("sqla+sqlite:///var/b.db", "redis://:${SYN_TEST_PW2:-sandbox}@h:1/0"))
    monkeypatch.delenv("SYN_TEST_PW2", raising=False)
    assert load_config(path).broker_url == "redis://:sandbox@h:1/0"
    monkeypatch.setenv("SYN_TEST_PW2", "real")
    assert load_config(path).broker_url == "redis://:real@h:1/0"
