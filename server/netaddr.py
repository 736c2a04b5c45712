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
    ip = _parse_ip(address)  # IPv4-mapped IPv6 already as its IPv4 address
    if ip is None:
        return address  # not an IP (a Unix socket, "?"): itself
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class TrustedProxies:
    """The reverse proxies (`[http] trusted_proxies`) whose `X-Forwarded-For` names the client.

    Behind a proxy every connection comes from the proxy's address: without this, one client's
    failed sign-ins would throttle everybody and the per-address caps would count all clients as
    one. The header is read right to left, as each proxy appends the address it saw: the client
    is the first address not itself a trusted proxy (what a client writes in the header is only
    believed as far as a trusted proxy vouches for it). A peer not in the list is the client,
    whatever it sends.
    """

    MAX_HOPS = 32  # entries of the header looked at; a longer chain stops at the 32nd

    def __init__(self, networks: list[str] | tuple[str, ...] = ()) -> None:
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str | None) -> bool:
        ip = _parse_ip(address)
        return ip is not None and any(ip in network for network in self.networks)

    def client_of(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """The client's address for a connection from `peer` carrying that header."""
        if not self.networks or not forwarded_for or not self.trusts(peer):
            return peer
        client = peer
        for entry in reversed(forwarded_for.split(",")[-self.MAX_HOPS :]):
            ip = _parse_ip(_without_port(entry.strip()))
            if ip is None:
                break  # a broken chain: the last hop that vouched is as far as we can see
            client = str(ip)
            if not self.trusts(client):
                break
        return client


def _without_port(entry: str) -> str:
    """`[v6]:port` -> `v6`, `v4:port` -> `v4` (some proxies add the port); else unchanged."""
    if entry.startswith("["):
        return entry[1:].split("]", 1)[0]
    if entry.count(":") == 1:
        return entry.split(":", 1)[0]
    return entry


def _parse_ip(address: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
