"""CPU per request of the RunPod client's HTTP stack and its alternatives.

    python benchmarks/http_stack.py [--requests 2000] [--concurrency 16] [PATH ...]

GET /v2/{id}/health over loopback from a server in another process (its CPU not counted),
best of 3 rounds of `--requests` at `--concurrency`, twice through every PATH: `client`
(`RunPodClient.health`: aiohttp, body caps, parse), `aiohttp` (a bare ClientSession),
`aiohttp-env` (the same with trust_env=True), `httpx` (its own pool) and `httpx-aiohttp`
(httpx over aiohttp's pool; `pip install httpx-aiohttp`, skipped without it).
Figures: benchmarks/README.md, "One HTTP stack".
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import multiprocessing
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

HEALTH = {"jobs": {"completed": 241, "failed": 16, "inProgress": 0, "inQueue": 0,
                   "retried": 0},
          "workers": {"idle": 0, "initializing": 0, "ready": 0, "running": 0, "throttled": 5,
                      "unhealthy": 0}}
PATHS = ("client", "aiohttp", "aiohttp-env", "httpx-aiohttp", "httpx")


def _serve(port: int) -> None:
    from aiohttp import web

    body = json.dumps(HEALTH).encode()

    async def health(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v2/{ep}/health", health)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def _path(kind: str, base: str, conc: int) -> tuple[Callable[[int], Awaitable[Any]],
                                                          Callable[[], Awaitable[Any]]]:
    sem = asyncio.Semaphore(conc)
    if kind == "client":
        from monitor.runpod import RunPodClient

        client = RunPodClient(api_key="k", rest_url=f"{base}/v2", max_concurrency=conc)
        return (lambda i: client.health(f"ep{i}")), client.aclose
    if kind.startswith("httpx"):
        import httpx

        limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
        extra: dict[str, Any] = {}
        if kind == "httpx-aiohttp":
            from httpx_aiohttp import AiohttpTransport

            extra["transport"] = AiohttpTransport(limits=limits)
        http = httpx.AsyncClient(limits=limits, **extra)

        async def get_httpx(i: int) -> object:
            async with sem, http.stream("GET", f"{base}/v2/ep{i}/health") as resp:
                return json.loads(b"".join([x async for x in resp.aiter_raw()]))

        return get_httpx, http.aclose
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc),
                                    trust_env=kind == "aiohttp-env")

    async def get_aiohttp(i: int) -> object:
        async with sem, session.get(f"{base}/v2/ep{i}/health") as resp:
            return json.loads(await resp.read())

    return get_aiohttp, session.close


async def measure(kind: str, base: str, n: int, conc: int) -> float:
    """Best of 3: ms of this process's CPU per request."""
    call, close = await _path(kind, base, conc)
    await asyncio.gather(*(call(i) for i in range(100)))  # warm-up: open the pool
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        await asyncio.gather(*(call(i) for i in range(n)))
        best = min(best, (time.process_time() - start) / n * 1000)
    await close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("paths", nargs="*", default=list(PATHS))
    args = parser.parse_args()
    paths = [p for p in args.paths
             if p != "httpx-aiohttp" or importlib.util.find_spec("httpx_aiohttp")]
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        os.environ.pop(name, None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = multiprocessing.Process(target=_serve, args=(port,), daemon=True)
    server.start()
    time.sleep(1.5)
    print(f"load average {os.getloadavg()[0]:.2f}; {args.requests} requests, "
          f"concurrency {args.concurrency}")
    try:
        for round_ in (1, 2):
            for kind in paths:
                ms = asyncio.run(measure(kind, f"http://127.0.0.1:{port}", args.requests,
                                         args.concurrency))
                print(f"  round {round_}  {kind:14s} {ms:.3f} ms CPU per request", flush=True)
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
