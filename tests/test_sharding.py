"""Shards end to end: replicas of the daemon against one simulator split the endpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monitor.commands.daemon import Daemon
from monitor.config import settings_from_dict
from monitor.simulator import Scenario, SimulatorServer

KEY = "shard-test-key-0123456789abcdef"
IDS = [f"shardep{i:06d}" for i in range(40)]


def scenario() -> Scenario:
    return Scenario.from_dict({
        "name": "shards", "interval_s": 30,
        # a runway under 24 h: low_balance, an account diagnosis
        "account": {"clientBalance": 3.0, "currentSpendPerHr": 1.0},
        "endpoints": [{"id": eid, "name": f"name-{eid}", "gpuIds": "AMPERE_48,ADA_48_PRO",
                       "workersMax": 2, "health": {"workers": {"idle": 1}}} for eid in IDS],
        "steps": [{"cycles": 10}],
    })


def settings(url: str, tmp_path: Path, shard: str) -> Any:
    return settings_from_dict({
        "runpod": {"api_key": KEY, "graphql_url": f"{url}/graphql", "rest_url": f"{url}/v2"},
        "shard": shard,
        "state": {"path": str(tmp_path / f"state-{shard.replace('/', 'of')}.db")},
        "http": {"listen": "127.0.0.1:0"},
        "log": {"level": "warning"},
    }, env={})


async def test_replicas_watch_every_endpoint_once_and_account_scope_from_shard_0(
    tmp_path: Path,
) -> None:
    """Two shards probe disjoint halves that cover every endpoint; only shard 0 raises the
    account diagnosis and exposes the balance; going to three shards moves endpoints only
    to the new one."""
    server = SimulatorServer(scenario(), KEY)
    url = await server.start()
    try:
        watched: dict[str, set[str]] = {}
        codes: dict[str, set[str]] = {}
        exposition: dict[str, str] = {}
        for shard in ("0/2", "1/2", "0/3", "1/3", "2/3"):
            daemon = Daemon(settings(url, tmp_path, shard), sinks=[])
            for k in (1, 2):
                server.set_cycle(k)
                await daemon.tick()
            assert daemon.last_result is not None
            watched[shard] = set(daemon.last_result.observation.endpoints)
            codes[shard] = {d.code for d in daemon.last_result.active}
            exposition[shard] = daemon.metrics_body()[0].decode()
            await daemon.client.aclose()
            daemon.store.close()
    finally:
        await server.stop()
    assert watched["0/2"] | watched["1/2"] == set(IDS)
    assert not watched["0/2"] & watched["1/2"]
    assert watched["0/2"]
    assert watched["1/2"]
    assert "low_balance" in codes["0/2"]
    assert "low_balance" not in codes["1/2"]
    samples = {shard: [line for line in text.splitlines() if not line.startswith("#")]
               for shard, text in exposition.items()}
    assert "runpod_account_balance_usd 3.0" in samples["0/2"]
    assert not [line for line in samples["1/2"] if line.startswith("runpod_account_")]
    # 2 -> 3 replicas: an endpoint either stays where it was or moves to the new shard 2
    for old in ("0/2", "1/2"):
        index = old[0]
        assert watched[old] - watched[f"{index}/3"] <= watched["2/3"]
    assert watched["0/3"] | watched["1/3"] | watched["2/3"] == set(IDS)
