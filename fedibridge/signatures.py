"""HTTP Signatures in both dialects the fediverse speaks: draft-cavage (Mastodon & co.) and RFC 9421.

The public entry point: callers import everything from here. The checks both dialects share (digests,
time window, RSA), key loading and the dispatch between dialects live here; what is specific to each dialect
lives in `fedibridge.cavage` (Signature header, signing string, Digest) and `fedibridge.rfc9421`
(structured-field parsing, coverage rules, signature base), to keep each module to one job.
Pure code: no I/O, the clock is injected. Signing returns the full header dict to send; verification
never raises on hostile input and says *why* it failed, so the inbox can log and answer 401 precisely.
RSA is done with `cryptography` directly on cached parsed keys (much faster than httpsig's own verify).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from . import cavage, rfc9421
from .cavage import digest_header
from .errors import Rejected
from .rfc9421 import content_digest_header

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
MAX_COVERED = rfc9421.MAX_COMPONENTS  # signed headers / components per signature, same cap in both dialects
MIN_KEY_BITS, MAX_KEY_BITS = 1024, 8192

# Requests that carry a body: Mastodon insists on a signed Digest for these.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
DEFAULT_CONTENT_TYPE = "application/activity+json"

_DIGESTS: dict[str, Callable[[bytes], Any]] = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_IMF_FIXDATE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d\d) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d{4}) "
    r"(\d\d):(\d\d):(\d\d) GMT"
)


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of verify_request; `reason` is for logs and 401 bodies, never parsed."""

    ok: bool
    reason: str
    key_id: str | None
    scheme: str | None  # "cavage" | "rfc9421"


# --- small public helpers -------------------------------------------------------------------------------


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
        if body is not None:
            _put(out, "Digest", digest_header(body))
        names = cavage.names_to_sign(body is not None, _get(out, "accept") is not None)
        values = {n: str(_get(out, n)).strip() for n in names[1:]}
        _put(out, "Signature", cavage.signature_header(method, target, names, values, private_key, key_id))
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
        signature_input, signature = rfc9421.sign(values, private_key, key_id, int(_utc(now).timestamp()))
        _put(out, "Signature-Input", signature_input)
        _put(out, "Signature", signature)
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
            return rfc9421.claimed_key_id(h["signature-input"])
        params = cavage.parse_params(h)
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
    except Rejected as rej:
        return VerifyResult(False, rej.reason, None, None)
    except Exception as exc:  # last line of defence: hostile input must never crash the inbox
        return VerifyResult(False, f"malformed signature ({type(exc).__name__})", None, None)


@dataclass(slots=True)
class _Incoming:
    """What verification needs to know about the received request, normalised once."""

    method: str  # upper case
    target: str  # raw path + query
    headers: Mapping[str, str]  # lower-cased names
    body: bytes
    key: RSAPublicKey
    now: datetime
    window: timedelta
    authority: str | None


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
        raise Rejected("key is not an RSA key")
    if not MIN_KEY_BITS <= key.key_size <= MAX_KEY_BITS:
        raise Rejected(f"unsupported RSA key size {key.key_size}")
    h = _lower_headers(headers)
    for name in ("signature", "signature-input", "authorization"):
        if len(h.get(name, "")) > MAX_SIGNATURE_FIELD:
            raise Rejected(f"{name} header too large")
    req = _Incoming(method.upper(), target, h, body, key, now, window, authority)
    if "signature-input" in h:
        try:
            return _verify_rfc9421(req)
        except Rejected as rej:
            return VerifyResult(False, rej.reason, None, "rfc9421")
    try:
        params = cavage.parse_params(h)
    except Rejected as rej:
        return VerifyResult(False, rej.reason, None, "cavage")
    if params is None:
        raise Rejected("no signature header")
    key_id = params.get("keyid") or None
    try:
        _verify_cavage(req, params)
    except Rejected as rej:
        return VerifyResult(False, rej.reason, key_id, "cavage")
    return VerifyResult(True, "ok", key_id, "cavage")


def _verify_cavage(req: _Incoming, params: dict[str, str]) -> None:
    """draft-cavage rules (in `cavage`), then the checks shared with RFC 9421, then RSA over the signing string."""
    covered = cavage.check(params, MAX_COVERED)
    _check_digests(req, covered, "digest")
    pseudo = cavage.pseudo_headers(req.method, req.target, params, covered)
    if "date" in covered:
        _check_time(_parse_http_date(req.headers.get("date")), req, "date")
    if "(created)" in pseudo:
        _check_time(_from_ts(int(pseudo["(created)"])), req, "created")
    if "(expires)" in pseudo and int(pseudo["(expires)"]) < req.now.timestamp():
        raise Rejected("signature expired")
    message = cavage.signing_string(covered, pseudo, req.headers, req.authority)
    signature = cavage.unb64(params["signature"])
    if not _rsa_verify(req.key, signature, message, "rsa-v1_5-sha256"):
        raise Rejected("signature mismatch")


