"""Reading `/rrd_updates?json=true` as XAPI versions write it, and xo-server's stats shape
(xen/stats.py); the end-to-end path is in tests/server/test_xapi_methods.py."""

from __future__ import annotations

import pytest

from xen.stats import FaultyGranularity, extract, parse_rrd_updates

VM = "0b92e649-35ce-4058-83e7-c79be8ca78aa"
OTHER = "5f0c1c2e-0000-4000-8000-000000000001"


def test_older_xapis_json5_and_newer_xapis_strings_read_the_same() -> None:
    json5 = (
        b"{meta: {start: 100, step: 5, end: 110, rows: 2, columns: 3, legend: ["
        b'"AVERAGE:vm:' + VM.encode() + b':cpu0", "AVERAGE:vm:' + VM.encode() + b':memory",'
        b' "AVERAGE:vm:' + OTHER.encode() + b':cpu0"]},'
        b" data: [{t: 110, values: [0.5, NaN, 0.1]}, {t: 105, values: [0.25, 2048, 0.2]}]}"
    )
    strings = (
        b'{"meta": {"start": "100", "step": "5", "end": "110", "rows": "2", "columns": "3",'
        b' "legend": ["AVERAGE:vm:'
        + VM.encode()
        + b':cpu0", "AVERAGE:vm:'
        + VM.encode()
        + b':memory", "AVERAGE:vm:'
        + OTHER.encode()
        + b':cpu0"]},'
        b' "data": [{"t": "110", "values": ["0.5", "NaN", "0.1"]},'
        b' {"t": "105", "values": ["0.25", "2048", "0.2"]}]}'
    )
    for body in (json5, strings):
        answer = extract(parse_rrd_updates(body), VM, 5, now=112)
        # Oldest first; CPUs in percent; NaN is null (no transform for memory).
        assert answer == {
            "endTimestamp": 110,
            "interval": 5,
            "stats": {"cpus": {"0": [25.0, 50.0]}, "memory": [2048, None]},
        }


def test_an_object_without_data_and_a_wrong_step() -> None:
    rrd = parse_rrd_updates(
        b'{"meta": {"step": 60, "end": 120, "legend": ["AVERAGE:vm:'
        + OTHER.encode()
        + b':cpu0"]}, "data": [{"t": 120, "values": [0.1]}]}'
    )
    assert extract(rrd, VM, 60, now=130) == {"endTimestamp": 130, "interval": 60, "stats": {}}
    with pytest.raises(FaultyGranularity, match="Unable to get the true granularity: 60"):
        extract(rrd, VM, 5, now=130)
