"""The RFC 9421 (HTTP Message Signatures) half of fedibridge.signatures, kept apart so each module has one job.

Covers what is specific to RFC 9421: Signature-Input / Signature and Content-Digest parsing as RFC 8941
structured fields with `http_sf` (the parser behind `http-message-signatures`), the coverage rules we demand,
and signature base construction for signing and verifying. Pure code: no I/O, no clock. RSA verification,
digest/time checks and the public entry points stay in `signatures`, which is what callers import.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import http_sf
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from http_sf.innerlist import ser_item_or_inner_list

from .errors import Rejected

LABEL = "sig1"
MAX_LABELS = 4  # signatures per request (only the first is verified)
MAX_COMPONENTS = 32  # covered components per signature; signatures.MAX_COVERED is this same cap
ALGORITHMS = ("rsa-v1_5-sha256", "rsa-pss-sha512")


@dataclass(frozen=True)
class Checked:
    """A first-label signature whose covered components and parameters passed our rules."""

    components: list[str]
    signature: bytes
    signature_params: str  # serialised exactly as received, for the signature base
    algorithms: list[str]  # the one `alg` named, else every algorithm we accept
    created: int
    expires: Any  # None, or whatever the header said (checked by the caller)


def content_digest_header(body: bytes) -> str:
    """`Content-Digest` value (RFC 9530), a structured-field byte sequence."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


def parse_content_digest(value: str) -> list[tuple[str, bytes]]:
    """(algorithm, digest) pairs of a Content-Digest header; non-byte members are ignored."""
    try:
        parsed = sf_dict(value)
    except (http_sf.StructuredFieldError, ValueError, UnicodeError):
        raise Rejected("malformed content-digest header") from None
    return [(alg.lower(), v) for alg, (v, _p) in parsed.items() if isinstance(v, bytes)]


def sf_dict(value: str) -> dict[str, Any]:
    """Parse an RFC 8941 dictionary (raises StructuredFieldError/ValueError on garbage)."""
    parsed = http_sf.parse(value.encode("utf-8", "surrogateescape"), tltype="dictionary")
    if not isinstance(parsed, dict):
        raise ValueError("not a dictionary")
    return parsed


def short(text: str, limit: int = 40) -> str:
    """Echo hostile strings into reasons only truncated and ASCII-safe (log handlers choke on surrogates)."""
    text = text if len(text) <= limit else text[:limit] + "..."
    return text.encode("ascii", "backslashreplace").decode("ascii")


def signature_base(values: Mapping[str, str], signature_params: str) -> str:
    """RFC 9421 §2.5 signature base: one `"name": value` line per component, then @signature-params."""
    return "".join(f'"{c}": {v}\n' for c, v in values.items()) + f'"@signature-params": {signature_params}'


def sign(values: Mapping[str, str], key: RSAPrivateKey, key_id: str, created: int) -> tuple[str, str]:
    """(Signature-Input, Signature) values covering `values` (component -> value, in order), rsa-v1_5-sha256."""
    params = "(" + " ".join(f'"{c}"' for c in values) + f');created={created};keyid="{key_id}"'
    params += ';alg="rsa-v1_5-sha256"'
    signature = key.sign(signature_base(values, params).encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return f"{LABEL}={params}", f"{LABEL}=:{base64.b64encode(signature).decode('ascii')}:"


def claimed_key_id(signature_input: str) -> str | None:
    """keyid of the first Signature-Input label: the one verification checks (raises on garbage)."""
    _members, params = next(iter(sf_dict(signature_input).values()))
    return str(params["keyid"]) if isinstance(params.get("keyid"), str) else None


def first_signature(signature_input: str, signature: str) -> tuple[str | None, Any, dict[str, Any], Any]:
    """(keyid, members, params, Signature entry) of the first label only: it is the one signature_key_id()
    named, so the key the caller fetched belongs to it. Trying later labels would let a signature made with
    key A claim keyid B."""
    try:
        inputs = sf_dict(signature_input)
        signatures = sf_dict(signature)
    except (http_sf.StructuredFieldError, ValueError, UnicodeError):
        raise Rejected("malformed Signature-Input or Signature header") from None
    if not inputs:
        raise Rejected("empty Signature-Input header")
    if len(inputs) > MAX_LABELS:
        raise Rejected("too many signatures")
    label, (members, params) = next(iter(inputs.items()))
    key_id = str(params["keyid"]) if isinstance(params.get("keyid"), str) else None
    return key_id, members, params, signatures.get(label)


def check(members: Any, params: dict[str, Any], entry: Any) -> Checked:
    """Enforce our coverage rules: method, target and authority must be signed, no component parameters."""
    if not isinstance(members, list):
        raise Rejected("Signature-Input member is not a component list")
    if not isinstance(params.get("keyid"), str):
        raise Rejected("Signature-Input has no keyid")
    if entry is None or not isinstance(entry[0], bytes):
        raise Rejected("no Signature for this Signature-Input label")
    alg = params.get("alg")
    if alg is not None and alg not in ALGORITHMS:
        raise Rejected(f"unsupported algorithm {short(str(alg))!r}")
    created = params.get("created")
    if type(created) is not int:
        raise Rejected("created parameter is missing or not an integer")
    components: list[str] = []
    for item, item_params in members:
        if not isinstance(item, str) or item != item.lower():
            raise Rejected("malformed covered component")
        if item_params:
            raise Rejected(f"unsupported parameters on component {short(item)!r}")
        components.append(item)
    if len(components) > MAX_COMPONENTS or len(set(components)) != len(components):
        raise Rejected("too many or duplicate covered components")
    if "@method" not in components:
        raise Rejected("@method is not signed")
    if not {"@target-uri", "@path", "@request-target"} & set(components):
        raise Rejected("@target-uri is not signed")
    if not {"@authority", "host", "@target-uri"} & set(components):
        raise Rejected("@authority is not signed")
    algorithms = [alg] if alg else list(ALGORITHMS)
    signature_params = ser_item_or_inner_list((members, params))
    return Checked(components, entry[0], signature_params, algorithms, created, params.get("expires"))


def candidate_bases(sig: Checked, method: str, target: str, headers: Mapping[str, str], host: str) -> Iterator[str]:
    """Signature bases to try, https first: we sit behind a TLS proxy in production but serve plain http in tests.

    `method` is upper case, `target` the raw path + query, `headers` lower-cased, `host` lower-cased.
    """
    path, _, query = target.partition("?")
    schemes = ("https", "http") if {"@target-uri", "@scheme"} & set(sig.components) else ("https",)
    for scheme in schemes:
        derived = {
            "@method": method,
            "@target-uri": f"{scheme}://{host}{target}",
            "@authority": host,
            "@scheme": scheme,
            "@request-target": target,
            "@path": path or "/",
            "@query": "?" + query,
        }
        values: dict[str, str] = {}
        for name in sig.components:
            value = derived.get(name) if name.startswith("@") else headers.get(name)
            if value is None:
                raise Rejected(f"covered component {short(name)!r} is missing or unsupported")
            values[name] = value
        yield signature_base(values, sig.signature_params)
