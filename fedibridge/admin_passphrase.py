"""The admin page's sign-in passphrase: derived from the admin token, so nothing more is stored or to rotate.

The token (43 random characters) is made for scripts; a person types `xxxx-xxxx-xxxx-xxxx-xxxx` (100 bits,
base32 without look-alikes' case trouble) more easily. Changing the token changes the passphrase.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def passphrase(admin_token: str) -> str:
    digest = hmac.new(admin_token.encode(), b"fedibridge admin passphrase v1", hashlib.sha256).digest()
    text = base64.b32encode(digest).decode().lower()[:20]
    return "-".join(text[i:i + 4] for i in range(0, 20, 4))


def normalise(candidate: str) -> str:
    """What the person typed, as compared: case, blanks and dashes do not matter."""
    return "".join(ch for ch in candidate.lower() if ch.isalnum())
