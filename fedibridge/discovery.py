"""Discovery documents: WebFinger, host-meta and NodeInfo for the blog actor.

Pure functions like vocab.py; the routes in web/discovery.py serve them.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from .vocab import ACTIVITY_JSON, SOFTWARE_NAME, Site, _attr, media_type


def webfinger_matches(site: Site, resource: str) -> bool:
    """Does a WebFinger ``resource`` name our actor? Accepts the forms servers really send."""
    value = resource.strip()
    if value.lower().startswith("acct:"):
        value = value[5:]
    value = value.lstrip("@")
    if "@" in value and "://" not in value:
        user, _, host = value.rpartition("@")
        return user.lower() == site.username.lower() and host.lower() == site.domain.lower()
    return value.rstrip("/") in (site.actor_id, site.blog_url.rstrip("/"))


def webfinger(site: Site, resource: str) -> dict[str, Any]:
    """JRD for our actor (the route checks ``webfinger_matches`` first and answers 404 otherwise)."""
    links: list[dict[str, Any]] = [
        {"rel": "http://webfinger.net/rel/profile-page", "type": "text/html", "href": site.blog_url},
        {"rel": "self", "type": ACTIVITY_JSON, "href": site.actor_id},
    ]
    if site.icon_url:
        avatar = {"rel": "http://webfinger.net/rel/avatar", "href": site.icon_url}
        if mime := media_type(site.icon_url):
            avatar["type"] = mime
        links.append(avatar)
    return {
        "subject": f"acct:{site.username}@{site.domain}",
        "aliases": [site.actor_id, site.blog_url],
        "links": links,
    }


def nodeinfo(site: Site, version: Literal["2.0", "2.1"], users: int, posts: int, software_version: str,
             *, repository: str | None = None, homepage: str | None = None) -> dict[str, Any]:
    """NodeInfo 2.0/2.1 document; counts come from the store, the bridge is one user."""
    software: dict[str, Any] = {"name": SOFTWARE_NAME, "version": software_version}
    if version == "2.1":
        if repository:
            software["repository"] = repository
        if homepage:
            software["homepage"] = homepage
    return {
        "version": version,
        "software": software,
        "protocols": ["activitypub"],
        "services": {"inbound": [], "outbound": ["atom1.0", "rss2.0"]},
        "openRegistrations": False,
        "usage": {
            "users": {"total": users, "activeMonth": users, "activeHalfyear": users},
            "localPosts": posts,
        },
        "metadata": {"nodeName": site.name},
    }


def _lrdd_template(site: Site) -> str:
    """WebFinger is served at the root of the bridge's host, whatever path base_url has."""
    parts = urlsplit(site.base)
    return f"{parts.scheme}://{parts.netloc}/.well-known/webfinger?resource={{uri}}"


def host_meta_xrd(site: Site) -> str:
    """host-meta (XRD) pointing to our WebFinger: older Friendica/Pleroma look here first."""
    template = _attr(_lrdd_template(site))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<XRD xmlns="http://docs.oasis-open.org/ns/xri/xrd-1.0">\n'
        f'  <Link rel="lrdd" type="application/jrd+json" template="{template}"/>\n'
        "</XRD>\n"
    )


def host_meta_json(site: Site) -> dict[str, Any]:
    """host-meta.json, the JSON twin of ``host_meta_xrd``."""
    return {"links": [{"rel": "lrdd", "type": "application/jrd+json", "template": _lrdd_template(site)}]}
