"""The WordPress REST emulator over real HTTP with requests (contract §3, fidelity checklist §3.7),
plus the shared server, admin API and hang faults."""
from __future__ import annotations

import hashlib
import time

import pytest
import requests
from emulator_helpers import image

from syndicator.emulators import EmulatorsConfig, EmulatorServer, serve_all
from syndicator.emulators.wordpress import WordPressEmulator, WordPressSettings, WPUser

AUTH = ("editor", "abcd EFGH ijkl MNOP qrst UVWX")


@pytest.fixture
def wp(serve):
    emu = WordPressEmulator(WordPressSettings(users=[
        WPUser(1, "editor", [AUTH[1]], "editor@example.com", "editor"),
        WPUser(2, "writer", ["aaaa bbbb cccc dddd eeee ffff"], "writer@example.com", "contributor")]))
    return emu, serve(emu)


def api(base: str, route: str, pretty: bool = True) -> str:
    return f"{base}/wp-json{route}" if pretty else f"{base}/?rest_route={route}"


def create(base: str, auth=AUTH, pretty: bool = True, timeout: float = 5, **fields) -> requests.Response:
    body = {"title": "省民政厅部署冬春救助工作", "content": "<p>正文</p>", "status": "publish", **fields}
    return requests.post(api(base, "/wp/v2/posts", pretty), json=body, auth=auth, timeout=timeout)


