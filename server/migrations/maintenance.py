"""Host maintenance mode with xo-server's contract (`host.setMaintenanceMode`).

xo-server (api/host.mjs, xapi `clearHost`): `true` disables the host (`host.disable`), then
moves its running VMs to other hosts of the pool with XAPI's `host.evacuate`, all or nothing;
if that fails the host is enabled again and XAPI's error is thrown. `vmsToForceMigrate` (the
VMs xo-web offers to force after an "operation blocked" error) first get their
`pool_migrate` / `migrate_send` blocked operations removed. `false` enables the host.

Here the evacuation is one of our batches (kind `maintenance`, visible as it runs): planned
as a whole, all or nothing (a VM that cannot go fails the call before anything moves, with
the error XAPI would give for it), stopping at the first failed move. The caller gets the
same answer and errors as from xo-server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from server import errors
from server.migrations.batch import Batch
from server.migrations.batches import BatchRefused, BatchService
from server.migrations.connections import PoolConnections
from server.migrations.settings import MigrationSettings
from xen.errors import PoolUnavailable, XapiError
from xen.store import ObjectStore, XoObject

log = logging.getLogger("xo_migrate.migrations")

UNBLOCKED_OPERATIONS = ("pool_migrate", "migrate_send")


class HostMaintenance:
    def __init__(
        self,
        store: ObjectStore,
        connections: PoolConnections,
        batches: BatchService,
        settings: MigrationSettings,
    ) -> None:
        self._store = store
        self._connections = connections
        self._batches = batches
        self._settings = settings
        self._in_calls: set[str] = set()  # hosts whose set_mode(true) call is still running
        batches.finish_listeners.append(self._on_batch_finished)

    async def set_mode(
        self,
        host: XoObject,
        maintenance: bool,
        vms_to_force: list[str],
        *,
        user_id: str | None,
        user_email: str | None,
    ) -> None:
        conn = self._connections.connection(host["$pool"])
        if not maintenance:
            await conn.call("host.enable", host["_xapiRef"])
            await self._seen(lambda: self._host_enabled(host["id"]) is True)
            log.info("host=%s event=maintenance_off", host["id"])
            return
        busy = self._batches.evacuation_of(host["id"])
        if busy is not None:
            raise errors.forbidden_operation(
                "maintenance", f"the host is already being evacuated by batch {busy}"
            )
        vms = [self._vm(vm_id) for vm_id in vms_to_force]
        for vm in vms:
            blocked = vm.get("blockedOperations") or {}
            for operation in UNBLOCKED_OPERATIONS:
                if operation in blocked:
                    await conn.call("VM.remove_from_blocked_operations", vm["_xapiRef"], operation)
        await self._seen(lambda: all(self._unblocked(vm["id"]) for vm in vms))
        await conn.call("host.disable", host["_xapiRef"])
        await self._seen(lambda: self._host_enabled(host["id"]) is False)
        log.info("host=%s event=maintenance_on forced_vms=%d", host["id"], len(vms))
        self._in_calls.add(host["id"])
        try:
            await self._evacuate(host, user_id, user_email)
        except asyncio.CancelledError:
            raise  # the server stops: the batch is resumed at the next start
        except BaseException:
            if await self._enable_again(host["id"]):
                await self._seen(lambda: self._host_enabled(host["id"]) is True)
            raise
        finally:
            self._in_calls.discard(host["id"])

    def _on_batch_finished(self, batch: Batch) -> None:
        """A maintenance batch resumed after a restart ended without success: no call is
        there to enable the host again, so do it here."""
        host_id = batch.host
        if batch.kind != "maintenance" or batch.status == "success" or host_id is None:
            return
        if host_id in self._in_calls:
            return  # set_mode enables it and answers the caller
        self._batches.spawn(self._enable_again(host_id), f"maintenance-enable-{host_id}")

    async def _enable_again(self, host_id: str) -> bool:
        """After a failed evacuation; False if XAPI refused (the evacuation's error, or the
        batch's, is the one worth reporting: this is logged)."""
        host = self._store.get(host_id)
        if host is None:
            log.warning("host=%s event=enable_failed error=host gone", host_id)
            return False
        try:
            await self._connections.connection(host["$pool"]).call("host.enable", host["_xapiRef"])
        except (XapiError, PoolUnavailable) as exc:
            log.warning("host=%s event=enable_failed error=%s", host_id, exc)
            return False
        log.info("host=%s event=maintenance_failed host_enabled_again=true", host_id)
        return True

    async def _evacuate(self, host: XoObject, user_id: str | None, user_email: str | None) -> None:
        asks = self._batches.evacuation_asks(host["id"], None, None)
        try:
            view = await self._batches.create(
                "maintenance",
                asks,
                method="host.setMaintenanceMode",
                user_id=user_id,
                user_email=user_email,
                host=host["id"],
                stop_on_error=True,
                require_all=True,
            )
        except BatchRefused as exc:
            refusal = exc.refusal
            code = refusal.get("code") or "HOST_EVACUATE_FAILED"
            if code == "NO_HOSTS_AVAILABLE":
                raise errors.no_hosts_available() from None
            raise XapiError(code, [str(p) for p in refusal.get("params") or []]) from None
        final = await self._batches.wait(view["id"])
        if final["status"] == "success":
            return
        failed = next((m for m in final["moves"] if m["status"] != "success"), None)
        error = (failed or {}).get("error") or {}
        raise XapiError(
            str(error.get("code") or "HOST_EVACUATE_FAILED"),
            [str(p) for p in error.get("params") or []],
        )

    def _vm(self, vm_id: str) -> XoObject:
        vm = self._store.get(vm_id)
        if vm is None or vm.get("type") != "VM":
            raise errors.no_such_object(vm_id, "VM")
        return vm

    def _host_enabled(self, host_id: str) -> bool | None:
        host = self._store.get(host_id)
        return None if host is None else bool(host.get("enabled"))

    def _unblocked(self, vm_id: str) -> bool:
        blocked = (self._store.get(vm_id) or {}).get("blockedOperations") or {}
        return not any(op in blocked for op in UNBLOCKED_OPERATIONS)

    async def _seen(self, condition: Callable[[], bool]) -> None:
        """Wait (bounded) until the live collection shows what XAPI just did, so that what
        follows (planning, a client reading objects) sees it."""
        deadline = time.monotonic() + self._settings.arrival_wait_s
        while time.monotonic() < deadline:
            if condition():
                return
            await asyncio.sleep(0.02)
