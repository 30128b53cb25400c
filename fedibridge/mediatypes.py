"""The one table of media types by file extension (attachments, enclosures, icons).

`mimetypes` misses some image formats on older systems, and both ActivityPub attachments (image vs. video)
and RSS enclosures need a type: guess from the URL's extension here, nowhere else.
"""

from __future__ import annotations

import mimetypes
from urllib.parse import urlsplit

MEDIA_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".svg": "image/svg+xml",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
}


def media_type(url: str) -> str | None:
    """Guess a MIME type from the URL's extension (None when it has none we know)."""
    path = urlsplit(url).path.lower()
    dot = path.rfind(".")
    if dot == -1:
        return None
    ext = path[dot:]
    return MEDIA_TYPES.get(ext) or mimetypes.types_map.get(ext) or mimetypes.guess_type(path, strict=False)[0]
