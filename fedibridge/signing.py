"""RSA signing of outgoing requests off the event loop: a small thread pool shared by the process.

A 2048-bit RSA signature costs about 0.3–1 ms of CPU. Signed inline, a burst of Accepts or deliveries holds
the event loop for that long per request, and every inbox POST and public GET waits behind it.
`cryptography` releases the GIL while it signs, so a thread pool both frees the loop and lets a second
core sign (bench/signing.py measures inline, thread and process pools; processes were slower: each
signature pays a pickle round trip). The guarded client (http_client.py) signs every POST, deliveries and
Accepts, with `SigningPool.sign` instead of `signatures.sign_request`; the result is the same header dict.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from .config import Scheme
from .signatures import sign_request


class SigningPool:
    """Signs with one key on `workers` threads (0: inline, on the caller's thread, as before)."""

    def __init__(self, private_key: RSAPrivateKey, key_id: str, workers: int = 2) -> None:
        if workers < 0:
            raise ValueError("workers must be 0 (inline) or more")
        self.private_key = private_key
        self.key_id = key_id
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="fedibridge-sign") if workers else None

    async def sign(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        now: datetime,
        scheme: Scheme = "cavage",
    ) -> dict[str, str]:
        """`signatures.sign_request` with this pool's key, computed on a pool thread; same errors."""
        call = partial(sign_request, method, url, dict(headers), body, self.private_key, self.key_id, now,
                       scheme=scheme)
        if self._pool is None:
            return call()
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def close(self) -> None:
        """Stop the threads once the signings under way are done (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
