"""One normalisation of host names, used wherever two hosts are compared.

Blocks, the origin checks of keys, actors and objects, and the per-host delivery limits all compare hosts; if
each spelled "the host" its own way, `EVIL.example.`, `evil.example` and an IDNA form would be three servers to
one check and one to another. Everything goes through `normalise_host` (pure, no I/O, cached: hosts repeat).
"""

from __future__ import annotations

from functools import lru_cache
from ipaddress import ip_address
from urllib.parse import urlsplit

import idna

_DEFAULT_PORTS = {"http": 80, "https": 443}


@lru_cache(maxsize=8192)
def normalise_host(host: str) -> str:
    """Lower-case ASCII (IDNA/punycode) form without a trailing dot; IP literals in their canonical form.

    Returns '' for something that is not a host name, so a malformed host never equals a real one.
    """
    h = host.strip()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    try:
        return str(ip_address(h))
    except ValueError:
        pass
    h = h.rstrip(".").lower()
    if not h or any(c in h for c in "/@:[] \t\r\n\\"):
        return ""
    if h.isascii():
        labels = h.split(".")
        if any(not label or len(label) > 63 for label in labels):
            return ""
        return h
    try:
        return idna.encode(h, uts46=True).decode("ascii")
    except idna.IDNAError:
        return ""


@lru_cache(maxsize=8192)
def host_of(url: str) -> str:
    """The normalised host of a URL, without the port ('' when it has none)."""
    try:
        return normalise_host(urlsplit(url).hostname or "")
    except ValueError:
        return ""


@lru_cache(maxsize=8192)
def netloc_of(url: str) -> str:
    """Normalised "host[:port]" as people write it (port only when not the scheme's default): handles' domain."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return ""
    host = normalise_host(parts.hostname or "")
    if not host:
        return ""
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None or port == _DEFAULT_PORTS.get(parts.scheme.lower()) else f"{shown}:{port}"


@lru_cache(maxsize=8192)
def authority_of(url: str) -> str:
    """Normalised "host:port" of an http(s) URL, default port made explicit ('' when unusable).

    Two URLs are on the same server when their authorities are equal: https://a/x and https://A.:443/y are.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return ""
    scheme = parts.scheme.lower()
    host = normalise_host(parts.hostname or "")
    if not host or scheme not in _DEFAULT_PORTS:
        return ""
    return f"{host}:{port or _DEFAULT_PORTS[scheme]}"


@lru_cache(maxsize=8192)
def origin_of(url: str) -> str:
    """Normalised "scheme://host:port" ('' when unusable): what "served from X's origin" compares."""
    authority = authority_of(url)
    return f"{urlsplit(url).scheme.lower()}://{authority}" if authority else ""


def same_origin(a: str, b: str) -> bool:
    """Both URLs usable and on one origin (scheme, host and port)."""
    oa = origin_of(a)
    return bool(oa) and oa == origin_of(b)


@lru_cache(maxsize=8192)
def parent_domains(host: str) -> tuple[str, ...]:
    """The normalised host and every domain above it (a.b.example → a.b.example, b.example, example).

    An IP literal has no parents: a block of "1" must not cover 10.0.0.1.
    """
    h = normalise_host(host)
    if not h:
        return ()
    if ":" in h or h.replace(".", "").isdigit():
        return (h,)
    labels = h.split(".")
    return tuple(".".join(labels[i:]) for i in range(len(labels)))


def domain_matches(host: str, domain: str) -> bool:
    """`host` is `domain` or one of its subdomains, however either is spelled (blocks cover subdomains)."""
    d = normalise_host(domain)
    return bool(d) and d in parent_domains(host)
