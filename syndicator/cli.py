"""The `syndicator` command: parse, call the core, present.

Exit codes (a contract scripts rely on): 0 success / all delivered, 1 some deliveries failed,
2 bad input (nothing stored), 3 timed out waiting.
"""
from __future__ import annotations

import getpass
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from syndicator.config import CONFIG_ENV, Config, ConfigError, load_config

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_TIMEOUT = 0, 1, 2, 3
#: How often `--wait` looks at the deliveries.
WAIT_POLL_SECONDS = 0.2


def _actor() -> str:
    """Who is acting: SYNDICATOR_ACTOR, else the login name (谁发布谁负责: every step has an owner)."""
    return os.environ.get("SYNDICATOR_ACTOR") or f"cli:{getpass.getuser()}"


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class Ctx:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._runtime = None

    @property
    def config(self) -> Config:
        return self.runtime.config

    @property
    def runtime(self):
        if self._runtime is None:
            from syndicator.runtime import Runtime
            from syndicator.store import StoreError

            try:
                config = load_config(self.config_path)
            except ConfigError as exc:
                _fail(str(exc))
            if self.config_path:
                os.environ[CONFIG_ENV] = str(Path(self.config_path).resolve())
            self._runtime = Runtime(config)
            try:
                self._runtime.store.migrate()
            except StoreError as exc:
                _fail(str(exc))
        return self._runtime


pass_ctx = click.make_pass_decorator(Ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", envvar=CONFIG_ENV, type=click.Path(dir_okay=False),
              help="config.yaml to use (default: $SYNDICATOR_CONFIG or ./config.yaml).")
