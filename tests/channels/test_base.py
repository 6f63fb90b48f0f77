"""channels.base helpers shared by the adapters: `rewrite_images`."""
from __future__ import annotations

from channels.base import AssetRef, ImageRewrite, rewrite_images

A = AssetRef(sha256="a" * 64, mime="image/jpeg", filename="a.jpg", size=10)
B = AssetRef(sha256="b" * 64, mime="image/png", filename="b.png", size=20)
STORED = {A.sha256: A, B.sha256: B}


def url(asset: AssetRef) -> str:
    return f"https://cdn.example/m/{asset.filename}?v=1&w=2"


def test_a_stored_image_points_at_its_url_and_the_rest_of_the_tag_is_kept():
    result = rewrite_images(f'<p>图</p><img alt="现场" src="asset:{A.sha256}" width="640">', STORED.get, url)
    assert result == ImageRewrite(
        html='<p>图</p><img alt="现场" src="https://cdn.example/m/a.jpg?v=1&amp;w=2" width="640">',
        used={A.sha256: A}, warnings=[])


def test_an_unknown_image_is_dropped_whole_with_a_warning_naming_it():
    missing = "C" * 64
    result = rewrite_images(f'<p>前<img src="asset:{missing}" alt="缺">后</p>', STORED.get, url)
    assert result.html == "<p>前后</p>" and result.used == {}
    assert result.warnings == [f"image asset:{missing} is not attached to the article; dropped"]


def test_sha_case_and_quotes_do_not_matter_and_used_lists_each_asset_once_first_use_first():
    # Given markers in upper case, in single quotes, self-closed and repeated
    body = (f"<img src='asset:{B.sha256.upper()}'><img src=\"asset:{A.sha256}\"/>"
            f'<img src = "asset:{B.sha256}" alt="again">')
    looked_up: list[str] = []

    def find(sha: str) -> AssetRef | None:
        looked_up.append(sha)
        return STORED.get(sha)
    # When they are normalised to lower-case markers (what portal and WeChat render does)
    result = rewrite_images(body, find, lambda asset: "asset:" + asset.sha256)
    # Then each keeps its quote, lookups use the lower-case sha, and used is in first-use order
    assert result.html == (f"<img src='asset:{B.sha256}'><img src=\"asset:{A.sha256}\"/>"
                           f'<img src = "asset:{B.sha256}" alt="again">')
    assert looked_up == [B.sha256, A.sha256, B.sha256]
    assert list(result.used) == [B.sha256, A.sha256]


def test_only_the_src_of_img_tags_is_touched():
    marker = f"asset:{A.sha256}"
    untouched = (f'<p>src="{marker}"</p><a href="{marker}">链接</a><video src="{marker}"></video>'
                 f'<img data-src="{marker}" src="https://cdn.example/x.png">')
    result = rewrite_images(untouched, STORED.get, url)
    assert result == ImageRewrite(html=untouched, used={}, warnings=[])


def test_a_quoted_attribute_holding_a_greater_than_sign_does_not_hide_the_src():
    # nh3, which sanitises stored bodies, leaves ">" unescaped inside attribute values
    result = rewrite_images(f'<img alt="3 > 2" src="asset:{A.sha256}" title="a>b">', STORED.get, url)
    assert result.html == '<img alt="3 > 2" src="https://cdn.example/m/a.jpg?v=1&amp;w=2" title="a>b">'
    assert result.used == {A.sha256: A}
