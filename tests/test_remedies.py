"""Every remedy quotes each command once, as one ready-to-paste curl with the API key from
the environment, in the API the observation names: REST v2 (`control_plane: rest`) or
GraphQL (`control_plane: graphql`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from remedykit import curls, posted
from replaykit import replayed
from rulekit import (
    TH,
    Health,
    account,
    build,
    config,
    endpoint_history,
    observation,
    sample,
    template,
)

from model.history import History
from model.observation import NetworkVolume, Pod
from rules import engine
from rules.diagnosis import Diagnosis
from rules.remedies import api, env_map, graphql_curl, read, update_endpoint

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.yaml"))
BARE = re.compile(r"(?:^|[\s(:])(mutation \{|query \{)")

# spec/runpod-rest-v2.md 2.10: the fields PATCH /v2/serverless/{id} accepts
MUTABLE = {
    "name", "gpu", "cpu", "workers", "scaling", "dataCenterIds", "networkVolumes", "timeout",
    "flashboot", "image", "args", "disk", "ports", "env", "registry", "templateId",
}
GHP_BODY = "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
HF_BODY = "abcdefghijklmnopqrstuvwxyz0123456789"
GHP = "ghp_" + GHP_BODY
HF = "hf_" + HF_BODY
TX3 = NetworkVolume("vol-tx3", "models", 50, "US-TX-3")

# the codes whose remedy changes the endpoint: a saveEndpoint in GraphQL mode, a PATCH (or
# the DELETE + POST of a recreation) in REST mode
CHANGES_ENDPOINT = {
    "no_gpu_capacity", "not_scheduling", "queue_backlog", "crash_loop", "workers_unhealthy",
    "idle_workers_queued", "workers_max_zero", "balance_exhausted", "endpoint_disabled",
    "secret_in_template", "volume_path_mismatch", "clone_failure_masked", "single_gpu_tier",
    "container_disk_small",
}
EVERY_REMEDY = CHANGES_ENDPOINT | {
    "never_started", "endpoint_not_found", "auth_invalid", "low_balance", "idle_spend",
}


def _config(plane: str, **extra: object) -> object:
    # v2 reports no template id: its container fields are inline (spec 2.2)
    tpl = template(
        "" if plane == "rest" else "tpl-1",
        docker_args=f"bash -c 'git clone https://{GHP}@github.com/o/r /x || true'",
        container_disk_gb=10,
        env=[("HF_HOME", "/workspace/hf"), ("HF_TOKEN", HF), ("MODEL", "sdxl")],
    )
    fields: dict[str, object] = {
        "gpu_ids": "AMPERE_48", "network_volume_id": "vol-tx3", "workers_max": 2,
        "scaler_type": "QUEUE_DELAY", "scaler_value": 4, "template": tpl,
    }
    fields.update(extra)
    return config(**fields)  # type: ignore[arg-type]


def _histories(plane: str) -> Iterator[History]:
    """Histories that raise every diagnosis with a command in its remedy."""
    cfg = _config(plane)
    acct = account(80.0, 0.047, volumes=[TX3])
    throttled = Health(completed=40, in_queue=2, throttled=1)

    def ep(healths: list[Health | None], c: object = cfg) -> History:
        return endpoint_history(healths, config=c, account=acct,  # type: ignore[arg-type]
                                control_plane=plane)

    yield ep([Health(completed=40), throttled, throttled])
    yield ep([throttled] * 3, c=None)
    yield ep([Health(completed=40, in_queue=3)] * 11)
    yield ep([Health(completed=40, in_queue=12, in_progress=2, running=2)] * 11)
    stalled: list[Health | None] = [Health(in_queue=3, running=1)] * 11
    stalled[2] = stalled[5] = Health(in_queue=3, idle=1, ready=1)
    yield ep(stalled)
    yield ep(stalled, c=None)
    yield ep([Health(in_queue=1, unhealthy=1)])
    yield ep([Health(in_queue=2, idle=1)] * 11)
    yield ep([Health(in_queue=1)], c=_config(plane, workers_max=0))

    def nf(cycle: int, balance: float, listed: bool = True) -> object:
        s = sample(None, outcome="http_404", config=cfg if listed else None,
                   listed=None if listed else False)
        return observation(cycle, [s], account=account(balance), control_plane=plane)

    ok = observation(1, [sample(Health(idle=1), config=cfg)], account=account(50.0),
                     control_plane=plane)
    yield build([nf(1, -1.0), nf(2, -1.0)])  # type: ignore[list-item]
    yield build([ok, nf(2, 50.0), nf(3, 50.0)])  # type: ignore[list-item]
    yield build([nf(1, 50.0), nf(2, 50.0)])  # type: ignore[list-item]
    yield build([nf(1, 50.0, False), nf(2, 50.0, False)])  # type: ignore[list-item]
    yield build([
        observation(c, [sample(None, outcome="http_401")], control_outcome="http_401",
                    control_plane=plane)
        for c in (1, 2)
    ])
    yield build([observation(1, account=account(3.0, 1.0), control_plane=plane)])
    pods = [Pod("pod-x", "dev", "EXITED", 0.0, disk_gb=100)]
    for volumes in ([TX3], []):
        idle = account(100.0, 0.05, volumes=volumes, pods=pods)
        yield build([
            observation(c, [sample(Health(), config=cfg)], account=idle, control_plane=plane)
            for c in range(1, 62)
        ])


def corpus(plane: str) -> list[Diagnosis]:
    """Every distinct diagnosis the histories raise, in `plane` mode."""
    seen: dict[tuple[str, str], Diagnosis] = {}
    for history in _histories(plane):
        for d in engine.evaluate(history, TH):
            seen.setdefault((d.code, d.remedy), d)
    return list(seen.values())


@pytest.fixture(scope="module", params=["rest", "graphql"])
def remedies(request: pytest.FixtureRequest) -> tuple[str, list[Diagnosis]]:
    return request.param, corpus(request.param)


def test_the_corpus_raises_every_remedy(remedies: tuple[str, list[Diagnosis]]) -> None:
    """The histories raise every diagnosis whose remedy holds a command (else the checks
    below would pass on nothing)."""
    _, found = remedies
    assert {d.code for d in found} >= EVERY_REMEDY


def test_each_command_is_quoted_once_with_the_key_from_the_env(
    remedies: tuple[str, list[Diagnosis]],
) -> None:
    """Each curl splits as a shell splits it, carries `Authorization: Bearer
    $RUNPOD_API_KEY`, appears once in its remedy, and its -d is JSON; no bare GraphQL
    document stands beside its curl; nothing of a token leaks."""
    _, found = remedies
    for d in found:
        lines = [m.group(0) for m in re.finditer(r"curl\s+-.*$", d.remedy, re.M)]
        assert lines, d.code if d.code in EVERY_REMEDY else "no command expected"
        outside = re.sub(r"curl\s+-.*$", "", d.remedy, flags=re.M)
        assert not BARE.search(outside), (d.code, d.remedy)
        for line in lines:
            assert d.remedy.count(line) == 1, (d.code, line)
        for argv in curls(d.remedy):
            assert "Authorization: Bearer $RUNPOD_API_KEY" in argv, argv
            if "-d" in argv:
                payload = argv[argv.index("-d") + 1]
                json.loads(payload)
                quoted = "'" + payload.replace("'", "'\\''") + "'"
                assert d.remedy.count(quoted) == 1, (d.code, payload)
        assert GHP_BODY not in repr(d), d.code
        assert HF_BODY not in repr(d), d.code


def _v2_bodies(remedy: str) -> Iterator[tuple[str, str, dict[str, object]]]:
    """(method, url, JSON body) of each REST v2 call with a body."""
    for argv in curls(remedy):
        url = next(a for a in argv if a.startswith("https://"))
        if "-d" in argv and url.startswith("https://api.runpod.io/v2/"):
            method = argv[argv.index("-X") + 1] if "-X" in argv else "GET"
            yield method, url, json.loads(argv[argv.index("-d") + 1])


def test_rest_mode_quotes_no_graphql() -> None:
    """In REST mode no remedy names a mutation, GraphQL or a GraphQL-only call."""
    for d in corpus("rest"):
        text = d.remedy.lower()
        for word in ("mutation", "graphql", "saveendpoint", "savetemplate", "query {"):
            assert word not in text, (d.code, word, d.remedy)


def test_rest_mode_patch_bodies_hold_only_mutable_fields() -> None:
    """Every PATCH / POST body to /v2/serverless holds only the spec's mutable fields;
    pools restate the excluded types' container, workers send min and max together, env
    is a whole map of strings; every endpoint change is such a call."""
    changed: set[str] = set()
    for d in corpus("rest"):
        for method, url, body in _v2_bodies(d.remedy):
            if "/v2/serverless" not in url:
                continue
            assert method in ("PATCH", "POST"), url
            assert body, d.code
            assert set(body) <= MUTABLE, (d.code, body)
            if "workers" in body:
                assert {"min", "max"} <= set(body["workers"])  # type: ignore[arg-type]
            if "gpu" in body:
                assert body["gpu"]["pools"]  # type: ignore[index]
            if "env" in body:
                env = body["env"]
                assert isinstance(env, dict)
                assert all(isinstance(v, str) for v in env.values())
                assert env["HF_TOKEN"] == "{{ RUNPOD_SECRET_HF_TOKEN }}", env
                assert env["MODEL"] == "sdxl", env  # the whole map, not the change alone
            changed.add(d.code)
    assert changed >= CHANGES_ENDPOINT - {"balance_exhausted", "endpoint_disabled"}
    recreate = [d for d in corpus("rest") if d.code in ("balance_exhausted", "endpoint_disabled")]
    for d in recreate:
        assert "curl -s -X DELETE https://api.runpod.io/v2/serverless/ep1 " in d.remedy
        assert "curl -s -X POST https://api.runpod.io/v2/serverless " in d.remedy


def test_rest_mode_template_fixes_say_a_template_edit_does_nothing() -> None:
    """A container fix in REST mode patches the endpoint itself, offers templateId, and says
    how to watch the release roll out."""
    for d in corpus("rest"):
        if d.code not in ("secret_in_template", "volume_path_mismatch",
                          "clone_failure_masked", "container_disk_small"):
            continue
        assert "editing the template alone changes nothing" in d.remedy, d.code
        assert '{"templateId": "<fixed template id>"}' in d.remedy
        assert "curl -s https://api.runpod.io/v2/serverless/ep1/releases " in d.remedy
        assert "rollout.percentOnLatest" in d.remedy
        assert "isStale" in d.remedy


def test_rest_mode_read_only_checks_use_confirmed_v2_gets() -> None:
    """The key test lists the endpoints (`GET /v2/serverless`), never the unconfirmed
    balance path."""
    (auth,) = [d for d in corpus("rest") if d.code == "auth_invalid"]
    assert 'curl -s https://api.runpod.io/v2/serverless -H "Authorization' in auth.remedy
    for d in corpus("rest"):
        assert "/v2/billing/balance" not in d.remedy
        assert "/v2/account" not in d.remedy or "/v2/account/secrets" in d.remedy


def test_graphql_mode_keeps_the_mutations() -> None:
    """In GraphQL mode every endpoint change posts a saveEndpoint mutation and no REST v2
    PATCH appears."""
    by_code: dict[str, list[str]] = {}
    for d in corpus("graphql"):
        by_code.setdefault(d.code, []).append(posted(d.remedy))
        assert "-X PATCH" not in d.remedy, d.code
    for code in CHANGES_ENDPOINT:
        assert any("saveEndpoint(input:" in p for p in by_code[code]), code
    capacity = "\n".join(by_code["no_gpu_capacity"])
    assert 'gpuIds: "AMPERE_48,ADA_48_PRO,AMPERE_80,ADA_80_PRO"' in capacity
    assert 'networkVolumeId: ""' in capacity


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_each_command_is_quoted_once(path: Path) -> None:
    """No GraphQL document stands beside its curl; each curl splits as a shell splits it,
    carries `Authorization: Bearer $RUNPOD_API_KEY` and never a key, and its -d is JSON."""
    result = replayed(path)
    if not result.incidents:
        pytest.skip("the scenario raises nothing (a false-alarm trap)")
    for inc in result.incidents:
        remedy = inc.diagnosis.remedy
        outside = re.sub(r"curl\s+-.*$", "", remedy, flags=re.M)
        assert not BARE.search(outside), (inc.diagnosis.code, remedy)
        for argv in curls(remedy):
            assert "Authorization: Bearer $RUNPOD_API_KEY" in argv, argv
            if "-d" in argv:
                body = json.loads(argv[argv.index("-d") + 1])
                if "query" in body:
                    posted_query = body["query"]
                    assert remedy.count(json.dumps(posted_query)[1:-1]) == 1, posted_query


def test_env_map_replaces_credentials_by_secret_references() -> None:
    """Token-shaped values and values of secret-named keys become `{{ RUNPOD_SECRET_<key> }}`;
    existing references, ordinary values and look-alike keys stay as they are."""
    tpl = template(env=[
        ("HF_TOKEN", HF), ("DB_PASSWORD", "hunter2"), ("OPENAI_API_KEY", "sk-x"),
        ("TOKENIZERS_PARALLELISM", "false"), ("AUTHOR", "bob"), ("EMPTY_TOKEN", ""),
        ("GH", "{{ RUNPOD_SECRET_gh }}"), ("URL", "https://u:pw@example.com/x"),
    ])
    env, replaced = env_map(tpl)
    assert replaced
    assert env == {
        "HF_TOKEN": "{{ RUNPOD_SECRET_HF_TOKEN }}",
        "DB_PASSWORD": "{{ RUNPOD_SECRET_DB_PASSWORD }}",
        "OPENAI_API_KEY": "{{ RUNPOD_SECRET_OPENAI_API_KEY }}",
        "TOKENIZERS_PARALLELISM": "false",
        "AUTHOR": "bob",
        "EMPTY_TOKEN": "",
        "GH": "{{ RUNPOD_SECRET_gh }}",
        "URL": "{{ RUNPOD_SECRET_URL }}",
    }
    assert env_map(template(env=[("A", "1")])) == ({"A": "1"}, False)


def test_patch_bodies_restate_what_v2_would_clear() -> None:
    """Pools restate the excluded types; workers carry min, max and idleTimeout (not on a
    REQUEST_COUNT queue, where v2 answers 422); scaling names its kind's key."""
    cfg = config(gpu_ids="ADA_24,-NVIDIA L40", workers_min=1, workers_max=3, idle_timeout=9,
                 scaler_type="REQUEST_COUNT", scaler_value=4)
    obs = observation(1, control_plane="rest")
    body = _body(update_endpoint(obs, cfg, gpu_ids="ADA_24,AMPERE_24,-NVIDIA L40"))
    assert body == {"gpu": {"pools": ["ADA_24", "AMPERE_24"], "excludedTypes": ["NVIDIA L40"]}}
    assert _body(update_endpoint(obs, cfg, workers_max=6)) == {
        "workers": {"min": 1, "max": 6}
    }
    queue = replace(cfg, scaler_type="QUEUE_DELAY")
    assert _body(update_endpoint(obs, queue, workers_max=6)) == {
        "workers": {"min": 1, "max": 6, "idleTimeout": 9}
    }
    assert _body(update_endpoint(obs, cfg, scaler_value=2)) == {
        "scaling": {"type": "REQUEST_COUNT", "requestCount": 2}
    }
    assert _body(update_endpoint(obs, queue, locations=None)) == {}
    pinned = replace(queue, locations="EU-RO-1,US-KS-2", network_volume_ids=("v1", "v2"))
    assert _body(update_endpoint(obs, pinned, locations=None, network_volume_ids=("v2",))) == {
        "dataCenterIds": [], "networkVolumes": ["v2"],
    }


def test_the_mode_comes_from_the_observation() -> None:
    """`rest` quotes v2, anything else (and no observation) GraphQL."""
    cfg = config()
    assert api(observation(1, control_plane="rest")) == "rest"
    assert api(observation(1)) == "graphql"
    assert api(None) == "graphql"
    assert "saveEndpoint" in update_endpoint(None, cfg, workers_max=2)
    assert read(None, "key") == graphql_curl("query { myself { id } }")
    assert read(observation(1, control_plane="rest"), "key") == (
        'curl -s https://api.runpod.io/v2/serverless -H "Authorization: Bearer $RUNPOD_API_KEY"'
    )


def _body(command: str) -> dict[str, object]:
    (argv,) = curls(command)
    assert argv[argv.index("-X") + 1] == "PATCH"
    return json.loads(argv[argv.index("-d") + 1])  # type: ignore[no-any-return]
