"""Our HTTP signatures against two independent implementations, live, both directions.

httpsig (draft-cavage, what Mastodon-era Python code uses) and http-message-signatures (RFC 9421) sign
with their own code; we verify. We sign; they verify. A pinned vector catches a change on one side only; this
catches a misreading of the spec that a vector we produced ourselves would share.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpsig
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from http_message_signatures import (
    HTTPMessageSignaturesException,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)
from multidict import CIMultiDict

from fedibridge.signatures import digest_header, http_date, sign_request, verify_request

KEY_ID = "https://remote.example/users/alice#main-key"
URL = "https://blog.example/users/blog/inbox"
TARGET = "/users/blog/inbox"
BODY = '{"type":"Create","object":{"content":"<p>Très « bien » 🎉</p>"}}'.encode()


@pytest.fixture(scope="module")
def key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _private_pem(key: RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _public_pem(key: RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# --- draft-cavage with httpsig ----------------------------------------------------------------------------


def test_httpsig_signs_we_verify(key: RSAPrivateKey) -> None:
    now = _now()
    headers = {"Host": "blog.example", "Date": http_date(now), "Digest": digest_header(BODY),
               "Content-Type": "application/activity+json"}
    signer = httpsig.HeaderSigner(KEY_ID, _private_pem(key), algorithm="rsa-sha256", sign_header="signature",
                                  headers=["(request-target)", "host", "date", "digest", "content-type"])
    signed = signer.sign(headers, host="blog.example", method="POST", path=TARGET)
    result = verify_request("POST", TARGET, signed, BODY, key.public_key(), now)
    assert (result.ok, result.reason, result.key_id, result.scheme) == (True, "ok", KEY_ID, "cavage")
    # The same signature on another path (a request replayed to another inbox) must fail.
    assert not verify_request("POST", "/inbox", signed, BODY, key.public_key(), now).ok


def test_we_sign_httpsig_verifies(key: RSAPrivateKey) -> None:
    signed = sign_request("POST", URL, {}, BODY, key, KEY_ID, _now())
    verifier = httpsig.HeaderVerifier(dict(signed), _public_pem(key), method="POST", path=TARGET,
                                      host="blog.example", sign_header="signature",
                                      required_headers=["(request-target)", "host", "date", "digest"])
    assert verifier.verify() is True
    tampered = dict(signed, Date=http_date(_now() - timedelta(seconds=5)))
    assert httpsig.HeaderVerifier(tampered, _public_pem(key), method="POST", path=TARGET, host="blog.example",
                                  sign_header="signature").verify() is False


def test_we_sign_a_get_httpsig_verifies(key: RSAPrivateKey) -> None:
    """Signed GETs (authorized fetch): no body, no digest, still (request-target) host date."""
    signed = sign_request("GET", "https://remote.example/users/alice", {"Accept": "application/activity+json"},
                          None, key, KEY_ID, _now())
    verifier = httpsig.HeaderVerifier(dict(signed), _public_pem(key), method="GET", path="/users/alice",
                                      host="remote.example", sign_header="signature",
                                      required_headers=["(request-target)", "host", "date"])
    assert verifier.verify() is True


# --- RFC 9421 with http-message-signatures ------------------------------------------------------------------


class _Request:
    """The request shape http-message-signatures reads (method, absolute url, headers)."""

    def __init__(self, method: str, url: str, headers: CIMultiDict[str]) -> None:
        self.method, self.url, self.headers = method, url, headers


class _Keys(HTTPSignatureKeyResolver):  # type: ignore[misc]
    def __init__(self, key: RSAPrivateKey) -> None:
        self.key = key

    def resolve_public_key(self, key_id: str) -> object:
        assert key_id == KEY_ID
        return self.key.public_key()

    def resolve_private_key(self, key_id: str) -> object:
        assert key_id == KEY_ID
        return self.key


@pytest.fixture
def hms(key: RSAPrivateKey) -> Iterator[_Keys]:
    yield _Keys(key)


def test_http_message_signatures_signs_we_verify(key: RSAPrivateKey, hms: _Keys) -> None:
    now = _now()
    headers = CIMultiDict({"Host": "blog.example", "Date": http_date(now),
                           "Content-Type": "application/activity+json"})
    request = _Request("POST", URL, headers)
    signer = HTTPMessageSigner(signature_algorithm=algorithms.RSA_V1_5_SHA256, key_resolver=hms)
    signer.sign(request, key_id=KEY_ID, created=now, body=BODY,
                covered_component_ids=("@method", "@target-uri", "@authority", "content-digest", "content-type"))
    result = verify_request("POST", TARGET, dict(request.headers), BODY, key.public_key(), now)
    assert (result.ok, result.reason, result.key_id, result.scheme) == (True, "ok", KEY_ID, "rfc9421")
    assert not verify_request("POST", TARGET, dict(request.headers), BODY + b" ", key.public_key(), now).ok


def test_we_sign_http_message_signatures_verifies(key: RSAPrivateKey, hms: _Keys) -> None:
    signed = sign_request("POST", URL, {}, BODY, key, KEY_ID, _now(), "rfc9421")
    request = _Request("POST", URL, CIMultiDict(signed))
    verifier = HTTPMessageVerifier(signature_algorithm=algorithms.RSA_V1_5_SHA256, key_resolver=hms)
    results = verifier.verify(request, body=BODY, require_components=("@method", "@target-uri", "content-digest"))
    assert [r.parameters["keyid"] for r in results] == [KEY_ID]
    tampered = _Request("POST", "https://blog.example/inbox", CIMultiDict(signed))
    with pytest.raises((InvalidSignature, HTTPMessageSignaturesException)):
        verifier.verify(tampered, body=BODY)
