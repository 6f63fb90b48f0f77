"""article search (trigram index of slug and current title) and a (state, article_id) delivery index

The ops matrix searches articles by a substring of their slug or current title. `article_search`
holds one row per article — id, slug, title of the current revision — kept in step by triggers on
`articles` and `revisions`, so every writer (publish, correct, scripts, imports) keeps it right
without any application code. It is indexed by trigrams:

- SQLite: an FTS5 table `article_search_fts` with `tokenize='trigram'`, external content
  `article_search` (its own triggers keep the index in step with that table).
- PostgreSQL: `slug_folded` and `title_folded`, lower() of both stored (generated columns), so a
  case-insensitive search is a plain LIKE on them — what ILIKE does on a UTF-8 database, without
  lower-casing every row at search time — and GIN `gin_trgm_ops` indexes on them (extension
  `pg_trgm`). If the extension cannot be created (not installed, no privilege) the migration
  still succeeds without those indexes; searches then scan `article_search` (correct, slower).
  Creating the extension later and running the two CREATE INDEX statements below enables them.

`ix_deliveries_state_article` (state, article_id) lets the matrix filtered by a rare state walk
that state's deliveries in article order (the page order) and stop after one page.

Note for later migrations: rebuilding `articles` or `revisions` on SQLite (alembic batch mode
copies and renames the table) drops their triggers; such a migration must create them again
(`_SQLITE_SOURCE_TRIGGERS` here).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""
from alembic import op
from sqlalchemy import text

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_CURRENT_TITLE = "(SELECT r.title FROM revisions r WHERE r.article_id = {a}.id AND r.number = {a}.current_revision)"

#: SQLite: the FTS index follows article_search (the documented external-content pattern).
_SQLITE_FTS_TRIGGERS = (
    """CREATE TRIGGER article_search_fts_ai AFTER INSERT ON article_search BEGIN
        INSERT INTO article_search_fts (rowid, slug, title) VALUES (new.id, new.slug, new.title);
    END""",
    """CREATE TRIGGER article_search_fts_ad AFTER DELETE ON article_search BEGIN
        INSERT INTO article_search_fts (article_search_fts, rowid, slug, title)
        VALUES ('delete', old.id, old.slug, old.title);
    END""",
    """CREATE TRIGGER article_search_fts_au AFTER UPDATE ON article_search BEGIN
        INSERT INTO article_search_fts (article_search_fts, rowid, slug, title)
        VALUES ('delete', old.id, old.slug, old.title);
        INSERT INTO article_search_fts (rowid, slug, title) VALUES (new.id, new.slug, new.title);
    END""",
)
#: SQLite: article_search follows articles and revisions. (No INSERT OR REPLACE: its implicit
#: delete would not fire the FTS delete trigger.)
_SQLITE_SOURCE_TRIGGERS = (
    f"""CREATE TRIGGER article_search_article_ai AFTER INSERT ON articles BEGIN
        INSERT INTO article_search (id, slug, title) VALUES (new.id, new.slug, {_CURRENT_TITLE.format(a='new')});
    END""",
    f"""CREATE TRIGGER article_search_article_au AFTER UPDATE OF slug, current_revision ON articles BEGIN
        UPDATE article_search SET slug = new.slug, title = {_CURRENT_TITLE.format(a='new')} WHERE id = new.id;
        INSERT INTO article_search (id, slug, title)
        SELECT new.id, new.slug, {_CURRENT_TITLE.format(a='new')}
        WHERE NOT EXISTS (SELECT 1 FROM article_search WHERE id = new.id);
    END""",
    """CREATE TRIGGER article_search_article_ad AFTER DELETE ON articles BEGIN
        DELETE FROM article_search WHERE id = old.id;
    END""",
    """CREATE TRIGGER article_search_revision_ai AFTER INSERT ON revisions BEGIN
        UPDATE article_search SET title = new.title
        WHERE id = new.article_id AND new.number = (SELECT current_revision FROM articles WHERE id = new.article_id);
    END""",
    """CREATE TRIGGER article_search_revision_au AFTER UPDATE OF title ON revisions BEGIN
        UPDATE article_search SET title = new.title
        WHERE id = new.article_id AND new.number = (SELECT current_revision FROM articles WHERE id = new.article_id);
    END""",
)
_SQLITE_TRIGGER_NAMES = ("article_search_article_ai", "article_search_article_au", "article_search_article_ad",
                         "article_search_revision_ai", "article_search_revision_au", "article_search_fts_ai",
                         "article_search_fts_ad", "article_search_fts_au")

#: PostgreSQL: article_search follows articles (deletes: the foreign key cascades) and revisions.
_PG_FUNCTIONS = (
    f"""CREATE FUNCTION article_search_from_article() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO article_search (id, slug, title) VALUES (NEW.id, NEW.slug, {_CURRENT_TITLE.format(a='NEW')})
        ON CONFLICT (id) DO UPDATE SET slug = EXCLUDED.slug, title = EXCLUDED.title;
        RETURN NULL;
    END $$""",
    """CREATE FUNCTION article_search_from_revision() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE article_search s SET title = NEW.title FROM articles a
        WHERE a.id = NEW.article_id AND a.current_revision = NEW.number AND s.id = a.id;
        RETURN NULL;
    END $$""",
)
_PG_TRIGGERS = (
    """CREATE TRIGGER article_search_article AFTER INSERT OR UPDATE OF slug, current_revision ON articles
       FOR EACH ROW EXECUTE FUNCTION article_search_from_article()""",
    """CREATE TRIGGER article_search_revision AFTER INSERT OR UPDATE OF title ON revisions
       FOR EACH ROW EXECUTE FUNCTION article_search_from_revision()""",
)
_BACKFILL = (f"INSERT INTO article_search (id, slug, title) SELECT a.id, a.slug, {_CURRENT_TITLE.format(a='a')} "
             "FROM articles a")


def _pg_trgm_schema(bind) -> str | None:
    """Create pg_trgm if it is missing and we may; the schema it lives in, or None without it."""
    try:
        with bind.begin_nested():  # a failure must not abort the migration's transaction
            bind.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except Exception:  # noqa: BLE001 - not installed, or no privilege: search works without it
        pass
    return bind.scalar(text("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                            "WHERE e.extname = 'pg_trgm'"))


def upgrade() -> None:
    op.create_index("ix_deliveries_state_article", "deliveries", ["state", "article_id"])
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute("CREATE TABLE article_search (id INTEGER PRIMARY KEY, slug VARCHAR(80) NOT NULL, "
                   "title VARCHAR(200))")
        op.execute("CREATE VIRTUAL TABLE article_search_fts USING fts5(slug, title, content='article_search', "
                   "content_rowid='id', tokenize='trigram')")
        op.execute(_BACKFILL)
        op.execute("INSERT INTO article_search_fts (article_search_fts) VALUES ('rebuild')")
        for sql in (*_SQLITE_FTS_TRIGGERS, *_SQLITE_SOURCE_TRIGGERS):
            op.execute(sql)
        return
    # No article may be written between the backfill and the triggers.
    op.execute("LOCK TABLE articles, revisions IN SHARE ROW EXCLUSIVE MODE")
    op.execute("CREATE TABLE article_search (id BIGINT PRIMARY KEY REFERENCES articles (id) ON DELETE CASCADE, "
               "slug VARCHAR(80) NOT NULL, title VARCHAR(200), "
               "slug_folded TEXT GENERATED ALWAYS AS (lower(slug)) STORED, "
               "title_folded TEXT GENERATED ALWAYS AS (lower(title)) STORED)")
    op.execute(_BACKFILL)
    for sql in (*_PG_FUNCTIONS, *_PG_TRIGGERS):
        op.execute(sql)
    schema = _pg_trgm_schema(bind)
    if schema is not None:
        ops_class = f'"{schema}".gin_trgm_ops'
        op.execute(f"CREATE INDEX ix_article_search_slug_trgm ON article_search USING gin (slug_folded {ops_class})")
        op.execute(f"CREATE INDEX ix_article_search_title_trgm ON article_search USING gin (title_folded {ops_class})")
    op.execute("ANALYZE article_search")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for name in _SQLITE_TRIGGER_NAMES:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS article_search_fts")
        op.execute("DROP TABLE IF EXISTS article_search")
    else:
        op.execute("DROP TRIGGER IF EXISTS article_search_revision ON revisions")
        op.execute("DROP TRIGGER IF EXISTS article_search_article ON articles")
        op.execute("DROP FUNCTION IF EXISTS article_search_from_revision()")
        op.execute("DROP FUNCTION IF EXISTS article_search_from_article()")
        op.execute("DROP TABLE IF EXISTS article_search")  # and its indexes; pg_trgm itself stays
    op.drop_index("ix_deliveries_state_article", table_name="deliveries")
