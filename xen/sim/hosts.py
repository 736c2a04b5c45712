"""Host messages beyond the generic accessors: enabling and disabling a host (maintenance).

`host.disable` puts the host in a state where no new VM starts or arrives on it (a migration
to it answers HOST_DISABLED); its running VMs keep running. `host.enable` undoes it."""

from __future__ import annotations

from xen.sim.registry import CallContext, message


@message("host.disable")
def disable(ctx: CallContext, host: str) -> None:
    ctx.db.get("host", host)
    ctx.db.update("host", host, enabled=False)


@message("host.enable")
def enable(ctx: CallContext, host: str) -> None:
    ctx.db.get("host", host)
    ctx.db.update("host", host, enabled=True)
