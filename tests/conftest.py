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


# -- integration fixtures: real Redis, PostgreSQL, Celery processes -----------------------------

from tests.support.services import (  # noqa: E402
    CeleryProcess,
    PostgresDatabase,
    RedisServer,
    write_config,
)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.kill()


@pytest.fixture
def redis_url(redis_server) -> str:
    redis_server.flush()
    return redis_server.url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'syndicator.db'}"
        return
    db = PostgresDatabase().create()
    yield db.url
    db.drop()


class System:
    """A configured syndicator for one test: config file, runtime, and its processes."""

    def __init__(self, tmp_path: Path, database_url: str, broker_url: str, **config_overrides) -> None:
        from syndicator.config import load_config
        from syndicator.runtime import Runtime

        self.tmp = tmp_path
        self.public = tmp_path / "public"
        self.config_path = write_config(tmp_path / "config.yaml", database_url=database_url,
                                        broker_url=broker_url, public=self.public, **config_overrides)
        self.config = load_config(self.config_path)
        self.rt = Runtime(self.config)
        self.rt.store.migrate()
        self.processes: list[CeleryProcess] = []

    def worker(self, wait_ready: bool = True, **kw) -> CeleryProcess:
        proc = CeleryProcess(self.config_path, "worker", **kw).start(wait_ready=wait_ready)
        self.processes.append(proc)
        return proc

    def beat(self, **kw) -> CeleryProcess:
        proc = CeleryProcess(self.config_path, "beat", **kw).start()
        self.processes.append(proc)
        return proc

    def publish(self, path, actor: str = "test:editor"):
        from syndicator.articles import read_article
        from syndicator.publishing import publish

        draft = read_article(path, max_image_bytes=self.config.limits.max_image_bytes,
                             max_body_chars=self.config.limits.max_body_chars)
        return publish(self.rt.store, self.config, draft, actor=actor, enqueuer=self.rt.enqueuer)

    def states(self) -> dict[str, int]:
        from sqlalchemy import func, select

        from syndicator.models import Delivery

        with self.rt.store.read() as s:
            return dict(s.execute(select(Delivery.state, func.count()).group_by(Delivery.state)).all())

    def wait_settled(self, expected: int, timeout: float = 90) -> dict[str, int]:
        from tests.support.services import wait_for

        def done():
            counts = self.states()
            return counts if counts.get("delivered", 0) + counts.get("failed", 0) + counts.get("unknown", 0) \
                >= expected else None
        try:
            return wait_for(done, timeout, f"{expected} settled deliveries", interval=0.25)
        except TimeoutError:
            logs = "\n".join(p.output()[-4000:] for p in self.processes)
            raise AssertionError(f"not settled: {self.states()}\n{logs}") from None

    def close(self) -> None:
        for proc in self.processes:
            proc.kill()
        self.rt.store.dispose()


@pytest.fixture
def make_system(tmp_path, database_url, redis_url):
    systems = []

    def factory(**overrides) -> System:
        system = System(tmp_path, overrides.pop("database_url", database_url),
                        overrides.pop("broker_url", redis_url), **overrides)
        systems.append(system)
        return system

    yield factory
    for system in systems:
        system.close()


def write_article(folder: Path, slug: str, title: str = "测试文章", body: str = "正文内容。", **front) -> Path:
    """Write a minimal valid article file and return its path."""
    import yaml as _yaml

    meta = {"title": title, "summary": "摘要", "author": "测试员", "unit": "省民政厅办公室",
            "tags": ["测试"], "slug": slug, **front}
    path = folder / f"{slug}.md"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text("---\n" + _yaml.safe_dump(meta, allow_unicode=True) + "---\n\n" + body + "\n",
                    encoding="utf-8")
    return path


#: Flags for Chromium on a closed network (no background connections), run as root.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def chromium():
    """A real headless Chromium (Debian's package, installed by the test command)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield browser
        browser.close()
