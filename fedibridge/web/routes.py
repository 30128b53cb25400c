"""Route table: discovery here; each feature module under web/ adds its own routes with setup(app, prefix)."""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from ..app import SETTINGS
from . import admin, api, comments_api, discovery, inbox, ops, publishing, widget

# Feature modules, each with `setup(app: web.Application, prefix: str) -> None`.
FEATURES = (publishing, inbox, api, comments_api, widget, admin)


def setup_routes(app: web.Application) -> None:
    """Well-known documents live at the host root; everything else under base_url's path."""
    prefix = urlsplit(app[SETTINGS].base).path.rstrip("/")
    username = app[SETTINGS].username
    r = app.router
    r.add_get("/.well-known/webfinger", discovery.webfinger)
    r.add_get("/.well-known/host-meta", discovery.host_meta)
    r.add_get("/.well-known/host-meta.json", discovery.host_meta)
    r.add_get("/.well-known/nodeinfo", discovery.nodeinfo_links)
    r.add_get(prefix + "/nodeinfo/{version}", discovery.nodeinfo)
    actor = f"{prefix}/users/{username}"
    r.add_get(actor, discovery.actor)
    r.add_get(actor + "/outbox", discovery.outbox)
    r.add_get(actor + "/followers", discovery.followers_collection)
    r.add_get(actor + "/following", discovery.empty_collection)
    r.add_get(actor + "/collections/featured", discovery.empty_collection)
    r.add_get(prefix + "/healthz", ops.healthz)
    if app[SETTINGS].metrics_bind:
        app.cleanup_ctx.append(ops.metrics_listener)  # /metrics lives there, not on the public port
    else:
        r.add_get(prefix + "/metrics", ops.metrics)
    for module in FEATURES:
        module.setup(app, prefix)
