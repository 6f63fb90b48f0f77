"""The channel contract, checked for every registered channel type (house style: one harness)."""
from __future__ import annotations

import builtins
import importlib
import socket
from pathlib import Path

import pytest

from channels import registry
from channels.base import Channel, ChannelSettings, Rendition, capabilities

TYPES = sorted(registry.CHANNEL_TYPES)
#: Minimal valid settings per type, for building instances in the harness.
SETTINGS = {
    "rss": {"title": "订阅"},
    "microsite": {"title": "微站"},
    "portal": {"base_url": "http://127.0.0.1:1", "username": "u", "app_password": "x"},
    "weibo": {"access_token": "x", "safe_domain": "127.0.0.1"},
    "wechat": {"appid": "wx0123456789abcdef", "secret": "s3cret"},
}


@pytest.mark.parametrize("type_name", TYPES)
def test_type_loads_and_is_named_after_its_module(type_name):
    cls = registry.load_type(type_name)
    module = importlib.import_module(cls.__module__)
    assert issubclass(cls, Channel) and cls.name == type_name
    assert cls.__name__.lower() == Path(module.__file__).stem.replace("_", "") + "channel"
    assert issubclass(cls.Settings, ChannelSettings) and cls.display_name


@pytest.mark.parametrize("type_name", TYPES)
def test_capability_flags_match_the_methods(type_name):
    cls = registry.load_type(type_name)
    assert (cls.update is not Channel.update) == cls.supports_update
    assert (cls.retract is not Channel.retract) == cls.supports_retract
    assert (cls.poll is not Channel.poll) == cls.settles_async
    caps = capabilities(cls)
    assert caps["type"] == type_name and set(caps) >= {"supports_update", "supports_retract", "reconcilable"}


@pytest.mark.parametrize("type_name", TYPES)
def test_every_type_has_minimal_settings_in_this_harness(type_name):
    assert type_name in SETTINGS, f"add minimal settings for {type_name!r} to the contract harness"
    registry.load_type(type_name).Settings.model_validate(SETTINGS[type_name])


@pytest.mark.parametrize("type_name", TYPES)
def test_render_is_pure_and_serialisable(type_name, ports, render_ctx, make_snapshot, media, monkeypatch):
    cls = registry.load_type(type_name)
    channel = cls(f"{type_name}_x", cls.Settings.model_validate(SETTINGS[type_name]), ports)
    cover = media.add_image("teal")
    snapshot = make_snapshot(cover=cover, body_html=f'<p>正文</p><img src="asset:{cover.sha256}" alt="图">',
                             assets=(cover,))
    channel.render(snapshot, render_ctx)  # warm template caches
    # When rendering again with files, sockets and the media port forbidden
    real_open = builtins.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(m in mode for m in "wax+"):
            raise AssertionError(f"render wrote {file}")
        return real_open(file, mode, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(socket, "socket", lambda *a, **k: (_ for _ in ()).throw(AssertionError("network")))
    media.reads.clear()
    first = channel.render(snapshot, render_ctx)
    second = channel.render(snapshot, render_ctx)
    # Then the result is deterministic, JSON round-trips, and nothing was read or written
    assert first == second
    assert Rendition.from_json(first.to_json()) == first
    assert media.reads == []
    assert not ports.public_dir.exists() or not any(ports.public_dir.rglob("*"))


@pytest.mark.parametrize("type_name", TYPES)
def test_settings_reject_unknown_keys(type_name):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        registry.load_type(type_name).Settings.model_validate({**SETTINGS[type_name], "colour": "red"})


def test_unknown_type_is_reported_as_unavailable():
    with pytest.raises(registry.ChannelUnavailable, match="unknown channel type 'fax'"):
        registry.load_type("fax")


#: Types that talk to a remote API over HTTP, with the settings key naming where.
REMOTE = {"portal": "base_url", "weibo": "api_base", "wechat": "api_base"}
#: Secret settings per type that must never show in repr or errors.
SECRETS = {"portal": {"app_password": "PW-must-not-leak"}, "weibo": {"access_token": "TOKEN-must-not-leak"},
           "wechat": {"secret": "SECRET-must-not-leak"}}


def test_remote_types_are_listed_here():
    assert {t for t in TYPES if t not in ("rss", "microsite")} == set(REMOTE)


@pytest.mark.parametrize("type_name", sorted(REMOTE))
def test_an_unreachable_remote_is_a_transient_error_that_names_no_secret(type_name, ports, render_ctx,
                                                                        make_snapshot, media, tmp_path):
    from channels.base import Attempt
    from channels.errors import TransientError
    from syndicator.tokens import FileTokenCache
    from tests.support.services import free_port

    cls = registry.load_type(type_name)
    closed = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    settings = cls.Settings.model_validate({**SETTINGS[type_name], **SECRETS[type_name], REMOTE[type_name]: closed})
    ports = type(ports)(**{**ports.__dict__, "tokens": FileTokenCache(tmp_path / "tokens")})
    channel = cls(f"{type_name}_x", settings, ports)
    cover = media.add_image("teal")
    rendition = channel.render(make_snapshot(cover=cover), render_ctx)
    with pytest.raises(TransientError) as err:
        channel.deliver(rendition, Attempt(delivery_id=1, number=1, reconcile=False, remote_id=None, media=media))
    secret = next(iter(SECRETS[type_name].values()))
    assert secret not in str(err.value) and secret not in repr(settings)
