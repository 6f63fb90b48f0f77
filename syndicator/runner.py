"""`syndicator run`: the whole system in one command on the embedded default.

Starts a Celery worker and beat as child processes (each in its own session, so Ctrl-C reaches
only this supervisor, which then stops them in order), serves the public files and web app with
uvicorn, restarts a child that dies, and optionally publishes the sample articles.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

from syndicator.config import CONFIG_ENV, Config
from syndicator.queue import CONTROL_QUEUE, queue_name
from syndicator.runtime import Runtime

log = logging.getLogger(__name__)

#: Seconds a child gets to finish in-flight work after SIGTERM before it is killed.
STOP_GRACE_SECONDS = 20
#: Minimum seconds between restarts of a child that keeps dying.
RESTART_BACKOFF_SECONDS = 2


def worker_argv(config: Config) -> list[str]:
    queues = [CONTROL_QUEUE, *(queue_name(n) for n in config.enabled_channels())]
    return ["worker", f"--pool={config.worker.pool}", f"--concurrency={config.worker.concurrency}",
            "--queues", ",".join(queues), "--loglevel=INFO", "--task-events",
            "--without-gossip", "--without-mingle", f"--hostname=syndicator-{os.getpid()}@%h"]


class Child:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        out.close()
        self.started = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _start_web(rt: Runtime) -> tuple[threading.Thread, object] | None:
    import uvicorn

    from syndicator.web.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(rt), host=rt.config.serve.host, port=rt.config.serve.port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="web", daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            return thread, server
        if not thread.is_alive():
            raise click.ClickException(f"cannot serve on {rt.config.serve.host}:{rt.config.serve.port} "
                                       "(port in use?); change serve.port in config.yaml or use --no-web")
        time.sleep(0.05)
    return thread, server


def _publish_examples(rt: Runtime, actor: str) -> None:
    from syndicator.articles import BadInput, read_article
    from syndicator.publishing import publish

    folder = rt.config.base_dir / "examples" / "articles"
    for path in sorted(folder.glob("*.md")):
        if path.name.lower() == "readme.md":
            continue
        try:
            draft = read_article(path, max_image_bytes=rt.config.limits.max_image_bytes,
                                 max_body_chars=rt.config.limits.max_body_chars, timezone=rt.config.site.timezone)
            result = publish(rt.store, rt.config, draft, actor=actor, enqueuer=rt.enqueuer)
        except BadInput as exc:
            click.echo(f"  skipped {path.name}: {exc}", err=True)
            continue
        verb = "published" if result.created else "already published"
        click.echo(f"  {verb}: article {result.article_id} {result.slug}")


def run(rt: Runtime, config_path: str | None, *, demo: bool, web: bool, actor: str) -> int:
    config = rt.config
    env = dict(os.environ)
    env[CONFIG_ENV] = str(Path(config_path or config.source).resolve())
    base = [sys.executable, "-m", "syndicator.cli", "--config", env[CONFIG_ENV]]
    logs = config.var_dir / "logs"
    children = [Child("worker", [*base, "worker"], env, logs / "worker.log"),
                Child("beat", [*base, "beat"], env, logs / "beat.log")]
    sandbox = None
    if config.sandbox.enabled:
        from syndicator import sandbox as sandbox_mod

        try:
            sandbox = sandbox_mod.start(config)
        except OSError as exc:
            raise click.ClickException(f"cannot start the sandbox emulators: {exc}; change the sandbox "
                                       "ports in config.yaml or set sandbox.enabled: false") from exc
    for child in children:
        child.start()
    served = _start_web(rt) if web else None

    click.echo(f"syndicator is running (config {env[CONFIG_ENV]})")
    click.echo(f"  database: {config.safe_db_url}")
    click.echo(f"  broker:   {config.safe_broker_url}")
    click.echo(f"  channels: {', '.join(f'{n} ({c.type})' for n, c in config.enabled_channels().items())}")
    if served:
        click.echo(f"  web:      http://{config.serve.host}:{config.serve.port}/   "
                   f"API: http://{config.serve.host}:{config.serve.port}/api/docs")
        from syndicator.users import count_users

        if count_users(rt.store) == 0:
            click.echo("  login:    no users yet — create one, e.g.\n"
                       "              echo 'a-long-password' | syndicator user add admin --role admin\n"
                       "            then log in with that name and password")
    if sandbox:
        click.echo("  sandbox:  " + ", ".join(f"{n} {u}" for n, u in sandbox.urls.items())
                   + " (local emulators; no real account is used)")
    click.echo(f"  logs:     {logs}/")
    if demo:
        click.echo("publishing the sample articles:")
        _publish_examples(rt, actor)
    click.echo("Press Ctrl-C to stop.")

    stopping = threading.Event()

    def on_signal(signum, _frame) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stopping.wait(0.5):
        for child in children:
            if not child.alive() and time.monotonic() - child.started > RESTART_BACKOFF_SECONDS:
                click.echo(f"{child.name} exited with {child.proc.returncode}; restarting "
                           f"(see {child.log_path})", err=True)
                child.start()
    click.echo("stopping: letting in-flight deliveries finish …")
    for child in reversed(children):
        child.stop()
    if served:
        served[1].should_exit = True
        served[0].join(5)
    if sandbox:
        sandbox.stop()
    rt.store.dispose()
    click.echo("stopped")
    return 0
