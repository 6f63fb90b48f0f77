"""Feed documents of the RSS channel, assembled from per-item XML fragments.

feedgen/lxml serialise a feed in one go, so rebuilding the newest 50 items on every delivery cost
about 25 times what one item costs, and a delivery into a full feed was much dearer than into an
empty one. Instead each item's RSS `<item>` and Atom `<entry>` is rendered once, when it is stored
in the index, and a feed document is written as: the header (feed-level elements, rendered at each
write because it holds the feed time) + the newest stored fragments + the closing tags.

A fragment is cut out of the serialised text of a one-item feedgen document rather than serialised
on its own: lxml would then redeclare the atom/content/dc namespaces on every item and indent it as
a root. Cut from a document whose root declares the same namespaces, at the depth it has in a full
feed, the fragment is byte-for-byte what a full feedgen rebuild writes for that item (the channel's
tests compare the two). `build()` is that full rebuild, kept as the reference.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import Any

from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.feed import FeedGenerator
from lxml import etree

ATOM_NS = "http://www.w3.org/2005/Atom"
DC_NS = "http://purl.org/dc/elements/1.1/"
FORMATS = ("rss", "atom")
#: Bump when the way an item is rendered changes (code or feedgen upgrade): stored fragments whose
#: key differs are rendered again the next time they are needed.
FRAGMENT_VERSION = 1
#: Feed `updated` when the feed has never held an item.
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: Where the items start and what follows the last one, in a pretty-printed document of each format.
_ITEM_START = {"rss": b"\n    <item>", "atom": b"\n  <entry>"}
_FOOTER = {"rss": b"  </channel>\n</rss>\n", "atom": b"</feed>\n"}


@dataclass(frozen=True)
class FeedInfo:
    """The feed-level fields: all of a feed document but its items and its time."""

    id: str
    title: str
    description: str
    language: str
    site_link: str
    #: The feed's own URL per format (the `self` link).
    self_url: Mapping[str, str]


#: Fragments do not depend on the feed-level fields; this host document only has to be valid.
_HOST = FeedInfo(id="urn:syndicator:feed:fragment", title="fragment", description="fragment",
                 language="en", site_link="http://localhost/", self_url={f: "http://localhost/" for f in FORMATS})


class _Namespaces(BaseExtension):
    """Declares the dc prefix on the feed root (feedgen takes namespaces from feed extensions)."""

    def extend_ns(self) -> dict[str, str]:
        return {"dc": DC_NS}


class _ItemExtras(BaseEntryExtension):
    """What feedgen 1.0.0 cannot write correctly: RSS atom:updated, dc fields, the Atom enclosure."""

    def __init__(self) -> None:
        self.updated: datetime | None = None
        self.creator = ""
        self.publisher = ""
        self.enclosure: dict[str, Any] | None = None

    def extend_rss(self, item: etree._Element) -> etree._Element:
        etree.SubElement(item, f"{{{ATOM_NS}}}updated").text = self.updated.isoformat()
        for tag, value in (("creator", self.creator), ("publisher", self.publisher)):
            if value:
                etree.SubElement(item, f"{{{DC_NS}}}{tag}").text = value
        return item

    def extend_atom(self, entry: etree._Element) -> etree._Element:
        # feedgen drops rel/type/length on entry links (bug 1), so the enclosure is written here.
        if self.enclosure:
            etree.SubElement(entry, "link", rel="enclosure", href=self.enclosure["url"],
                             type=self.enclosure["type"], length=str(self.enclosure["length"]))
        if self.publisher:
            etree.SubElement(entry, f"{{{DC_NS}}}publisher").text = self.publisher
        return entry


def fragment_key(tz: tzinfo) -> str:
    """What a stored fragment depends on besides its item: the render version and the timezone
    its dates are written in. A row whose key differs from the channel's is rendered again."""
    return f"v{FRAGMENT_VERSION} {tz}"


def fragments(item: dict[str, Any], tz: tzinfo) -> tuple[bytes, bytes]:
    """The item's RSS `<item>` and Atom `<entry>` in UTF-8, indented and prefixed as in a full feed."""
    cut = []
    for fmt in FORMATS:
        text = serialise(build(_HOST, [item], fmt, EPOCH, tz), fmt)
        start = text.index(_ITEM_START[fmt]) + 1  # keep the indentation, drop the newline before it
        cut.append(text[start:_body_end(text, fmt)])
    return cut[0], cut[1]


def document(info: FeedInfo, fmt: str, updated: datetime, tz: tzinfo, items: Iterable[bytes]) -> bytes:
    """A feed document: its header rendered now, then the stored fragments in order."""
    head = serialise(build(info, [], fmt, updated, tz), fmt)
    head = head[:_body_end(head, fmt)]
    return b"".join((head, *items, _FOOTER[fmt]))


def serialise(fg: FeedGenerator, fmt: str) -> bytes:
    return fg.rss_str(pretty=True) if fmt == "rss" else fg.atom_str(pretty=True)


def _body_end(text: bytes, fmt: str) -> int:
    """Where the closing tags start; a different layout would corrupt every feed, so fail loudly."""
    if not text.endswith(_FOOTER[fmt]):
        raise RuntimeError(f"unexpected {fmt} layout from feedgen: {text[-80:]!r}")
    return len(text) - len(_FOOTER[fmt])


def build(info: FeedInfo, items: list[dict[str, Any]], fmt: str, updated: datetime, tz: tzinfo) -> FeedGenerator:
    """The whole feed through feedgen: one generator per format, because the self link differs and
    the Atom entries skip enclosure(). Dates are written in `tz`."""
    fg = FeedGenerator()
    fg.register_extension("syn", _Namespaces, _ItemExtras)
    fg.id(info.id)
    fg.title(info.title)
    fg.description(info.description)
    fg.language(info.language)
    fg.author(name=info.title)
    fg.generator("syndicator")
    kind = "application/rss+xml" if fmt == "rss" else "application/atom+xml"
    fg.link(href=info.self_url[fmt], rel="self", type=kind)
    fg.link(href=info.site_link, rel="alternate", type="text/html")  # last = RSS <link>
    fg.updated(updated.astimezone(tz))  # never feedgen's default now()
    for item in items:
        _add_entry(fg, item, fmt, tz)
    return fg


def _add_entry(fg: FeedGenerator, item: dict[str, Any], fmt: str, tz: tzinfo) -> None:
    fe = fg.add_entry(order="append")
    fe.guid(item["guid"], permalink=False)
    fe.title(item["title"])
    fe.link(href=item["link"])
    fe.summary(item["summary"])
    fe.content(item["content"], type="html")  # never type="CDATA" (bug 2)
    fe.published(datetime.fromisoformat(item["published"]).astimezone(tz))
    fe.updated(datetime.fromisoformat(item["updated"]).astimezone(tz))
    for term in item["categories"]:
        fe.category(term=term)
    if item["author"] or item["unit"]:
        fe.author(name=item["author"] or item["unit"])
    enclosure = item.get("enclosure")
    if enclosure and fmt == "rss":
        fe.enclosure(enclosure["url"], str(enclosure["length"]), enclosure["type"])
    fe.syn.updated = fe.updated()
    fe.syn.creator, fe.syn.publisher = item["author"], item["unit"]
    fe.syn.enclosure = enclosure if fmt == "atom" else None
