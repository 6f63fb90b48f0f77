"""``python -m syndicator.emulators``: serve all three emulators until interrupted."""
from __future__ import annotations

import argparse
import json
import signal
import threading

from .server import EmulatorsConfig, serve_all


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the WeChat, Weibo and WordPress emulators.")
    parser.add_argument("--host", default="127.0.0.1")
    for name in ("wechat", "weibo", "wordpress"):
        parser.add_argument(f"--{name}-port", type=int, default=0, help="0 = any free port")
    args = parser.parse_args()
    config = EmulatorsConfig(host=args.host, ports={"wechat": args.wechat_port, "weibo": args.weibo_port,
                                                    "wordpress": args.wordpress_port})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with serve_all(config) as running:
        print(json.dumps(running.urls), flush=True)
        try:
            while not stop.wait(0.2):
                pass
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
