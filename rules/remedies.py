"""Building blocks of remedies: the calls a person can paste, in the API the monitor speaks.

`Observation.control_plane` picks the API: "rest" quotes REST v2 (`PATCH
https://api.runpod.io/v2/serverless/{id}` with a minimal JSON body), "graphql" the
`saveEndpoint` mutations. A rule calls one function (`update_endpoint`, `read`,
`release`, ...) and gets the one command for the current API; GraphQL text appears only in
GraphQL mode. Data-plane calls (`purge-queue`, `status`) are the same in both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from model.observation import EndpointConfig, Observation, Template
from rules.secrets import has_secret, mask

GRAPHQL_URL = "https://api.runpod.io/graphql"
REST_URL = "https://api.runpod.ai/v2"  # the data plane (jobs, health), the same in both modes
V2_URL = "https://api.runpod.io/v2"  # the REST v2 control plane

REST = "rest"
GRAPHQL = "graphql"

# UpdateEndpointRequest's fields (spec/runpod-rest-v2.md 2.10): v2 rejects any other
# (`unevaluatedProperties: false`), so a body never holds one.
MUTABLE_FIELDS = frozenset(
    {"name", "gpu", "cpu", "workers", "scaling", "dataCenterIds", "networkVolumes", "timeout",
     "flashboot", "image", "args", "disk", "ports", "env", "registry", "templateId"}
)

# An env value that holds a credential is never printed: the body carries a reference to a
# RunPod secret of the key's name instead (spec 2.5), which the remedy asks to create first.
# (a whole `_` segment of the key: TOKENIZERS_PARALLELISM is not a token)
_SECRET_KEY = re.compile(
    r"(?:^|_)(?:TOKEN|SECRET|PASSWORD|PASSWD|PWD|CREDENTIALS?|API_?KEY|ACCESS_?KEY"
    r"|PRIVATE_?KEY|SECRET_?KEY)(?:_|$)",
    re.I,
)
_SECRET_REF = re.compile(r"^\s*\{\{\s*RUNPOD_SECRET_\w+\s*\}\}\s*$")
REFERENCE_NOTE = (
    "(a credential in it is written {{ RUNPOD_SECRET_<key> }} in env, **** elsewhere: "
    "store it as a RunPod secret of that name and reference it before you run this; the "
    "monitor never prints it)"
)

# EndpointConfig field -> saveEndpoint input field
_GRAPHQL_NAMES: Mapping[str, str] = {
    "name": "name",
    "gpu_ids": "gpuIds",
    "network_volume_id": "networkVolumeId",
    "workers_min": "workersMin",
    "workers_max": "workersMax",
    "idle_timeout": "idleTimeout",
    "scaler_type": "scalerType",
    "scaler_value": "scalerValue",
    "locations": "locations",
}


def api(obs: Observation | None) -> str:
    """The API remedies quote for this observation: "rest" or "graphql" (the default)."""
    return REST if obs is not None and obs.control_plane == REST else GRAPHQL


# --- GraphQL ------------------------------------------------------------------------------


def _graphql_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    return json.dumps(str(value))


def save_endpoint(config: EndpointConfig, **changes: Any) -> str:
    """A `saveEndpoint` mutation that updates the endpoint with `changes` (RunPod names)."""
    fields: dict[str, Any] = {"id": config.id, "name": config.name}
    if config.template is not None and config.template.id:
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


def _shell_quote(text: str) -> str:
    """`text` in single quotes, as a POSIX shell reads it back."""
    return "'" + text.replace("'", "'\\''") + "'"


def graphql_curl(query: str) -> str:
    """A curl command that posts `query` to RunPod's GraphQL API with the key from the env."""
    payload = json.dumps({"query": query})
    return (
        f"curl -s {GRAPHQL_URL} -H 'Content-Type: application/json' "
        f"-H \"Authorization: Bearer $RUNPOD_API_KEY\" -d {_shell_quote(payload)}"
    )


def rest_curl(endpoint_id: str, operation: str, method: str = "POST") -> str:
    """A curl command for a data-plane call such as `purge-queue`."""
    return (
        f"curl -s -X {method} {REST_URL}/{endpoint_id}/{operation} "
        f"-H \"Authorization: Bearer $RUNPOD_API_KEY\""
    )


# --- REST v2 ------------------------------------------------------------------------------


