"""The object collection's change batching, as push clients will see it."""

from __future__ import annotations

import asyncio

from xen.store import ChangeSet, ObjectStore


def vm(obj_id: str, **extra: object) -> dict[str, object]:
    return {"id": obj_id, "type": "VM", "$pool": "p1", "_xapiRef": f"OpaqueRef:{obj_id}", **extra}


async def test_changes_are_batched_per_tick_and_coalesced_by_id() -> None:
    store = ObjectStore()
    seen: list[ChangeSet] = []
    store.subscribe(seen.append)
    store.set(vm("a", power_state="Halted"))
    store.set(vm("a", power_state="Running"))
    store.set(vm("b"))
    await asyncio.sleep(0)
    assert len(seen) == 1
    assert seen[0].enter["a"]["power_state"] == "Running"
    assert set(seen[0].enter) == {"a", "b"} and not seen[0].exit


async def test_added_then_removed_in_one_flush_is_never_announced() -> None:
    store = ObjectStore()
    seen: list[ChangeSet] = []
    store.subscribe(seen.append)
    store.set(vm("old"))
    await asyncio.sleep(0)
    store.set(vm("tmp"))
    store.remove("tmp")
    store.set(vm("old", name_label="x"))
    store.remove("old")
    await asyncio.sleep(0)
    assert seen[1].enter == {} and seen[1].exit == {"old"}


async def test_lookups_by_type_and_ref_follow_updates() -> None:
    store = ObjectStore()
    store.set(vm("a"))
    store.set({"id": "h", "type": "host", "$pool": "p1", "_xapiRef": "OpaqueRef:h"})
    assert [o["id"] for o in store.by_type("VM")] == ["a"]
    assert store.by_ref("p1", "OpaqueRef:h")["id"] == "h"
    assert store.by_ref("p2", "OpaqueRef:h") is None
    store.set({**vm("a"), "type": "VM-template"})
    assert store.by_type("VM") == [] and store.by_type("VM-template")[0]["id"] == "a"
    store.remove("h")
    assert store.by_ref("p1", "OpaqueRef:h") is None and store.get("h") is None


async def test_a_failing_subscriber_does_not_starve_the_others() -> None:
    store = ObjectStore()
    seen: list[ChangeSet] = []

    def broken(_: ChangeSet) -> None:
        raise RuntimeError("boom")

    store.subscribe(broken)
    unsubscribe = store.subscribe(seen.append)
    store.set(vm("a"))
    await asyncio.sleep(0)
    assert len(seen) == 1
    unsubscribe()
    store.set(vm("b"))
    await asyncio.sleep(0)
    assert len(seen) == 1


async def test_a_minimum_flush_interval_batches_a_burst_into_few_flushes() -> None:
    store = ObjectStore(min_flush_interval=0.05)
    seen: list[ChangeSet] = []
    store.subscribe(seen.append)
    store.set(vm("a", n=0))
    await asyncio.sleep(0)
    assert len(seen) == 1  # the first change of a quiet store goes out at once
    for n in range(1, 50):
        store.set(vm("a", n=n))
        store.set(vm(f"b{n}"))
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.1)
    assert 2 <= len(seen) <= 4  # ~0.1 s of changes: about two batches, not 49 flushes
    assert seen[-1].enter["a"]["n"] == 49
    assert {k for c in seen[1:] for k in c.enter} == {"a", *(f"b{n}" for n in range(1, 50))}


async def test_an_id_of_two_pools_stays_with_the_first_until_it_withdraws() -> None:
    """A VM crossing pools keeps its uuid: the target pool's (halted) copy waits, unseen,
    until the source pool deletes its running VM, then takes the id over in one `enter`."""
    store = ObjectStore()
    seen: list[ChangeSet] = []
    store.subscribe(seen.append)
    store.set(vm("a", power_state="Running"))
    await asyncio.sleep(0)
    store.set({**vm("a", power_state="Halted"), "$pool": "p2"})
    store.set({**vm("a", power_state="Halted", name_label="received"), "$pool": "p2"})
    store.set(vm("a", power_state="Running", name_label="moving"))
    await asyncio.sleep(0)
    assert seen[1].enter["a"]["$pool"] == "p1" and seen[1].enter["a"]["name_label"] == "moving"
    assert store.get("a")["$pool"] == "p1"
    assert store.claim_of("a", "p2")["name_label"] == "received"
    assert store.by_ref("p2", "OpaqueRef:a") is None  # a waiting claim is not indexed

    store.withdraw("a", "p1")  # the source deleted its VM: the target's takes over
    await asyncio.sleep(0)
    assert seen[2].exit == set() and seen[2].enter["a"]["$pool"] == "p2"
    assert store.by_ref("p2", "OpaqueRef:a")["id"] == "a" and store.claim_of("a", "p1") is None

    # A pool withdrawing a claim that was never published changes nothing visible.
    store.set({**vm("b"), "$pool": "p2"})
    store.set(vm("b"))
    store.withdraw("b", "p1")
    store.withdraw("b", "p1")
    await asyncio.sleep(0)
    assert store.get("b")["$pool"] == "p2" and store.claim_of("b", "p1") is None
    store.withdraw("b", "p2")
    await asyncio.sleep(0)
    assert store.get("b") is None and seen[-1].exit == {"b"}
