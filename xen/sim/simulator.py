"""The simulator: every host of every pool served over HTTP on its own loopback address.

All hosts share one port (as real hosts all use 443). One aiohttp request handler serves
every listening socket and tells hosts apart by the local address a request arrived on.
With `https` (argument, or the lab's `[server] https = true`) every host serves TLS with its
own self-signed certificate (xen/sim/certs.py), as real hosts do, and URLs are https://.
With a seed (argument, or the lab's `[server] seed`) uuids and refs repeat from run to run
(xen/sim/ids.py). Besides XML-RPC and JSON-RPC, hosts serve their stats over HTTP GET
(xen/sim/rrd/http.py); `/console` (the console stream) is not simulated.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import ssl
from collections import Counter
from typing import Any

import orjson
from aiohttp import web

from xen.sim import codec
from xen.sim.certs import HostCertificates, certificate_record
from xen.sim.db import XapiFailure, default_schema
from xen.sim.dispatch import MethodTable
from xen.sim.lab import Lab, load_lab
from xen.sim.pool import SimPool
from xen.sim.rrd import http as rrd_http

log = logging.getLogger(__name__)

CORS = {"Access-Control-Allow-Origin": "*"}


class Simulator:
    def __init__(
        self,
        lab: Lab | None = None,
        port: int = 0,
        time_scale: float | None = None,
        *,
        https: bool | None = None,
        seed: int | None = None,
    ):
        self.lab = lab if lab is not None else load_lab()
        self.https = self.lab.https if https is None else https
        self.seed = self.lab.seed if seed is None else seed
        self.certificates = HostCertificates()
        # TCP connections accepted per host address (TLS handshakes that fail included):
        # lets tests see how often a client tries, even when no XAPI call gets through.
        self.accepted: Counter[str] = Counter()
        self.timing = dataclasses.replace(self.lab.timing)  # shared by every pool
        if time_scale is not None:
            self.timing.time_scale = time_scale
        self.requested_port = port
        self.port = 0
        self.table = MethodTable(default_schema())
        self._pools = [
            SimPool(self, self.lab, spec, self.timing, self.table, self.seed)
            for spec in self.lab.pools
        ]
        self._hosts = {
            address: (pool, ref)
            for pool in self._pools
            for address, ref in pool.host_addresses().items()
        }
        self._listeners: dict[str, asyncio.Server | None] = {}
        self._pending_listens: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._methods_xml: bytes = codec.xmlrpc_raw(self.table.list_methods())

    # -- SimulatorLike ----------------------------------------------------------------------

    @property
    def pools(self) -> list[SimPool]:
        return list(self._pools)

    def pool(self, name: str) -> SimPool:
        for pool in self._pools:
            if pool.name == name or pool.uuid == name:
                return pool
        raise KeyError(f"no pool {name!r}")

    def pool_by_address(self, address: str) -> SimPool | None:
        """The pool one of whose hosts has `address` (management or any PIF IP)."""
        address = address.strip("[]")
        for pool in self._pools:
            if address in pool.all_ips():
                return pool
        return None

    def host_by_address(self, address: str) -> tuple[SimPool, str] | None:
        return self._hosts.get(address)

    def addresses(self) -> list[str]:
        return [h.address for p in self.lab.pools for h in p.hosts]

    @property
    def scheme(self) -> str:
        return "https" if self.https else "http"

    def server_certificate(self, address: str) -> str:
        """The PEM certificate of the host at `address` (made on first use over HTTP too:
        real hosts always have one)."""
        return self.certificates.get(address).pem

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        sockets = self._bind_all()
        self._record_certificates()
        for address, sock in sockets.items():
            self._listeners[address] = await self._create_server(address, sock)
        for pool in self._pools:
            pool.start()
        log.info(
            "event=sim_started port=%d hosts=%d scheme=%s", self.port, len(sockets), self.scheme
        )

    def _record_certificates(self) -> None:
        """Each host's `Certificate` record describes the certificate it serves over TLS
        (host.certificates; xo-server shows their fingerprint and expiry)."""
        for pool in self._pools:
            db = pool.db
            for ref, rec in db.iter_records("host"):
                values = certificate_record(self.certificates.get(rec["address"]).pem)
                if rec["certificates"]:  # started again: new certificates (stop() drops them)
                    db.update("Certificate", rec["certificates"][0], **values)
                else:
                    db.create("Certificate", host=ref, **values)

    async def stop(self) -> None:
        for pool in self._pools:
            await pool.stop()
        pending = list(self._pending_listens)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for server in self._listeners.values():
            if server is not None:
                server.close()
        self._listeners.clear()
        if self._runner is not None:
            await self._runner.cleanup()  # also cancels in-flight handlers
            self._runner = None
        self.certificates.close()
        log.info("event=sim_stopped port=%d", self.port)

    def _bind_all(self) -> dict[str, socket.socket]:
        addresses = self.addresses()
        if self.requested_port:
            self.port = self.requested_port
            return {a: _listen(a, self.port) for a in addresses}
        for _attempt in range(50):
            first = _listen(addresses[0], 0)
            port = first.getsockname()[1]
            sockets = {addresses[0]: first}
            try:
                for address in addresses[1:]:
                    sockets[address] = _listen(address, port)
            except OSError:
                for s in sockets.values():
                    s.close()
                continue
            self.port = port
            return sockets
        raise OSError("no port free on every simulated host address")

    def set_listening(self, address: str, listening: bool) -> None:
        """Stop accepting on one host address (connections refused) or start again."""
        current = self._listeners.get(address)
        if not listening:
            if current is not None:
                current.close()  # closes the listening socket now
                self._listeners[address] = None
            return
        if current is not None or self._runner is None:
            return
        # Bind synchronously so connections queue in the backlog from this moment on.
        sock = _listen(address, self.port)
        self._listeners[address] = None
        task = asyncio.ensure_future(self._serve(address, sock))
        self._pending_listens.add(task)
        task.add_done_callback(self._pending_listens.discard)

    async def _serve(self, address: str, sock: socket.socket) -> None:
        self._listeners[address] = await self._create_server(address, sock)

    async def _create_server(self, address: str, sock: socket.socket) -> asyncio.Server:
        runner = self._runner
        assert runner is not None

        server = runner.server
        assert server is not None  # set by runner.setup() in start()

        def protocol() -> Any:
            self.accepted[address] += 1
            return server()

        context: ssl.SSLContext | None = None
        if self.https:
            context = self.certificates.server_context(address)
        return await asyncio.get_running_loop().create_server(protocol, sock=sock, ssl=context)

    def manifest(self) -> dict[str, Any]:
        """Pools, masters, credentials and hosts; over HTTPS each pool also names `ca_file`,
        a PEM bundle of its hosts' certificates to pin (instead of allowing any certificate)."""
        pools = []
        for pool in self._pools:
            hosts = [
                {"name": rec["name_label"], "uuid": rec["uuid"], "address": rec["address"]}
                for rec in pool.db.table("host").values()
            ]
            entry: dict[str, Any] = {
                "name": pool.name,
                "uuid": pool.uuid,
                "master": pool.master_url,
                "username": pool.spec.username,
                "password": pool.spec.password,
                "hosts": hosts,
            }
            if self.https:
                addresses = [h["address"] for h in hosts]
                entry["ca_file"] = str(self.certificates.bundle(pool.uuid, addresses))
            pools.append(entry)
        return {"port": self.port, "pools": pools}

    # -- HTTP -------------------------------------------------------------------------------

    def _listening(self, address: str) -> bool:
        return self._listeners.get(address) is not None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        address = sockname[0] if sockname else ""
        found = self.host_by_address(address)
        if found is None or not self._listening(address):
            # An unreachable host: drop kept-alive connections rather than answer.
            if request.transport is not None:
                request.transport.abort()
            raise web.HTTPServiceUnavailable()
        pool, host_ref = found
        if request.path.startswith("/sim/stats"):
            return self._stats(request, pool)
        if request.method == "OPTIONS":
            return web.Response(headers={**CORS, "Access-Control-Allow-Headers": "*"})
        if request.method == "GET" and request.path in rrd_http.PATHS:
            return await rrd_http.handle(request, pool, host_ref)
        if request.path == "/console":
            return web.Response(status=501, text="console streams are not simulated\n")
        if request.method != "POST":
            return web.Response(text=f"XAPI simulator: {pool.name} host {address}\n")
        body = await request.read()
        if request.path == "/jsonrpc":
            return await self._jsonrpc(pool, host_ref, body)
        return await self._xmlrpc(pool, host_ref, body)

    def _stats(self, request: web.Request, pool: SimPool) -> web.Response:
        if request.method in ("DELETE", "POST"):
            for p in self._pools:
                p.reset_stats()
        doc = {
            "pool": pool.name,
            "calls": pool.stats(),
            "total": sum(pool.stats().values()),
            "pools": {p.name: p.stats() for p in self._pools},
        }
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    async def _xmlrpc(self, pool: SimPool, host_ref: str, body: bytes) -> web.Response:
        try:
            method, params = codec.parse_xmlrpc_call(body)
        except codec.MalformedRequest as exc:
            return _html_500(str(exc))
        if method == "system.listMethods":
            pool.count(method)
            return _xml(self._methods_xml)
        if method == "system.isAlive" or method.startswith("system.isAlive:"):
            pool.count("system.isAlive")
            return _xml(codec.xmlrpc_success(params[0] if params else method.partition(":")[2]))
        try:
            value = await pool.dispatcher.call(host_ref, method, params)
            out = codec.xmlrpc_success(value)
        except XapiFailure as failure:
            out = codec.xmlrpc_failure([failure.code, *failure.params])
        except Exception as exc:
            log.exception("event=call_crashed method=%s", method)
            out = codec.xmlrpc_failure(["INTERNAL_ERROR", f"{type(exc).__name__}: {exc}"])
        return _xml(out)

    async def _jsonrpc(self, pool: SimPool, host_ref: str, body: bytes) -> web.Response:
        try:
            method, params, call_id, v2 = codec.parse_jsonrpc_call(body)
        except codec.MalformedRequest as exc:
            return _html_500(str(exc))
        if method == "system.listMethods":
            pool.count(method)
            out = codec.jsonrpc_success(self.table.list_methods(), call_id, v2)
            return _json(out)
        try:
            value = await pool.dispatcher.call(host_ref, method, params)
            out = codec.jsonrpc_success(value, call_id, v2)
        except XapiFailure as failure:
            out = codec.jsonrpc_failure([failure.code, *failure.params], call_id, v2)
        except Exception as exc:
            log.exception("event=call_crashed method=%s", method)
            out = codec.jsonrpc_failure(
                ["INTERNAL_ERROR", f"{type(exc).__name__}: {exc}"], call_id, v2
            )
        return _json(out)


def _listen(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _xml(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="text/xml", headers=CORS)


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json", headers=CORS)


def _html_500(message: str) -> web.Response:
    return web.Response(status=500, body=codec.html_error(message), content_type="text/html")