def wp_error(resp: requests.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["data"]["status"] == status and isinstance(body["message"], str)
    return body["code"]


# -- create / read / find ----------------------------------------------------------------------------
@pytest.mark.parametrize("pretty", [True, False])
def test_create_returns_201_location_and_edit_context(wp, pretty):
    emu, base = wp
    resp = create(base, pretty=pretty, slug="s-123")
    assert resp.status_code == 201
    post = resp.json()
    assert resp.headers["Location"] == api(base, f"/wp/v2/posts/{post['id']}", pretty)
    assert post["slug"] == "s-123" and post["status"] == "publish" and post["title"]["raw"] == "省民政厅部署冬春救助工作"
    fetched = requests.get(resp.headers["Location"], auth=AUTH, params={"context": "edit"}).json()
    assert fetched["id"] == post["id"] and fetched["content"]["raw"] == "<p>正文</p>"
    public = requests.get(resp.headers["Location"]).json()
    assert "raw" not in public["title"] and public["content"]["rendered"].startswith("<p>正文</p>")
    assert emu.ledger.effects(op="posts/create")[0]["id"] == post["id"]


def test_find_by_slug_with_status_any_needs_auth_and_excludes_trash(wp):
    emu, base = wp
    draft = create(base, slug="S-123", status="draft").json()
    params = {"slug": "s-123", "status": "any", "context": "edit"}
    found = requests.get(api(base, "/wp/v2/posts"), params=params, auth=AUTH)
    assert [p["id"] for p in found.json()] == [draft["id"]]
    assert found.headers["X-WP-Total"] == "1" and found.headers["X-WP-TotalPages"] == "1"
    assert requests.get(api(base, "/wp/v2/posts"), params={"slug": "s-123"}, auth=AUTH).json() == []
    anonymous = requests.get(api(base, "/wp/v2/posts"), params={"slug": "s-123", "status": "any"})
    assert wp_error(anonymous, 400) == "rest_invalid_param"
    assert anonymous.json()["data"]["params"]["status"] == "Status is forbidden."
    requests.delete(api(base, f"/wp/v2/posts/{draft['id']}"), auth=AUTH)
    after = requests.get(api(base, "/wp/v2/posts"), params=params, auth=AUTH)
    assert after.json() == [] and after.headers["X-WP-Total"] == "0"


def test_pagination_headers_and_limits(wp):
    _, base = wp
    for i in range(3):
        create(base, slug=f"p-{i}")
    page = requests.get(api(base, "/wp/v2/posts"), params={"per_page": 2, "page": 2})
    assert len(page.json()) == 1 and page.headers["X-WP-Total"] == "3" and page.headers["X-WP-TotalPages"] == "2"
    assert wp_error(requests.get(api(base, "/wp/v2/posts"), params={"per_page": 101}), 400) == "rest_invalid_param"
    beyond = requests.get(api(base, "/wp/v2/posts"), params={"per_page": 2, "page": 3})
    assert wp_error(beyond, 400) == "rest_post_invalid_page_number"


def test_slugs_are_uniquified_and_drafts_get_one_when_published(wp):
    _, base = wp
    assert [create(base, slug="s-1").json()["slug"] for _ in range(3)] == ["s-1", "s-1-2", "s-1-3"]
    assert create(base, slug="s-1", status="draft").json()["slug"] == "s-1-4"
    draft = create(base, title="Winter Relief", status="draft").json()
    assert draft["slug"] == "" and draft["generated_slug"] == "winter-relief"
    published = requests.post(api(base, f"/wp/v2/posts/{draft['id']}"), json={"status": "publish"}, auth=AUTH)
    assert published.json()["slug"] == "winter-relief"
    assert create(base, title="冬春", slug="冬春").json()["slug"] == "%e5%86%ac%e6%98%a5"


def test_future_dated_publish_is_scheduled_and_goes_live(wp):
    emu, base = wp
    future = create(base, slug="later", date_gmt="2999-01-01T00:00:00").json()
    assert future["status"] == "future" and future["date_gmt"] == "2999-01-01T00:00:00"
    soon = create(base, slug="soon", date=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() + 600))
                  .replace(" ", "T") + "+00:00").json()
    assert soon["status"] == "future"
    past = create(base, slug="past", status="future", date_gmt="2001-01-01T00:00:00").json()
    assert past["status"] == "publish"
    emu.clock.advance(3600)
    assert requests.get(api(base, f"/wp/v2/posts/{soon['id']}")).json()["status"] == "publish"
    assert [e["id"] for e in emu.ledger.effects(op="posts/publish_future")] == [soon["id"]]
    assert wp_error(create(base, date="yesterday"), 400) == "rest_invalid_param"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_update_in_place(wp, method):
    emu, base = wp
    post = create(base, slug="s-9").json()
    emu.clock.advance(5)
    resp = requests.request(method, api(base, f"/wp/v2/posts/{post['id']}"), json={"title": "更正"}, auth=AUTH)
    assert resp.status_code == 200
    updated = resp.json()
    assert updated["id"] == post["id"] and updated["title"]["raw"] == "更正" and updated["slug"] == "s-9"
    assert updated["modified_gmt"] > post["modified_gmt"] and updated["date_gmt"] == post["date_gmt"]
    assert emu.ledger.last(op="posts/update")["body"]["title"] == "更正"
    missing = requests.post(api(base, "/wp/v2/posts/9999"), json={"title": "x"}, auth=AUTH)
    assert wp_error(missing, 404) == "rest_post_invalid_id"


def test_delete_ladder_trash_410_force_404(wp):
    emu, base = wp
    post = create(base, slug="s-7").json()
    url = api(base, f"/wp/v2/posts/{post['id']}")
    trashed = requests.delete(url, auth=AUTH)
    assert trashed.status_code == 200 and trashed.json()["status"] == "trash"
    assert trashed.json()["slug"] == "s-7__trashed"
    assert wp_error(requests.delete(url, auth=AUTH), 410) == "rest_already_trashed"
    assert create(base, slug="s-7").json()["slug"] == "s-7"
    forced = requests.delete(url, params={"force": "true"}, auth=AUTH)
    assert forced.json()["deleted"] is True and forced.json()["previous"]["id"] == post["id"]
    assert wp_error(requests.delete(url, params={"force": "true"}, auth=AUTH), 404) == "rest_post_invalid_id"
    assert [e["op"] for e in emu.ledger.effects(op="posts/[td]*")] == ["posts/trash", "posts/delete"]


