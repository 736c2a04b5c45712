"""RRDs on the wire, in xcp-rrdd's formats (xen-api `ocaml/libs/xapi-rrd/lib`).

- `xport()`: `/rrd_updates`, `Rrd_updates.export`: the archive chosen as `create_multi` does
  (the finest one whose rows still reach back to `start` with at least `interval` seconds
  per row), rows newest first, from the last complete row down to `start`; each legend entry
  is `<CF>:<host|vm>:<uuid>:<data source>`. XML (`<xport><meta>...<data><row><t>..<v>..`) or,
  with `json`, the same structure as JSON (`{meta: {start, step, end, rows, columns, legend},
  data: [{t, values}]}`).
- `dump()`: `/host_rrd`, `/vm_rrd`: a whole RRD (`Rrd.xml_to_output`): data sources, then
  the AVERAGE, MIN and MAX archives at 5 s x 120, 1 min x 120, 1 h x 168 and 1 day x 366,
  rows oldest first.

Numbers are printed as XAPI prints floats (`Utils.f_to_s`: "%0.5g", "0.0" for zero). One
deliberate difference: in JSON the numbers are JSON numbers, not strings as XAPI >= 23.31
writes them, because xo-server's xapi-stats compares `json.meta.step` to the number it asked
for and would reject a string.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from xml.sax.saxutils import escape

from xen.sim.rrd.model import PDP_S, Owner, Source

# (PDPs per row, rows): xcp-rrdd's timescales for hosts and VMs.
TIMESCALES = ((1, 120), (12, 120), (720, 168), (17280, 366))
CFS = ("AVERAGE", "MIN", "MAX")
XML_HEADER = '<?xml version="1.0" encoding="UTF-8"?>'


class NoArchive(ValueError):
    """No archive can answer (xcp-rrdd's No_RRA_Available)."""


def f_to_s(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0.0"
    return f"{value:0.5g}"


def consolidate(source: Source, cf: str, end: float, step: int) -> float:
    """One archived value: the average over the row, or its lowest / highest 5 s sample
    (for a 5 s row the three are the same)."""
    if cf == "AVERAGE" or step <= PDP_S:
        return source.sample(end, step)
    # The row's average and two of its 5 s samples: a plausible spread, cheap for a year.
    probes = [source.sample(end, step), source.sample(end, PDP_S)]
    probes.append(source.sample(end - step // 2, PDP_S))
    value = min(probes) if cf == "MIN" else max(probes)
    return min(source.maximum, max(source.minimum, value))


@dataclass(frozen=True, slots=True)
class Selection:
    step: int  # seconds per row
    rows: int  # rows the archive keeps
    start: int  # meta start: the first row after `start`
    end: int  # meta end: the last complete row
    times: list[int]  # the rows returned, newest first


def select(now: float, start: int, interval: int) -> Selection:
    """`Rrd_updates.create_multi` + `Rrd.find_best_rras` for RRDs updated at `now`."""
    if start < 0:
        start = int(now) + start  # negative: relative to the last update
    pdp_interval = interval // PDP_S
    last_pdp = int(now) // PDP_S * PDP_S

    def reaches(pdps: int, rows: int, t: int) -> bool:
        return pdps >= pdp_interval and t > last_pdp - PDP_S * rows * pdps

    chosen = next(((p, r) for p, r in TIMESCALES if reaches(p, r, start)), None)
    if chosen is None:
        pdps, rows = TIMESCALES[-1]
        oldest = 1 + last_pdp - PDP_S * rows * pdps
        if not reaches(pdps, rows, oldest):
            raise NoArchive(f"no archive has {interval} s rows")
        chosen = (pdps, rows)
    pdps, rows = chosen
    step = PDP_S * pdps
    end = int(now) // step * step
    first = start // step * step + step
    times = []
    for i in range(rows):
        t = end - i * step
        if t < start:
            break
        times.append(t)
    return Selection(step, rows, first, end, times)


def xport(owners: list[Owner], selection: Selection, cfs: tuple[str, ...], *, as_json: bool) -> str:
    """Every owner's data sources under each consolidation function asked (all without `cf`)."""
    columns = [(cf, o.prefix, s) for o in owners for cf in cfs for s in o.sources]
    legend = [f"{cf}:{prefix}{s.name}" for cf, prefix, s in columns]
    rows = [
        (t, [f_to_s(consolidate(s, cf, t, selection.step)) for cf, _, s in columns])
        for t in selection.times
    ]
    meta = (selection.start, selection.step, selection.end, len(rows), len(legend))
    if as_json:
        return _xport_json(meta, legend, rows)
    return _xport_xml(meta, legend, rows)


def _xport_xml(meta: tuple[int, ...], legend: list[str], rows: list[tuple[int, list[str]]]) -> str:
    start, step, end, n_rows, n_columns = meta
    out = [XML_HEADER, "<xport><meta>"]
    out.append(f"<start>{start}</start><step>{step}</step><end>{end}</end>")
    out.append(f"<rows>{n_rows}</rows><columns>{n_columns}</columns><legend>")
    out.extend(f"<entry>{escape(entry)}</entry>" for entry in legend)
    out.append("</legend></meta><data>")
    for t, values in rows:
        out.append(f"<row><t>{t}</t>" + "".join(f"<v>{v}</v>" for v in values) + "</row>")
    out.append("</data></xport>")
    return "".join(out)


def _json_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _xport_json(meta: tuple[int, ...], legend: list[str], rows: list[tuple[int, list[str]]]) -> str:
    start, step, end, n_rows, n_columns = meta
    legend_json = ",".join(_json_string(e) for e in legend)
    data = ",".join(f'{{"t":{t},"values":[{",".join(values)}]}}' for t, values in rows)
    return (
        f'{{"meta":{{"start":{start},"step":{step},"end":{end},"rows":{n_rows},'
        f'"columns":{n_columns},"legend":[{legend_json}]}},"data":[{data}]}}'
    )


def dump(owner: Owner, now: float, *, as_json: bool) -> str:
    """A whole RRD, as `/host_rrd` and `/vm_rrd` send it."""
    last = int(now)
    archives = []
    for cf in CFS:
        for pdps, rows in TIMESCALES:
            step = PDP_S * pdps
            end = last // step * step
            times = [end - (rows - 1 - i) * step for i in range(rows)]  # oldest first
            data = [[f_to_s(consolidate(s, cf, t, step)) for s in owner.sources] for t in times]
            archives.append((cf, pdps, data))
    latest = [f_to_s(s.sample(last // PDP_S * PDP_S, PDP_S)) for s in owner.sources]
    if as_json:
        return _dump_json(owner, last, latest, archives)
    return _dump_xml(owner, last, latest, archives)


Archive = tuple[str, int, list[list[str]]]


def _ds_fields(source: Source, latest: str) -> list[tuple[str, str]]:
    return [
        ("name", source.name),
        ("type", source.kind),
        ("minimal_heartbeat", "300.0"),
        ("min", f_to_s(source.minimum)),
        ("max", f_to_s(source.maximum)),
        ("last_ds", latest),
        ("value", "0.0"),
        ("unknown_sec", "0"),
    ]


def _dump_xml(owner: Owner, last: int, latest: list[str], archives: list[Archive]) -> str:
    out = [XML_HEADER, f"<rrd><version>0003</version><step>{PDP_S}</step>"]
    out.append(f"<lastupdate>{last}</lastupdate>")
    for source, value in zip(owner.sources, latest, strict=True):
        fields = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in _ds_fields(source, value))
        out.append(f"<ds>{fields}</ds>")
    cdp = (
        "<ds><primary_value>0.0</primary_value><secondary_value>0.0</secondary_value>"
        "<value>0.0</value><unknown_datapoints>0</unknown_datapoints></ds>"
    )
    for cf, pdps, data in archives:
        out.append(f"<rra><cf>{cf}</cf><pdp_per_row>{pdps}</pdp_per_row>")
        out.append("<params><xff>0.5</xff></params><cdp_prep>")
        out.append(cdp * len(owner.sources))
        out.append("</cdp_prep><database>")
        out.extend("<row>" + "".join(f"<v>{v}</v>" for v in row) + "</row>" for row in data)
        out.append("</database></rra>")
    out.append("</rrd>")
    return "".join(out)


def _dump_json(owner: Owner, last: int, latest: list[str], archives: list[Archive]) -> str:
    """`Rrd.json_to_string`: XAPI writes every number of a whole RRD as a string."""
    doc = {
        "version": "0003",
        "step": str(PDP_S),
        "lastupdate": f_to_s(float(last)),
        "ds": [dict(_ds_fields(s, v)) for s, v in zip(owner.sources, latest, strict=True)],
        "rra": [
            {
                "cf": cf,
                "pdp_per_row": str(pdps),
                "params": {"xff": "0.5"},
                "cdp_prep": {
                    "ds": [
                        {
                            "primary_value": "0.0",
                            "secondary_value": "0.0",
                            "value": "0.0",
                            "unknown_datapoints": "0",
                        }
                    ]
                    * len(owner.sources)
                },
                "database": data,
            }
            for cf, pdps, data in archives
        ],
    }
    return json.dumps(doc, separators=(",", ":"))
