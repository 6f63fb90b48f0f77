"""config.yaml: parsed once into typed, validated, frozen objects.

Secrets are written as ``${ENV_VAR}`` references and resolved from the environment at load time;
they are held as ``SecretStr`` so that ``repr``, logs and pages never show them. Every error names
the file, the key path and what was expected.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

#: Environment variable naming the config file when no path is given.
CONFIG_ENV = "SYNDICATOR_CONFIG"
#: `${NAME}` references inside string values; `${NAME:-fallback}` uses the fallback when unset
#: (the shipped config uses it for the local emulators' sandbox credentials only).
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """config.yaml is unreadable or invalid; the message names file, key path and expectation."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeliverySettings(_Frozen):
    #: How long a claimed delivery may stay in `sending` before the sweeper treats the worker as lost.
    lease_seconds: float = Field(120, gt=0)
    #: How often beat runs the sweeper.
    sweep_interval: float = Field(5, gt=0)
    #: A queued delivery whose message was sent this long ago without being claimed is re-sent.
    requeue_after: float = Field(30, gt=0)
    #: Retry delays up to this many seconds ride on a Celery countdown; longer ones wait in the database.
    max_countdown: float = Field(60, ge=0)
    #: Attempts before a transient error becomes a permanent failure.
    max_attempts: int = Field(8, ge=1)
    #: Exponential backoff: factor * 2**attempt seconds, capped, with full jitter.
    backoff_factor: float = Field(2, gt=0)
    backoff_max: float = Field(3600, gt=0)
    jitter: bool = True
    #: How often a submitted job (WeChat free-publish) is polled while no callback arrives.
    poll_interval: float = Field(30, gt=0)
    #: A submitted job with no outcome after this long stops in `unknown` for an operator.
    submitted_timeout: float = Field(86400, gt=0)
    #: Circuit breaker: this many transient failures in a row on a channel hold it back for
    #: `breaker_cooldown` seconds (doubling while it keeps failing, up to `breaker_max_cooldown`).
    breaker_threshold: int = Field(5, ge=1)
    breaker_cooldown: float = Field(30, gt=0)
    breaker_max_cooldown: float = Field(600, gt=0)


class WorkerSettings(_Frozen):
    pool: Literal["threads", "prefork", "solo"] = "threads"
    concurrency: int = Field(8, ge=1, le=512)
    #: Redis transport visibility timeout; countdowns must stay well below it.
    visibility_timeout: int = Field(3600, ge=10)
    #: Most threads of one worker that one channel may hold, so a hanging channel cannot starve
    #: the others (default: half the concurrency).
    channel_concurrency: int | None = Field(None, ge=1)
    #: Seconds after which a busy attempt counts as hanging. A message for a channel whose threads
    #: are all taken waits for one while they are busy with healthy attempts, and goes back to the
    #: broker at once when they hang.
    hang_after: float = Field(5.0, gt=0, le=3600)
    #: Embedded (SQLite) broker only: the sweeper deletes consumed messages fetched this many seconds
    #: ago (kombu keeps them otherwise, and the file grows forever). Must cover a message's time in a
    #: worker: `delivery.max_countdown` + `delivery.lease_seconds`.
    broker_retention: float = Field(3600, ge=60)