def test_trash_disabled_needs_force(wp):
    emu, base = wp
    emu.settings.trash_enabled = False
    post = create(base).json()
    assert wp_error(requests.delete(api(base, f"/wp/v2/posts/{post['id']}"), auth=AUTH), 501) == "rest_trash_not_supported"


# -- authentication and permissions ----------------------------------------------------------------
def test_application_password_spaces_and_case_of_groups(wp):
    _, base = wp
    assert create(base, auth=("editor", "abcdEFGHijklMNOPqrstUVWX")).status_code == 201
    assert create(base, auth=("editor@example.com", AUTH[1])).status_code == 201


@pytest.mark.parametrize("auth,code", [
    (("editor", "abcd EFGH ijkl MNOP qrst XXXX"), "incorrect_password"),
    (("nobody", AUTH[1]), "invalid_username"),
    (("nobody@example.com", AUTH[1]), "invalid_email")])
def test_bad_credentials_are_401_even_for_reads(wp, auth, code):
    emu, base = wp
    assert wp_error(requests.get(api(base, "/wp/v2/posts"), auth=auth), 401) == code
    assert wp_error(create(base, auth=auth), 401) == code
    assert emu.ledger.count(op="posts/*") == 0


def test_app_passwords_ignored_over_http_unless_local(wp):
    emu, base = wp
    emu.settings.environment_type = "production"
    resp = create(base)
    assert wp_error(resp, 401) == "rest_cannot_create"
    assert resp.json()["message"] == "Sorry, you are not allowed to create posts as this user."
    assert "application-passwords" not in requests.get(base + "/wp-json/").json()["authentication"]
    behind_tls = requests.post(api(base, "/wp/v2/posts"), json={"title": "x"}, auth=AUTH,
                               headers={"X-Forwarded-Proto": "https"})
    assert behind_tls.status_code == 201
    assert wp_error(requests.get(api(base, "/wp/v2/users/me"), auth=AUTH), 401) == "rest_not_logged_in"


def test_users_me_and_contributor_cannot_publish(wp):
    emu, base = wp
    me = requests.get(api(base, "/wp/v2/users/me"), params={"context": "edit"}, auth=AUTH).json()
    assert me["id"] == 1 and me["roles"] == ["editor"]
    writer = ("writer", "aaaa bbbb cccc dddd eeee ffff")
    assert wp_error(create(base, auth=writer), 403) == "rest_cannot_publish"
    assert create(base, auth=writer, status="pending").json()["status"] == "pending"


def test_context_edit_and_unpublished_reads_are_gated(wp):
    _, base = wp
    published, draft = create(base).json(), create(base, status="draft").json()
    edit = requests.get(api(base, f"/wp/v2/posts/{published['id']}"), params={"context": "edit"})
    assert wp_error(edit, 401) == "rest_forbidden_context"
    assert wp_error(requests.get(api(base, f"/wp/v2/posts/{draft['id']}")), 401) == "rest_forbidden"
    assert wp_error(requests.get(api(base, "/wp/v2/posts"), params={"context": "edit"}), 401) == "rest_forbidden_context"


def test_error_shapes_for_bad_input_and_unknown_routes(wp):
    _, base = wp
    bad = create(base, status="published")
    assert wp_error(bad, 400) == "rest_invalid_param" and "status" in bad.json()["data"]["params"]
    raw = requests.post(api(base, "/wp/v2/posts"), data=b"{oops", auth=AUTH, headers={"Content-Type": "application/json"})
    assert wp_error(raw, 400) == "rest_invalid_json"
    assert wp_error(requests.get(api(base, "/wp/v2/pages")), 404) == "rest_no_route"
    assert wp_error(requests.get(api(base, "/wp/v2/posts", pretty=False) + "/abc"), 404) == "rest_no_route"
    assert wp_error(create(base, featured_media=12345), 400) == "rest_invalid_featured_media"


