"""HTTP Signatures in both dialects the fediverse speaks: draft-cavage (Mastodon & co.) and RFC 9421.

Pure code: no I/O, the clock is injected. Signing returns the full header dict to send; verification
never raises on hostile input and says *why* it failed, so the inbox can log and answer 401 precisely.
RSA is done with `cryptography` directly on cached parsed keys (much faster than httpsig's own verify);
RFC 9421 structured fields are parsed with `http_sf` (the parser behind `http-message-signatures`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any, Literal

import http_sf
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from http_sf.innerlist import ser_item_or_inner_list
from yarl import URL

__all__ = [
    "VerifyResult",
    "content_digest_header",
    "digest_header",
    "http_date",
    "load_private_key",
    "load_public_key",
    "sign_request",
    "signature_key_id",
    "verify_request",
]

# Limits that keep hostile headers cheap to reject.
MAX_SIGNATURE_FIELD = 8192  # bytes of Signature / Signature-Input / Authorization
MAX_COVERED = 32  # signed headers / components per signature
MAX_LABELS = 4  # RFC 9421 signatures per request (only the first is verified)
MIN_KEY_BITS, MAX_KEY_BITS = 1024, 8192

# Requests that carry a body: Mastodon insists on a signed Digest for these.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
DEFAULT_CONTENT_TYPE = "application/activity+json"
RFC9421_LABEL = "sig1"

_DIGESTS: dict[str, Callable[[bytes], Any]] = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# One `name="value"` (or bare `name=value`) parameter of a draft-cavage Signature header.
_CAVAGE_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"([^"]*)"|([^\s,"]+))\s*(?:,|\Z)')


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of verify_request; `reason` is for logs and 401 bodies, never parsed."""

    ok: bool
    reason: str
    key_id: str | None
    scheme: str | None  # "cavage" | "rfc9421"


class _Reject(Exception):
    """Internal: a verification step failed for `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- small public helpers -------------------------------------------------------------------------------


def digest_header(body: bytes) -> str:
    """`Digest` value (RFC 3230) as Mastodon sends and checks it."""
    return "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def content_digest_header(body: bytes) -> str:
    """`Content-Digest` value (RFC 9530), a structured-field byte sequence."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


def http_date(now: datetime) -> str:
    """RFC 7231 IMF-fixdate, built by hand because strftime's %a/%b follow the locale."""
    t = _utc(now)
    return (
        f"{_WEEKDAYS[t.weekday()]}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year:04d} "
        f"{t.hour:02d}:{t.minute:02d}:{t.second:02d} GMT"
    )


