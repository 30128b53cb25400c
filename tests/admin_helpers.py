"""Helpers for the admin page tests: a browser-like HTTP client with its own cookie jar, and comments that
arrive through the real signed inbox flow from a loopback "Mastodon"."""

from __future__ import annotations

import re
from typing import Any

import aiohttp

from .conftest import Bridge, wait_for
from .remote import RemoteAccount, RemoteInstance

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


class AdminClient:
    """A user agent for /admin: keeps cookies (127.0.0.1 needs an unsafe jar), never follows redirects."""

    def __init__(self, bridge: Bridge, lang: str = "en") -> None:
        self.b = bridge
        self.base = f"{bridge.url}/admin"
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                          headers={"Accept-Language": lang})
        self.csrf = ""

    async def close(self) -> None:
        await self.http.close()

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def login(self, token: str | None = None) -> aiohttp.ClientResponse:
        resp = await self.http.post(f"{self.base}/login", data={"token": token or self.b.token},
                                    allow_redirects=False)
        await resp.read()
        return resp

    async def page(self, path: str, **params: str) -> tuple[int, str]:
        async with self.http.get(self.base + path, params=params, allow_redirects=False) as resp:
            text = await resp.text()
            found = CSRF_RE.search(text)
            if found:
                self.csrf = found.group(1)
            return resp.status, text

    async def post(self, path: str, data: dict[str, Any] | list[tuple[str, str]], *, json: bool = False,
                   headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
        h = dict(headers or {})
        if json:
            h["Accept"] = "application/json"
        async with self.http.post(self.base + path, data=data, headers=h, allow_redirects=False) as resp:
            return resp.status, await resp.text(), dict(resp.headers)


async def publish(b: Bridge, title: str, url: str) -> dict[str, Any]:
    body = {"title": title, "url": url, "content": f"<p>{title} — contenu</p>", "language": "fr"}
    async with b.http.post(f"{b.url}/api/articles", json=body, headers=b.admin) as resp:
        assert resp.status in (200, 201), await resp.text()
        data: dict[str, Any] = await resp.json()
        return data


async def admin_comments(b: Bridge, status: str = "all") -> list[dict[str, Any]]:
    async with b.http.get(f"{b.url}/api/comments", params={"status": status}, headers=b.admin) as resp:
        assert resp.status == 200, await resp.text()
        found: list[dict[str, Any]] = (await resp.json())["comments"]
        return found


async def signed_reply(b: Bridge, remote: RemoteInstance, account: RemoteAccount, html: str, in_reply_to: str,
                       **extra: Any) -> dict[str, Any]:
    """Send a reply as `account` through the bridge's shared inbox; wait until it is stored; return it (API view)."""
    note = remote.note(account, html, in_reply_to, cc=[f"{account.id}/followers", b.actor], **extra)
    status, text = await remote.send(account, f"{b.url}/inbox", remote.create(account, note))
    assert status in (200, 202), text
    stored: list[dict[str, Any]] = []

    async def arrived() -> bool:
        stored[:] = [c for c in await admin_comments(b) if c["ap_id"] == note["id"]]
        return bool(stored)

    await wait_for(arrived, timeout=15)
    return stored[0]