def v2_curl(method: str, path: str, body: Mapping[str, Any] | None = None) -> str:
    """A curl command for a REST v2 control-plane call (`path` after /v2/), the key from the
    env, and `body` as its JSON."""
    url = f"{V2_URL}/{path}"
    if any(c in url for c in "?&"):
        url = _shell_quote(url)
    verb = "" if method == "GET" else f"-X {method} "
    command = f"curl -s {verb}{url} -H \"Authorization: Bearer $RUNPOD_API_KEY\""
    if body is not None:
        command += (
            " -H 'Content-Type: application/json' -d " + _shell_quote(json.dumps(body))
        )
    return command


def env_map(template: Template | None) -> tuple[dict[str, str], bool]:
    """The template's env as v2's full map with every credential replaced by a
    `{{ RUNPOD_SECRET_<key> }}` reference, and whether any was replaced."""
    out: dict[str, str] = {}
    replaced = False
    for var in template.env if template is not None else ():
        value = var.value
        if _SECRET_REF.match(value):
            out[var.key] = value
        elif has_secret(value) or (value and _SECRET_KEY.search(var.key)):
            out[var.key] = "{{ RUNPOD_SECRET_" + var.key + " }}"
            replaced = True
        else:
            out[var.key] = value
    return out, replaced


def _volumes(config: EndpointConfig) -> tuple[str, ...]:
    if config.network_volume_ids:
        return config.network_volume_ids
    return (config.network_volume_id,) if config.network_volume_id else ()


def _datacenters(config: EndpointConfig) -> tuple[str, ...]:
    return tuple(d.strip() for d in (config.locations or "").split(",") if d.strip())


def _excluded(config: EndpointConfig) -> list[str]:
    parts = (p.strip() for p in config.gpu_ids.split(","))
    return [p[1:].strip() for p in parts if p.startswith("-") and p[1:].strip()]


def _gpu(config: EndpointConfig) -> dict[str, Any]:
    # a PATCH with `pools` but no `excludedTypes` clears them: restate them (spec 2.10)
    gpu: dict[str, Any] = {"pools": list(config.gpu_tiers)}
    excluded = _excluded(config)
    if excluded:
        gpu["excludedTypes"] = excluded
    return gpu


def _workers(config: EndpointConfig) -> dict[str, Any]:
    # min and max together (per-key merging is unconfirmed); idleTimeout restated for the
    # same reason, except on REQUEST_COUNT queues, where v2 answers it with a 422
    workers: dict[str, Any] = {"min": config.workers_min, "max": config.workers_max}
    if config.idle_timeout is not None and config.scaler_type != "REQUEST_COUNT":
        workers["idleTimeout"] = config.idle_timeout
    return workers


def _scaling(config: EndpointConfig) -> dict[str, Any]:
    kind = config.scaler_type or "QUEUE_DELAY"
    key = "requestCount" if kind == "REQUEST_COUNT" else "queueDelay"
    return {"type": kind, key: config.scaler_value}


def _container(old: Template | None, new: Template | None) -> tuple[dict[str, Any], bool]:
    """The container fields that differ between two templates, and whether the env had a
    credential replaced."""
    body: dict[str, Any] = {}
    if new is None:
        return body, False
    before = old if old is not None else Template(id="")
    if new.image_name != before.image_name:
        body["image"] = new.image_name
    replaced = False
    if new.docker_args != before.docker_args:
        body["args"], replaced = _masked(new.docker_args)
    if new.container_disk_gb != before.container_disk_gb and new.container_disk_gb is not None:
        body["disk"] = new.container_disk_gb
    if new.env != before.env:
        body["env"], in_env = env_map(new)  # env replaces the whole map: send all of it
        replaced = replaced or in_env
    return body, replaced


def _masked(text: str) -> tuple[str, bool]:
    """`text` with any credential masked, and whether one was."""
    return (mask(text), True) if has_secret(text) else (text, False)


