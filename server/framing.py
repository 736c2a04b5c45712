"""Incoming JSON-RPC message classification (json-rpc-protocol's parse rules, xo-server 1.2).

- request: `method` is a string and `id` is present: a finite number (not a boolean) or a
  string; `params` absent, an object or an array; `jsonrpc` absent (1.0) or "2.0".
- notification: the same without `id`; xo-server ignores those (no reply).
- anything else is invalid: xo-server sends nothing back on the WebSocket.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple


class Request(NamedTuple):
    id: Any
    method: str
    params: Any  # None when absent (treated as {}), a dict or a list


NOTIFICATION = "notification"
INVALID = "invalid"


def classify(msg: Any) -> Request | str:
    if type(msg) is not dict:
        return INVALID
    method = msg.get("method")
    if type(method) is not str:
        return INVALID
    version = msg.get("jsonrpc", "2.0")
    if version != "2.0" or type(version) is not str:
        return INVALID
    params = msg.get("params")
    if params is not None and type(params) is not dict and type(params) is not list:
        return INVALID
    if "params" in msg and params is None:
        return INVALID  # an explicit null is neither an object nor an array
    if "id" not in msg:
        return NOTIFICATION
    req_id = msg["id"]
    kind = type(req_id)
    if kind is str or kind is int or (kind is float and math.isfinite(req_id)):
        return Request(req_id, method, params)
    return INVALID
