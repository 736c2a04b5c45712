"""VM migration in the simulator: host.migrate_receive, VM.assert_can_migrate, VM.pool_migrate
and VM.migrate_send, within one pool and across pools (xapi.md sections 3, 5 and 6.3).

- `checks`: XAPI's checks, in XAPI's order, and the plan of what moves where;
- `run`: one running migration, its timed phases, its commit and its rollback;
- `handlers`: the wire messages (importing this package registers them).

The destination pool of a cross-pool migration is found the way a real host finds it: through
the address in the `dest` map that the destination's `host.migrate_receive` returned.
"""

from xen.sim.migration import handlers

__all__ = ["handlers"]
