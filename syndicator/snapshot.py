"""Building the immutable `ArticleSnapshot` a channel renders, and the media port it reads from."""
from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from channels.base import ArticleSnapshot, AssetRef
from syndicator.models import Article, Asset, Revision
from syndicator.store import Store


def _ref(asset) -> AssetRef:
    return AssetRef(sha256=asset.sha256, mime=asset.mime, filename=asset.filename, size=asset.size,
                    width=asset.width, height=asset.height)


_R, _A = Revision.__table__, Article.__table__
# Built once: a delivery renders from one row of revision + article and the rows of its images.
_REVISION = select(_R.c.number, _R.c.content_hash, _R.c.title, _R.c.summary, _R.c.body_html, _R.c.author,
                   _R.c.unit, _R.c.tags, _R.c.cover_sha, _R.c.asset_shas, _R.c.publish_at, _R.c.expires_at,
                   _R.c.note, _R.c.created_at, _A.c.id.label("article_id"), _A.c.slug, _A.c.first_published_at,
                   _A.c.retraction_reason).join(_A, _A.c.id == _R.c.article_id).where(_R.c.id == bindparam("b_id"))
_ASSETS = select(Asset.sha256, Asset.mime, Asset.filename, Asset.size, Asset.width, Asset.height).where(
    Asset.sha256.in_(bindparam("b_shas", expanding=True)))


def build_snapshot(session: Session, revision_id: int, operation: str = "publish") -> ArticleSnapshot:
    r = session.execute(_REVISION, {"b_id": revision_id}).one_or_none()
    if r is None:
        raise LookupError(f"revision {revision_id} does not exist")
    shas = list(r.asset_shas) + ([r.cover_sha] if r.cover_sha else [])
    assets = {a.sha256: a for a in session.execute(_ASSETS, {"b_shas": shas})} if shas else {}
    return ArticleSnapshot(
        article_id=r.article_id, slug=r.slug, revision=r.number,
        content_hash=r.content_hash, title=r.title, summary=r.summary,
        body_html=r.body_html, author=r.author, unit=r.unit,
        tags=tuple(r.tags), cover=_ref(assets[r.cover_sha]) if r.cover_sha else None,
        assets=tuple(_ref(assets[s]) for s in r.asset_shas),
        first_published_at=r.first_published_at, revised_at=r.created_at,
        publish_at=r.publish_at, expires_at=r.expires_at,
        correction_note=r.note if r.number > 1 else None,
        retraction_reason=(r.retraction_reason or "") if operation == "retract" else None,
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
