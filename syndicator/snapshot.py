"""Building the immutable `ArticleSnapshot` a channel renders, and the media port it reads from."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.base import ArticleSnapshot, AssetRef
from syndicator.models import Article, Asset, Revision
from syndicator.store import Store


def _ref(asset) -> AssetRef:
    return AssetRef(sha256=asset.sha256, mime=asset.mime, filename=asset.filename, size=asset.size,
                    width=asset.width, height=asset.height)


def build_snapshot(session: Session, revision_id: int, operation: str = "publish") -> ArticleSnapshot:
    revision = session.get(Revision, revision_id)
    if revision is None:
        raise LookupError(f"revision {revision_id} does not exist")
    article = session.get(Article, revision.article_id)
    shas = list(revision.asset_shas) + ([revision.cover_sha] if revision.cover_sha else [])
    columns = (Asset.sha256, Asset.mime, Asset.filename, Asset.size, Asset.width, Asset.height)
    assets = {a.sha256: a for a in session.execute(select(*columns).where(Asset.sha256.in_(shas)))} if shas else {}
    return ArticleSnapshot(
        article_id=article.id, slug=article.slug, revision=revision.number,
        content_hash=revision.content_hash, title=revision.title, summary=revision.summary,
        body_html=revision.body_html, author=revision.author, unit=revision.unit,
        tags=tuple(revision.tags), cover=_ref(assets[revision.cover_sha]) if revision.cover_sha else None,
        assets=tuple(_ref(assets[s]) for s in revision.asset_shas),
        first_published_at=article.first_published_at, revised_at=revision.created_at,
        publish_at=revision.publish_at, expires_at=revision.expires_at,
        correction_note=revision.note if revision.number > 1 else None,
        retraction_reason=(article.retraction_reason or "") if operation == "retract" else None,
    )


class StoreMedia:
    """The MediaSource adapters read image bytes from, backed by the assets table."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def read(self, sha256: str) -> bytes:
        with self.store.read() as session:
            data = session.scalar(select(Asset.data).where(Asset.sha256 == sha256))
        if data is None:
            raise LookupError(f"asset {sha256} is not stored")
        return data
