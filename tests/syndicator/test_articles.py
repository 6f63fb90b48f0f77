"""Reading article files: every kind of bad input is refused with a message naming file and field."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from PIL import Image

from syndicator.articles import BadInput, read_article
from tests.conftest import write_article
from tests.support.services import REPO, write_config

LIMITS = {"max_image_bytes": 200_000, "max_body_chars": 10_000}


def jpeg(path, size=(40, 30)):
    buf = io.BytesIO()
    Image.new("RGB", size, "navy").save(buf, "JPEG")
    path.write_bytes(buf.getvalue())
    return path


def problems(path) -> str:
    with pytest.raises(BadInput) as err:
        read_article(path, **LIMITS)
    return str(err.value)


def test_a_valid_article_with_images_becomes_a_draft(tmp_path):
    jpeg(tmp_path / "cover.jpg")
    jpeg(tmp_path / "inline.jpg", (20, 20))
    path = write_article(tmp_path, "good-one", body="第一段。\n\n![现场](inline.jpg)\n\n| 单位 | 数量 |\n|---|---|\n| 甲市 | 3 |",
                         cover="cover.jpg")
    draft = read_article(path, **LIMITS)
    assert draft.slug == "good-one" and draft.title == "测试文章"
    assert draft.cover and draft.cover.mime == "image/jpeg" and draft.cover.width == 40
    assert len(draft.assets) == 1 and f'src="asset:{draft.assets[0].sha256}"' in draft.body_html
    assert "<table>" in draft.body_html
    assert read_article(path, **LIMITS).content_hash == draft.content_hash


def test_slug_defaults_to_the_file_name(tmp_path):
    path = tmp_path / "2026 Notice_A.md"
    path.write_text("---\ntitle: 通知\n---\n正文\n", encoding="utf-8")
    assert read_article(path, **LIMITS).slug == "2026-notice-a"


@pytest.mark.parametrize("text,expected", [
    ("no front matter here\n", "front matter: missing"),
    ("---\ntitle: [unclosed\n---\nbody\n", "front matter: not valid YAML at line"),
    ("---\nsummary: 没有标题\n---\nbody\n", "front matter: title: Field required"),
    ("---\ntitle: ''\n---\nbody\n", "front matter: title: String should have at least 1 character"),
    ("---\ntitle: 标题\ncolour: red\n---\nbody\n", "front matter: colour: unknown key"),
    ("---\ntitle: 标题\nslug: Bad Slug!\n---\nbody\n", "front matter: slug: String should match pattern"),
    ("---\ntitle: 标题\ntags: [" + ",".join(["t"] * 11) + "]\n---\nbody\n", "front matter: tags"),
    ("---\ntitle: 标题\npublish_at: 2026-12-01T10:00:00+08:00\nexpires_at: 2026-11-01T10:00:00+08:00\n---\nb\n",
     "expires_at must be later than publish_at"),
    ("---\ntitle: 标题\npublish_at: next tuesday\n---\nbody\n", "front matter: publish_at"),
    ("---\ntitle: 标题\n---\n\n", "body: empty"),
])
def test_malformed_front_matter_and_body(tmp_path, text, expected):
    path = tmp_path / "bad.md"
    path.write_text(text, encoding="utf-8")
    message = problems(path)
    assert message.startswith(str(path))
    assert expected in message


@pytest.mark.parametrize("body,expected", [
    ("正文\n\n<script>alert(1)</script>\n", "<script> is not allowed in an article (body line 3)"),
    ('<p onclick="steal()">点我</p>', "the onclick= attribute on <p> is not allowed"),
    ('<a href="javascript:alert(1)">链接</a>', "a javascript: URL in <a href> is not allowed"),
    ('<a href=" JaVaScRiPt:alert(1)">链接</a>', "a javascript: URL in <a href> is not allowed"),
    ('<iframe src="https://evil.example"></iframe>', "<iframe> is not allowed"),
    ('<img src="x.png" onerror="alert(1)">', "the onerror= attribute on <img>"),
])
def test_hostile_html_is_refused_naming_the_element(tmp_path, body, expected):
    assert expected in problems(write_article(tmp_path, "hostile", body=body))


def test_image_problems_name_the_image(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not an image at all")
    jpeg(tmp_path / "huge.jpg", (1500, 1500))
    (tmp_path / "huge.jpg").write_bytes((tmp_path / "huge.jpg").read_bytes() + b"\0" * 250_000)
    assert "cover: broken.jpg is not a readable image" in problems(
        write_article(tmp_path, "a1", cover="broken.jpg"))
    assert "cover: cannot read" in problems(write_article(tmp_path, "a2", cover="missing.jpg"))
    assert "over the limit of 200,000 bytes" in problems(write_article(tmp_path, "a3", body="![大图](huge.jpg)"))
    assert "is remote" in problems(write_article(tmp_path, "a4", body="![外链](https://example.com/a.jpg)"))


def test_stored_body_is_sanitised_even_for_allowed_markup(tmp_path):
    draft = read_article(write_article(tmp_path, "clean", body='<p style="color:red" class="x">文字</p>'), **LIMITS)
    assert draft.body_html.strip() == "<p>文字</p>"


def _cli(config, *args):
    return subprocess.run([sys.executable, "-m", "syndicator.cli", "--config", str(config), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def test_cli_bad_input_exits_2_and_stores_nothing(tmp_path):
    # Given a system holding one published article
    config = write_config(tmp_path / "config.yaml", database_url=f"sqlite:///{tmp_path / 's.db'}",
                          broker_url=f"sqla+sqlite:///{tmp_path / 'b.db'}", public=tmp_path / "public")
    good = write_article(tmp_path / "in", "kept", title="已发布")
    assert _cli(config, "publish", str(good)).returncode == 0
    before = json.loads(_cli(config, "status", "kept", "--json").stdout)
    # When bad inputs are published
    bad = [write_article(tmp_path / "in", "scripted", body="<script>x()</script>"),
           write_article(tmp_path / "in", "kept", title="同名不同文"),  # slug collision
           tmp_path / "in" / "missing.md"]
    for path in bad:
        out = _cli(config, "publish", str(path))
        # Then each exits 2 with a message naming the file, and nothing changes
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith("error: ") and path.name in out.stderr
        assert "Traceback" not in out.stderr
    collision = _cli(config, "publish", str(bad[1])).stderr
    assert "slug: 'kept' is already used by article" in collision and "syndicator correct" in collision
    assert json.loads(_cli(config, "status", "kept", "--json").stdout) == before
    listing = json.loads(_cli(config, "deliveries", "--json").stdout)["deliveries"]
    assert len(listing) == 2 and {d["slug"] for d in listing} == {"kept"}
    unknown = _cli(config, "deliveries", "--channel", "fax")
    assert unknown.returncode == 2 and "unknown channel 'fax'" in unknown.stderr
    assert _cli(config, "status", "nope").returncode == 2
