"""`runpod-monitor simulate`: serve a scenario as a fake RunPod API until interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

from monitor.simulator.scenario import Scenario, ScenarioError, load_scenario
from monitor.simulator.server import SimulatorServer


def simulate_main(
    scenario_path: str, port: int, interval: float | None, api_key: str | None
) -> int:
    """Play `scenario_path` in real time on 127.0.0.1:`port`; 0 on a clean stop, 2 on bad input."""
    try:
        scenario = load_scenario(scenario_path)
        if interval is not None:
            scenario = scenario.with_interval(interval)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    key = api_key or os.environ.get("RUNPOD_API_KEY", "")
    if not key:
        print(
            "error: the simulator needs an API key to accept: pass --api-key or set RUNPOD_API_KEY",
            file=sys.stderr,
        )
        return 2
    try:
        asyncio.run(_serve(scenario, key, port))
    except OSError as exc:
        print(f"error: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


async def _serve(scenario: Scenario, key: str, port: int) -> None:
    server = SimulatorServer(scenario, key, port=port, realtime=True)
    url = await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not every platform lets asyncio own signals; Ctrl-C still ends asyncio.run there.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    ids = [ep.id for ep in scenario.endpoints]
    example = f"{url}/v2/{ids[0]}/health" if ids else "no endpoint listed at start"
    print(f"simulating {scenario.name!r}: {scenario.total_cycles} cycles of "
          f"{scenario.interval_s:g} s, then the last step holds")
    print(f"  GraphQL:    {url}/graphql")
    print(f"  data plane: {url}/v2  (e.g. {example})")
    print(f"  REST v2:    {url}/v2/serverless  (RUNPOD_API_BASE_URL={url})")
    print(f"  base URL:   {url}  (Ctrl-C to stop)", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
        print("simulator stopped", flush=True)