class ServeSettings(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(8470, ge=0, le=65535)
    #: Bearer token that `/metrics` requires (`Authorization: Bearer …`); write it as
    #: `${SYNDICATOR_METRICS_TOKEN:-}`. Unset or empty: `/metrics` is open, for an internal scrape.
    metrics_token: SecretStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _blank_token(cls, data: Any) -> Any:
        # On the model, so an error never echoes the token.
        if isinstance(data, dict) and "metrics_token" in data:
            token = data["metrics_token"]
            if token is not None and not isinstance(token, str | SecretStr):
                raise ValueError("metrics_token must be a string")
            if isinstance(token, str) and not token.strip():
                data = {**data, "metrics_token": None}
        return data

    @model_validator(mode="after")
    def _token(self) -> ServeSettings:
        token = self.metrics_token.get_secret_value() if self.metrics_token is not None else None
        if token is not None and (len(token) < 16 or not re.fullmatch(r"[\x21-\x7e]+", token)):
            raise ValueError("metrics_token must be at least 16 printable ASCII characters without spaces")
        return self


class SiteSettings(_Frozen):
    #: Public URL where `paths.public` is served; None means readers get file:// URLs.
    base_url: str | None = None
    name: str = "syndicator"
    timezone: str = "Asia/Shanghai"

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/") + "/"

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(v)
        except Exception as exc:  # zoneinfo raises several types
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v


class SandboxSettings(_Frozen):
    """Local emulators of the WeChat, Weibo and WordPress APIs, for trying syndicator without
    accounts anywhere. Served by `syndicator sandbox`, and by `syndicator run` when enabled."""

    enabled: bool = False
    host: str = "127.0.0.1"
    wechat_port: int = Field(8481, ge=0, le=65535)
    weibo_port: int = Field(8482, ge=0, le=65535)
    wordpress_port: int = Field(8483, ge=0, le=65535)
    #: Seconds the emulated WeChat keeps a publish job running before it finishes.
    wechat_publish_delay: float = Field(2.0, ge=0)


class LimitSettings(_Frozen):
    max_image_bytes: int = Field(10 * 1024 * 1024, gt=0)
    max_body_chars: int = Field(200_000, gt=0)


class AlertSettings(_Frozen):
    """Alerts shown on the ops dashboard and POSTed as JSON to a webhook (once per condition)."""

    #: Where alerts are POSTed (http or https). Often holds a key: write it as `${ENV}`. None: board only.
    webhook_url: SecretStr | None = None
    #: A delivery not settled (delivered, failed, …) this many minutes after it was due raises an alert.
    unsettled_minutes: float = Field(10, gt=0)
    #: This many failed outcomes in a row on one channel raise an alert.
    failures_in_a_row: int = Field(5, ge=1)
    #: A channel credential expiring within this many days raises an alert.
    credential_days: float = Field(7, ge=0)
    #: Seconds to wait for the webhook.
    webhook_timeout: float = Field(5, gt=0, le=60)

    @model_validator(mode="after")
    def _webhook(self) -> AlertSettings:
        # Checked on the model, so an error never echoes the URL (it may hold a key).
        url = self.webhook_url.get_secret_value() if self.webhook_url is not None else None
        if url is not None and not re.match(r"^https?://[^/\s]+(/\S*)?$", url):
            raise ValueError("webhook_url must be an http:// or https:// URL")
        return self


class ChannelConfig(_Frozen):
    """One named channel instance; `settings` is validated by the channel type's own model."""

    model_config = ConfigDict(frozen=True, extra="allow")
    type: str
    enabled: bool = True


class Config(_Frozen):
    database_url: str = "sqlite:///var/syndicator.db"
    broker_url: str = "sqla+sqlite:///var/broker.db"
    #: Where access tokens are shared between workers: redis://… or file:///dir (default: the
    #: broker's Redis, else var/tokens).
    token_cache_url: str | None = None
    paths: dict[str, str] = Field(default_factory=lambda: {"var": "var", "public": "var/public"})
    site: SiteSettings = SiteSettings()
    serve: ServeSettings = ServeSettings()
    worker: WorkerSettings = WorkerSettings()
    delivery: DeliverySettings = DeliverySettings()
    limits: LimitSettings = LimitSettings()
    sandbox: SandboxSettings = SandboxSettings()
    alerts: AlertSettings = AlertSettings()
    channels: dict[str, ChannelConfig]
    #: Directory of the config file; relative paths and sqlite URLs resolve against it.
    base_dir: Path = Path(".")
    source: str = "<defaults>"

    @field_validator("channels")
    @classmethod
    def _names(cls, v: dict[str, ChannelConfig]) -> dict[str, ChannelConfig]:
        for name in v:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", name):
                raise ValueError(
                    f"channel name {name!r} must be lowercase letters, digits and _ (start with a letter)"
                )
        if not v:
            raise ValueError("at least one channel is required")
        return v

    @model_validator(mode="after")
    def _countdown_below_visibility(self) -> Config:
        # A countdown longer than the visibility timeout makes Redis hand the task out twice.
        if self.delivery.max_countdown * 2 > self.worker.visibility_timeout:
            raise ValueError("delivery.max_countdown must be at most half of worker.visibility_timeout "
                             f"({self.delivery.max_countdown} vs {self.worker.visibility_timeout})")
        return self

    @model_validator(mode="after")
    def _retention_covers_in_flight(self) -> Config:
        # A consumed broker message is kept while a worker may still hold it (countdown, then attempt).
        held = self.delivery.max_countdown + self.delivery.lease_seconds
        if self.worker.broker_retention < held:
            raise ValueError("worker.broker_retention must be at least delivery.max_countdown + "
                             f"delivery.lease_seconds ({self.worker.broker_retention} vs {held})")
        return self

    def path(self, key: str) -> Path:
        """An absolute path from `paths` (relative entries resolve against the config file)."""
        p = Path(self.paths[key])
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    @property
    def var_dir(self) -> Path:
        return self.path("var")

    @property
    def public_dir(self) -> Path:
        return self.path("public")

    @property
    def templates_dir(self) -> Path:
        if "templates" in self.paths:
            return self.path("templates")
        return Path(__file__).resolve().parent.parent / "templates"

    def resolved_url(self, url: str) -> str:
        """Make `sqlite:///relative.db` (and the sqla+sqlite broker form) absolute."""
        for prefix in ("sqlite:///", "sqla+sqlite:///"):
            if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
                return prefix + str((self.base_dir / url[len(prefix):]).resolve())
        return url

    @property
    def db_url(self) -> str:
        return self.resolved_url(self.database_url)

    @property
    def broker(self) -> str:
        return self.resolved_url(self.broker_url)

    @property
    def safe_db_url(self) -> str:
        """The database URL with any password masked, for logs and pages."""
        from sqlalchemy.engine import make_url

        return make_url(self.db_url).render_as_string(hide_password=True)

    @property
    def safe_broker_url(self) -> str:
        """The broker URL with any password masked, for logs and pages."""
        from kombu.utils.url import maybe_sanitize_url

        return maybe_sanitize_url(self.broker)

    def enabled_channels(self) -> dict[str, ChannelConfig]:
        return {n: c for n, c in self.channels.items() if c.enabled}


def _expand_env(node: Any, path: str, errors: list[str]) -> Any:
    if isinstance(node, dict):
        return {k: _expand_env(v, f"{path}.{k}" if path else str(k), errors) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v, f"{path}[{i}]", errors) for i, v in enumerate(node)]
    if isinstance(node, str):
        def sub(m: re.Match[str]) -> str:
            if m.group(1) in os.environ:
                return os.environ[m.group(1)]
            if m.group(2) is not None:
                return m.group(2)
            errors.append(f"{path}: environment variable {m.group(1)} is not set")
            return ""

        return _ENV_REF.sub(sub, node)
    return node


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def format_validation_error(source: str, exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        where = _loc(tuple(err["loc"]))
        where = f"{prefix}.{where}" if prefix and where != "(top level)" else (prefix or where)
        got = err.get("input")
        shown = "" if isinstance(got, dict) or err["type"] == "missing" else f" (got {got!r})"
        msg = err["msg"].replace("Value error, ", "")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{source + ': ' if source else ''}{where}: {msg}{shown}")
    return "\n".join(lines)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read, expand and validate a config file. Raises ConfigError with every problem found."""
    path = Path(path or os.environ.get(CONFIG_ENV) or "config.yaml")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    errors: list[str] = []
    raw = _expand_env(raw, "", errors)
    if errors:
        raise ConfigError("\n".join(f"{path}: {e}" for e in errors))
    raw["base_dir"] = path.resolve().parent
    raw["source"] = str(path)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc)) from exc
    # Channel settings are checked by each type's own model, so errors name the instance.
    from channels.registry import validate_channel_settings

    problems = validate_channel_settings(config)
    if problems:
        raise ConfigError("\n".join(f"{path}: {p}" for p in problems))
    return config