def test_plain_permalinks_serve_only_rest_route(wp):
    emu, base = wp
    emu.settings.pretty_permalinks = False
    assert requests.get(base + "/wp-json/wp/v2/posts").status_code == 404
    resp = create(base, pretty=False)
    assert resp.status_code == 201 and "?rest_route=/wp/v2/posts/" in resp.headers["Location"]


# -- media -----------------------------------------------------------------------------------------
def upload(base: str, data: bytes, headers: dict | None = None, auth=AUTH) -> requests.Response:
    return requests.post(api(base, "/wp/v2/media"), data=data, headers=headers or {}, auth=auth)


JPEG_HEADERS = {"Content-Type": "image/jpeg", "Content-Disposition": 'attachment; filename="cover.jpg"'}


def test_media_raw_and_multipart_uploads(wp):
    emu, base = wp
    data = image()
    raw = upload(base, data, dict(JPEG_HEADERS, **{"Content-MD5": hashlib.md5(data).hexdigest()}))
    assert raw.status_code == 201 and raw.headers["Location"].endswith(f"/wp/v2/media/{raw.json()['id']}")
    media = raw.json()
    assert media["mime_type"] == "image/jpeg" and media["media_details"]["width"] == 32
    assert requests.get(media["source_url"]).content == data
    multi = requests.post(api(base, "/wp/v2/media"), files={"file": ("cover.jpg", data, "image/jpeg")},
                          data={"alt_text": "封面"}, auth=AUTH)
    assert multi.status_code == 201 and multi.json()["alt_text"] == "封面"
    assert multi.json()["source_url"].endswith("/cover-1.jpg") and multi.json()["slug"] == "cover-2"
    post = create(base, featured_media=media["id"]).json()
    assert post["featured_media"] == media["id"]
    assert [e["id"] for e in emu.ledger.effects(op="media/create")] == [media["id"], multi.json()["id"]]


def test_media_upload_errors(wp):
    emu, base = wp
    data = image()
    assert wp_error(upload(base, b"", JPEG_HEADERS), 400) == "rest_upload_no_data"
    assert wp_error(upload(base, data, {"Content-Disposition": JPEG_HEADERS["Content-Disposition"]}), 400) \
        == "rest_upload_no_content_type"
    assert wp_error(upload(base, data, {"Content-Type": "image/jpeg"}), 400) == "rest_upload_no_content_disposition"
    assert wp_error(upload(base, data, {"Content-Type": "image/jpeg", "Content-Disposition": "attachment"}), 400) \
        == "rest_upload_invalid_disposition"
    assert wp_error(upload(base, data, dict(JPEG_HEADERS, **{"Content-MD5": "0" * 32})), 412) \
        == "rest_upload_hash_mismatch"
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"></svg>'
    svg_headers = {"Content-Type": "image/svg+xml", "Content-Disposition": 'attachment; filename="logo.svg"'}
    assert wp_error(upload(base, svg, svg_headers), 500) == "rest_upload_sideload_error"
    multi_svg = requests.post(api(base, "/wp/v2/media"), files={"file": ("logo.svg", svg, "image/svg+xml")}, auth=AUTH)
    assert wp_error(multi_svg, 500) == "rest_upload_unknown_error"
    assert wp_error(upload(base, data, JPEG_HEADERS, auth=None), 401) == "rest_cannot_create"
    emu.settings.max_upload_kb = 1
    assert wp_error(upload(base, image(pad_to=1025), JPEG_HEADERS), 400) == "rest_upload_file_too_big"
    emu.settings.server_max_body = 500
    too_big = upload(base, image(pad_to=1000), JPEG_HEADERS)
    assert too_big.status_code == 413 and "text/html" in too_big.headers["content-type"]
    assert emu.ledger.count(op="media/*") == 0


def test_media_extension_is_corrected_to_the_real_type(wp):
    _, base = wp
    png_named_jpg = upload(base, image("PNG"), JPEG_HEADERS).json()
    assert png_named_jpg["mime_type"] == "image/png" and png_named_jpg["source_url"].endswith("/cover.png")


