"""A huge event.from answer is parsed in pieces (the event loop runs between two), with the
same result as one orjson.loads; answers that do not split safely are parsed in one go."""

from __future__ import annotations

from typing import Any

import orjson

from xen import bulk_json


def answer(events: list[dict[str, Any]], **result: Any) -> bytes:
    body = {"jsonrpc": "2.0", "result": {"events": events, "token": "42", **result}, "id": 7}
    return orjson.dumps(body)


def vm_event(n: int, **snapshot: Any) -> dict[str, Any]:
    return {
        "id": n,
        "class": "vm",
        "operation": "add",
        "ref": f"OpaqueRef:{n:08d}",
        "snapshot": {
            "uuid": f"uuid-{n}",
            "name_label": f"vm-{n}",
            "other_config": {"k": "v" * 200},
            "VBDs": [f"OpaqueRef:vbd-{n}-{i}" for i in range(4)],
            **snapshot,
        },
    }


def big(count: int = 12_000, **snapshot: Any) -> bytes:
    data = answer([vm_event(n, **snapshot) for n in range(count)], valid_ref_counts={"vm": 1})
    assert len(data) > bulk_json.SPLIT_ABOVE
    return data


def test_a_big_answer_is_parsed_in_pieces_with_the_same_result() -> None:
    data = big()
    pieces = bulk_json._loads_events_in_pieces(data)
    assert pieces is not None  # the piecewise path was taken
    assert pieces == orjson.loads(data)
    assert bulk_json.loads(data) == orjson.loads(data)


def test_answers_that_do_not_split_safely_are_parsed_in_one_go() -> None:
    # A "},{" inside strings (a VM description) and a nested array of objects: no cut there
    # can be trusted, and none changes the result.
    tricky = big(name_description='a},{"b":[{"c":1},{"d":2}]},{', nested=[{"a": 1}, {"b": 2}])
    assert bulk_json.loads(tricky) == orjson.loads(tricky)
    # An answer whose bulk is not `result.events` (a huge error, another method).
    other = orjson.dumps({"jsonrpc": "2.0", "result": [vm_event(n) for n in range(12_000)]})
    assert bulk_json._loads_events_in_pieces(other) is None
    assert bulk_json.loads(other) == orjson.loads(other)
    # The events key elsewhere than where the skeleton says: not split.
    decoy = orjson.dumps(
        {
            "result": {"events": [], "token": "1"},
            "extra": {"events": [vm_event(n) for n in range(12_000)]},
        }
    )
    assert bulk_json._loads_events_in_pieces(decoy) is None
    assert bulk_json.loads(decoy) == orjson.loads(decoy)


def test_small_answers_and_errors_are_unchanged() -> None:
    small = answer([vm_event(1)])
    assert bulk_json.loads(small) == orjson.loads(small)
    error = orjson.dumps({"jsonrpc": "2.0", "error": {"message": "SESSION_INVALID"}, "id": 1})
    assert bulk_json.loads(error) == orjson.loads(error)
