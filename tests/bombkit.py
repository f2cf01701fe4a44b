"""A loopback server whose answers cost far more than they look: compression bombs, endless
bodies, a Content-Length that never arrives. Used by tests/test_bodycap.py and
benchmarks/bombs.py.

`BombServer.kinds` says what `/graphql`, `/v2/{id}/{probe}`, a Slack webhook
(`/services/...`) or `chat.postMessage` (`/api/...`), and Alertmanager (`/api/v2/alerts`)
answer, and can change between requests: "ok" is a small valid answer (for RunPod, an
account of one endpoint), so a test can switch back and see the next cycle work.
Alertmanager's bombs come with status 500: the sink reads only an error's body.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import resource
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

KINDS = ("ok", "gzip", "deflate", "endless", "endless-gzip", "empty-deflate", "huge-length")

ENDPOINT_ID = "bombep0000001"
MYSELF_OK = {"data": {"myself": {
    "id": "u", "clientBalance": 100.0, "currentSpendPerHr": 0.1, "spendLimit": 180,
    "endpoints": [{"id": ENDPOINT_ID, "name": "bomb-target", "gpuIds": "ADA_24",
                   "workersMin": 0, "workersMax": 3}],
    "networkVolumes": [], "pods": []}}}
HEALTH_OK = {"jobs": {"completed": 10, "failed": 0, "inProgress": 0, "inQueue": 0},
             "workers": {"idle": 1, "ready": 1}}

CHUNK = 64 * 1024
# An "endless" body stops here all the same, so that a client without a cap (the code
# before the fix) fails the test instead of taking the shared host's memory.
ENDLESS_STOP = 256 * 1024 * 1024


@functools.cache
def bomb(encoding: str, decoded_bytes: int) -> bytes:
    """`decoded_bytes` of zeros compressed as gzip or deflate (zlib format, RFC 9110): a
    1 GiB gzip bomb is ~1 MB."""
    wbits = 31 if encoding == "gzip" else 15
    c = zlib.compressobj(9, zlib.DEFLATED, wbits)
    zeros = bytes(1 << 20)
    out = [c.compress(zeros[: min(len(zeros), decoded_bytes - i)])
           for i in range(0, decoded_bytes, len(zeros))]
    out.append(c.flush())
    return b"".join(out)


@dataclass
class BombServer:
    """What /graphql and /v2/... answer (`kinds`), how big a bomb inflates (`decoded_bytes`)
    and how many requests each path saw."""

    kinds: dict[str, str] = field(default_factory=lambda: {
        "graphql": "ok", "rest": "ok", "slack": "ok", "alertmanager": "ok"})
    decoded_bytes: int = 256 * 1024 * 1024
    seen: list[str] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)  # body bytes written, by kind
    base: str = ""
    _runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> str:
        app = web.Application()
        app.router.add_post("/graphql", self._graphql)
        app.router.add_get("/v2/{endpoint_id}/{probe}", self._rest)
        app.router.add_post("/services/{tail:.*}", self._slack)
        app.router.add_post("/api/v2/alerts", self._alertmanager)
        app.router.add_post("/api/{method}", self._slack)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                                     shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.base

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _graphql(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.seen.append("graphql")
        return await self._answer(request, self.kinds["graphql"], MYSELF_OK)

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        probe = request.match_info["probe"]
        self.seen.append(probe)
        ok: object = HEALTH_OK if probe == "health" else {"requests": []}
        return await self._answer(request, self.kinds["rest"], ok)

    async def _slack(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.seen.append("slack")
        if self.kinds["slack"] == "ok" and request.path.startswith("/services/"):
            return web.Response(text="ok")
        return await self._answer(request, self.kinds["slack"],
                                  {"ok": True, "channel": "C0BOMB", "ts": "1.000001"})

    async def _alertmanager(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.seen.append("alertmanager")
        if self.kinds["alertmanager"] == "ok":
            return web.Response(status=200)
        return await self._answer(request, self.kinds["alertmanager"], None, status=500)

    def _count(self, kind: str, n: int) -> None:
        self.sent[kind] = self.sent.get(kind, 0) + n

    async def _write(self, resp: web.StreamResponse, kind: str, data: bytes) -> None:
        await resp.write(data)
        self._count(kind, len(data))
        # a write the socket takes at once does not yield: let the client (often on the
        # same event loop) read, and its timeout fire
        await asyncio.sleep(0)

    async def _answer(
        self, request: web.Request, kind: str, ok: object, status: int = 200
    ) -> web.StreamResponse:
        if kind == "ok":
            return web.json_response(ok)
        if kind in ("gzip", "deflate"):
            body = bomb(kind, self.decoded_bytes)
            self._count(kind, len(body))
            return web.Response(status=status, body=body, content_type="application/json",
                                headers={"Content-Encoding": kind})
        if kind == "huge-length":
            # 1 TB promised, 64 KiB sent, then nothing: the connection stays open
            resp = web.StreamResponse(status=status, headers={
                "Content-Length": str(10**12), "Content-Type": "application/json"})
            await resp.prepare(request)
            await resp.write(b'{"data": ' + b" " * (CHUNK - 9))
            self._count(kind, CHUNK)
            await asyncio.sleep(3600)
            return resp
        resp = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
        if kind != "endless":
            resp.headers["Content-Encoding"] = "gzip" if kind == "endless-gzip" else "deflate"
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        with contextlib.suppress(ConnectionError):  # the client hung up: what we want
            await self._stream(resp, kind)
        return resp

    async def _stream(self, resp: web.StreamResponse, kind: str) -> None:
        if kind == "endless":  # JSON that never ends: an object, then whitespace
            chunk = b" " * CHUNK
            await resp.write(b'{"data": ')
            total = 9
            while total < ENDLESS_STOP:
                await self._write(resp, kind, chunk)
                total += len(chunk)
            return
        if kind == "endless-gzip":  # a gzip stream of zeros, made as it is read
            c = zlib.compressobj(9, zlib.DEFLATED, 31)
            zeros = bytes(1 << 20)
            decoded = 0
            while decoded < ENDLESS_STOP:
                await self._write(resp, kind, c.compress(zeros) + c.flush(zlib.Z_SYNC_FLUSH))
                decoded += len(zeros)
            return
        # empty-deflate: a zlib header, then empty stored blocks (BFINAL 0, LEN 0, NLEN
        # 0xffff), forever: a valid deflate stream that decodes to nothing at all, so only
        # a cap on the bytes read ends it
        empty = b"\x00\x00\x00\xff\xff"
        chunk = empty * (CHUNK // len(empty))
        await resp.write(b"\x78\x9c")
        total = 2
        while total < ENDLESS_STOP:
            await self._write(resp, kind, chunk)
            total += len(chunk)


def peak_rss_reset() -> bool:
    """Reset this process's peak RSS (VmHWM, Linux >= 4.0); False where that is refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """This process's peak RSS since the last reset (VmHWM), else ru_maxrss."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_bytes() -> int:
    """This process's current RSS (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")

