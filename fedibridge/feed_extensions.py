"""feedgen extension for the comment-related namespaces feedgen does not know (wfw, thr, dc).

Split from feeds.py, which builds the feeds; this only writes the extra elements into them.
"""

from __future__ import annotations

from typing import Any

from feedgen.ext.base import BaseEntryExtension, BaseExtension
from lxml import etree

__all__ = ["ATOM_NS", "DC_NS", "THR_NS", "WFW_NS", "XML_LANG", "CommentsEntryExtension", "CommentsExtension"]

WFW_NS = "http://wellformedweb.org/CommentAPI/"
THR_NS = "http://purl.org/syndication/thread/1.0"  # RFC 4685
DC_NS = "http://purl.org/dc/elements/1.1/"
ATOM_NS = "http://www.w3.org/2005/Atom"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


class CommentsExtension(BaseExtension):  # type: ignore[misc]
    """Feed-level half: declares the prefixes (no ns0:, ns1:…) and drops an unknown lastBuildDate."""

    undated = False  # no date known: leave RSS's optional lastBuildDate out rather than claim 1970

    def extend_ns(self) -> dict[str, str]:
        return {"wfw": WFW_NS, "thr": THR_NS, "dc": DC_NS}

    def extend_rss(self, rss: Any) -> Any:
        for element in rss.findall("channel/lastBuildDate") if self.undated else ():
            element.getparent().remove(element)  # feedgen always writes one
        return rss


class CommentsEntryExtension(BaseEntryExtension):  # type: ignore[misc]
    """Per entry: wfw:commentRss, dc:creator (RSS); rel=replies, thr:in-reply-to (Atom).

    feedgen 1.0's atom_entry() drops every attribute of entry links but href (its loop variable
    shadows the link data), and its link() refuses rel="replies": so Atom entry links are all
    written here, from ``atom_links``.
    """

    def __init__(self) -> None:
        self.comment_rss: str | None = None
        self.creator: str | None = None
        self.replies_atom: str | None = None
        self.in_reply_to: tuple[str, str] | None = None  # (ref, href)
        self.lang: str | None = None
        self.atom_links: list[dict[str, str]] = []

    def extend_rss(self, item: Any) -> Any:
        if self.creator:
            etree.SubElement(item, f"{{{DC_NS}}}creator").text = self.creator
        if self.comment_rss:
            etree.SubElement(item, f"{{{WFW_NS}}}commentRss").text = self.comment_rss
        return item

    def extend_atom(self, entry: Any) -> Any:
        # feedgen writes Atom elements without a namespace and declares the default one on <feed>.
        if self.lang:
            entry.set(XML_LANG, self.lang)
        for broken in entry.findall("link"):
            entry.remove(broken)
        for attrs in self.atom_links:
            etree.SubElement(entry, "link", attrs)
        if self.replies_atom:
            link = etree.SubElement(entry, "link", rel="replies", type="application/atom+xml")
            link.set("href", self.replies_atom)
        if self.in_reply_to:
            ref, href = self.in_reply_to
            etree.SubElement(entry, f"{{{THR_NS}}}in-reply-to", ref=ref, href=href)
        return entry
