"""`syndicator correct` and `syndicator retract` from the shell: exit codes and messages."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import write_article
from tests.support.services import REPO, write_config


@pytest.fixture
def cli(tmp_path):
    config = write_config(tmp_path / "config.yaml", database_url=f"sqlite:///{tmp_path / 's.db'}",
                          broker_url=f"sqla+sqlite:///{tmp_path / 'b.db'}", public=tmp_path / "public")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "syndicator.cli", "--config", str(config), *args], cwd=REPO,
                              capture_output=True, text=True, timeout=60,
                              env={**__import__("os").environ, "SYNDICATOR_ACTOR": "editor:zhou"})
    return run


def test_correct_and_retract_contract(cli, tmp_path):
    original = write_article(tmp_path / "a", "policy", body="原文")
    assert cli("publish", str(original)).returncode == 0
    fixed = write_article(tmp_path / "b", "policy", body="更正后")

    # A correction scheduled ahead is stored as revision 2 with one delivery per channel, due later
    out = cli("correct", "policy", str(fixed), "--at", "+2h", "--note", "数字有误", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["article"]["revision"] == 2
    # (no worker runs here, so the publishes are still pending: a scheduled correction waits behind them)
    planned = [d for d in data["deliveries"] if d["revision"] == 2]
    assert {d["operation"] for d in planned} == {"update"}
    assert {d["channel"] for d in planned} == {"rss_main", "microsite"}
    assert all(d["state"] == "queued" and d["next_attempt_at"] for d in planned)

    # Identical content is a no-op with a message; bad --at values exit 2
    same = cli("correct", "policy", str(fixed))
    assert same.returncode == 0 and "identical to the live revision 2" in same.stderr
    for when in ("+5x", "2020-01-01T00:00:00", "-1h"):
        bad = cli("correct", "policy", str(fixed), "--at", when)
        assert bad.returncode == 2 and "--at:" in bad.stderr
    assert cli("correct", "nope", str(fixed)).returncode == 2

    # Retract: recorded with actor and reason; twice is a no-op; correcting afterwards is refused
    gone = cli("retract", "policy", "--reason", "政策已废止", "--json")
    assert gone.returncode == 0, gone.stderr
    assert json.loads(gone.stdout)["article"]["status"] == "retracted"
    assert json.loads(gone.stdout)["article"]["retraction_reason"] == "政策已废止"
    again = cli("retract", "policy", "--reason", "again")
    assert again.returncode == 0 and "already retracted" in again.stderr and "editor:zhou" in again.stderr
    refused = cli("correct", "policy", str(write_article(tmp_path / "c", "policy", body="再改")))
    assert refused.returncode == 2 and "it cannot be corrected" in refused.stderr
    assert cli("retract", "policy", "--reason", " ").returncode == 2
