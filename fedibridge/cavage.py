"""The draft-cavage half of fedibridge.signatures, kept apart so each module has one job.

Covers what is specific to draft-cavage (the dialect Mastodon and most of the fediverse speak): parsing the
`Signature` / `Authorization: Signature` header, the signed-header rules we demand, the signing string, the
RFC 3230 `Digest` header, and building the header we send. Pure code: no I/O, no clock. RSA verification,
digest/time checks and the public entry points stay in `signatures`, which is what callers import; this
module must not import it (signatures imports us).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from functools import lru_cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from .errors import Rejected
from .rfc9421 import short

# One `name="value"` (or bare `name=value`) parameter of a draft-cavage Signature header.
PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"([^"]*)"|([^\s,"]+))\s*(?:,|\Z)')
_PARAMS = re.compile(r'(?:\s*[A-Za-z][A-Za-z0-9_-]*\s*=\s*(?:"[^"]*"|[^\s,"]+)\s*(?:,|\Z))+')


def digest_header(body: bytes) -> str:
    """`Digest` value (RFC 3230) as Mastodon sends and checks it."""
    return "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def parse_digest(value: str) -> list[tuple[str, bytes]]:
    """(algorithm, digest) pairs of a received `Digest` header; the caller decides which it knows."""
    pairs = []
    for part in value.split(","):
        alg, sep, b64 = part.strip().partition("=")
        if not sep:
            raise Rejected("malformed digest header")
        pairs.append((alg.lower(), unb64(b64.strip())))
    return pairs


def unb64(value: str) -> bytes:
    """Strict base64 decode of a hostile value; a failure is a Rejected, never a crash."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Rejected("signature or digest is not valid base64") from None


# --- signing --------------------------------------------------------------------------------------------


def names_to_sign(has_body: bool, has_accept: bool) -> list[str]:
    """What we cover: Mastodon wants a signed Digest (and we bind Content-Type) on any request with a body."""
    names = ["(request-target)", "host", "date"]
    if has_body:
        names += ["digest", "content-type"]
    elif has_accept:
        names.append("accept")
    return names


def signature_header(
    method: str, target: str, names: list[str], values: Mapping[str, str], key: RSAPrivateKey, key_id: str
) -> str:
    """The `Signature` value over `names`; `values` holds the (stripped) value of each header after the first."""
    lines = [f"(request-target): {method.lower()} {target}"] + [f"{n}: {values[n]}" for n in names[1:]]
    signed = key.sign("\n".join(lines).encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    sig = base64.b64encode(signed).decode("ascii")
    covered = " ".join(names)
    return f'keyId="{key_id}",algorithm="rsa-sha256",headers="{covered}",signature="{sig}"'


# --- verification ---------------------------------------------------------------------------------------


def parse_params(h: Mapping[str, str]) -> dict[str, str] | None:
    """Parameters of a draft-cavage `Signature:` (or `Authorization: Signature …`) header; None if absent.

    `h` has lower-cased names. The result is shared (cached): callers must not modify it.
    """
    raw = h.get("signature")
    if raw is None:
        auth = h.get("authorization", "")
        if not auth[:10].lower() == "signature ":
            return None
        raw = auth[10:]
    return _parse_raw(raw)


@lru_cache(maxsize=256)
def _parse_raw(raw: str) -> dict[str, str]:
    """Cached: the inbox reads the keyId first (to fetch the key), then verifies the same header.

    One fullmatch proves the whole header is well formed, one findall reads it: both in C.
    """
    if not raw:
        return {}
    if _PARAMS.fullmatch(raw) is None:
        raise Rejected("malformed Signature header")
    params: dict[str, str] = {}
    for name, quoted, bare in PARAM.findall(raw):
        name = name.lower()
        if name in params:
            raise Rejected(f"duplicate {name!r} in Signature header")
        params[name] = bare or quoted
    return params


def check(params: Mapping[str, str], max_covered: int) -> list[str]:
    """Apply our policy to the parameters; return the covered names (lower case, in signed order)."""
    if not params.get("keyid"):
        raise Rejected("Signature header has no keyId")
    if not params.get("signature"):
        raise Rejected("Signature header has no signature")
    # hs2019 means "ask the key"; with an RSA key that is RSASSA-PKCS1-v1_5 SHA-256 in practice (GoToSocial).
    algorithm = params.get("algorithm", "hs2019").lower()
    if algorithm not in ("rsa-sha256", "hs2019"):
        raise Rejected(f"unsupported algorithm {short(algorithm)!r}")
    covered = params.get("headers", "date").lower().split()
    if len(covered) > max_covered:
        raise Rejected("too many signed headers")
    if len(set(covered)) != len(covered):
        raise Rejected("duplicate signed header")
    if "(request-target)" not in covered:
        raise Rejected("(request-target) is not signed")
    if "host" not in covered:
        raise Rejected("host is not signed")
    if "date" not in covered and "(created)" not in covered:
        raise Rejected("date is not signed")
    return covered


def pseudo_headers(method: str, target: str, params: Mapping[str, str], covered: list[str]) -> dict[str, str]:
    """Values of the `(…)` pseudo-headers; (created)/(expires) must be plain integers when present."""
    pseudo: dict[str, str] = {"(request-target)": f"{method.lower()} {target}"}
    for name in ("created", "expires"):
        if f"({name})" in covered or name in params:
            seconds = params.get(name, "")
            if not seconds.isdigit() or len(seconds) > 12:
                raise Rejected(f"({name}) parameter is missing or not an integer")
            pseudo[f"({name})"] = seconds
    return pseudo


def signing_string(
    covered: list[str], pseudo: Mapping[str, str], headers: Mapping[str, str], authority: str | None
) -> str:
    """The string the sender signed; a missing Host falls back to the authority we believe we are."""
    lines = []
    for name in covered:
        value = pseudo.get(name) if name.startswith("(") else headers.get(name)
        if value is None and name == "host":
            value = authority
        if value is None:
            raise Rejected(f"signed header {short(name)!r} is missing")
        lines.append(f"{name}: {value}")
    return "\n".join(lines)