def patch_body(old: EndpointConfig, new: EndpointConfig) -> tuple[dict[str, Any], bool]:
    """The `PATCH /v2/serverless/{id}` body that turns `old` into `new`: only the fields
    that change, in v2's names; and whether an env credential was replaced by a reference."""
    body: dict[str, Any] = {}
    if new.name != old.name:
        body["name"] = new.name
    if new.gpu_ids != old.gpu_ids:
        body["gpu"] = _gpu(new)
    if (new.workers_min, new.workers_max, new.idle_timeout) != (
        old.workers_min, old.workers_max, old.idle_timeout
    ):
        body["workers"] = _workers(new)
    if (new.scaler_type, new.scaler_value) != (old.scaler_type, old.scaler_value):
        body["scaling"] = _scaling(new)
    if _datacenters(new) != _datacenters(old):
        body["dataCenterIds"] = list(_datacenters(new))
    if _volumes(new) != _volumes(old):
        body["networkVolumes"] = list(_volumes(new))  # the full list
    if new.timeout_ms != old.timeout_ms and new.timeout_ms is not None:
        body["timeout"] = new.timeout_ms
    if new.flashboot != old.flashboot and new.flashboot is not None:
        body["flashboot"] = new.flashboot
    container, replaced = _container(old.template, new.template)
    body.update(container)
    return body, replaced


def _with_note(command: str, replaced: bool) -> str:
    return f"{command}\n{REFERENCE_NOTE}" if replaced else command


def patch_endpoint(endpoint_id: str, body: Mapping[str, Any]) -> str:
    """The curl of `PATCH /v2/serverless/{id}` with `body`."""
    return v2_curl("PATCH", f"serverless/{endpoint_id}", body)


def update_endpoint(obs: Observation | None, config: EndpointConfig, **changes: Any) -> str:
    """The one command that applies `changes` (EndpointConfig field names, e.g.
    `workers_max=4`) to the endpoint: a PATCH with the fields that change in REST mode, a
    `saveEndpoint` curl in GraphQL mode (no change: one that rolls a release)."""
    new = replace(config, **changes)
    if api(obs) == REST:
        body, replaced = patch_body(config, new)
        return _with_note(patch_endpoint(config.id, body), replaced)
    graphql: dict[str, Any] = {}
    for key in changes:
        name = _GRAPHQL_NAMES.get(key)
        if name is not None:
            value = getattr(new, key)
            graphql[name] = "" if value is None and key in ("network_volume_id", "locations") \
                else value
    return graphql_curl(save_endpoint(config, **graphql))


def create_body(config: EndpointConfig) -> tuple[dict[str, Any], bool]:
    """The `POST /v2/serverless` body of a new endpoint with `config`'s settings."""
    body: dict[str, Any] = {"name": config.name or config.id}
    template = config.template
    if template is not None and template.id:
        body["templateId"] = template.id
    replaced = False
    if template is not None and not template.id and template.image_name:
        body["image"] = template.image_name
        if template.docker_args:
            body["args"], replaced = _masked(template.docker_args)
        if template.container_disk_gb is not None:
            body["disk"] = template.container_disk_gb
        if template.env:
            body["env"], in_env = env_map(template)
            replaced = replaced or in_env
    if config.gpu_tiers:
        body["gpu"] = _gpu(config)
    body["workers"] = _workers(config)
    if config.scaler_value is not None:
        body["scaling"] = _scaling(config)
    if _datacenters(config):
        body["dataCenterIds"] = list(_datacenters(config))
    if _volumes(config):
        body["networkVolumes"] = list(_volumes(config))
    if config.timeout_ms:
        body["timeout"] = config.timeout_ms
    if config.flashboot is not None:
        body["flashboot"] = config.flashboot
    return body, replaced


def recreate_endpoint(obs: Observation | None, config: EndpointConfig) -> list[tuple[str, str]]:
    """(step, command) to delete the endpoint and create it again with the same settings."""
    if api(obs) == REST:
        body, replaced = create_body(config)
        return [
            ("delete it (this also stops its workers and cancels its jobs)",
             v2_curl("DELETE", f"serverless/{config.id}")),
            ("create it again", _with_note(v2_curl("POST", "serverless", body), replaced)),
        ]
    return [
        ("scale it to zero (deleteEndpoint requires it)",
         graphql_curl(save_endpoint(config, workersMin=0, workersMax=0))),
        ("delete it", graphql_curl(delete_endpoint(config.id))),
        ("create it again", graphql_curl(create_endpoint(config))),
    ]


def delete_endpoint_call(obs: Observation | None, endpoint_id: str) -> str:
    """The command that deletes an endpoint."""
    if api(obs) == REST:
        return v2_curl("DELETE", f"serverless/{endpoint_id}")
    return graphql_curl(delete_endpoint(endpoint_id))


# --- releases: how a container change reaches the workers --------------------------------


