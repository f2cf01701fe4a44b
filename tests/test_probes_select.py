"""Endpoint selection and sharding."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.observation import EndpointConfig
from monitor.commands import cli
from monitor.pipeline.probes import select_endpoints
from monitor.pipeline.sharding import owner

LISTED = (EndpointConfig("ep1", "whisper"), EndpointConfig("ep2", "sdxl"))


def test_default_watches_every_listed_endpoint() -> None:
    """With no configured list, every endpoint GraphQL lists is watched."""
    assert select_endpoints([], LISTED, []) == ["ep1", "ep2"]


def test_configured_ids_and_names() -> None:
    """A configured list watches exactly those, by id or name; unknown ids stay watched."""
    assert select_endpoints(["sdxl", "ep1", "epX"], LISTED, []) == ["ep2", "ep1", "epX"]


def test_graphql_failure_keeps_previous_selection() -> None:
    """When GraphQL fails the previous selection stands."""
    assert select_endpoints([], None, ["ep1"]) == ["ep1"]


def test_shards_partition_endpoints() -> None:
    """Two shards together watch every endpoint exactly once."""
    ids = [f"ep{i:04d}" for i in range(1000)]
    owners = [owner(e, 2) for e in ids]
    assert set(owners) == {0, 1}
    assert 400 < owners.count(0) < 600


def test_adding_a_shard_moves_few_endpoints() -> None:
    """Going from N to N+1 shards moves about 1/(N+1) of the endpoints, no more."""
    ids = [f"ep{i:04d}" for i in range(3000)]
    for n in (1, 2, 3, 5):
        moved = sum(owner(e, n) != owner(e, n + 1) for e in ids)
        assert moved / len(ids) < 1 / (n + 1) + 0.04
        assert all(owner(e, n + 1) == n for e in ids if owner(e, n) != owner(e, n + 1))


def test_run_shard_flag_overrides_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --shard I/N` replaces the file's `shard`; a bad one exits 2 naming the field."""
    path = tmp_path / "config.yaml"
    path.write_text("shard: 0/3\n", encoding="utf-8")
    path.chmod(0o600)
    settings = cli._settings(str(path), "2/3")
    assert settings is not None
    assert settings.shard_spec == (2, 3)
    assert cli.main(["run", "--config", str(path), "--shard", "3/2"]) == 2
    assert "shard: must be 'I/N' with 0 <= I < N (got '3/2')" in capsys.readouterr().err
