"""Shared fixtures. Integration fixtures (Redis, workers, databases) live in tests/support/."""
from __future__ import annotations

import hashlib
import io
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2
import pytest
from PIL import Image

from channels.base import ArticleSnapshot, AssetRef, Ports, RenderContext

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "tests" / "artifacts"


class MemoryMedia:
    """An in-memory MediaSource for adapter tests: sha256 → bytes."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.reads: list[str] = []

    def add_image(self, color: str = "red", size: tuple[int, int] = (64, 48), fmt: str = "JPEG") -> AssetRef:
        buf = io.BytesIO()
        Image.new("RGB", size, color).save(buf, fmt)
        data = buf.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        self.blobs[sha] = data
        mime = {"JPEG": "image/jpeg", "PNG": "image/png"}[fmt]
        return AssetRef(sha256=sha, mime=mime, filename=f"{color}.{fmt.lower()}", size=len(data),
                        width=size[0], height=size[1])

    def read(self, sha256: str) -> bytes:
        self.reads.append(sha256)
        return self.blobs[sha256]


@pytest.fixture
def media() -> MemoryMedia:
    return MemoryMedia()


@pytest.fixture
def ports(tmp_path: Path) -> Ports:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(REPO / "templates"), autoescape=True)
    return Ports(public_dir=tmp_path / "public", site_url="http://127.0.0.1:8470/",
                 templates=env, timezone=ZoneInfo("Asia/Shanghai"),
                 clock=lambda: datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc))


@pytest.fixture
def render_ctx(ports: Ports) -> RenderContext:
    return RenderContext(now=ports.clock(), ports=ports)


def snapshot(**overrides) -> ArticleSnapshot:
    """A realistic article snapshot; override any field."""
    base = dict(
        article_id=1, slug="2026-winter-relief", revision=1, content_hash="h1",
        title="省民政厅部署2026年冬春困难群众救助工作",
        summary="要求各市州摸清底数，确保困难群众温暖过冬。",
        body_html="<p>近日，省民政厅召开全省冬春救助工作视频会议。</p><p>会议要求各地<strong>摸清底数</strong>。</p>",
        author="张明", unit="省民政厅社会救助处", tags=("社会救助", "冬春救助"),
        cover=None, assets=(),
        first_published_at=datetime(2026, 11, 25, 1, 30, tzinfo=timezone.utc),
        revised_at=datetime(2026, 11, 25, 1, 30, tzinfo=timezone.utc),
    )
    base.update(overrides)
    return ArticleSnapshot(**base)


@pytest.fixture
def make_snapshot():
    return snapshot
