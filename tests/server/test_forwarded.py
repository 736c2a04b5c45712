"""Behind a reverse proxy (`[http] trusted_proxies`): the client is the address the proxy's
X-Forwarded-For names, for the sign-in throttle, the connection caps and the logs; from any
other peer the header is ignored (a client cannot pick its own address).

The proxy is 127.0.0.9 (a loopback address the test connects from); the clients behind it are
the documentation addresses it forwards (192.0.2.x)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import aiohttp
import pytest

from server.config import ConfigError, load_config
from server.netaddr import TrustedProxies
from tests.server.conftest import make_config, running_server
from tests.server.xo_client import XoClient

PROXY = "127.0.0.9"
ADMIN = "admin@admin.net"
INVALID = {"message": "invalid credentials", "code": 3}
REFUSED = {"code": -32000, "message": "unknown error from the peer"}  # refused unchecked

pytestmark = [pytest.mark.timeout(60), pytest.mark.any_store]


def test_the_client_is_the_first_untrusted_address_from_the_right() -> None:
    proxies = TrustedProxies(["127.0.0.9", "10.1.0.0/16", "fd00::/8"])
    assert proxies.client_of("127.0.0.9", "192.0.2.7") == "192.0.2.7"
    # A client's own header entries are not believed past the first untrusted hop.
    assert proxies.client_of("127.0.0.9", "6.6.6.6, 192.0.2.7") == "192.0.2.7"
    # A chain of trusted proxies is walked through.
    assert proxies.client_of("127.0.0.9", "192.0.2.7, 10.1.2.3") == "192.0.2.7"
    assert proxies.client_of("127.0.0.9", "[2001:db8::5]:4711, fd00::1") == "2001:db8::5"
    assert proxies.client_of("127.0.0.9", "192.0.2.7:5555") == "192.0.2.7"
    # A broken entry ends the chain at the last hop that vouched.
    assert proxies.client_of("127.0.0.9", "192.0.2.7, garbage, 10.1.2.3") == "10.1.2.3"
    assert proxies.client_of("127.0.0.9", "") == "127.0.0.9"
    # From a peer that is not a trusted proxy, the header means nothing.
    assert proxies.client_of("127.0.0.1", "192.0.2.7") == "127.0.0.1"
    assert TrustedProxies().client_of("127.0.0.9", "192.0.2.7") == "127.0.0.9"
    assert proxies.trusts("::ffff:127.0.0.9") and not proxies.trusts("?")


async def sign_in_error(
    url: str, peer: str, forwarded_for: str, password: str
) -> dict[str, object] | None:
    client = await XoClient.connect(
        url, local_addr=peer, headers={"X-Forwarded-For": forwarded_for}
    )
    try:
        answer = await client.request("session.signIn", {"email": ADMIN, "password": password})
        return answer.get("error")
    finally:
        await client.close()


async def test_the_throttle_and_the_logs_see_the_clients_behind_the_proxy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="xo_migrate.auth")
    config = make_config(tmp_path, trusted_proxies=[PROXY])
    async with running_server(config) as srv:
        assert await sign_in_error(srv.ws_url, PROXY, "192.0.2.66", "guess") == INVALID
        assert "event=sign_in_failed email=admin@admin.net remote=192.0.2.66" in caplog.text
        # The attacker behind the proxy waits out the delay; the owner, behind the same
        # proxy, signs in at once.
        assert await sign_in_error(srv.ws_url, PROXY, "192.0.2.66", "admin") == REFUSED
        assert await sign_in_error(srv.ws_url, PROXY, "192.0.2.7", "admin") is None
        # A direct client cannot escape its own throttle by writing the header itself.
        assert await sign_in_error(srv.ws_url, "127.0.0.1", "192.0.2.1", "guess") == INVALID
        assert await sign_in_error(srv.ws_url, "127.0.0.1", "192.0.2.2", "admin") == REFUSED


async def test_without_trusted_proxies_the_header_is_ignored(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path)) as srv:
        assert await sign_in_error(srv.ws_url, PROXY, "192.0.2.66", "guess") == INVALID
        assert await sign_in_error(srv.ws_url, PROXY, "192.0.2.7", "admin") == REFUSED


async def test_a_trusted_proxy_is_not_held_to_the_per_address_cap(tmp_path: Path) -> None:
    config = make_config(tmp_path, trusted_proxies=[PROXY])
    config.connections = dataclasses.replace(config.connections, max_connections_per_address=2)
    async with running_server(config) as srv:
        proxied = [
            await XoClient.connect(
                srv.ws_url, local_addr=PROXY, headers={"X-Forwarded-For": f"192.0.2.{n}"}
            )
            for n in range(4)
        ]
        for client in proxied:
            assert await client.call("system.getVersion") == "0.1"
        direct = [await XoClient.connect(srv.ws_url) for _ in range(2)]
        with pytest.raises((aiohttp.ClientError, ConnectionError)):
            await XoClient.connect(srv.ws_url)  # a 3rd from one direct address
        for client in (*proxied, *direct):
            await client.close()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("true", "must list the proxies' addresses"),
        ('["127.0.0.1", "nginx"]', "'nginx' is not an address or a network"),
        ('"127.0.0.1"', "must be a list of addresses or networks"),
    ],
)
def test_bad_trusted_proxies_stop_the_server_with_a_clear_error(
    tmp_path: Path, value: str, message: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[http]\ntrusted_proxies = {value}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)
