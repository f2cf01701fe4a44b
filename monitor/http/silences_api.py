"""`/api/v1/silences`: add a silence (POST) and list the active ones (GET)."""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web

from monitor.alerts.silences import SilenceBook, book_rules, parse_silence


def add_silence_routes(
    app: web.Application,
    book: SilenceBook,
    clock: Callable[[], float],
    *,
    max_silences: int = 1_000,
    writes: bool = True,
) -> None:
    """Register the silence routes on `app`; `clock` gives the time (unix seconds). At most
    `max_silences` added through the API are in force at once; `writes` False: no POST."""

    async def list_silences(_: web.Request) -> web.Response:
        return web.json_response(book_rules(book, clock()))

    async def add_silence(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"error": "body must be JSON"}, status=400)
        now = clock()
        parsed = parse_silence(body, now)
        if isinstance(parsed, str):
            return web.json_response({"error": parsed}, status=400)
        if book.added_in_force(now) >= max_silences:
            return web.json_response(
                {"error": f"{max_silences} silences added through the API are in force "
                          "already (api.max_silences); retry when one has ended"},
                status=429,
            )
        code, endpoint_id, until = parsed
        rule = book.add(code, endpoint_id, until, now)
        return web.json_response(rule.to_json(), status=201)

    app.router.add_get("/api/v1/silences", list_silences)
    if writes:
        app.router.add_post("/api/v1/silences", add_silence)
