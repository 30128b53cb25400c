"""Helpers for the widget's browser tests: Debian's headless Chromium driven by Playwright, a loopback
"blog" on its own origin that embeds the widget, and a network guard that keeps every request on 127.0.0.1."""

from __future__ import annotations

import html
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Route, async_playwright

from .loopback import LoopbackServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """The system Chromium; never a Playwright-downloaded one. Missing browser = failed test, not skipped."""
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 (one stat before starting a browser)
        pytest.fail("the widget tests need Debian's Chromium at /usr/bin/chromium: apt-get install -y chromium "
                    "(do not run `playwright install`)")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class NetworkGuard:
    """Aborts and records any request that would leave loopback; records every request it sees."""

    external: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)

    async def handle(self, route: Route) -> None:
        url = route.request.url
        self.seen.append(url)
        if urlsplit(url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            self.external.append(url)
            await route.abort()

    async def attach(self, context: BrowserContext) -> None:
        await context.route("**/*", self.handle)


def blog_page(title: str, lang: str | None, script_src: str, article_url: str, extra_attrs: str = "") -> str:
    """A plain blog article template with the widget's one-line embed at the bottom."""
    lang_attr = f' lang="{html.escape(lang)}"' if lang else ""
    return (
        f"<!doctype html><html{lang_attr}><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
        "<style>body{font-family:Georgia,serif;max-width:42em;margin:auto;color:#222}</style></head><body>"
        f"<article><h1>{html.escape(title)}</h1><p>Le texte de l’article.</p></article>"
        f"<script src=\"{html.escape(script_src)}\" data-article=\"{html.escape(article_url)}\" {extra_attrs} async>"
        "</script><footer>pied de page</footer></body></html>"
    )


class BlogServer(LoopbackServer):
    """A second aiohttp server (another origin) that serves HTML pages by path."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port=port)
        self.pages: dict[str, str] = {}

    @property
    def origin(self) -> str:
        return self.base

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/{tail:.*}", self._page)

    async def _page(self, request: web.Request) -> web.Response:
        body = self.pages.get(request.path)
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(text=body, content_type="text/html", charset="utf-8")
