"""Shared pytest fixtures (each owner prefixes theirs)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from monitor.runpod.client import RunPodClient
from monitor.simulator import Scenario, SimulatorServer, load_scenario

# --- simulator fixtures (sim_) ---------------------------------------------------------

SIM_KEY = "sim-test-key-0123456789"
_SIM_SHARED = ("balance-exhausted.yaml", "healthy-traffic.yaml", "throttled-capacity.yaml")


def _sim_scenarios_dir() -> Path:
    """Where the shared example scenarios live: the repo's copy first, else the spec's."""
    root = Path(__file__).resolve().parent.parent
    for d in (root / "scenarios", root / "tests" / "scenarios", Path("/work/shared/scenarios")):
        if all((d / name).is_file() for name in _SIM_SHARED):
            return d
    pytest.skip("the shared example scenarios are not available")


@pytest.fixture
def sim_scenarios_dir() -> Path:
    """The directory holding balance-exhausted, healthy-traffic and throttled-capacity."""
    return _sim_scenarios_dir()


SimStart = Callable[..., Awaitable[SimulatorServer]]


@pytest.fixture
async def sim_server() -> AsyncIterator[SimStart]:
    """Factory: `await sim_server(scenario | dict | path, **kw)` starts a simulator on loopback."""
    started: list[SimulatorServer] = []

    async def start(
        scenario: Scenario | dict[str, Any] | str | Path, api_key: str = SIM_KEY, **kw: Any
    ) -> SimulatorServer:
        if isinstance(scenario, dict):
            scenario = Scenario.from_dict(scenario)
        elif not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario)
        server = SimulatorServer(scenario, api_key, **kw)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


SimClient = Callable[..., Awaitable[tuple[SimulatorServer, RunPodClient]]]


@pytest.fixture
async def sim_client(sim_server: SimStart) -> AsyncIterator[SimClient]:
    """Factory: `await sim_client(scenario, api_key, server={...}, **client_kw)` starts a
    simulator on loopback (`server`: its options) and a RunPodClient on its GraphQL,
    data-plane and REST v2 URLs; the clients close before the simulators stop."""
    clients: list[RunPodClient] = []

    async def start(
        scenario: Scenario | dict[str, Any] | str | Path, api_key: str = SIM_KEY,
        *, server: dict[str, Any] | None = None, **client_kw: Any,
    ) -> tuple[SimulatorServer, RunPodClient]:
        sim = await sim_server(scenario, api_key, **(server or {}))
        url = sim.url
        client = RunPodClient(api_key=api_key, graphql_url=f"{url}/graphql",
                              rest_url=f"{url}/v2", v2_url=f"{url}/v2", **client_kw)
        clients.append(client)
        return sim, client

    yield start
    for client in clients:
        await client.aclose()


# --- process-wide state (state_) ---------------------------------------------------------


@pytest.fixture(autouse=True)
def state_logging_restored() -> Iterator[None]:
    """Each test ends with the structlog set-up it began with: a command run in a test
    (`main([...])` calls logs.configure) binds the logger to the stream capsys replaced,
    and a later test's warning would be written to that closed file."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
