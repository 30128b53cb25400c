"""One exception root, so callers (CLI, web layer) can map every failure to an exit code or status."""

from __future__ import annotations


class FedibridgeError(Exception):
    """Root of every error fedibridge raises on purpose."""

    status = 500


class ConfigError(FedibridgeError):
    """A setting is missing or wrong; the message names the setting."""

    status = 500


class BadRequest(FedibridgeError):
    """The client sent something we refuse; the message says what."""

    status = 400


class Unauthorized(FedibridgeError):
    status = 401


class Forbidden(FedibridgeError):
    status = 403


class NotFound(FedibridgeError):
    status = 404


class Gone(FedibridgeError):
    status = 410


class PayloadTooLarge(FedibridgeError):
    status = 413


class UnsupportedMediaType(FedibridgeError):
    status = 415


class FetchError(FedibridgeError):
    """A remote document could not be fetched or was refused (SSRF guard, size, id mismatch…)."""

    status = 502

    def __init__(self, message: str, *, http_status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.http_status = http_status
        self.retry_after = retry_after


class StorageUnavailable(FedibridgeError):
    """The database cannot be reached or cannot store (full disk): nothing was stored, try again later.

    Answered 503 with Retry-After: the HTTP meaning of "temporarily unable", which Mastodon and Fedify
    honour when they re-send.
    """

    status = 503

    def __init__(self, message: str, *, retry_after: int = 10) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Rejected(Exception):
    """A signature verification step failed for `reason` (draft-cavage or RFC 9421 alike).

    Not a FedibridgeError: it never leaves `signatures`, which turns it into a failed VerifyResult.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RateLimited(FedibridgeError):
    """One sender is over its share (ratelimit.py): answered 429 with Retry-After; the sender retries."""

    status = 429

    def __init__(self, message: str, *, retry_after: float, scope: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.scope = scope  # "host" or "actor": the metrics label
