"""The size of an article's image, for the RSS enclosure's `length`: one HEAD when the article is published.

Measured when an article is created or changed (never while a feed is rendered, so feeds stay fast and their
bytes stable) and stored on the article row. A failure only leaves the size unknown: nothing else waits on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from .errors import FetchError
from .store import Store
from .tables import articles

log = logging.getLogger(__name__)
HEAD_SECONDS = 5.0  # at most this long per image: the admin API answers after it


def content_length(headers: Any) -> int | None:
    """A usable Content-Length (plain digits), else None: a chunked or compressed answer tells nothing."""
    raw = str(headers.get("content-length", "")).strip()
    if not raw.isdigit() or "content-encoding" in headers and headers["content-encoding"] != "identity":
        return None
    return int(raw)


async def measure(client: Any, url: str) -> int | None:
    """The image's size in bytes from a guarded HEAD, or None when the server does not say."""
    try:
        async with asyncio.timeout(HEAD_SECONDS):
            resp = await client.head(url)
    except (FetchError, TimeoutError) as exc:
        log.info("image %s: size unknown (%s)", url, exc)
        return None
    if not 200 <= resp.status < 300:
        log.info("image %s: size unknown (HEAD answered %d)", url, resp.status)
        return None
    return content_length(resp.headers)


async def measure_images(client: Any, store: Store, slugs: Iterable[str]) -> None:
    """Measure the images of these articles that have none measured yet, and store the sizes."""
    wanted = list(slugs)
    if not wanted:
        return
    async with store.connect() as conn:
        rows = list(await conn.execute(
            select(articles.c.slug, articles.c.image).where(
                articles.c.slug.in_(wanted), articles.c.image.is_not(None), articles.c.image_length.is_(None),
                articles.c.deleted.is_(None))))
    for row in rows:
        length = await measure(client, row.image)
        if length is None:
            continue
        async with store.begin() as conn:  # only if the image is still the one measured
            await conn.execute(articles.update().where(articles.c.slug == row.slug, articles.c.image == row.image)
                               .values(image_length=length))
