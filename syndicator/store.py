"""Database engines, transactions and migrations.

SQLite is the embedded default: WAL, a busy timeout and `BEGIN IMMEDIATE` for every write
transaction, so writers queue instead of failing half-way. PostgreSQL is used through a URL.
Write transactions are retried when the database drops the connection or reports a
serialisation/lock failure, so callers see either a committed result or a clear error.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

#: Milliseconds SQLite waits for a lock before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: How many times a write transaction is retried after a dropped connection or lock failure.
WRITE_RETRIES = 5
#: Alembic migration scripts.
MIGRATIONS = Path(__file__).resolve().parent / "migrations"

T = TypeVar("T")


class StoreError(Exception):
    """The database cannot be reached or used; the message says which and why."""


def _sqlite_engine(url: str, immediate: bool) -> Engine:
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Store:
    """Owns the engines; hands out read and write transactions."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            db = parsed.database
            if db and db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            self.write_engine = _sqlite_engine(url, immediate=True)
            self.read_engine = _sqlite_engine(url, immediate=False)
        else:
            if parsed.drivername == "postgresql":
                url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False))
            self.write_engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
            self.read_engine = self.write_engine
        self._writer = sessionmaker(self.write_engine, expire_on_commit=False)
        # SQLite has one writer at a time: this process's threads queue here and are woken at once,
        # instead of sleeping 1–100 ms in SQLite's busy handler. Re-entrant, so a write started
        # inside another fails on SQLite's busy timeout with an error rather than hanging.
        self._write_lock = threading.RLock() if self.dialect == "sqlite" else contextlib.nullcontext()
        self._reader = sessionmaker(self.read_engine, expire_on_commit=False)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed at the end of the block, rolled back on error."""
        with self._writer() as session, session.begin():
            yield session

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A read transaction on a plain Core connection (no ORM session: cheaper for hot paths)."""
        with self.read_engine.connect() as conn:
            yield conn

    def run_write(self, fn: Callable[[Session], T], *, core: bool = False) -> T:
        """Run `fn` in a write transaction, retrying on dropped connections and lock failures.

        With `core`, `fn` gets a Core `Connection` instead of an ORM session — for hot paths whose
        statements are all Core (the delivery claim and settle), where the session costs more than
        the statements.
        """
        delay = 0.05
        for attempt in range(1, WRITE_RETRIES + 1):
            try:
                with self._write_lock:
                    if core:
                        with self.write_engine.begin() as conn:
                            return fn(conn)
                    with self.write() as session:
                        return fn(session)
            except (OperationalError, DBAPIError) as exc:
                if not _retryable(exc) or attempt == WRITE_RETRIES:
                    raise
                log.warning("database write retried", extra={"attempt": attempt, "error": str(exc.orig)})
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def dispose(self) -> None:
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()

    # -- migrations -------------------------------------------------------------------------

    def _alembic(self) -> AlembicConfig:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        return cfg

    def current_revision(self) -> str | None:
        with self.read_engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def migrate(self) -> None:
        """Bring the schema to the newest migration (safe to call from several processes)."""
        cfg = self._alembic()
        head = ScriptDirectory.from_config(cfg).get_current_head()
        try:
            if self.current_revision() == head:
                return
            with self.write_engine.begin() as conn:
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(7423001)"))
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except OperationalError as exc:
            raise StoreError(f"cannot open database {make_url(self.url).render_as_string()}: {exc.orig}") from exc


def _retryable(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    message = str(exc.orig).lower()
    return any(s in message for s in ("database is locked", "deadlock", "could not serialize",
                                      "server closed the connection", "connection", "terminating"))
