"""The editor desk in-process (FastAPI TestClient, no workers): roles, CSRF, field-level 422s with
nothing stored, hostile bodies, the five-channel preview with its warnings, idempotent publish,
correction, retraction and retry."""
from __future__ import annotations

import hashlib
import html
import io
import re
import shutil
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select, update

from syndicator.config import load_config
from syndicator.models import Article, Asset, Delivery, Revision
from syndicator.runtime import Runtime
from syndicator.users import ROLES, add_user
from syndicator.web.app import create_app
from syndicator.web.desk.preview import _display_html
from tests.conftest import REPO
from tests.support.services import write_config

PASSWORD = "correct-horse-battery"
FIVE = {
    "rss_main": {"type": "rss", "title": "测试订阅", "items": 50},
    "microsite": {"type": "microsite", "title": "测试微站", "path": "m"},
    "portal": {"type": "portal", "base_url": "http://127.0.0.1:9/", "username": "editor",
               "app_password": "abcd EFGH ijkl MNOP qrst UVWX"},
    "wechat_main": {"type": "wechat", "api_base": "http://127.0.0.1:9/", "appid": "wx0123456789abcdef",
                    "secret": "0123456789abcdef0123456789abcdef", "author": "省民政厅",
                    "default_cover": str(REPO / "assets" / "wechat-default-cover.jpg")},
    "weibo_main": {"type": "weibo", "api_base": "http://127.0.0.1:9/", "access_token": "t",
                   "safe_domain": "127.0.0.1"},
}


def make_runtime(folder) -> Runtime:
    path = write_config(folder / "config.yaml", database_url=f"sqlite:///{folder / 's.db'}",
                        broker_url=f"sqla+sqlite:///{folder / 'b.db'}", public=folder / "public",
                        channels=FIVE, site_url="http://127.0.0.1:8470/")
    return Runtime(load_config(path))


@pytest.fixture(scope="module")
def users_db(tmp_path_factory):
    """A migrated database with one user per role, made once (argon2 is slow on purpose)."""
    folder = tmp_path_factory.mktemp("desk-users")
    rt = make_runtime(folder)
    rt.store.migrate()
    for role in ROLES:
        add_user(rt.store, role, PASSWORD, role, actor="test")
    rt.store.dispose()
    return folder / "s.db"


@pytest.fixture
def desk(tmp_path, users_db):
    shutil.copyfile(users_db, tmp_path / "s.db")
    rt = make_runtime(tmp_path)
    rt.store.migrate()
    yield rt
    rt.store.dispose()


def client_for(rt, role: str | None) -> TestClient:
    client = TestClient(create_app(rt), follow_redirects=False)
    if role:
        token = csrf(client.get("/login").text)
        answer = client.post("/login", data={"username": role, "password": PASSWORD, "csrf_token": token})
        assert answer.status_code == 303, answer.text
    return client


def csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def token_of(client: TestClient) -> str:
    return csrf(client.get("/desk").text)


