"""Compact JSON text, spelled one way everywhere: no spaces, UTF-8 left unescaped (accents, « », emoji).

What we store (JSON columns), send (activities, webhook events) and answer (the JSON API) all go through
here, so the same data always gives the same bytes (payload caching, content hashes, signatures).
"""

from __future__ import annotations

import json
from typing import Any


def dumps(data: Any, *, sort_keys: bool = False) -> str:
    """Compact JSON text; `sort_keys` for a stable spelling that is hashed."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)


def dump_bytes(data: Any) -> bytes:
    """Compact JSON as the UTF-8 bytes a request body carries."""
    return dumps(data).encode("utf-8")
