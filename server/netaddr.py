"""Which client an address stands for, for per-client limits (sign-in throttle, connection caps).

An IPv4 address is one client. An IPv6 client usually holds a whole /64 (and picks any address
in it at will), so IPv6 addresses are grouped by /64; IPv4-mapped IPv6 addresses count as the
IPv4 address they map.
"""

from __future__ import annotations

import functools
import ipaddress


@functools.lru_cache(maxsize=4096)
def client_key(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address  # not an IP (a Unix socket, "?"): itself
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