def jpeg(color: str = "teal", size=(90, 60)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def article(**overrides) -> dict[str, str]:
    data = {"title": "省民政厅部署今冬明春救助工作", "summary": "要求各地摸清底数。", "author": "林思远",
            "unit": "省民政厅社会救助处", "tags": "社会救助，冬春救助", "slug": "", "publish_at": "",
            "expires_at": "", "body": "会议要求各地**摸清底数**。\n\n## 资金到位\n\n元旦前发放到户。",
            "body_format": "markdown"}
    data.update(overrides)
    return data


def site_now() -> datetime:
    """Now on the site's clock: the desk reads datetime-local values in the site's zone."""
    return datetime.now(ZoneInfo("Asia/Shanghai"))


def counts(rt) -> dict[str, int]:
    with rt.store.read() as s:
        return {name: s.scalar(select(func.count()).select_from(model))
                for name, model in (("articles", Article), ("revisions", Revision), ("deliveries", Delivery),
                                    ("assets", Asset))}


def field_errors(page: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, text in re.findall(r'<p class="field-error" id="err-(\w+)-\d+">(.*?)</p>', page, re.S):
        found.setdefault(name, []).append(html.unescape(text))
    return found


def preview(client, data=None, files=None, token=None):
    return client.post("/desk/preview", data={**(data or article()), "csrf_token": token or token_of(client)},
                       files=files or {"cover_file": ("", b"", "application/octet-stream")})


def publish(client, page: str):
    """Press 发布 on a preview page: send back exactly the hidden fields it holds."""
    form = re.search(r'<form method="post" action="/desk/publish".*?</form>', page, re.S).group(0)
    fields = {html.unescape(n): html.unescape(v) for n, v in
              re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form)}
    return client.post("/desk/publish", data=fields, files={"cover_file": ("", b"", "application/octet-stream")})


# -- who may ------------------------------------------------------------------------------------

def test_anonymous_visitors_are_sent_to_the_login_page(desk):
    client = client_for(desk, None)
    for path in ("/desk", "/desk/new", "/desk/articles/1"):
        answer = client.get(path)
        assert answer.status_code == 303 and answer.headers["location"] == f"/login?next={path}"
    answer = client.post("/desk/publish", data=article())
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
    assert counts(desk)["articles"] == 0


@pytest.mark.parametrize("role", ["reviewer", "ops"])
def test_roles_that_may_not_publish_get_403_and_store_nothing(desk, role):
    client = client_for(desk, role)
    listing = client.get("/desk")
    assert listing.status_code == 200 and 'href="/desk/new"' not in listing.text
    token = csrf(listing.text)
    assert client.get("/desk/new").status_code == 403
    cover = {"cover_file": ("c.jpg", jpeg(), "image/jpeg")}
    assert client.post("/desk/preview", data={**article(), "csrf_token": token}, files=cover).status_code == 403
    assert client.post("/desk/publish", data={**article(), "csrf_token": token}, files=cover).status_code == 403
    assert counts(desk) == {"articles": 0, "revisions": 0, "deliveries": 0, "assets": 0}


def test_editor_sees_the_desk_and_the_form(desk):
    client = client_for(desk, "editor")
    listing = client.get("/desk")
    assert listing.status_code == 200 and 'href="/desk/new"' in listing.text
    form = client.get("/desk/new")
    assert form.status_code == 200
    assert 'action="/desk/preview"' in form.text and 'enctype="multipart/form-data"' in form.text
    assert "新建稿件" in form.text  # Chinese by default
    assert "<h1>New article</h1>" in client.get("/desk/new?lang=en").text


def test_posts_without_the_csrf_token_are_refused(desk):
    client = client_for(desk, "editor")
    assert client.post("/desk/preview", data=article()).status_code == 403
    assert client.post("/desk/publish", data={**article(), "csrf_token": "forged"}).status_code == 403
    assert counts(desk)["articles"] == 0


# -- bad input ------------------------------------------------------------------------------------

def test_bad_form_answers_422_with_each_message_next_to_its_field_and_stores_nothing(desk):
    client = client_for(desk, "editor")
    past = (site_now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    answer = preview(client, article(title="", slug="Not A Slug", expires_at=past, tags="好," + "长" * 31,
                                     publish_at="tomorrow"),
                     files={"cover_file": ("cover.jpg", b"not an image at all", "image/jpeg")})
    assert answer.status_code == 422
    errors = field_errors(answer.text)
    assert set(errors) == {"title", "slug", "expires_at", "tags", "publish_at", "cover"}, errors
    assert errors["title"] == ["请填写标题。"]
    assert "不是可读取的图片" in errors["cover"][0]
    assert re.search(r'<input id="new-title" name="title" value=""[^>]*aria-invalid="true"', answer.text)
    # what was typed comes back, so nothing has to be typed again
    assert 'value="Not A Slug"' in answer.text and "会议要求各地**摸清底数**" in answer.text
    assert counts(desk) == {"articles": 0, "revisions": 0, "deliveries": 0, "assets": 0}


def test_a_hostile_body_is_refused_at_preview_and_at_publish(desk):
    client = client_for(desk, "editor")
    body = "正文。\n\n<script>alert('x')</script>\n\n<img src=\"x.jpg\" onerror=\"alert(1)\">\n\n[点我](javascript:alert(1))"
    answer = preview(client, article(body=body))
    assert answer.status_code == 422
    messages = " ".join(field_errors(answer.text)["body"])
    assert "<script>" in messages and "onerror" in messages
    assert "<script>alert" not in answer.text  # shown back escaped, never live
    token = token_of(client)
    direct = client.post("/desk/publish", data={**article(body=body, body_format="html"), "csrf_token": token})
    assert direct.status_code == 422 and field_errors(direct.text)["body"]
    assert counts(desk)["articles"] == 0


def test_article_html_is_sanitised_before_the_desk_shows_it():
    sha = "ab" * 32
    shown = str(_display_html(f'<p style="color:red" onclick="x()">正文<img src="http://evil.example/a.png">'
                              f'<img src="asset:{sha}" alt="图"></p><script>alert(1)</script>'
                              '<a href="javascript:alert(1)">链接</a>'))
    assert "style=" not in shown and "onclick" not in shown and "<script" not in shown
    assert "evil.example" not in shown and "javascript:" not in shown
    assert f'src="/desk/assets/{sha}"' in shown


# -- preview and publish ----------------------------------------------------------------------------

def test_preview_shows_all_five_channels_with_their_warnings(desk):
    client = client_for(desk, "editor")
    title = "省民政厅关于进一步做好今冬明春困难群众基本生活保障工作有关事项的通知要点解读说明"
    assert len(title) == 40
    cover = jpeg()
    answer = preview(client, article(title=title), files={"cover_file": ("封面.jpg", cover, "image/jpeg")})
    assert answer.status_code == 200, field_errors(answer.text)
    page = answer.text
    panels = re.findall(r'<section class="panel panel-(\w+)[^"]*" data-channel="(\w+)"', page)
    assert sorted(panels) == sorted([("wechat", "wechat_main"), ("microsite", "microsite"), ("weibo", "weibo_main"),
                                     ("rss", "rss_main"), ("portal", "portal")])
    wechat = page.split('data-channel="wechat_main"')[1].split("</section>")[0]
    assert "标题 40 字，微信最多允许 32 字" in wechat and "problem-error" in wechat
    weibo = page.split('data-channel="weibo_main"')[1].split("</section>")[0]
    from channels.weibo import weibo_length
    text, link = re.search(r'<p class="wb-text">(.*?) <a href="([^"]+)"', weibo, re.S).groups()
    status = html.unescape(text) + " " + link
    assert status.startswith(f"【{title}】要求各地摸清底数。 http://127.0.0.1:8470/m/a/")
    assert re.search(r"data-weibo-count>(\d+)/140<", weibo).group(1) == str(weibo_length(status))
    assert re.search(r'<iframe class="phone-frame" sandbox="allow-same-origin" srcdoc="[^"]*&lt;h1 class=&#34;article-title&#34;&gt;'
                     + re.escape(title), page)
    # CSP: no inline style attributes, no inline scripts
    assert not re.search(r"<[^>]+\sstyle=", page) and not re.search(r"<script(?![^>]*src=)", page)
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/_static/desk.js" defer>']
    sha = hashlib.sha256(cover).hexdigest()
    assert f'name="cover_sha" value="{sha}"' in page
    assert client.get(f"/desk/assets/{sha}").content == cover
    assert page.count('class="primary press-button"') == 1  # one 发布 button
    assert counts(desk) == {"articles": 0, "revisions": 0, "deliveries": 0, "assets": 1}


def test_publishing_the_same_preview_twice_makes_one_article(desk):
    client = client_for(desk, "editor")
    title = '关于"救助": 标准 #调整 & <b>说明</b>'  # YAML and HTML both have opinions about these
    page = preview(client, article(title=title), files={"cover_file": ("c.jpg", jpeg(), "image/jpeg")}).text
    assert "&lt;b&gt;说明&lt;/b&gt;" in page and "<b>说明</b>" not in page
    first, second = publish(client, page), publish(client, page)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    assert re.fullmatch(r"/desk/articles/\d+", first.headers["location"])
    assert counts(desk) == {"articles": 1, "revisions": 1, "deliveries": 5, "assets": 1}
    with desk.store.read() as s:
        stored = s.scalar(select(Article))
        assert stored.created_by == "editor" and re.fullmatch(r"\d{8}-[0-9a-f]{8}", stored.slug)
        assert s.scalar(select(Revision.title)) == title
    shown = client.get(first.headers["location"])
    assert "已经以相同内容发布" in shown.text  # the second press said so
    rows = re.findall(r'<tr data-channel="(\w+)" data-state="(\w+)"', shown.text)
    assert sorted(rows) == sorted((c, "queued") for c in FIVE)
    assert 'data-live="/api/v1/articles/' in shown.text


def test_an_html_body_keeps_its_markup_even_with_blank_lines_and_indentation(desk):
    client = client_for(desk, "editor")
    body = "<p>第一段。</p>\n\n    <p>第二段，<strong>重点</strong>。</p>\n\n<ul>\n  <li>一</li>\n</ul>"
    answer = preview(client, article(body=body, body_format="html"))
    assert answer.status_code == 200, field_errors(answer.text)
    portal = answer.text.split('data-channel="portal"')[1].split("</section>")[0]
    assert "<p>第二段，<strong>重点</strong>。</p>" in portal and "<li>一</li>" in portal
    assert "<pre>" not in portal and "&lt;p&gt;" not in portal
    assert publish(client, answer.text).status_code == 303
    with desk.store.read() as s:
        assert "<p>第二段，<strong>重点</strong>。</p>" in s.scalar(select(Revision.body_html))


def test_a_slug_taken_by_other_content_is_a_field_error(desk):
    client = client_for(desk, "editor")
    assert publish(client, preview(client, article(slug="winter-relief")).text).status_code == 303
    answer = publish(client, preview(client, article(slug="winter-relief", body="另一篇正文。")).text)
    assert answer.status_code == 422 and "winter-relief" in field_errors(answer.text)["slug"][0]
    assert counts(desk)["articles"] == 1


def test_body_images_are_uploaded_once_and_referenced_by_name(desk):
    client = client_for(desk, "editor")
    photo = jpeg("orange")
    files = [("image_files", ("现场.jpg", photo, "image/jpeg")), ("cover_file", ("", b"", "application/octet-stream"))]
    missing = preview(client, article(body="正文。\n\n![会议现场](会场.jpg)"), files=files)
    assert missing.status_code == 422 and "会场.jpg" in field_errors(missing.text)["body"][0]
    kept = re.search(r'name="images_json" value="([^"]*)"', missing.text).group(1)
    token = csrf(missing.text)
    again = client.post("/desk/preview", data={**article(body="正文。\n\n![会议现场](现场.jpg)"), "images_json":
                                               html.unescape(kept), "csrf_token": token})
    assert again.status_code == 200, field_errors(again.text)
    assert f'src="/desk/assets/{hashlib.sha256(photo).hexdigest()}"' in again.text
    assert publish(client, again.text).status_code == 303
    with desk.store.read() as s:
        assert s.scalar(select(Revision.asset_shas)) == [hashlib.sha256(photo).hexdigest()]


def test_list_filters_by_status_unit_and_problems(desk):
    client = client_for(desk, "editor")
    for n, unit in ((1, "社会救助处"), (2, "养老服务处")):
        publish(client, preview(client, article(title=f"第{n}篇", unit=unit, slug=f"item-{n}")).text)
    with desk.store.write() as s:
        first = s.scalar(select(Article.id).where(Article.slug == "item-1"))
        s.execute(update(Delivery).where(Delivery.article_id == first, Delivery.channel == "weibo_main")
                  .values(state="failed", last_error="测试失败"))

    def titles(query: str) -> list[str]:
        return re.findall(r'<a href="/desk/articles/\d+">(.*?)</a>', client.get("/desk" + query).text)

    assert titles("") == ["第2篇", "第1篇"]
    assert titles("?unit=养老服务处") == ["第2篇"]
    assert titles("?problems=1") == ["第1篇"]
    assert titles("?status=retracted") == []
    assert 'class="dot dot-failed"' in client.get("/desk?problems=1").text


# -- after publishing ---------------------------------------------------------------------------------

def test_correction_retraction_and_retry_from_the_article_page(desk):
    client = client_for(desk, "editor")
    where = publish(client, preview(client, article(slug="to-correct")).text).headers["location"]
    article_id = int(where.rsplit("/", 1)[1])
    token = token_of(client)
    past = (site_now() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    late = client.post(f"{where}/correct", data={**article(body="更正后的正文。"), "at": past, "note": "",
                                                 "csrf_token": token})
    assert late.status_code == 422 and field_errors(late.text)["at"] == ["更正时间已过，请选择将来的时间或留空。"]
    assert counts(desk)["revisions"] == 1
    later = (site_now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    done = client.post(f"{where}/correct", data={**article(body="更正后的正文。"), "at": later,
                                                 "note": "第二段数字有误", "csrf_token": token})
    assert done.status_code == 303
    with desk.store.read() as s:
        assert s.scalar(select(Article.current_revision).where(Article.id == article_id)) == 2
    assert "第二段数字有误" in client.get(where).text

    with desk.store.write() as s:
        s.execute(update(Delivery).where(Delivery.article_id == article_id, Delivery.channel == "portal",
                                         Delivery.operation == "publish").values(state="failed"))
    assert client.post(f"{where}/retry", data={"csrf_token": token}).status_code == 303
    with desk.store.read() as s:
        states = dict(s.execute(select(Delivery.channel, Delivery.state).where(
            Delivery.article_id == article_id, Delivery.operation == "publish")).all())
    assert states["portal"] == "queued"

    refused = client.post(f"{where}/retract", data={"reason": "  ", "csrf_token": token})
    assert refused.status_code == 422 and field_errors(refused.text)["reason"]
    assert client.post(f"{where}/retract", data={"reason": "信息有误", "csrf_token": token}).status_code == 303
    with desk.store.read() as s:
        row = s.get(Article, article_id)
        assert (row.status, row.retraction_reason, row.retracted_by) == ("retracted", "信息有误", "editor")
    assert client.get("/desk?status=retracted").text.count("/desk/articles/") >= 1


def test_reviewer_may_read_an_article_but_not_change_it(desk):
    editor = client_for(desk, "editor")
    where = publish(editor, preview(editor, article(slug="read-only")).text).headers["location"]
    reviewer = client_for(desk, "reviewer")
    page = reviewer.get(where)
    assert page.status_code == 200 and "/correct" not in page.text and "/retract" not in page.text
    token = csrf(page.text)
    for action, data in (("correct", article(body="改")), ("retract", {"reason": "x"}), ("retry", {})):
        assert reviewer.post(f"{where}/{action}", data={**data, "csrf_token": token}).status_code == 403
    with desk.store.read() as s:
        assert s.scalar(select(Article.status)) == "live" and s.scalar(select(Article.current_revision)) == 1
