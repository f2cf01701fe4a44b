"""The error report: every problem named by its dotted field path, in file order, with
no secret value quoted."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import (
    ValidationError,
)


class ConfigError(Exception):
    """A configuration that cannot be used; `str(e)` is the full report."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(self.report())

    def report(self) -> str:
        if self.source is None:
            return "\n".join(self.problems)
        n = len(self.problems)
        head = f"{self.source}: {n} problem{'' if n == 1 else 's'}"
        return "\n".join([head, *(f"  {p}" for p in self.problems)])

    def __str__(self) -> str:
        return self.report()

    def __reduce__(self) -> tuple[Any, ...]:
        return (ConfigError, (self.problems, self.source))



class _FieldProblem(ValueError):
    """A model-level check that blames one field (or list index) of that model."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason



def _got(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return repr(str(value))


def _reason(err: Any, secret: bool) -> str:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    got = "" if secret else f" (got {_got(value)})"
    if kind == "value_error" or kind == "assertion_error":
        exc = ctx.get("error")
        return exc.reason if isinstance(exc, _FieldProblem) else str(exc)
    simple: dict[str, str] = {
        "extra_forbidden": "unknown key",
        "missing": "required",
        "string_type": "must be a string",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "list_type": "must be a list",
        "tuple_type": "must be a list",
        "model_type": "must be a mapping",
        "model_attributes_type": "must be a mapping",
        "dict_type": "must be a mapping",
        "path_type": "must be a path",
        "datetime_type": "must be an ISO-8601 date-time with a time zone",
        "datetime_parsing": "must be an ISO-8601 date-time with a time zone",
        "datetime_from_date_parsing": "must be an ISO-8601 date-time with a time zone",
        "timezone_aware": "must include a time zone, e.g. 2025-01-31T18:00:00Z",
        "string_too_short": "must not be empty",
    }
    if kind in ("missing", "extra_forbidden"):
        return simple[kind]
    if kind in simple:
        return simple[kind] + got
    if kind.startswith("int_"):
        return "must be an integer" + got
    if kind.startswith("float_"):
        return "must be a number" + got
    bounds = {
        "greater_than": ("must be greater than", "gt"),
        "greater_than_equal": ("must be at least", "ge"),
        "less_than": ("must be less than", "lt"),
        "less_than_equal": ("must be at most", "le"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        limit = ctx.get(key)
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)
        return f"{words} {limit}{got}"
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"must be one of: {', '.join(options)}{got}"
    if secret:
        return "invalid value"
    msg = str(err.get("msg", "invalid"))
    return (msg[:1].lower() + msg[1:]) + got


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _pydantic_problems(
    exc: ValidationError, secret_names: frozenset[str]
) -> list[tuple[tuple[Any, ...], str]]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        found = (err.get("ctx") or {}).get("error")
        if isinstance(found, _FieldProblem):
            loc = (*loc, found.field)
        secret = any(isinstance(p, str) and p in secret_names for p in loc)
        problems.append((loc, _reason(err, secret)))
    return problems


def _order(data: Any) -> dict[tuple[Any, ...], tuple[int, int]]:
    """Each path's pre-order index in the data (its place in the file) and its subtree's end."""
    order: dict[tuple[Any, ...], tuple[int, int]] = {}

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        start = len(order)
        order[path] = (start, start)
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, (*path, key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, (*path, i))
        order[path] = (start, len(order) - 1)

    walk(data, ())
    return order


def _sorted_report(problems: list[tuple[tuple[Any, ...], str]], data: Any) -> list[str]:
    """The problems as report lines, in file order; a key not in the file goes after its
    parent's other keys."""
    order = _order(data)

    def position(item: tuple[int, tuple[tuple[Any, ...], str]]) -> tuple[int, int, int]:
        n, (loc, _) = item
        if loc in order:
            return order[loc][0], 0, n
        for k in range(len(loc) - 1, -1, -1):
            if loc[:k] in order:
                return order[loc[:k]][1], 1, n
        return len(order), 1, n

    ranked = sorted(enumerate(problems), key=position)
    return [f"{_dotted(loc)}: {reason}" for _, (loc, reason) in ranked]




def _scrub(lines: list[str], secrets: list[str]) -> list[str]:
    """`lines` with each secret replaced: a `${RUNPOD_API_KEY}` put in a field that is not a
    secret would otherwise be echoed back in that field's error."""
    out = []
    for line in lines:
        for secret in secrets:
            line = line.replace(secret, "****")
        out.append(line)
    return out

