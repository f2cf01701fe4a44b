"""`demo`: the built-in simulator scenario and the daemon against it, on loopback."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from monitor.commands.daemon import Daemon, serve
from monitor.config import is_loopback, settings_from_dict
from monitor.simulator import Scenario, SimulatorServer, load_scenario


def demo_scenario() -> Scenario:
    """The scenario shipped inside the package."""
    with resources.as_file(resources.files("monitor") / "data" / "demo.yaml") as path:
        return load_scenario(path)


def demo_settings(
    scenario: Scenario, sim_url: str, api_key: str, port: int, state_dir: Path,
    env: Mapping[str, str], host: str = "127.0.0.1",
) -> dict[str, Any]:
    """The daemon's configuration for the demo: the simulator's URLs, a short interval."""
    data: dict[str, Any] = {
        "interval_s": scenario.interval_s,
        "runpod": {
            "api_key": api_key,
            "graphql_url": f"{sim_url}/graphql",
            "rest_url": f"{sim_url}/v2",
            "timeout_s": max(0.5, scenario.interval_s / 2),
        },
        "http": {"listen": f"[{host}]:{port}" if ":" in host else f"{host}:{port}"},
        "state": {"path": str(state_dir / "demo.db")},
        # the tour is short: announce at once (incidents of one cycle still group); Slack
        # when SLACK_WEBHOOK_URL or SLACK_BOT_TOKEN is set, the log otherwise
        "alerts": {"group_wait_s": 0},
    }
    if not is_loopback(host) and not env.get("RUNPOD_MONITOR_WRITE_TOKEN"):
        # reachable beyond this machine with no token: a read-only demo rather than a refusal
        data["api"] = {"write_routes": False}
    for key, value in scenario.monitor.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


async def run_demo(port: int, env: Mapping[str, str], host: str = "127.0.0.1") -> int:
    """Run the simulator and the daemon until Ctrl-C; print where to look."""
    scenario = demo_scenario()
    api_key = secrets.token_urlsafe(24)
    server = SimulatorServer(scenario, api_key, realtime=True)
    sim_url = await server.start()
    with tempfile.TemporaryDirectory(prefix="runpod-monitor-demo-") as tmp:
        settings = settings_from_dict(
            demo_settings(scenario, sim_url, api_key, port, Path(tmp), env, host),
            env=env, source="demo",
        )
        daemon = Daemon(settings)

        def ready(url: str) -> None:
            print(f"runpod-monitor demo: {scenario.total_cycles} cycles of "
                  f"{scenario.interval_s:g} s against the built-in simulator at {sim_url}")
            print(f"  metrics      {url}/metrics")
            print(f"  diagnoses    {url}/api/v1/diagnoses")
            print(f"  endpoints    {url}/api/v1/endpoints")
            print(f"  health       {url}/healthz")
            print("Ctrl-C stops both.", flush=True)

        try:
            return await serve(daemon, on_ready=ready)
        finally:
            await server.stop()
