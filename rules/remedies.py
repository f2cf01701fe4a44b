"""Building blocks of remedies: the GraphQL mutations and REST calls a person can paste."""

from __future__ import annotations

import json
from typing import Any

from model.observation import EndpointConfig

GRAPHQL_URL = "https://api.runpod.io/graphql"
REST_URL = "https://api.runpod.ai/v2"


def _graphql_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    return json.dumps(str(value))


def save_endpoint(config: EndpointConfig, **changes: Any) -> str:
    """A `saveEndpoint` mutation that updates the endpoint with `changes` (RunPod names)."""
    fields: dict[str, Any] = {"id": config.id, "name": config.name}
    if config.template is not None:
        fields["templateId"] = config.template.id
    fields.update(
        {
            "gpuIds": config.gpu_ids,
            "networkVolumeId": config.network_volume_id or "",
            "workersMin": config.workers_min,
            "workersMax": config.workers_max,
        }
    )
    if config.idle_timeout is not None:
        fields["idleTimeout"] = config.idle_timeout
    fields.update(changes)
    body = ", ".join(f"{k}: {_graphql_value(v)}" for k, v in fields.items())
    # the selection is only `id`: the command stays short enough to read on one line
    return f"mutation {{ saveEndpoint(input: {{ {body} }}) {{ id }} }}"


def create_endpoint(config: EndpointConfig) -> str:
    """A `saveEndpoint` mutation without an id: a new endpoint with the same configuration."""
    mutation = save_endpoint(config)
    return mutation.replace(f"id: {json.dumps(config.id)}, ", "", 1)


def delete_endpoint(endpoint_id: str) -> str:
    """The `deleteEndpoint` mutation (RunPod wants workersMin = workersMax = 0 first)."""
    return f"mutation {{ deleteEndpoint(id: {json.dumps(endpoint_id)}) }}"


def graphql_curl(query: str) -> str:
    """A curl command that posts `query` to RunPod's GraphQL API with the key from the env."""
    payload = json.dumps({"query": query})
    return (
        f"curl -s {GRAPHQL_URL} -H 'Content-Type: application/json' "
        f"-H \"Authorization: Bearer $RUNPOD_API_KEY\" -d '{payload}'"
    )


def rest_curl(endpoint_id: str, operation: str, method: str = "POST") -> str:
    """A curl command for a data-plane call such as `purge-queue`."""
    return (
        f"curl -s -X {method} {REST_URL}/{endpoint_id}/{operation} "
        f"-H \"Authorization: Bearer $RUNPOD_API_KEY\""
    )