def release(obs: Observation | None, config: EndpointConfig, **template_changes: Any) -> str:
    """How a fixed container setting reaches the workers, as the sentence's end.

    GraphQL: the template edit, then a `saveEndpoint` that rolls a release. REST v2: an
    endpoint keeps no link to its template, so the PATCH of the container fields
    (`template_changes`, Template field names; "<...>" for what the person fills in) on the
    endpoint, or the fixed template applied once, and how to watch the rollout.
    """
    if api(obs) != REST:
        return (
            "a template change reaches the workers only with a new release: run saveEndpoint "
            f"on the endpoint afterwards:\n{graphql_curl(save_endpoint(config))}"
        )
    template = config.template if config.template is not None else Template(id="")
    body, replaced = _container(template, replace(template, **template_changes))
    template_id = template.id or "<fixed template id>"
    return (
        "PATCH the change onto the endpoint itself: a REST v2 endpoint keeps no link to its "
        "template, so editing the template alone changes nothing. This PATCH creates a "
        "release that "
        f"rolls out as workers cycle:\n{_with_note(patch_endpoint(config.id, body), replaced)}"
        "\nOr apply a fixed template's container settings once (also a release): "
        f"{patch_endpoint(config.id, {'templateId': template_id})}\n"
        + watch_rollout(config.id)
    )


def watch_rollout(endpoint_id: str) -> str:
    """The two reads that show a release rolling out, a line each."""
    return (
        "Watch it roll out: rollout.percentOnLatest reaches 100 in\n"
        f"{v2_curl('GET', f'serverless/{endpoint_id}/releases')}\n"
        f"and no worker has isStale: true in\n{v2_curl('GET', f'serverless/{endpoint_id}/workers')}"
    )


# --- reads ----------------------------------------------------------------------------------

# what -> (the GraphQL query, the REST v2 paths): confirmed v2 routes only (the balance
# path is unconfirmed, spec 3.1, so no read quotes it)
_READS: Mapping[str, tuple[str, Sequence[str]]] = {
    "key": ("query { myself { id } }", ("serverless",)),
    "endpoints": ("query { myself { endpoints { id name } } }", ("serverless",)),
    "gpu_stock": (
        "{ gpuTypes { id displayName memoryInGb secureCloud communityCloud } }",
        ("catalog/gpus?include=AVAILABILITY&product=SERVERLESS",),
    ),
    "gpu_types": (
        "query { gpuTypes { id displayName memoryInGb } }",
        ("catalog/gpus?include=AVAILABILITY&product=SERVERLESS",),
    ),
    "spend": (
        "query { myself { clientBalance currentSpendPerHr "
        "pods { id name desiredStatus costPerHr } networkVolumes { id name size } } }",
        ("billing?bucketSize=hour&lastN=2", "pods", "network-volumes"),
    ),
    "idle": (
        "query { myself { currentSpendPerHr pods { id name desiredStatus "
        "volumeInGb } networkVolumes { id name size } } }",
        ("pods", "network-volumes", "serverless"),
    ),
}


def read(obs: Observation | None, what: str) -> str:
    """The read-only command(s) that show `what` ("key", "endpoints", "gpu_stock",
    "gpu_types", "spend", "idle"), one a line."""
    query, paths = _READS[what]
    if api(obs) == REST:
        return "\n".join(v2_curl("GET", p) for p in paths)
    return graphql_curl(query)


# --- pods and volumes ---------------------------------------------------------------------


def delete_volume(volume_id: str) -> str:
    """The command that deletes a network volume (REST v2 in both modes: GraphQL has no
    such mutation and REST v1 is retired)."""
    return v2_curl("DELETE", f"network-volumes/{volume_id}")


def stop_pod(obs: Observation | None, pod_id: str) -> str:
    """The command that stops a running pod (its disk keeps billing)."""
    if api(obs) == REST:
        return v2_curl("POST", f"pods/{pod_id}/action", {"action": "stop"})
    pod = json.dumps(pod_id)
    return graphql_curl(f"mutation {{ podStop(input: {{ podId: {pod} }}) {{ id }} }}")


def terminate_pod(obs: Observation | None, pod_id: str) -> str:
    """The command that deletes a pod and its disk."""
    if api(obs) == REST:
        return v2_curl("DELETE", f"pods/{pod_id}")
    return graphql_curl(f"mutation {{ podTerminate(input: {{ podId: {json.dumps(pod_id)} }}) }}")
