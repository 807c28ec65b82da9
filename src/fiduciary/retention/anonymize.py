"""Truncation: an IP address cut to its network, a user agent cut to its family (PLA-3, PUT-10).

Both are pure functions of the value, and a truncated value truncates to itself, so a
sweep that runs twice writes the same bytes (and the second time writes nothing: rows
already in their target state are left alone).

- ``truncate_ip("203.0.113.77", 24, 48)`` -> ``"203.0.113.0"``; an IPv6 address keeps its
  first 48 bits (``2001:db8:85a3::``). A value that is not an address (a host name, a
  port, garbage) cannot be cut safely and becomes None.
- ``user_agent_family(ua)`` -> the browser or client family ("Firefox", "Chrome",
  "Safari", "Edge", "bot" ...), else the first product token when it is a plain name
  ("put.io-android"), else "Other". Versions, platforms and anything after the product
  token (where apps put device models and ids) are dropped.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any, Final

__all__ = ["IP", "USER_AGENT", "truncate_ip", "truncate_value", "user_agent_family"]

# The categories truncation applies to, and what it does to each.
IP: Final = "user.device.ip_address"
USER_AGENT: Final = ("user.device.user_agent", "user.device.browser")

# Order matters: many user agents name several engines (Edge says Chrome and Safari too).
_FAMILIES: Final = (
    ("bot", re.compile(r"bot\b|crawler|spider|slurp|bingpreview|facebookexternalhit", re.I)),
    ("Edge", re.compile(r"\bEdg(e|A|iOS)?/")),
    ("Opera", re.compile(r"\bOPR/|\bOpera\b")),
    ("Samsung Internet", re.compile(r"SamsungBrowser/")),
    ("Vivaldi", re.compile(r"Vivaldi/")),
    ("Yandex Browser", re.compile(r"YaBrowser/")),
    ("Firefox", re.compile(r"\b(Firefox|FxiOS)/")),
    ("Chromium", re.compile(r"\bChromium/")),
    ("Chrome", re.compile(r"\b(Chrome|CriOS)/")),
    ("Internet Explorer", re.compile(r"\bMSIE\b|\bTrident/")),
    ("Safari", re.compile(r"\bSafari/|AppleWebKit/")),
    ("curl", re.compile(r"^curl/", re.I)),
    ("Wget", re.compile(r"^Wget/", re.I)),
)
# A product token that is a plain name: letters first, then letters, digits, . _ -
_PRODUCT: Final = re.compile(r"^([A-Za-z][A-Za-z0-9._-]{0,39})/")
OTHER: Final = "Other"


def truncate_ip(value: Any, ipv4_prefix: int = 24, ipv6_prefix: int = 48) -> str | None:
    """The network address of ``value`` at the prefix length of its family, as text."""
    if value is None:
        return None
    return _cut(str(value).strip(), ipv4_prefix, ipv6_prefix)


# A sweep meets the same values again and again (a log's few user agents, a visitor's
# address on every line): each distinct value is worked out once per process.
@functools.lru_cache(maxsize=1 << 16)
def _cut(text: str, ipv4_prefix: int, ipv6_prefix: int) -> str | None:
    m = _V4.fullmatch(text)
    if m:  # the common case, without building address objects
        octets = [int(g) for g in m.groups()]
        if max(octets) > 255:
            return None
        n = (octets[0] << 24 | octets[1] << 16 | octets[2] << 8 | octets[3]) & _mask(32, ipv4_prefix)
        return f"{n >> 24}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    prefix = ipv4_prefix if addr.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False).network_address)


def _mask(bits: int, prefix: int) -> int:
    return ((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1)


_V4: Final = re.compile(r"(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})")


def user_agent_family(value: Any) -> str | None:
    """The family of a user agent string (see the module doc); None stays None."""
    if value is None:
        return None
    return _family(str(value).strip())


@functools.lru_cache(maxsize=1 << 14)
def _family(text: str) -> str | None:
    if not text:
        return None
    if text == OTHER or any(text == name for name, _ in _FAMILIES):
        return text  # already a family: truncating again changes nothing
    for name, pattern in _FAMILIES:
        if pattern.search(text):
            return name
    if text.startswith("Mozilla/"):
        return OTHER
    m = _PRODUCT.match(text)
    if m:
        return m.group(1)
    # A bare product name (an earlier truncation's output) stays as it is.
    return text if re.fullmatch(r"[A-Za-z][A-Za-z0-9._-]{0,39}", text) else OTHER


def truncate_value(kind: str, value: Any, options: dict[str, Any]) -> Any:
    """``kind`` is "ip" or "user_agent"; ``options`` the rule's truncate block as a dict."""
    if kind == "ip":
        return truncate_ip(value, int(options.get("ipv4_prefix", 24)), int(options.get("ipv6_prefix", 48)))
    if kind == "user_agent":
        return None if options.get("user_agent") == "drop" else user_agent_family(value)
    raise ValueError(f"unknown truncation {kind!r}")
