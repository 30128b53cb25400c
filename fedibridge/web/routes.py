"""Route table: discovery here; each feature module under web/ adds its own routes with setup(app, prefix)."""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from ..config import Settings
from . import account, comments_api, discovery, documents, followers_api, inbox, ops, publishing, widget
from .admin import routes as admin
from .documents import activity_variant, cached

# Feature modules, each with `setup(app: web.Application, prefix: str) -> None` (the inbox also needs the username).
FEATURES = (publishing, followers_api, comments_api, widget, account, admin)


def setup_routes(app: web.Application, settings: Settings) -> None:
    """Well-known documents live at the host root; everything else under base_url's path.

    Runs before start-up (Services does not exist yet): what the routes depend on comes from `settings`.
    """
    prefix = urlsplit(settings.base).path.rstrip("/")
    username = settings.username
    r = app.router
    documents.setup(app, settings)  # public documents below are served from memory, invalidated by writes to `tables`
    r.add_get("/.well-known/webfinger", cached(discovery.webfinger, ()))
    r.add_get("/.well-known/host-meta", discovery.host_meta)
    r.add_get("/.well-known/host-meta.json", discovery.host_meta)
    r.add_get("/.well-known/nodeinfo", discovery.nodeinfo_links)
    r.add_get(prefix + "/nodeinfo/{version}", cached(discovery.nodeinfo, ("articles",)))
    actor = f"{prefix}/users/{username}"
    r.add_get(actor, cached(discovery.actor, ("actor_state",), activity_variant))
    r.add_get(actor + "/outbox", cached(discovery.outbox, ("activities",)))
    r.add_get(actor + "/followers", cached(discovery.followers_collection, ("followers",)))
    r.add_get(actor + "/following", discovery.empty_collection)
    r.add_get(actor + "/collections/featured", cached(account.featured, ("articles",)))  # pinned articles
    r.add_get(prefix + "/healthz", ops.healthz)
    if settings.metrics_bind:
        app.cleanup_ctx.append(ops.metrics_listener)  # /metrics lives there, not on the public port
    else:
        r.add_get(prefix + "/metrics", ops.metrics)
    inbox.setup(app, prefix, settings)
    for module in FEATURES:
        module.setup(app, prefix)