# -- faults, admin API, servers --------------------------------------------------------------------
def test_hang_outlasts_the_client_timeout_and_applies_nothing(wp):
    emu, base = wp
    emu.faults.update(hang=True, hang_seconds=5)
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        create(base, slug="s-1", timeout=0.3)
    assert time.monotonic() - started < 2
    emu.faults.clear()  # lifts the hang: the held request is answered 504, still not applied
    time.sleep(0.15)
    assert emu.ledger.count(op="posts/create") == 0
    held = emu.ledger.requests(path="/wp/v2/posts")[0]
    assert held["fault"] == "hang" and held["status"] == 504
    assert create(base, slug="s-1").json()["slug"] == "s-1"


def test_hang_after_apply_leaves_an_ambiguous_outcome_that_reconciliation_finds(wp):
    emu, base = wp
    emu.faults.update(hang=True, hang_seconds=5, after_apply=True)
    with pytest.raises(requests.Timeout):
        create(base, slug="s-42", timeout=0.3)
    emu.faults.clear()
    assert emu.ledger.count(op="posts/create") == 1
    found = requests.get(api(base, "/wp/v2/posts"), params={"slug": "s-42", "status": "any"}, auth=AUTH).json()
    assert len(found) == 1 and found[0]["id"] == emu.ledger.last(op="posts/create")["id"]


def test_drop_after_apply_and_forced_http_errors(wp):
    emu, base = wp
    emu.faults.update(down="drop", after_apply=True)
    with pytest.raises(requests.ConnectionError):
        create(base, slug="s-5")
    assert emu.ledger.count(op="posts/create") == 1
    emu.faults.clear()
    requests.patch(base + "/_emulator/faults", json={"force": [{"code": 500, "times": 1}, {"code": 503, "times": 1}]})
    critical = create(base)
    assert wp_error(critical, 500) == "internal_server_error"
    proxy = create(base)
    assert proxy.status_code == 503 and "text/html" in proxy.headers["content-type"]
    assert create(base).status_code == 201


def test_admin_reset_and_ledger_over_http(wp):
    emu, base = wp
    post = create(base, slug="s-1").json()
    ledger = requests.get(base + "/_emulator/ledger", params={"op": "posts/create"}).json()
    assert [e["id"] for e in ledger["effects"]] == [post["id"]]
    assert ledger["requests"][0]["path"] == "/wp/v2/posts" and ledger["requests"][0]["status"] == 201
    requests.put(base + "/_emulator/faults", json={"latency": 0.2})
    assert requests.post(base + "/_emulator/reset").json() == {"reset": True}
    assert emu.faults.get().latency == 0 and emu.ledger.effects() == []
    assert wp_error(requests.get(api(base, f"/wp/v2/posts/{post['id']}")), 404) == "rest_post_invalid_id"
    assert requests.put(base + "/_emulator/faults", json={"error_rate": 2}).status_code == 400
    assert requests.post(base + "/_emulator/clock", json={"advance": 60}).json()["offset"] == 60


def test_emulator_server_start_stop_and_serve_all_share_one_ledger():
    config = EmulatorsConfig(wordpress=WordPressSettings(environment_type="local"))
    with serve_all(config) as running:
        assert set(running.urls) == {"wechat", "weibo", "wordpress"}
        assert create(running.urls["wordpress"], slug="s-1").status_code == 201
        requests.get(running.urls["wechat"] + "/cgi-bin/draft/count", params={"access_token": "x"})
        assert {r["api"] for r in running.ledger.requests()} == {"wordpress", "wechat"}
        assert running.wordpress.ledger is running.ledger
        url = running.urls["weibo"]
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/_emulator/faults", timeout=1)
    server = EmulatorServer(WordPressEmulator())
    base = server.start()
    server.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(base + "/wp-json/", timeout=1)
