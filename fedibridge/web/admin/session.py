"""Stateless admin sessions: an HMAC-signed cookie, CSRF tokens tied to it, and a sign-in rate limit.

No table: the cookie carries its expiry and a random id, signed with a key derived from the admin token,
so every web process (scale-out) accepts it and changing the token signs everyone out. CSRF tokens are
an HMAC of the session id: a page from another site can neither read nor forge one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import deque
from dataclasses import dataclass, field

from ...admin_passphrase import normalise, passphrase

COOKIE = "fedibridge_admin"
LIFETIME = 12 * 3600  # seconds a sign-in lasts
MAX_FAILURES = 10  # failed sign-ins per client address…
WINDOW = 15 * 60  # …within this many seconds, then 429 until the oldest failure ages out


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    sid: str
    expires: int


class Sessions:
    """Signs and checks session cookies and CSRF tokens with keys derived from the admin token."""

    def __init__(self, admin_token: str) -> None:
        root = hashlib.sha256(b"fedibridge admin v1\0" + admin_token.encode()).digest()
        self._cookie_key = hmac.new(root, b"session", hashlib.sha256).digest()
        self._csrf_key = hmac.new(root, b"csrf", hashlib.sha256).digest()
        self._token = admin_token
        self._passphrase = normalise(passphrase(admin_token))
        self._revoked: dict[str, int] = {}  # signed-out ids of this process, until they expire anyway

    def check_token(self, candidate: str) -> bool:
        """The admin token or its passphrase, compared in constant time (blanks from a paste are ignored)."""
        if not candidate.strip():
            return False
        token_ok = hmac.compare_digest(candidate.strip().encode(), self._token.encode())
        phrase_ok = hmac.compare_digest(normalise(candidate).encode(), self._passphrase.encode())
        return token_ok or phrase_ok

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._cookie_key, payload.encode(), hashlib.sha256).digest())

    def issue(self, now: float) -> tuple[str, Session]:
        """A new cookie value and the session it stands for."""
        s = Session(sid=secrets.token_urlsafe(18), expires=int(now) + LIFETIME)
        payload = f"{s.sid}.{s.expires}"
        return f"{payload}.{self._sign(payload)}", s

    def verify(self, value: str | None, now: float) -> Session | None:
        """The session of a cookie value, or None when absent, forged, expired or signed out."""
        if not value or len(value) > 200:
            return None
        parts = value.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        sid, expires, sig = parts
        if not hmac.compare_digest(sig, self._sign(f"{sid}.{expires}")):
            return None
        if int(expires) <= now or sid in self._revoked:
            return None
        return Session(sid=sid, expires=int(expires))

    def revoke(self, s: Session, now: float) -> None:
        """Sign-out: this process refuses the id from now on; the browser drops the cookie."""
        self._revoked = {k: v for k, v in self._revoked.items() if v > now}
        self._revoked[s.sid] = s.expires

    def csrf(self, s: Session) -> str:
        return _b64(hmac.new(self._csrf_key, s.sid.encode(), hashlib.sha256).digest())

    def csrf_ok(self, s: Session, candidate: str | None) -> bool:
        return bool(candidate) and hmac.compare_digest(str(candidate).encode(), self.csrf(s).encode())


@dataclass
class SignInLimiter:
    """Failed sign-ins per client address, in memory: a guessing script gets 429s, not answers."""

    max_failures: int = MAX_FAILURES
    window: float = WINDOW
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, client: str, now: float) -> deque[float]:
        q = self._failures.get(client, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def retry_after(self, client: str, now: float) -> int:
        """Seconds until this client may try again (0: now)."""
        q = self._recent(client, now)
        if len(q) < self.max_failures:
            return 0
        return max(1, int(q[0] + self.window - now) + 1)

    def failed(self, client: str, now: float) -> None:
        if len(self._failures) > 10_000:  # bounded: forget addresses whose failures aged out
            self._failures = {k: v for k, v in self._failures.items() if self._recent(k, now)}
        q = self._recent(client, now)
        q.append(now)
        self._failures[client] = q

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)
