"""Browser privacy signals (Global Privacy Control, Do Not Track) and IP truncation.

GPC (``Sec-GPC: 1``) is a legally binding opt-out of sale and sharing in California
(LAW-12); DNT has no legal force anywhere we know of but is reported for completeness.
IP addresses are personal data: the ledger keeps only the network a request came from
(IPv4 /24, IPv6 /48), enough to prove roughly where a consent came from, not who.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

IPV4_PREFIX = 24
IPV6_PREFIX = 48
# 0-255 without leading zeros (which ipaddress refuses too: 010 might mean octal).
_OCTET = re.compile(r"25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # HTTP header names are case-insensitive; plain dicts are not, so look both ways.
    value = headers.get(name)
    if value is not None:
        return value
    for key, v in headers.items():
        if key.lower() == name:
            return v
    return None


def gpc(headers: Mapping[str, str]) -> bool:
    """True when the request carries ``Sec-GPC: 1`` (the only value the spec defines)."""
    value = _header(headers, "sec-gpc")
    return value is not None and value.strip() == "1"


def dnt(headers: Mapping[str, str]) -> bool:
    """True when the request carries ``DNT: 1``."""
    value = _header(headers, "dnt")
    return value is not None and value.strip() == "1"


def truncate_ip(ip: str) -> str:
    """The network an address belongs to, as ``a.b.c.0/24`` or ``x:y:z::/48``.

    IPv4-mapped IPv6 addresses (``::ffff:a.b.c.d``) are truncated as IPv4, since /48 of
    them would keep nothing useful and /128 would keep the whole address. An address
    already truncated (``a.b.c.0/24`` or coarser) comes back unchanged, so truncating twice
    is harmless. Anything else raises ValueError saying what was wrong.
    """
    if not isinstance(ip, str):
        raise ValueError(f"IP address must be text, got {type(ip).__name__}")
    text = ip.strip()
    # The common case, a plain dotted IPv4 address, without ipaddress's (slow) objects:
    # this runs once per consent event, bulk imports included.
    parts = text.split(".")
    if len(parts) == 4 and all(_OCTET.fullmatch(p) for p in parts):
        return f"{parts[0]}.{parts[1]}.{parts[2]}.0/{IPV4_PREFIX}"
    if not text:
        raise ValueError("IP address is empty")
    if "%" in text:  # a zone id (fe80::1%eth0) says which interface, nothing about the peer
        text = text.split("%", 1)[0]
    try:
        if "/" in text:
            net = ipaddress.ip_network(text, strict=False)
            addr: ipaddress.IPv4Address | ipaddress.IPv6Address = net.network_address
            given_prefix = net.prefixlen
        else:
            addr = ipaddress.ip_address(text)
            given_prefix = addr.max_prefixlen
    except ValueError:
        # The value is not repeated: a mistyped address is still someone's address, and
        # error messages end up in logs.
        raise ValueError(f"not an IP address ({len(text)} characters; IPv4 or IPv6 expected)") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
        given_prefix = max(0, given_prefix - 96)
    limit = IPV4_PREFIX if addr.version == 4 else IPV6_PREFIX
    prefix = min(given_prefix, limit)
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


__all__ = ["dnt", "gpc", "truncate_ip"]
