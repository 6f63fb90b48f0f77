"""The channel types syndicator knows, as an explicit table of import strings.

A type whose module or optional package cannot be imported shows as unavailable with the reason,
instead of crashing the workers.
"""
from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

from pydantic import ValidationError

from channels.base import Channel, Ports

if TYPE_CHECKING:
    from syndicator.config import Config

#: Channel type name (as written in config.yaml) → "module:Class".
CHANNEL_TYPES: dict[str, str] = {
    "rss": "channels.rss:RSSChannel",
    "microsite": "channels.microsite:MicrositeChannel",
    "portal": "channels.portal:PortalChannel",
    "weibo": "channels.weibo:WeiboChannel",
    "wechat": "channels.wechat:WeChatChannel",
}


class ChannelUnavailable(Exception):
    """The channel type is unknown or its module cannot be imported here."""


@cache
def load_type(type_name: str) -> type[Channel]:
    target = CHANNEL_TYPES.get(type_name)
    if target is None:
        known = ", ".join(sorted(CHANNEL_TYPES))
        raise ChannelUnavailable(f"unknown channel type {type_name!r} (known types: {known})")
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ChannelUnavailable(f"channel type {type_name!r} is unavailable: {exc}") from exc
    return getattr(module, cls_name)


def validate_channel_settings(config: Config) -> list[str]:
    """Check each instance's settings against its type's model; return readable problems."""
    from syndicator.config import format_validation_error

    problems: list[str] = []
    for name, entry in config.channels.items():
        try:
            cls = load_type(entry.type)
        except ChannelUnavailable as exc:
            problems.append(f"channels.{name}.type: {exc}")
            continue
        try:
            cls.Settings.model_validate(entry.model_extra or {})
        except ValidationError as exc:
            problems.append(format_validation_error("", exc, prefix=f"channels.{name}"))
    return problems


def build_channel(config: Config, instance: str, ports: Ports) -> Channel:
    entry = config.channels[instance]
    cls = load_type(entry.type)
    return cls(instance, cls.Settings.model_validate(entry.model_extra or {}), ports)