def _verify_rfc9421(req: _Incoming) -> VerifyResult:
    """Verify the first labelled signature only (see rfc9421.first_signature for why)."""
    try:
        key_id, members, params, entry = rfc9421.first_signature(
            req.headers["signature-input"], req.headers.get("signature", "")
        )
    except Rejected as rej:
        raise Rejected(rej.reason) from None
    try:
        _verify_one_9421(req, members, params, entry)
    except Rejected as rej:
        return VerifyResult(False, rej.reason, key_id, "rfc9421")
    return VerifyResult(True, "ok", key_id, "rfc9421")


def _verify_one_9421(req: _Incoming, members: Any, params: dict[str, Any], entry: Any) -> None:
    """RFC 9421 rules first, then the checks shared with draft-cavage, then RSA over each candidate base."""
    sig = rfc9421.check(members, params, entry)
    _check_digests(req, sig.components, "content-digest")
    _check_time(_from_ts(sig.created), req, "created")
    if sig.expires is not None and (type(sig.expires) is not int or sig.expires < req.now.timestamp()):
        raise Rejected("signature expired")
    host = (req.authority or req.headers.get("host") or "").lower()
    for base in rfc9421.candidate_bases(sig, req.method, req.target, req.headers, host):
        if any(_rsa_verify(req.key, sig.signature, base, a) for a in sig.algorithms):
            return
    raise Rejected("signature mismatch")


# --- shared checks --------------------------------------------------------------------------------------


def _check_digests(req: _Incoming, covered: list[str], usual: str) -> None:
    """A body must be bound to the signature by a signed Digest/Content-Digest that matches it."""
    signed = [n for n in ("digest", "content-digest") if n in covered]
    if not signed:
        if req.method in BODY_METHODS or req.body:
            raise Rejected(f"{usual} is not signed")
        return
    for name in signed:
        value = req.headers.get(name)
        if value is None:
            raise Rejected(f"{name} header is missing")
        try:
            pairs = cavage.parse_digest(value) if name == "digest" else rfc9421.parse_content_digest(value)
        except Rejected as rej:
            raise Rejected(rej.reason) from None
        checked = False
        for alg, got in pairs:
            digest = _DIGESTS.get(alg)
            if digest is not None:
                if not hmac.compare_digest(got, digest(req.body).digest()):
                    raise Rejected("digest does not match body")
                checked = True
        if not checked:
            raise Rejected(f"{name} header has no supported algorithm")


def _check_time(when: datetime, req: _Incoming, what: str) -> None:
    if not req.now - req.window <= when <= req.now + req.window:
        raise Rejected(f"{what} outside window")


def _from_ts(seconds: int) -> datetime:
    """Unix time from a hostile header; absurd values count as outside any window."""
    if not 0 <= seconds < 2**34:
        return datetime.min.replace(tzinfo=UTC)
    return datetime.fromtimestamp(seconds, UTC)


def _parse_http_date(value: str | None) -> datetime:
    if not value:
        raise Rejected("date header is missing")
    fixdate = _IMF_FIXDATE.fullmatch(value)
    try:
        if fixdate is not None:  # what every fediverse server sends: skip email.utils' general parser
            day, month, year, hour, minute, second = fixdate.groups()
            return datetime(int(year), _MONTHS.index(month) + 1, int(day), int(hour), int(minute), int(second),
                            tzinfo=UTC)
        return _utc(parsedate_to_datetime(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        raise Rejected("date header is not an HTTP date") from None


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


def _lower_headers(headers: Mapping[str, str]) -> Mapping[str, str]:
    """Case-insensitive view; repeated fields (multidict items) are joined with ", " as HTTP allows.

    aiohttp's request headers are already case-insensitive: they get a lazy view that only touches the
    few fields verification reads, instead of a copy of every header (this runs on each inbox POST).
    """
    if isinstance(headers, CIMultiDictProxy | CIMultiDict):
        return _JoinedView(headers)
    out: dict[str, str] = {}
    for name, value in headers.items():
        k, v = name.lower(), str(value).strip()
        out[k] = f"{out[k]}, {v}" if k in out else v
    return out


class _JoinedView(Mapping[str, str]):
    """Read-only, lower-case-keyed view of a case-insensitive multidict, repeats joined by ", "."""

    def __init__(self, headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> None:
        self._headers = headers

    def __getitem__(self, name: str) -> str:
        value: str | None = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        values = self._headers.getall(name, None)
        if values is None:
            return default
        return values[0].strip() if len(values) == 1 else ", ".join(str(v).strip() for v in values)

    def __contains__(self, name: object) -> bool:
        return name in self._headers

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(k.lower() for k in self._headers))

    def __len__(self) -> int:
        return len(dict.fromkeys(k.lower() for k in self._headers))


def _get(headers: Mapping[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name), None)


def _put(headers: dict[str, str], name: str, value: str) -> None:
    """Set a header, replacing any spelling of it already there."""
    for k in [k for k in headers if k.lower() == name.lower()]:
        del headers[k]
    headers[name] = value
