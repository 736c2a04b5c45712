"""Object filters of `xo.getAllObjects`, REST `?filter=` and `token.delete {pattern}`.

- An object filter is lodash `matches`: a partial deep comparison. Every key of the pattern must
  match; nested objects match partially; an array in the pattern matches when each of its items
  matches some item of the object's array.
- A token pattern is xo's value-matcher (`value_matches`): the same partial comparison, plus
  `{"__and": [..]}`, `{"__or": [..]}` and `{"__not": pattern}` anywhere in the pattern (xo-web
  signs out everywhere else with `{"id": {"__not": <its own token>}}`), and strict equality
  for the rest.
- A string filter uses a small subset of xo's complex-matcher syntax: whitespace-separated terms,
  all of which must match. `prop:value` compares a property (as a string, `*` wildcards allowed),
  `!term` negates, a bare word matches any string property containing it (case-insensitive);
  "double" or 'single' quotes keep blanks inside a term.

A string filter comes from any signed-in user and runs against every object: it is parsed in
one pass, refused past `max_length` characters or `max_terms` terms, and each term costs at
most linear time per object (no regular expressions, no recursion).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]


class FilterError(ValueError):
    """A string filter that is refused (too long, too many terms); `keyword` and `limit` say
    which limit, the message says it as Ajv would."""

    def __init__(self, keyword: str, limit: int, unit: str) -> None:
        super().__init__(f"must NOT have more than {limit} {unit}")
        self.keyword = keyword
        self.limit = limit


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


def compile_string_filter(text: str, *, max_length: int = 1024, max_terms: int = 32) -> Predicate:
    if len(text) > max_length:
        raise FilterError("maxLength", max_length, "characters")
    terms = split_terms(text)
    if len(terms) > max_terms:
        raise FilterError("maxTerms", max_terms, "terms")
    predicates = [_term(t) for t in terms]
    if any(getattr(p, "needs_text", False) for p in predicates):
        # Bare words search every string property: lower-case them once per object.
        def with_text(obj: dict[str, Any]) -> bool:
            text = "\0".join(v.lower() for v in obj.values() if isinstance(v, str))
            return all(p(obj, text) for p in predicates)

        return with_text
    return lambda obj: all(p(obj, "") for p in predicates)


def split_terms(text: str) -> list[str]:
    """Blank-separated terms, quotes grouping (shlex-like, minus escapes): one pass."""
    terms: list[str] = []
    current: list[str] = []
    quote = ""
    started = False
    for char in text:
        if quote:
            if char == quote:
                quote = ""
            else:
                current.append(char)
        elif char in "\"'":
            quote, started = char, True
        elif char.isspace():
            if started:
                terms.append("".join(current))
                current, started = [], False
        else:
            current.append(char)
            started = True
    if started:
        terms.append("".join(current))  # an unclosed quote runs to the end
    return terms


def _term(term: str) -> Callable[[dict[str, Any], str], bool]:
    bangs = len(term) - len(term.lstrip("!"))
    if bangs == len(term):
        bangs -= 1  # a term of only "!" searches for "!"
    negate = bangs % 2 == 1
    term = term[bangs:]
    test: Callable[[dict[str, Any], str], bool]
    needle = term.lower()
    if ":" in term:
        prop, _, value = term.partition(":")
        glob = _glob(value)

        def test(obj: dict[str, Any], _text: str) -> bool:
            return prop in obj and glob(_as_text(obj[prop]))

    elif "\0" in term:  # cannot be searched in the NUL-joined text: value by value

        def test(obj: dict[str, Any], _text: str) -> bool:
            return any(isinstance(v, str) and needle in v.lower() for v in obj.values())

    else:

        def test(obj: dict[str, Any], text: str) -> bool:
            return needle in text

        test.needs_text = True  # type: ignore[attr-defined]
    if not negate:
        return test

    def negated(obj: dict[str, Any], text: str) -> bool:
        return not test(obj, text)

    negated.needs_text = getattr(test, "needs_text", False)  # type: ignore[attr-defined]
    return negated


def _glob(pattern: str) -> Callable[[str], bool]:
    """`*` matches any run of characters; everything else is literal. Greedy leftmost search of
    the literal pieces in order is exact for `*`-only globs, and each `find` is linear."""
    if "*" not in pattern:
        return lambda s: s == pattern
    first, *middle, last = pattern.split("*")

    def glob(s: str) -> bool:
        if len(s) < len(first) + len(last) or not s.startswith(first) or not s.endswith(last):
            return False
        pos, end = len(first), len(s) - len(last)
        for piece in middle:
            found = s.find(piece, pos, end)
            if found < 0:
                return False
            pos = found + len(piece)
        return True

    return glob


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
