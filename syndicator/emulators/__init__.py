"""Local HTTP emulators of the channel APIs (WeChat OA, Weibo, WordPress REST) for tests and the sandbox.

Each emulator keeps its remote state in memory, records every request and every applied effect in
a ``Ledger`` and injects faults from ``Faults`` — both reachable from Python and over HTTP under
``/_emulator/``. Behaviour follows ``channel-contracts.md`` §1–3.

    with serve_all() as running:
        running.urls["wordpress"]            # "http://127.0.0.1:<port>"
        running.wordpress.faults.update(latency=0.2)
        running.ledger.effects(op="posts/create")
"""
from .faults import Faults, Force
from .ledger import Ledger
from .server import EmulatorsConfig, EmulatorServer, RunningEmulators, serve_all
from .wechat import WeChatEmulator, WeChatSettings
from .weibo import WeiboEmulator, WeiboSettings, WeiboToken, weibo_length
from .wordpress import WordPressEmulator, WordPressSettings, WPUser

__all__ = [
    "EmulatorServer", "EmulatorsConfig", "Faults", "Force", "Ledger", "RunningEmulators", "WPUser",
    "WeChatEmulator", "WeChatSettings", "WeiboEmulator", "WeiboSettings", "WeiboToken",
    "WordPressEmulator", "WordPressSettings", "serve_all", "weibo_length",
]