@lru_cache(maxsize=2048)
def load_public_key(pem: str) -> RSAPublicKey:
    """Parse an actor's publicKeyPem once; parsing dominates verify time, so results are cached."""
    key = serialization.load_pem_public_key(pem.strip().encode("ascii"))
    if not isinstance(key, RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def load_private_key(pem: bytes) -> RSAPrivateKey:
    """Parse our own (unencrypted) PEM private key."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, RSAPrivateKey):
        raise ValueError("not an RSA private key")
    return key


# --- signing --------------------------------------------------------------------------------------------


def sign_request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    private_key: RSAPrivateKey,
    key_id: str,
    now: datetime,
    scheme: Literal["cavage", "rfc9421"] = "cavage",
) -> dict[str, str]:
    """Return the full header dict to send: the input headers plus Host, Date, digest and signature.

    `body=None` means a body-less request (GET): no digest is added or signed.
    A request with a body gets Content-Type application/activity+json unless one is given,
    because the content type is signed and must be the one actually sent.
    """
    # yarl is what aiohttp sends with: same percent-encoding, punycode host and default-port rule.
    parts = URL(url)
    if parts.scheme not in ("http", "https") or not parts.host_port_subcomponent:
        raise ValueError(f"cannot sign a request to {url!r}")
    if not key_id or any(c in key_id for c in '"\\') or not key_id.isprintable() or not key_id.isascii():
        raise ValueError("key_id must be printable ASCII without quotes or backslashes")
    authority = parts.host_port_subcomponent
    target = parts.raw_path_qs
    out = dict(headers)
    if _get(out, "host") is None:
        _put(out, "Host", authority)
    _put(out, "Date", http_date(now))
    if body is not None and _get(out, "content-type") is None:
        _put(out, "Content-Type", DEFAULT_CONTENT_TYPE)

    if scheme == "cavage":
        names = ["(request-target)", "host", "date"]
        if body is not None:
            _put(out, "Digest", digest_header(body))
            names += ["digest", "content-type"]
        elif _get(out, "accept") is not None:
            names.append("accept")
        values = {n: str(_get(out, n)).strip() for n in names[1:]}
        lines = [f"(request-target): {method.lower()} {target}"] + [f"{n}: {v}" for n, v in values.items()]
        sig = _b64(_rsa_sign(private_key, "\n".join(lines)))
        covered = " ".join(names)
        value = f'keyId="{key_id}",algorithm="rsa-sha256",headers="{covered}",signature="{sig}"'
        _put(out, "Signature", value)
    elif scheme == "rfc9421":
        values = {
            "@method": method.upper(),
            "@target-uri": f"{parts.scheme}://{authority}{target}",
            "@authority": authority,
        }
        if body is not None:
            _put(out, "Content-Digest", content_digest_header(body))
            values["content-digest"] = str(_get(out, "content-digest"))
            values["content-type"] = str(_get(out, "content-type")).strip()
        created = int(_utc(now).timestamp())
        params = "(" + " ".join(f'"{c}"' for c in values) + f');created={created};keyid="{key_id}"'
        params += ';alg="rsa-v1_5-sha256"'
        base = "".join(f'"{c}": {v}\n' for c, v in values.items()) + f'"@signature-params": {params}'
        _put(out, "Signature-Input", f"{RFC9421_LABEL}={params}")
        _put(out, "Signature", f"{RFC9421_LABEL}=:{_b64(_rsa_sign(private_key, base))}:")
    else:
        raise ValueError(f"unknown signature scheme {scheme!r}")
    return out


# --- verification ---------------------------------------------------------------------------------------


def signature_key_id(headers: Mapping[str, str]) -> str | None:
    """The keyId/keyid a request claims, so the caller can fetch that key before verifying."""
    try:
        h = _lower_headers(headers)
        if "signature-input" in h:
            if len(h["signature-input"]) > MAX_SIGNATURE_FIELD:
                return None
            inputs = _sf_dict(h["signature-input"])
            _members, params = next(iter(inputs.values()))  # the one verify_request checks
            return str(params["keyid"]) if isinstance(params.get("keyid"), str) else None
        params = _cavage_params(h)
        return params.get("keyid") if params else None
    except Exception:  # hostile header: there is simply no usable keyId
        return None


def verify_request(
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    public_key: RSAPublicKey,
    now: datetime,
    window: timedelta = timedelta(hours=1),
    authority: str | None = None,
) -> VerifyResult:
    """Check a received request's signature (draft-cavage or RFC 9421) against `public_key`.

    `target` is the raw path + query as received; `authority` is the host we believe we are
    (defaults to the Host header). Never raises: every failure is a VerifyResult with a reason.
    """
    try:
        return _verify(method, target, headers, body, public_key, _utc(now), window, authority)
    except _Reject as rej:
        return VerifyResult(False, rej.reason, None, None)
    except Exception as exc:  # last line of defence: hostile input must never crash the inbox
        return VerifyResult(False, f"malformed signature ({type(exc).__name__})", None, None)


@dataclass(frozen=True)
class _Incoming:
    """What verification needs to know about the received request, normalised once."""

    method: str  # upper case
    target: str  # raw path + query
    headers: dict[str, str]  # lower-cased names
    body: bytes
    key: RSAPublicKey
    now: datetime
    window: timedelta
    authority: str | None

    @property
    def has_body(self) -> bool:
        return self.method in BODY_METHODS or bool(self.body)


def _verify(
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    key: RSAPublicKey,
    now: datetime,
    window: timedelta,
    authority: str | None,
) -> VerifyResult:
    if not isinstance(key, RSAPublicKey):
        raise _Reject("key is not an RSA key")
    if not MIN_KEY_BITS <= key.key_size <= MAX_KEY_BITS:
        raise _Reject(f"unsupported RSA key size {key.key_size}")
    h = _lower_headers(headers)
    for name in ("signature", "signature-input", "authorization"):
        if len(h.get(name, "")) > MAX_SIGNATURE_FIELD:
            raise _Reject(f"{name} header too large")
    req = _Incoming(method.upper(), target, h, body, key, now, window, authority)
    if "signature-input" in h:
        try:
            return _verify_rfc9421(req)
        except _Reject as rej:
            return VerifyResult(False, rej.reason, None, "rfc9421")
    try:
        params = _cavage_params(h)
    except _Reject as rej:
        return VerifyResult(False, rej.reason, None, "cavage")
    if params is None:
        raise _Reject("no signature header")
    key_id = params.get("keyid") or None
    try:
        _verify_cavage(req, params)
    except _Reject as rej:
        return VerifyResult(False, rej.reason, key_id, "cavage")
    return VerifyResult(True, "ok", key_id, "cavage")


def _cavage_params(h: dict[str, str]) -> dict[str, str] | None:
    """Parameters of a draft-cavage `Signature:` (or `Authorization: Signature …`) header; None if absent."""
    raw = h.get("signature")
    if raw is None:
        auth = h.get("authorization", "")
        if not auth[:10].lower() == "signature ":
            return None
        raw = auth[10:]
    params: dict[str, str] = {}
    pos = 0
    while pos < len(raw):
        m = _CAVAGE_PARAM.match(raw, pos)
        if m is None or m.end() == pos:
            raise _Reject("malformed Signature header")
        name = m.group(1).lower()
        if name in params:
            raise _Reject(f"duplicate {name!r} in Signature header")
        params[name] = m.group(2) if m.group(2) is not None else m.group(3)
        pos = m.end()
    return params


def _verify_cavage(req: _Incoming, params: dict[str, str]) -> None:
    if not params.get("keyid"):
        raise _Reject("Signature header has no keyId")
    if not params.get("signature"):
        raise _Reject("Signature header has no signature")
    # hs2019 means "ask the key"; with an RSA key that is RSASSA-PKCS1-v1_5 SHA-256 in practice (GoToSocial).
    algorithm = params.get("algorithm", "hs2019").lower()
    if algorithm not in ("rsa-sha256", "hs2019"):
        raise _Reject(f"unsupported algorithm {_short(algorithm)!r}")
    covered = params.get("headers", "date").lower().split()
    if len(covered) > MAX_COVERED:
        raise _Reject("too many signed headers")
    if len(set(covered)) != len(covered):
        raise _Reject("duplicate signed header")
    if "(request-target)" not in covered:
        raise _Reject("(request-target) is not signed")
    if "host" not in covered:
        raise _Reject("host is not signed")
    if "date" not in covered and "(created)" not in covered:
        raise _Reject("date is not signed")
    _check_digests(req, covered, "digest")

    pseudo: dict[str, str] = {"(request-target)": f"{req.method.lower()} {req.target}"}
    for name in ("created", "expires"):
        if f"({name})" in covered or name in params:
            seconds = params.get(name, "")
            if not seconds.isdigit() or len(seconds) > 12:
                raise _Reject(f"({name}) parameter is missing or not an integer")
            pseudo[f"({name})"] = seconds
    if "date" in covered:
        _check_time(_parse_http_date(req.headers.get("date")), req, "date")
    if "(created)" in pseudo:
        _check_time(_from_ts(int(pseudo["(created)"])), req, "created")
    if "(expires)" in pseudo and int(pseudo["(expires)"]) < req.now.timestamp():
        raise _Reject("signature expired")

    lines = []
    for name in covered:
        value = pseudo.get(name) if name.startswith("(") else req.headers.get(name)
        if value is None and name == "host":
            value = req.authority
        if value is None:
            raise _Reject(f"signed header {_short(name)!r} is missing")
        lines.append(f"{name}: {value}")
    signature = _unb64(params["signature"])
    if not _rsa_verify(req.key, signature, "\n".join(lines), "rsa-v1_5-sha256"):
        raise _Reject("signature mismatch")


def _verify_rfc9421(req: _Incoming) -> VerifyResult:
    """Verify the first labelled signature only: it is the one signature_key_id() named, so the key the
    caller fetched belongs to it. Trying later labels would let a signature made with key A claim keyid B."""
    try:
        inputs = _sf_dict(req.headers["signature-input"])
        signatures = _sf_dict(req.headers.get("signature", ""))
    except (http_sf.StructuredFieldError, ValueError, UnicodeError):
        raise _Reject("malformed Signature-Input or Signature header") from None
    if not inputs:
        raise _Reject("empty Signature-Input header")
    if len(inputs) > MAX_LABELS:
        raise _Reject("too many signatures")
    label, (members, params) = next(iter(inputs.items()))
    key_id = str(params["keyid"]) if isinstance(params.get("keyid"), str) else None
    try:
        _verify_one_9421(req, members, params, signatures.get(label))
    except _Reject as rej:
        return VerifyResult(False, rej.reason, key_id, "rfc9421")
    return VerifyResult(True, "ok", key_id, "rfc9421")


def _verify_one_9421(req: _Incoming, members: Any, params: dict[str, Any], entry: Any) -> None:
    if not isinstance(members, list):
        raise _Reject("Signature-Input member is not a component list")
    if not isinstance(params.get("keyid"), str):
        raise _Reject("Signature-Input has no keyid")
    if entry is None or not isinstance(entry[0], bytes):
        raise _Reject("no Signature for this Signature-Input label")
    alg = params.get("alg")
    if alg is not None and alg not in ("rsa-v1_5-sha256", "rsa-pss-sha512"):
        raise _Reject(f"unsupported algorithm {_short(str(alg))!r}")
    created = params.get("created")
    if type(created) is not int:
        raise _Reject("created parameter is missing or not an integer")
    components: list[str] = []
    for item, item_params in members:
        if not isinstance(item, str) or item != item.lower():
            raise _Reject("malformed covered component")
        if item_params:
            raise _Reject(f"unsupported parameters on component {_short(item)!r}")
        components.append(item)
    if len(components) > MAX_COVERED or len(set(components)) != len(components):
        raise _Reject("too many or duplicate covered components")
    if "@method" not in components:
        raise _Reject("@method is not signed")
    if not {"@target-uri", "@path", "@request-target"} & set(components):
        raise _Reject("@target-uri is not signed")
    if not {"@authority", "host", "@target-uri"} & set(components):
        raise _Reject("@authority is not signed")
    _check_digests(req, components, "content-digest")
    _check_time(_from_ts(created), req, "created")
    expires = params.get("expires")
    if expires is not None and (type(expires) is not int or expires < req.now.timestamp()):
        raise _Reject("signature expired")

    host = (req.authority or req.headers.get("host") or "").lower()
    path, _, query = req.target.partition("?")
    # We sit behind a TLS proxy in production but serve plain http in tests: try https first.
    schemes = ("https", "http") if {"@target-uri", "@scheme"} & set(components) else ("https",)
    algs = [alg] if alg else ["rsa-v1_5-sha256", "rsa-pss-sha512"]
    signature_params = ser_item_or_inner_list((members, params))
    for scheme in schemes:
        derived = {
            "@method": req.method,
            "@target-uri": f"{scheme}://{host}{req.target}",
            "@authority": host,
            "@scheme": scheme,
            "@request-target": req.target,
            "@path": path or "/",
            "@query": "?" + query,
        }
        lines = []
        for name in components:
            value = derived.get(name) if name.startswith("@") else req.headers.get(name)
            if value is None:
                raise _Reject(f"covered component {_short(name)!r} is missing or unsupported")
            lines.append(f'"{name}": {value}\n')
        base = "".join(lines) + f'"@signature-params": {signature_params}'
        if any(_rsa_verify(req.key, entry[0], base, a) for a in algs):
            return
    raise _Reject("signature mismatch")


# --- shared checks --------------------------------------------------------------------------------------


def _check_digests(req: _Incoming, covered: list[str], usual: str) -> None:
    """A body must be bound to the signature by a signed Digest/Content-Digest that matches it."""
    signed = [n for n in ("digest", "content-digest") if n in covered]
    if req.has_body and not signed:
        raise _Reject(f"{usual} is not signed")
    for name in signed:
        value = req.headers.get(name)
        if value is None:
            raise _Reject(f"{name} header is missing")
        pairs = _parse_digest(value) if name == "digest" else _parse_content_digest(value)
        known = [(alg, got) for alg, got in pairs if alg in _DIGESTS]
        if not known:
            raise _Reject(f"{name} header has no supported algorithm")
        for alg, got in known:
            if not hmac.compare_digest(got, _DIGESTS[alg](req.body).digest()):
                raise _Reject("digest does not match body")


def _parse_digest(value: str) -> list[tuple[str, bytes]]:
    pairs = []
    for part in value.split(","):
        alg, sep, b64 = part.strip().partition("=")
        if not sep:
            raise _Reject("malformed digest header")
        pairs.append((alg.lower(), _unb64(b64.strip())))
    return pairs


def _parse_content_digest(value: str) -> list[tuple[str, bytes]]:
    try:
        parsed = _sf_dict(value)
    except (http_sf.StructuredFieldError, ValueError, UnicodeError):
        raise _Reject("malformed content-digest header") from None
    return [(alg.lower(), v) for alg, (v, _p) in parsed.items() if isinstance(v, bytes)]


def _check_time(when: datetime, req: _Incoming, what: str) -> None:
    if not req.now - req.window <= when <= req.now + req.window:
        raise _Reject(f"{what} outside window")


def _from_ts(seconds: int) -> datetime:
    """Unix time from a hostile header; absurd values count as outside any window."""
    if not 0 <= seconds < 2**34:
        return datetime.min.replace(tzinfo=UTC)
    return datetime.fromtimestamp(seconds, UTC)


def _parse_http_date(value: str | None) -> datetime:
    if not value:
        raise _Reject("date header is missing")
    try:
        return _utc(parsedate_to_datetime(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        raise _Reject("date header is not an HTTP date") from None


def _rsa_sign(key: RSAPrivateKey, message: str) -> bytes:
    return key.sign(message.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())


def _rsa_verify(key: RSAPublicKey, signature: bytes, message: str, alg: str) -> bool:
    """RSA check; PSS (RFC 9421 rsa-pss-sha512, salt 64) is only tried for RFC 9421 signatures."""
    if len(signature) > MAX_KEY_BITS // 8:
        return False
    data = message.encode("utf-8", "surrogateescape")  # aiohttp decodes odd header bytes that way
    try:
        if alg == "rsa-pss-sha512":
            key.verify(signature, data, padding.PSS(padding.MGF1(hashes.SHA512()), 64), hashes.SHA512())
        else:
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


# --- tiny utilities -------------------------------------------------------------------------------------


def _utc(dt: datetime) -> datetime:
    """Naive datetimes are taken as UTC: the injected clock is expected to be UTC anyway."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Case-insensitive view; repeated fields (multidict items) are joined with ", " as HTTP allows."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        k, v = name.lower(), str(value).strip()
        out[k] = f"{out[k]}, {v}" if k in out else v
    return out


def _get(headers: Mapping[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name), None)


def _put(headers: dict[str, str], name: str, value: str) -> None:
    """Set a header, replacing any spelling of it already there."""
    for k in [k for k in headers if k.lower() == name.lower()]:
        del headers[k]
    headers[name] = value


def _sf_dict(value: str) -> dict[str, Any]:
    """Parse an RFC 8941 dictionary (raises StructuredFieldError/ValueError on garbage)."""
    parsed = http_sf.parse(value.encode("utf-8", "surrogateescape"), tltype="dictionary")
    if not isinstance(parsed, dict):
        raise ValueError("not a dictionary")
    return parsed


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _Reject("signature or digest is not valid base64") from None


def _short(text: str, limit: int = 40) -> str:
    """Echo hostile strings into reasons only truncated and ASCII-safe (log handlers choke on surrogates)."""
    text = text if len(text) <= limit else text[:limit] + "..."
    return text.encode("ascii", "backslashreplace").decode("ascii")
