"""The sandbox: local emulators of the WeChat, Weibo and WordPress APIs, configured from the
channel instances that point at them, so both sides agree on credentials, the Weibo safe domain
and the WeChat callback URL. Used by `syndicator sandbox` and by `syndicator run`."""
from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from channels.registry import load_type
from syndicator.config import Config
from syndicator.emulators.server import EmulatorsConfig, RunningEmulators, serve_all
from syndicator.emulators.wechat import WeChatSettings
from syndicator.emulators.weibo import WeiboSettings, WeiboToken
from syndicator.emulators.wordpress import WordPressSettings, WPUser


def _secret(value: Any) -> str:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)


def _settings(config: Config, type_name: str) -> list[tuple[str, Any]]:
    out = []
    for name, entry in config.enabled_channels().items():
        if entry.type == type_name:
            out.append((name, load_type(type_name).Settings.model_validate(entry.model_extra or {})))
    return out


def emulators_config(config: Config) -> EmulatorsConfig:
    sandbox = config.sandbox
    wechat = WeChatSettings(publish_delay=sandbox.wechat_publish_delay)
    for name, s in _settings(config, "wechat")[:1]:
        wechat.appid, wechat.secret = s.appid, _secret(s.secret)
        wechat.callback_url = f"http://{config.serve.host}:{config.serve.port}/wechat/callback/{name}"
        if s.callback_token is not None:
            wechat.callback_token = _secret(s.callback_token)
        if s.encoding_aes_key is not None:
            wechat.encoding_aes_key, wechat.callback_mode = _secret(s.encoding_aes_key), "aes"
    weibo = WeiboSettings()
    for _, s in _settings(config, "weibo"):
        expires = (s.token_expires_at.timestamp() if isinstance(s.token_expires_at, datetime)
                   else time.time() + 7 * 86400)
        weibo.tokens = {_secret(s.access_token): WeiboToken(uid=5000000001, expires_at=expires)}
        weibo.safe_domains = [s.safe_domain]
    wordpress = WordPressSettings()
    for _, s in _settings(config, "portal"):
        if getattr(s, "mode", "wordpress") == "wordpress":
            wordpress.users = [WPUser(1, s.username, [_secret(s.app_password)], "editor@example.com", "editor",
                                      "Editor")]
    return EmulatorsConfig(wechat=wechat, weibo=weibo, wordpress=wordpress, host=sandbox.host,
                           ports={"wechat": sandbox.wechat_port, "weibo": sandbox.weibo_port,
                                  "wordpress": sandbox.wordpress_port})


def start(config: Config) -> RunningEmulators:
    return serve_all(emulators_config(config))
