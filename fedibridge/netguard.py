"""Which addresses fedibridge may contact: public unicast only, checked after DNS resolution.

Every URL we fetch comes from strangers, so a DNS name or a redirect must never lead inside
(loopback, private ranges, cloud metadata, v4 tunnelled in v6). http_client.py plugs this into aiohttp.
"""

from __future__ import annotations

import re
import socket
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from aiohttp.abc import AbstractResolver, ResolveResult

_CGNAT = ip_network("100.64.0.0/10")
_NAT64 = ip_network("64:ff9b::/96")


def is_public_address(address: str | IPv4Address | IPv6Address) -> bool:
    """True only for globally routable unicast addresses; v4 wrapped in v6 is judged as the v4 inside."""
    ip = ip_address(address.split("%", 1)[0]) if isinstance(address, str) else address
    if isinstance(ip, IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        if ip in _NAT64:  # 64:ff9b::a.b.c.d reaches a.b.c.d through a NAT64 gateway
            return is_public_address(IPv4Address(int(ip) & 0xFFFF_FFFF))
        if ip.sixtofour is not None and not is_public_address(ip.sixtofour):
            return False
        if ip.teredo is not None or ip.is_site_local:
            return False
    elif ip in _CGNAT:
        return False
    return ip.is_global and not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
        or ip.is_reserved or ip.is_unspecified
    )


_NUMERIC_LABEL = re.compile(r"(?:[0-9]+|0[xX][0-9a-fA-F]*)")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_V4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def is_noncanonical_ipv4(host: str) -> bool:
    """A host a URL parser reads as an IPv4 address although it is not written a.b.c.d in decimal.

    `2130706433`, `0177.0.0.1`, `0x7f.1`, `127.1`, `0` and `127.0.0.1.` all mean an address (WHATWG: a host
    whose last label is a number is IPv4). aiohttp before 3.14 connected to some of these without asking the
    resolver, so our DNS check never saw them; no real server is named this way, so they are refused outright.
    """
    if ":" in host:  # IPv6 literal: ip_address judges it
        return False
    last = host.removesuffix(".").rsplit(".", 1)[-1]
    return bool(_NUMERIC_LABEL.fullmatch(last)) and not _CANONICAL_V4.fullmatch(host)


class BlockedAddress(OSError):
    """Raised inside the connector so aiohttp never opens a socket to a refused address."""


class GuardedResolver(AbstractResolver):
    """Resolve with aiohttp's default resolver, then refuse the host if ANY answer is not public."""

    def __init__(self, inner: AbstractResolver) -> None:
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if not is_public_address(result["host"]):
                raise BlockedAddress(f"{host} resolves to non-public address {result['host']}")
        return results

    async def close(self) -> None:
        await self._inner.close()
