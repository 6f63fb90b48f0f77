"""The store's tables: articles, immutable revisions, assets, deliveries and the event log.

Times are stored as UTC and always come back timezone-aware (SQLite keeps no zone). The
`deliveries.state` column is written only by `syndicator.states.transition`.
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    """A DateTime that refuses naive values and always returns aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC time")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


#: BigInteger primary keys that are still INTEGER (rowid aliases) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Article(Base):
    __tablename__ = "articles"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    #: live | retracted
    status: Mapped[str] = mapped_column(String(16), default="live")
    current_revision: Mapped[int] = mapped_column(Integer)
    first_published_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))
    #: Where the source came from (file path), for people reading the log.
    source: Mapped[str | None] = mapped_column(String(500))
    #: End of a display window (公示期) of the current revision; the sweeper retracts it then.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    retracted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    retracted_by: Mapped[str | None] = mapped_column(String(64))
    retraction_reason: Mapped[str | None] = mapped_column(Text)

    revisions: Mapped[list[Revision]] = relationship(back_populates="article", order_by="Revision.number")


class Revision(Base):
    """An immutable snapshot of an article's content; each publish or correction adds one."""

    __tablename__ = "revisions"
    __table_args__ = (UniqueConstraint("article_id", "number"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(Text, default="")
    body_source: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(64), default="")
    unit: Mapped[str] = mapped_column(String(120), default="")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    cover_sha: Mapped[str | None] = mapped_column(ForeignKey("assets.sha256"))
    asset_shas: Mapped[list[str]] = mapped_column(JSON, default=list)
    publish_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))

    article: Mapped[Article] = relationship(back_populates="revisions")


class Asset(Base):
    """Image bytes, content-addressed; shared by every revision that uses them."""

    __tablename__ = "assets"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    mime: Mapped[str] = mapped_column(String(40))
    filename: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer, default=0)
    height: Mapped[int] = mapped_column(Integer, default=0)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Delivery(Base):
    """One operation of one article revision on one channel instance, with its tracked state."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("revision_id", "channel", "operation", name="uq_delivery_revision_channel_op"),
        Index("ix_deliveries_due", "state", "next_attempt_at"),
        Index("ix_deliveries_channel_state", "channel", "state"),
        Index("ix_deliveries_article", "article_id", "channel"),
        Index("ix_deliveries_updated", "updated_at"),
        # Newest-first pages filtered by state or channel walk these instead of sorting every match.
        Index("ix_deliveries_state_id", "state", "id"),
        Index("ix_deliveries_channel_id", "channel", "id"),
        Index("ix_deliveries_state_channel", "state", "channel"),
        # The matrix filtered by a rare state walks this in its page order (article id, newest first).
        Index("ix_deliveries_state_article", "state", "article_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"))
    revision_id: Mapped[int] = mapped_column(ForeignKey("revisions.id", ondelete="CASCADE"))
    revision: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(40))
    channel_type: Mapped[str] = mapped_column(String(40))
    #: publish | update | retract
    operation: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When the last broker message for this delivery was sent (the sweeper re-sends stale ones).
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: While `sending`: when the claiming worker is presumed lost.
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The previous attempt's outcome is unknown; the next one must reconcile first.
    reconcile: Mapped[bool] = mapped_column(default=False)
    remote_id: Mapped[str | None] = mapped_column(String(200))
    remote_url: Mapped[str | None] = mapped_column(String(1000))
    last_error: Mapped[str | None] = mapped_column(Text)
    #: The rendition as stored before the first attempt (JSON).
    rendition: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Event(Base):
    """Append-only log: every transition and every editorial action, with its actor."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_delivery", "delivery_id"), Index("ix_events_article", "article_id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    article_id: Mapped[int | None] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"))
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str | None] = mapped_column(String(16))
    attempt: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(Text)


class ChannelStatus(Base):
    """Operator-facing status of a channel instance: suspended ones are not sent to until resumed."""

    __tablename__ = "channel_status"

    channel: Mapped[str] = mapped_column(String(40), primary_key=True)
    suspended: Mapped[bool] = mapped_column(default=False)
    reason: Mapped[str | None] = mapped_column(Text)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    changed_by: Mapped[str] = mapped_column(String(64))
    #: Circuit breaker: transient failures in a row, and until when attempts are held back.
    failures: Mapped[int] = mapped_column(Integer, default=0)
    open_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class User(Base):
    """A person who uses the desk or the dashboard; every action they take is logged under `username`."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(64), default="")
    #: argon2 hash; never the password.
    password_hash: Mapped[str] = mapped_column(String(200))
    #: editor | reviewer | publisher | ops | admin
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))


class ApiToken(Base):
    """A token for automation; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked: Mapped[bool] = mapped_column(default=False)
