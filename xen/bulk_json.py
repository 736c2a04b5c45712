"""Parsing a huge JSON-RPC answer without holding the GIL for the whole of it.

A 10,000-VM `event.from` snapshot is ~74 MB of JSON; one `orjson.loads` call on it holds the
GIL for ~0.5-1 s, and the event loop (another thread) cannot run meanwhile: every client
waits. Almost all of such an answer is one array of objects (`result.events`), so it is
parsed in pieces of about `PIECE_BYTES`, cut between two elements (at `},{`); between two
pieces the thread lets the GIL go, and the loop waits at most one piece's parse.

Never trusted blindly: the cuts are only guesses (a `},{` may sit inside a string or a
nested array), so each piece must parse on its own as `[piece]`, and the answer with the
array emptied must parse with exactly that array empty. A piece cut in the wrong place never
parses (its string or bracket is left open), and then the whole answer is parsed in one go,
as before. The result is the same either way.
"""

from __future__ import annotations

from typing import Any

import orjson

PIECE_BYTES = 512 * 1024  # ~5 ms of parsing: the longest the loop waits
SPLIT_ABOVE = 4 * PIECE_BYTES  # smaller answers: one call is short enough
_ARRAY_START = b'"events":['
_BETWEEN = b"},{"


def loads(data: bytes) -> Any:
    """`orjson.loads(data)`; a big event.from answer in pieces (same result)."""
    if len(data) > SPLIT_ABOVE:
        split = _loads_events_in_pieces(data)
        if split is not None:
            return split
    return orjson.loads(data)


def _loads_events_in_pieces(data: bytes) -> Any | None:
    """The answer, its `result.events` parsed piece by piece; None if it does not split."""
    start = data.find(_ARRAY_START)
    end = data.rfind(b"}]")
    if start < 0 or end < 0:
        return None
    first = start + len(_ARRAY_START)  # the first element's `{`
    last = end + 1  # the array's `]`
    if last - first < SPLIT_ABOVE:
        return None
    try:
        skeleton = orjson.loads(data[:first] + data[last:])
    except orjson.JSONDecodeError:
        return None
    result = skeleton.get("result") if isinstance(skeleton, dict) else None
    if not isinstance(result, dict) or result.get("events") != []:
        return None
    events: list[Any] = []
    position = first
    while position < last:
        cut = data.find(_BETWEEN, position + PIECE_BYTES, last)
        stop = last if cut < 0 else cut + 1  # the piece ends with its `}`
        try:
            piece = orjson.loads(b"[" + data[position:stop] + b"]")
        except orjson.JSONDecodeError:
            return None  # cut inside a string or a nested array
        events.extend(piece)
        position = stop + 1  # past the `,`
    result["events"] = events
    return skeleton
