"""Object filters of `xo.getAllObjects` and `token.delete {pattern}`.

- An object filter is lodash `matches`: a partial deep comparison. Every key of the pattern must
  match; nested objects match partially; an array in the pattern matches when each of its items
  matches some item of the object's array.
- A token pattern is xo's value-matcher (`value_matches`): the same partial comparison, plus
  `{"__and": [..]}`, `{"__or": [..]}` and `{"__not": pattern}` anywhere in the pattern (xo-web
  signs out everywhere else with `{"id": {"__not": <its own token>}}`), and strict equality
  for the rest.
- A string filter uses a small subset of xo's complex-matcher syntax: whitespace-separated terms,
  all of which must match. `prop:value` compares a property (as a string, `*` wildcards allowed),
  `!term` negates, a bare word matches any string property containing it (case-insensitive).
"""

from __future__ import annotations

import fnmatch
import shlex
from collections.abc import Callable
from typing import Any


def matches(obj: Any, pattern: Any) -> bool:
    if isinstance(pattern, dict):
        if not isinstance(obj, dict):
            return False
        for key, sub in pattern.items():
            if key not in obj or not matches(obj[key], sub):
                return False
        return True
    if isinstance(pattern, list):
        if not isinstance(obj, list):
            return False
        return all(any(matches(item, sub) for item in obj) for sub in pattern)
    if isinstance(pattern, bool) or isinstance(obj, bool):
        return obj is pattern
    return bool(obj == pattern)


def value_matches(pattern: Any, value: Any) -> bool:
    if isinstance(pattern, list):
        return isinstance(value, list) and all(
            any(value_matches(sub, item) for item in value) for sub in pattern
        )
    if isinstance(pattern, dict):
        if len(pattern) == 1:
            ((key, sub),) = pattern.items()
            if key == "__and" and isinstance(sub, list):
                return all(value_matches(p, value) for p in sub)
            if key == "__or" and isinstance(sub, list):
                return any(value_matches(p, value) for p in sub)
            if key == "__not":
                return not value_matches(sub, value)
        if not isinstance(value, dict):
            return False
        return all(
            key in value and value[key] is not None and value_matches(sub, value[key])
            for key, sub in pattern.items()
        )
    if isinstance(pattern, bool) or isinstance(value, bool):
        return value is pattern
    return bool(value == pattern)


def compile_string_filter(text: str) -> Callable[[dict[str, Any]], bool]:
    try:
        terms = shlex.split(text)
    except ValueError:
        terms = text.split()
    predicates = [_term(t) for t in terms]
    return lambda obj: all(p(obj) for p in predicates)


def _term(term: str) -> Callable[[dict[str, Any]], bool]:
    if term.startswith("!") and len(term) > 1:
        inner = _term(term[1:])
        return lambda obj: not inner(obj)
    if ":" in term:
        prop, _, value = term.partition(":")
        return lambda obj: prop in obj and fnmatch.fnmatchcase(_text(obj[prop]), value)
    needle = term.lower()
    return lambda obj: any(isinstance(v, str) and needle in v.lower() for v in obj.values())


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
