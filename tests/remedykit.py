"""Reads the commands a remedy asks a person to paste, as a shell would."""

from __future__ import annotations

import json
import re
import shlex

_CURL = re.compile(r"(?:^|(?<=\s))curl\s+-.*$", re.M)


def curls(remedy: str) -> list[list[str]]:
    """Every curl command in `remedy` (each runs to the end of its line), split as a
    POSIX shell splits it."""
    return [shlex.split(m.group(0)) for m in _CURL.finditer(remedy)]


def queries(remedy: str) -> list[str]:
    """The GraphQL documents the remedy's curl commands post (their `-d` JSON's query)."""
    out = []
    for argv in curls(remedy):
        if "-d" in argv:
            out.append(json.loads(argv[argv.index("-d") + 1])["query"])
    return out


def posted(remedy: str) -> str:
    """The GraphQL the remedy posts, one document a line: what assertions read."""
    return "\n".join(queries(remedy))
