"""A stand-in for Slack on loopback: an aiohttp server that records every request.

It serves an incoming-webhook path (`/services/...`) and the Web API's
`/api/chat.postMessage`, and answers each request as its `mode` says: "ok", "429" (with
`Retry-After: retry_after`), "500", or "hang" (never answers). `script` holds modes used
one per request before falling back to `mode`; `mode_fn`, when set, decides per request
(e.g. from a simulated clock). Run it in the test's event loop (`await start()`), or in a
thread of its own (`start_in_thread()`) for subprocess tests.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

WEBHOOK_PATH = "/services/T000TEST/B000TEST/standinWebhookSecret0123456789"
BOT_TOKEN = "xoxb-0000-standin-bot-token-secret"


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float  # time.monotonic() on arrival
    answered: str


@dataclass
class SlackStandIn:
    mode: str = "ok"
    retry_after: int = 1
    script: list[str] = field(default_factory=list)
    mode_fn: Callable[[], str] | None = None
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    # -- addresses -------------------------------------------------------------------
    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def webhook_url(self) -> str:
        return self.base + WEBHOOK_PATH

    @property
    def api_url(self) -> str:
        return self.base + "/api/"

    # -- what arrived ----------------------------------------------------------------
    def delivered(self) -> list[Request]:
        """The requests answered with success: the messages a person got."""
        return [r for r in self.requests if r.answered == "ok"]

    # -- serving ---------------------------------------------------------------------
    def _next_mode(self) -> str:
        if self.script:
            return self.script.pop(0)
        if self.mode_fn is not None:
            return self.mode_fn()
        return self.mode

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"_raw": raw.decode("utf-8", "replace")}
        api = request.path.startswith("/api/")
        if api and request.headers.get("Authorization") != f"Bearer {BOT_TOKEN}":
            self.requests.append(Request(request.path, dict(request.headers), body,
                                         time.monotonic(), "auth"))
            return web.json_response({"ok": False, "error": "invalid_auth"})
        mode = self._next_mode()
        self.requests.append(
            Request(request.path, dict(request.headers), body, time.monotonic(), mode)
        )
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "429":
            headers = {"Retry-After": str(self.retry_after)}
            if api:
                return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                         headers=headers)
            return web.Response(status=429, text="rate_limited", headers=headers)
        if mode == "500":
            if api:
                return web.json_response({"ok": False, "error": "internal_error"}, status=500)
            return web.Response(status=500, text="internal_error")
        if mode == "invalid_blocks":
            if api:
                return web.json_response({"ok": False, "error": "invalid_blocks"})
            return web.Response(status=400, text="invalid_blocks")
        if api:
            return web.json_response({"ok": True, "channel": body.get("channel"),
                                      "ts": f"{time.time():.6f}"})
        return web.Response(text="ok")

    async def start(self) -> SlackStandIn:
        app = web.Application()
        app.router.add_post("/services/{tail:.*}", self._handle)
        app.router.add_post("/api/chat.postMessage", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- in a thread (for subprocess tests) -----------------------------------------
    def start_in_thread(self) -> SlackStandIn:
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the Slack stand-in did not start")
        return self

    def stop_thread(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
