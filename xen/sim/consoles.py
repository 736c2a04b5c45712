"""Console records of running VMs (xapi `Xapi_console`): an RFB console per running VM, plus
a vt100 one for each control domain, whose `location` is a URL on the host the VM runs on:
`https://<host address>/console?uuid=<console uuid>`.

Records only: the console stream itself (an HTTP CONNECT to that URL upgraded to RFB) is not
simulated; the simulator answers that path with 501.
"""

from __future__ import annotations

from xen.sim.db import Database


def location(address: str, uuid: str) -> str:
    return f"https://{address}/console?uuid={uuid}"


def open_consoles(db: Database, vm: str, address: str, *, control_domain: bool = False) -> None:
    """The consoles a VM gets when it starts on the host at `address`."""
    for protocol in ("vt100", "rfb") if control_domain else ("rfb",):
        uuid = db.ids.uuid()
        db.create("console", uuid=uuid, protocol=protocol, VM=vm, location=location(address, uuid))


def move_consoles(db: Database, vm: str, address: str) -> None:
    """After a move within the pool, the consoles are served by the new host."""
    for console in db.get("VM", vm)["consoles"]:
        if db.exists("console", console):
            uuid = db.get("console", console)["uuid"]
            db.update("console", console, location=location(address, uuid))