@click.option("-v", "--verbose", is_flag=True, help="Log debug details to stderr.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """Publish an approved article once; deliver it to every channel; track each delivery."""
    from syndicator.logs import setup_logging

    setup_logging(logging.DEBUG if verbose else logging.WARNING)
    ctx.obj = Ctx(config_path)


@cli.command()
@click.argument("file", type=click.Path())
@click.option("--wait", "wait", type=float, default=None, metavar="SECONDS",
              help="Block until every delivery is terminal (exit 3 if SECONDS pass first).")
@click.option("--json", "as_json", is_flag=True, help="Print the article and its deliveries as JSON.")
@pass_ctx
def publish(obj: Ctx, file: str, wait: float | None, as_json: bool) -> None:
    """Publish FILE (Markdown with YAML front matter) to every enabled channel."""
    from syndicator.articles import BadInput, read_article
    from syndicator.publishing import publish as do_publish

    rt = obj.runtime
    try:
        draft = read_article(file, max_image_bytes=rt.config.limits.max_image_bytes,
                             max_body_chars=rt.config.limits.max_body_chars, timezone=rt.config.site.timezone)
        result = do_publish(rt.store, rt.config, draft, actor=_actor(), enqueuer=rt.enqueuer)
    except BadInput as exc:
        _fail("\n".join(exc.problems) if len(exc.problems) > 1 else exc.problems[0])
    if not result.created:
        click.echo(f"article {result.article_id} ({result.slug}) is already published with this content; "
                   "nothing new was created", err=True)
    if result.not_enqueued:
        click.echo(f"warning: the broker is unreachable; {len(result.not_enqueued)} deliveries are recorded "
                   "and will be sent when it is back", err=True)
    code = _await(obj, result.article_id, wait) if wait is not None else EXIT_OK
    _show(obj, str(result.article_id), as_json, plain_id=not as_json)
    sys.exit(code)


def _await(obj: Ctx, article_id: int, seconds: float) -> int:
    from syndicator.states import TERMINAL

    deadline = time.monotonic() + seconds
    while True:
        data = _status(obj, str(article_id))
        states = [d["state"] for d in data["deliveries"]]
        if all(s in TERMINAL for s in states):
            return EXIT_OK if all(s == "delivered" for s in states) else EXIT_FAILED
        if time.monotonic() >= deadline:
            click.echo(f"timed out after {seconds:g}s; not yet terminal: "
                       + ", ".join(f"{d['channel']}={d['state']}" for d in data["deliveries"]
                                   if d["state"] not in TERMINAL), err=True)
            return EXIT_TIMEOUT
        time.sleep(WAIT_POLL_SECONDS)


def _status(obj: Ctx, id_or_slug: str) -> dict[str, Any]:
    from syndicator.views import NotFoundError, article_status, find_article

    with obj.runtime.store.read() as session:
        try:
            return article_status(session, find_article(session, id_or_slug))
        except NotFoundError as exc:
            _fail(str(exc))


def _show(obj: Ctx, id_or_slug: str, as_json: bool, plain_id: bool = False) -> None:
    data = _status(obj, id_or_slug)
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    if plain_id:
        click.echo(data["article"]["id"])
        return
    a = data["article"]
    click.echo(f"article {a['id']} {a['slug']} «{a['title']}» revision {a['revision']} ({a['status']})")
    _table(data["deliveries"])


def _table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo("(no deliveries)")
        return
    for d in rows:
        where = d["remote_url"] or ""
        if d["state"] in ("queued", "retry_wait") and d.get("next_attempt_at"):
            where = f"(due {d['next_attempt_at']}) {where}"
        err = f"  ! {d['error']}" if d["error"] else ""
        click.echo(f"  #{d['id']:<6} {d['channel']:<16} {d['operation']:<8} r{d['revision']:<3} "
                   f"{d['state']:<10} tries={d['attempts']:<2} {where}{err}")


@cli.command()
@click.argument("id_or_slug")
@click.argument("file", type=click.Path())
@click.option("--at", "at", metavar="WHEN", help="When to release it: an ISO time or +30m / +2h / +1d "
              "(default: now).")
@click.option("--note", help="The correction note shown on every channel (更正说明).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def correct(obj: Ctx, id_or_slug: str, file: str, at: str | None, note: str | None, as_json: bool) -> None:
    """Correct an article with the content of FILE (a new revision, sent the way each channel allows)."""
    from syndicator.articles import BadInput, read_article
    from syndicator.editorial import correct as do_correct, parse_when
    from syndicator.views import NotFoundError

    rt = obj.runtime
    try:
        when = parse_when(at, now=rt.clock(), timezone=rt.config.site.timezone) if at else None
        draft = read_article(file, max_image_bytes=rt.config.limits.max_image_bytes,
                             max_body_chars=rt.config.limits.max_body_chars, timezone=rt.config.site.timezone)
        result = do_correct(rt, id_or_slug, draft, note=note, at=when, actor=_actor())
    except BadInput as exc:
        _fail("\n".join(exc.problems))
    except NotFoundError as exc:
        _fail(str(exc))
    _report_edit(obj, result, as_json)


@cli.command()
@click.argument("id_or_slug")
@click.option("--reason", required=True, help="Why it is withdrawn (recorded, and shown where the channel can).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def retract(obj: Ctx, id_or_slug: str, reason: str, as_json: bool) -> None:
    """Withdraw an article from every channel it reached; cancel what has not been sent."""
    from syndicator.articles import BadInput
    from syndicator.editorial import retract as do_retract
    from syndicator.views import NotFoundError

    try:
        result = do_retract(obj.runtime, id_or_slug, reason=reason, actor=_actor())
    except BadInput as exc:
        _fail("\n".join(exc.problems))
    except NotFoundError as exc:
        _fail(str(exc))
    _report_edit(obj, result, as_json)


def _report_edit(obj: Ctx, result, as_json: bool) -> None:
    click.echo(f"article {result.article_id} ({result.slug}): {result.message}", err=True)
    for channel, why in result.skipped:
        click.echo(f"  {channel}: skipped — {why}", err=True)
    _show(obj, str(result.article_id), as_json)


@cli.command()
@click.argument("id_or_slug")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def status(obj: Ctx, id_or_slug: str, as_json: bool) -> None:
    """Show an article and the state of each of its deliveries."""
    _show(obj, id_or_slug, as_json)


@cli.command()
@click.option("--state", type=click.Choice([s for s in (
    "queued", "sending", "retry_wait", "submitted", "delivered", "failed", "unknown", "manual", "cancelled")]))
@click.option("--channel", help="Only this channel instance.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def deliveries(obj: Ctx, state: str | None, channel: str | None, limit: int, as_json: bool) -> None:
    """List deliveries, newest first."""
    from syndicator.views import list_deliveries

    _check_channel(obj, channel)
    with obj.runtime.store.read() as session:
        rows = list_deliveries(session, state=state, channel=channel, limit=limit)
    if as_json:
        click.echo(json.dumps({"deliveries": rows}, ensure_ascii=False, indent=2))
    else:
        _table(rows)


def _check_channel(obj: Ctx, channel: str | None) -> None:
    if channel and channel not in obj.config.channels:
        _fail(f"--channel: unknown channel {channel!r} (configured: {', '.join(obj.config.channels)})")


@cli.command()
@click.argument("id_or_slug")
@click.option("--channel", help="Only this channel instance.")
@pass_ctx
def retry(obj: Ctx, id_or_slug: str, channel: str | None) -> None:
    """Re-queue an article's failed or stuck deliveries (delivered ones are never resent)."""
    from syndicator.operations import retry as do_retry
    from syndicator.views import NotFoundError

    _check_channel(obj, channel)
    try:
        ids = do_retry(obj.runtime, id_or_slug, channel=channel, actor=_actor())
    except NotFoundError as exc:
        _fail(str(exc))
    click.echo(f"re-queued {len(ids)} deliveries" + (f": {', '.join(map(str, ids))}" if ids else
                                                     " (nothing failed or stuck)"))


@cli.command()
@click.option("--demo/--no-demo", default=False,
              help="Publish the sample articles in examples/articles/ once the workers are up.")
@click.option("--no-web", is_flag=True, help="Do not serve the public files and web app.")
@pass_ctx
def run(obj: Ctx, demo: bool, no_web: bool) -> None:
    """Run everything: database, Celery worker and beat, and the web server. Ctrl-C stops."""
    from syndicator.runner import run as do_run

    sys.exit(do_run(obj.runtime, obj.config_path, demo=demo, web=not no_web, actor=_actor()))


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def worker(obj: Ctx, celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker on every enabled channel's queue (extra args go to Celery)."""
    from syndicator.runner import worker_argv

    os.environ.setdefault(CONFIG_ENV, str(Path(obj.config.source).resolve()))
    from workers import app

    app.worker_main(worker_argv(obj.config) + list(celery_args))


@cli.command()
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def beat(obj: Ctx, celery_args: tuple[str, ...]) -> None:
    """Run Celery beat (the sweeper's clock)."""
    os.environ.setdefault(CONFIG_ENV, str(Path(obj.config.source).resolve()))
    from workers import app

    schedule = obj.config.var_dir / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    app.start(["beat", "--loglevel=INFO", f"--schedule={schedule}", *celery_args])


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def channels(ctx: click.Context, as_json: bool) -> None:
    """List channel instances: capabilities, suspension, credential expiry."""
    if ctx.invoked_subcommand is not None:
        return
    from syndicator.views import channel_matrix

    obj: Ctx = ctx.obj
    rows = channel_matrix(obj.runtime)
    if as_json:
        click.echo(json.dumps({"channels": rows}, ensure_ascii=False, indent=2))
        return
    for r in rows:
        flags = " ".join(op for op in ("update", "retract") if r[f"supports_{op}"])
        state = "suspended: " + (r["suspended_reason"] or "") if r["suspended"] else (
            "enabled" if r["enabled"] else "disabled")
        if r.get("breaker") == "open":
            state += f" (breaker open until {r['breaker_open_until']})"
        expiry = f"  credential expires {r['credential_expires_at']}" if r.get("credential_expires_at") else ""
        correction = f"correction={r.get('correction', '?')}"
        click.echo(f"{r['name']:<16} {r['type']:<10} publish {flags:<15} {correction:<22} {state}{expiry}")


@channels.command("suspend")
@click.argument("name")
@click.option("--reason", required=True)
@pass_ctx
def channels_suspend(obj: Ctx, name: str, reason: str) -> None:
    """Stop sending to a channel until it is resumed."""
    from syndicator.channel_status import set_suspended

    _check_channel(obj, name)
    changed = set_suspended(obj.runtime.store, name, True, reason=reason, actor=_actor())
    click.echo(f"{name} suspended" if changed else f"{name} was already suspended")


@channels.command("resume")
@click.argument("name")
@pass_ctx
def channels_resume(obj: Ctx, name: str) -> None:
    """Send to a suspended channel again (queued deliveries go out; use `retry` for failed ones)."""
    from syndicator.channel_status import set_suspended

    _check_channel(obj, name)
    changed = set_suspended(obj.runtime.store, name, False, reason=None, actor=_actor())
    click.echo(f"{name} resumed" if changed else f"{name} was not suspended")


@cli.group()
def user() -> None:
    """People who use the desk, the dashboard and the API."""


@user.command("add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(["editor", "reviewer", "publisher", "ops", "admin"]))
@click.option("--display-name", default="", help="Name shown on pages (default: NAME).")
@pass_ctx
def user_add(obj: Ctx, name: str, role: str, display_name: str) -> None:
    """Create a user; the password is read from standard input (one line)."""
    from syndicator.users import UserError, add_user

    password = sys.stdin.readline().rstrip("\n")
    try:
        add_user(obj.runtime.store, name, password, role, actor=_actor(), display_name=display_name)
    except UserError as exc:
        _fail(str(exc))
    click.echo(f"user {name} ({role}) created")


@user.command("token")
@click.argument("name")
@click.option("--label", default="automation", show_default=True, help="What the token is for.")
@pass_ctx
def user_token(obj: Ctx, name: str, label: str) -> None:
    """Issue an API token for NAME (printed once; send it as `Authorization: Bearer …`)."""
    from syndicator.users import UserError, issue_token

    try:
        click.echo(issue_token(obj.runtime.store, name, label, actor=_actor()))
    except UserError as exc:
        _fail(str(exc))


@cli.command()
@click.option("--host", default=None, help="Default: serve.host in config.yaml.")
@click.option("--port", type=int, default=None, help="Default: serve.port in config.yaml.")
@pass_ctx
def serve(obj: Ctx, host: str | None, port: int | None) -> None:
    """Serve the web app, API, /metrics and public files on their own (no workers)."""
    import uvicorn

    from syndicator.web.app import create_app

    rt = obj.runtime
    uvicorn.run(create_app(rt), host=host or rt.config.serve.host, port=port or rt.config.serve.port,
                log_level="warning")


@cli.command()
@pass_ctx
def sandbox(obj: Ctx) -> None:
    """Serve local emulators of the WeChat, Weibo and WordPress APIs until Ctrl-C."""
    import signal
    import threading

    from syndicator import sandbox as sandbox_mod

    try:
        running = sandbox_mod.start(obj.config)
    except OSError as exc:
        _fail(f"cannot start the emulators: {exc} (ports in use? see sandbox: in config.yaml)", EXIT_FAILED)
    for name, url in running.urls.items():
        click.echo(f"{name:10} {url}   ledger: {url}/_emulator/ledger")
    click.echo("Press Ctrl-C to stop.")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    running.stop()


@cli.group()
def config() -> None:
    """Configuration commands."""


@config.command("check")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None)
@click.pass_obj
def config_check(obj: Ctx, config_path: str | None) -> None:
    """Validate config.yaml and print the channels it defines."""
    try:
        cfg = load_config(config_path or obj.config_path)
    except ConfigError as exc:
        _fail(str(exc))
    click.echo(f"{cfg.source}: ok — {len(cfg.enabled_channels())} enabled channels: "
               + ", ".join(f"{n} ({c.type})" for n, c in cfg.enabled_channels().items()))


@cli.group()
def db() -> None:
    """Database commands."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(obj: Ctx) -> None:
    """Apply database migrations (also done automatically by every command)."""
    click.echo(f"database at migration {obj.runtime.store.current_revision()}")


def main() -> None:
    cli(prog_name="syndicator")


if __name__ == "__main__":
    main()
