"""create_app(settings): builds the aiohttp application, its one Services object and its background jobs.

No globals: the Services object hangs on one AppKey (`SERVICES`); long-lived things (database engine,
HTTP client, workers) start and stop in cleanup_ctx, so tests can run several apps in one process.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

from aiohttp import web

from . import delivery, feedsource, inbox_worker, retention
from .config import Settings
from .health import Health
from .http_client import GuardedClient, Signer
from .keys import KeyPair, ensure_admin_token, ensure_keypair
from .logsafe import logger, register_secret
from .metrics import Metrics
from .remote_actors import Resolver
from .services import Role, Services
from .store import Store
from .vocab import Site
from .wakeup import listen_identity
from .web.common import SERVICES
from .web.middleware import error_middleware
from .web.routes import setup_routes

__all__ = ["SERVICES", "create_app", "make_site"]

log = logger(__name__)  # arguments escaped and redacted (logsafe)
# Threads signing outgoing POSTs: two use the second core (bench/signing.py: 1.4x inline, and no loop lag)
SIGNING_THREADS = 2

JobFactory = Callable[[Services], Awaitable[None]]
# Background jobs started for the worker role: each job module exposes `run(services)`.
JOBS: tuple[tuple[str, JobFactory], ...] = (
    ("delivery", delivery.run),
    ("inbox_worker", inbox_worker.run),
    ("feedsource", feedsource.run),
    ("retention", retention.run),
)


def make_site(settings: Settings, keys: KeyPair) -> Site:
    pem_file = settings.keys_path / "private.pem"
    try:
        created = datetime.fromtimestamp(pem_file.stat().st_mtime, UTC).replace(microsecond=0)
    except OSError:
        created = datetime(2024, 1, 1, tzinfo=UTC)
    return Site(
        base_url=settings.base,
        domain=settings.handle_domain,
        username=settings.username,
        name=settings.name,
        summary=settings.summary,
        blog_url=settings.blog,
        public_key_pem=keys.public_pem,
        published=created,
        icon_url=settings.icon_url or None,
        header_url=settings.header_url or None,
        object_type=settings.object_type,
        content_mode=settings.content_mode,
        discoverable=settings.discoverable,
        indexable=settings.indexable,
        tag_url_template=settings.tag_url_template,
        language=settings.language or None,
        also_known_as=tuple(settings.also_known_as),
        attribution_domains=tuple(settings.attribution),
        quote_policy=settings.quote_policy,
    )


def create_app(settings: Settings, role: Role = "all") -> web.Application:
    """Build the app. `role` decides whether HTTP routes, background jobs, or both are active."""
    body_cap = max(settings.max_inbox_bytes, settings.max_article_bytes)
    app = web.Application(middlewares=[error_middleware], client_max_size=body_cap)
    keys, _ = ensure_keypair(settings.keys_path)
    token = settings.admin_token or ensure_admin_token(settings.keys_path)[0]
    for secret in (token, settings.spam_check_key, settings.webhook_secret):
        register_secret(secret)  # replaced by *** wherever a log line would carry it
    site = make_site(settings, keys)
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{id(app):x}"

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        """Open storage and the HTTP client, then hang the one Services object on the app."""
        store = await Store.open(settings.database_url)
        client = GuardedClient(
            user_agent=settings.agent,
            signer=Signer(keys.private_key, site.key_id, settings.signature_scheme),
            allow_private=settings.allow_private_addresses,
            timeout=settings.fetch_timeout,
            signing_threads=SIGNING_THREADS,
        )
        try:
            await client.start()
            app[SERVICES] = Services(
                settings=settings, keys=keys, site=site, admin_token=token, role=role, worker_id=worker_id,
                metrics=Metrics(), health=Health(grace=settings.health_grace_seconds), store=store,
                client=client, resolver=Resolver(client),
            )
            yield
        finally:
            await client.close()
            await store.close()

    app.cleanup_ctx.append(services_ctx)
    app.cleanup_ctx.append(_identity_sync)
    if role in ("all", "web"):
        setup_routes(app, settings)
    if role in ("all", "worker"):
        app.cleanup_ctx.append(_background_jobs)
    return app


async def _identity_sync(app: web.Application) -> AsyncIterator[None]:
    """Every role caches remote actors and keys: on PostgreSQL each process hears which ones to forget."""
    services = app[SERVICES]
    resolver = services.resolver
    task = asyncio.create_task(listen_identity(services.store, services.health, resolver.forget,
                                               resolver.forget_all), name="identity-listen")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _background_jobs(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    tasks = [asyncio.create_task(_supervise(services, name, job), name=name) for name, job in JOBS]
    yield
    pending = set(tasks)
    for _ in range(10):  # a job that swallowed one cancellation (a library bug) gets another
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=15)
        if not pending:
            return
        log.error("background jobs %s did not stop; cancelling again", [t.get_name() for t in pending])


async def _supervise(services: Services, name: str, job: JobFactory) -> None:
    """Restart a crashed job after a pause: one bug must not silently stop deliveries for good."""
    while True:
        try:
            await job(services)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("background job %s crashed; restarting in 5 s", name)
            services.health.failing(name, exc)
            await asyncio.sleep(5)
