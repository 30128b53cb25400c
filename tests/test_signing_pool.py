"""SigningPool: the same signatures as signatures.sign_request, computed on worker threads."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from fedibridge.signatures import load_public_key, sign_request, verify_request
from fedibridge.signing import SigningPool
from tests.remote import public_pem

KEY_ID = "https://blog.example.org/fediverse/users/blog#main-key"
NOW = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)


@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.parametrize("scheme", ["cavage", "rfc9421"])
async def test_pool_signs_like_sign_request(rsa_key: rsa.RSAPrivateKey, workers: int, scheme: str) -> None:
    pool = SigningPool(rsa_key, KEY_ID, workers=workers)
    try:
        jobs = [(f"https://h{i}.example/users/u{i}/inbox", f'{{"type":"Accept","n":{i}}}'.encode())
                for i in range(40)]
        signed = await asyncio.gather(*(pool.sign("POST", url, {"Accept": "*/*"}, body, NOW, scheme)  # type: ignore[arg-type]
                                        for url, body in jobs))
    finally:
        pool.close()
    pub = load_public_key(public_pem(rsa_key))
    for (url, body), headers in zip(jobs, signed, strict=True):
        # RSA PKCS#1 v1.5 is deterministic: byte for byte what the inline path produces
        assert headers == sign_request("POST", url, {"Accept": "*/*"}, body, rsa_key, KEY_ID, NOW,
                                       scheme=scheme)  # type: ignore[arg-type]
        path = url.split(".example", 1)[1]
        assert verify_request("POST", path, headers, body, pub, NOW).ok


async def test_errors_come_back_to_the_caller(rsa_key: rsa.RSAPrivateKey) -> None:
    pool = SigningPool(rsa_key, KEY_ID)
    try:
        with pytest.raises(ValueError, match="cannot sign"):
            await pool.sign("POST", "ftp://h.example/inbox", {}, b"{}", NOW)
    finally:
        pool.close()
    pool.close()  # idempotent


def test_negative_workers_are_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError):
        SigningPool(rsa_key, KEY_ID, workers=-1)
