"""audit rules: secrets, volume paths, masked clones, single GPU tier, container disk."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import pytest
from remedykit import curls, posted
from rulekit import TH, Health, account, build, config, observation, sample, template
from test_secrets import CASES, GH_BODY, GHP, HF

from model.observation import EndpointConfig
from rules import audit
from rules.diagnosis import Diagnosis
from rules.secrets import mask
from rules.thresholds import Thresholds

VOL = "vol-abc123"


def cfg(
    *,
    docker_args: str = "",
    env: Iterable[tuple[str, str]] = (),
    disk: int | None = 60,
    volume: str | None = None,
    gpu_ids: str = "AMPERE_48,ADA_48_PRO",
) -> EndpointConfig:
    tpl = template("tpl-9", name="worker", docker_args=docker_args, env=env,
                   container_disk_gb=disk)
    return config(template=tpl, network_volume_id=volume, gpu_ids=gpu_ids)


def run(c: EndpointConfig, th: Thresholds = TH, graphql: str = "ok") -> list[Diagnosis]:
    """The audit of one endpoint whose latest cycle listed `c` (or whose GraphQL failed)."""
    first = observation(1, [sample(Health(), config=c)], account=account())
    if graphql == "ok":
        latest = observation(2, [sample(Health(), config=c)], account=account())
    else:
        latest = observation(2, [sample(Health())], control_outcome=graphql)
    return audit.diagnose(build([first, latest]), th)


def codes(found: Sequence[Diagnosis]) -> list[str]:
    return [d.code for d in found]


def only(found: Sequence[Diagnosis], code: str) -> list[Diagnosis]:
    return [d for d in found if d.code == code]


def test_clean_template_raises_nothing() -> None:
    """A sane template (volume paths, two tiers, 60 GB disk, no secrets) raises nothing."""
    c = cfg(
        docker_args="bash -c 'python -u /app/handler.py'",
        env=[("HF_HOME", "/runpod-volume/hf"), ("HF_HUB_ENABLE_HF_TRANSFER", "1")],
        volume=VOL,
    )
    assert run(c) == []


def test_latest_graphql_failure_raises_nothing() -> None:
    """With the latest GraphQL answer failed, the audit says nothing (tracker holds)."""
    c = cfg(docker_args=f"git clone https://{GHP}@github.com/o/r /x || true", disk=5)
    assert run(c, graphql="timeout") == []


def test_unlisted_endpoint_is_not_audited() -> None:
    """An endpoint the latest GraphQL answer does not list is not audited from stale data."""
    c = cfg(disk=5)
    obs = [
        observation(1, [sample(Health(), config=c)], account=account()),
        observation(2, [sample(None, outcome="http_404", listed=False)], account=account()),
    ]
    assert audit.diagnose(build(obs), TH) == []


# --- secret_in_template -----------------------------------------------------------------


@pytest.mark.parametrize(("token", "kind", "masked", "tail"), CASES)
def test_secret_in_docker_args_names_kind_and_place_only(
    token: str, kind: str, masked: str, tail: str
) -> None:
    """Every kind in dockerArgs is critical, names kind, place and masked prefix, no tail."""
    found = only(run(cfg(docker_args=f"bash -c 'export T={token}; python h.py'")),
                 "secret_in_template")
    assert len(found) == 1
    d = found[0]
    assert d.severity == "critical"
    assert kind in d.summary
    assert masked in d.summary
    assert "dockerArgs" in d.summary
    assert d.evidence["places"] == "dockerArgs"
    assert d.evidence["kinds"] == kind
    assert tail not in repr(d)
    assert tail[:6] not in repr(d)


@pytest.mark.parametrize(("token", "kind", "masked", "tail"), CASES)
def test_secret_in_env_names_the_key(token: str, kind: str, masked: str, tail: str) -> None:
    """Every kind in an env value names the env key, and nothing of the secret leaks."""
    found = only(run(cfg(env=[("MODEL", "x"), ("SOME_SETTING", token)])), "secret_in_template")
    assert len(found) == 1
    d = found[0]
    assert "env SOME_SETTING" in d.summary
    assert d.evidence["places"] == "env SOME_SETTING"
    assert f"env SOME_SETTING: {masked}" in d.evidence["masked"]
    assert tail not in repr(d)


def test_several_secrets_make_one_diagnosis() -> None:
    """Two secrets in two places are one diagnosis with a count and both places."""
    c = cfg(docker_args=f"git clone https://{GHP}@github.com/o/r /x", env=[("HF_TOKEN", HF)])
    found = only(run(c), "secret_in_template")
    assert len(found) == 1
    d = found[0]
    assert d.evidence["secrets_found"] == 2
    assert d.evidence["places"] == "dockerArgs, env HF_TOKEN"
    assert d.evidence["kinds"] == "GitHub token, Hugging Face token"
    assert "1 more" in d.summary
    assert "huggingface.co/settings/tokens" in d.remedy
    assert "RUNPOD_SECRET_" in d.remedy
    assert "saveEndpoint" in d.remedy
    assert GH_BODY not in repr(d)
    assert HF[3:] not in repr(d)


def test_no_secret_leaks_from_any_diagnosis() -> None:
    """A template with a token in a masked clone leaks nothing from any of its diagnoses."""
    c = cfg(docker_args=f"git clone https://{GHP}@github.com/o/r /x 2>/dev/null || true",
            env=[("HF_HOME", f"/workspace/{HF}")], volume=VOL, gpu_ids="AMPERE_48", disk=10)
    found = run(c)
    assert set(codes(found)) == {
        "secret_in_template", "volume_path_mismatch", "clone_failure_masked",
        "single_gpu_tier", "container_disk_small",
    }
    for d in found:
        assert GH_BODY not in repr(d)
        assert HF[3:] not in repr(d)


@pytest.mark.parametrize(
    "env",
    [
        [("HF_HUB_ENABLE_HF_TRANSFER", "1")],
        [("HF_HOME", "/runpod-volume/hf_cache")],
        [("MODEL_ID", "meta-llama/Llama-3.1-8B-Instruct")],
        [("HF_TOKEN", "{{ RUNPOD_SECRET_hf_token }}")],
        [("BACKEND", "hf_transfer")],
        [("REPO", "https://github.com/org/public-repo.git")],
    ],
)
def test_ordinary_env_values_are_not_secrets(env: list[tuple[str, str]]) -> None:
    """Ordinary values and RunPod secret references raise no secret_in_template."""
    assert only(run(cfg(env=env, volume=VOL)), "secret_in_template") == []


# --- volume_path_mismatch ---------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["HF_HOME", "MODEL_DIR", "TRANSFORMERS_CACHE", "HF_HUB_CACHE", "TORCH_HOME",
            "OUTPUT_PATH", "WEIGHTS_DIR", "VLLM_CACHE_ROOT", "XDG_CACHE_HOME"],
)
def test_storage_env_under_workspace_with_volume_is_a_mismatch(key: str) -> None:
    """A storage env key under /workspace with a network volume attached raises a warning."""
    found = only(run(cfg(env=[(key, "/workspace/models")], volume=VOL)), "volume_path_mismatch")
    assert [d.severity for d in found] == ["warning"]
    d = found[0]
    assert f"{key}=/workspace/models" in d.summary
    assert f"{key}=/runpod-volume/models" in d.remedy
    assert d.evidence["keys"] == key
    assert d.evidence["network_volume_id"] == VOL


def test_workspace_itself_is_a_mismatch() -> None:
    """The value /workspace (no subdirectory) counts as under /workspace."""
    found = only(run(cfg(env=[("HF_HOME", "/workspace")], volume=VOL)), "volume_path_mismatch")
    assert len(found) == 1


@pytest.mark.parametrize(
    ("env", "volume"),
    [
        ([("HF_HOME", "/workspace/hf")], None),  # no volume attached
        ([("HF_HOME", "/runpod-volume/hf")], VOL),  # right path
        ([("GREETING", "/workspace/hello")], VOL),  # not a storage key
        ([("HF_HOME", "/workspace2/hf")], VOL),  # another directory
        ([("HF_HOME", "/data/workspace/hf")], VOL),  # /workspace not at the root
    ],
)
def test_no_volume_path_mismatch(env: list[tuple[str, str]], volume: str | None) -> None:
    """No volume, the right mount, a non-storage key or another directory: nothing."""
    assert only(run(cfg(env=env, volume=volume)), "volume_path_mismatch") == []


def test_several_mismatched_keys_are_listed() -> None:
    """Every mismatched key is in the evidence and the remedy."""
    env = [("HF_HOME", "/workspace/hf"), ("MODEL_DIR", "/workspace/models")]
    d = only(run(cfg(env=env, volume=VOL)), "volume_path_mismatch")[0]
    assert d.evidence["keys"] == "HF_HOME, MODEL_DIR"
    assert "HF_HOME=/runpod-volume/hf, MODEL_DIR=/runpod-volume/models" in d.remedy


# --- clone_failure_masked ---------------------------------------------------------------

REPO = "https://github.com/org/handler.git"


@pytest.mark.parametrize(
    ("docker_args", "how"),
    [
        (f"git clone {REPO} /h || true", "|| true"),
        (f"bash -c 'git clone {REPO} /h || true; python /h/handler.py'", "|| true"),
        (f"git clone {REPO} /h || :", "|| :"),
        (f"git clone {REPO} /h; true", "; true"),
        (f"git clone {REPO} /h 2>/dev/null; python /h/handler.py", "2>/dev/null without a check"),
        (f"git clone {REPO} /h &>/dev/null; python /h/handler.py", "2>/dev/null without a check"),
        (f"git clone {REPO} /h || echo 'clone failed'", "|| echo"),
        (f"if [ ! -d /h ]; then git clone {REPO} /h; fi || true", "|| true"),
    ],
)
def test_masked_clone_is_found(docker_args: str, how: str) -> None:
    """git clone with || true, ; true, || echo or 2>/dev/null and no check is a warning."""
    found = only(run(cfg(docker_args=docker_args)), "clone_failure_masked")
    assert [d.severity for d in found] == ["warning"]
    assert found[0].evidence["masking"] == how
    assert how in found[0].summary
    assert "exit" in found[0].remedy


@pytest.mark.parametrize(
    "docker_args",
    [
        "",
        f"git clone {REPO} /h",
        f"git clone {REPO} /h && python /h/handler.py",
        f"git clone {REPO} /h 2>/dev/null || exit 1",
        f"git clone {REPO} /h || {{ echo failed; exit 1; }}",
        f"set -e; git clone {REPO} /h 2>/dev/null; python /h/handler.py",
        f"if ! git clone {REPO} /h 2>/dev/null; then exit 1; fi",
        f"git clone {REPO} /h >/dev/null 2>&1 && python /h/handler.py",
        f"bash -c 'if [ ! -d /h ]; then git clone {REPO} /h; fi && bash /h/start.sh'",
        "cd /h && git pull 2>/dev/null || true",  # a pull, not a clone
        "python -u handler.py || true",
    ],
)
def test_checked_or_absent_clone_is_fine(docker_args: str) -> None:
    """A checked clone (&&, || exit, set -e, if !), a plain one, or no clone: nothing."""
    assert only(run(cfg(docker_args=docker_args)), "clone_failure_masked") == []


def test_clone_excerpt_hides_url_credentials() -> None:
    """The quoted clone command hides credentials in the URL, of any shape."""
    args = "git clone https://deploy:plainpw@git.example.com/o/r /h || true"
    d = only(run(cfg(docker_args=args)), "clone_failure_masked")[0]
    assert "plainpw" not in repr(d)
    assert d.evidence["command"] == "git clone https://****@git.example.com/o/r /h"
    assert mask(d.evidence["command"]) == d.evidence["command"]


# --- single_gpu_tier ----------------------------------------------------------------------


def test_single_tier_with_volume_suggests_compatible_tiers() -> None:
    """A volume and one tier raise info with every compatible tier in a saveEndpoint."""
    found = only(run(cfg(volume=VOL, gpu_ids="AMPERE_48")), "single_gpu_tier")
    assert [d.severity for d in found] == ["info"]
    d = found[0]
    assert d.evidence["compatible_tiers"] == "AMPERE_48,ADA_48_PRO,AMPERE_80,ADA_80_PRO"
    assert 'gpuIds: "AMPERE_48,ADA_48_PRO,AMPERE_80,ADA_80_PRO"' in posted(d.remedy)
    assert "saveEndpoint" in d.remedy


def test_single_tier_ignores_negations() -> None:
    """A negated GPU type (-NVIDIA ...) is not a tier: one tier plus a negation still raises."""
    c = cfg(volume=VOL, gpu_ids="ADA_24,-NVIDIA GeForce RTX 4090")
    assert len(only(run(c), "single_gpu_tier")) == 1


@pytest.mark.parametrize(
    ("gpu_ids", "volume"),
    [("AMPERE_48", None), ("AMPERE_48,ADA_48_PRO", VOL)],
)
def test_no_single_tier_finding(gpu_ids: str, volume: str | None) -> None:
    """No volume, or two tiers: nothing."""
    assert only(run(cfg(volume=volume, gpu_ids=gpu_ids)), "single_gpu_tier") == []


def test_single_tier_without_template_still_audited() -> None:
    """single_gpu_tier needs no template; the template checks are skipped without one."""
    c = config(template=None, network_volume_id=VOL, gpu_ids="AMPERE_24")
    assert codes(run(c)) == ["single_gpu_tier"]


# --- container_disk_small ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("disk", "volume", "raised"),
    [
        (19, VOL, True),
        (20, VOL, False),
        (49, None, True),
        (50, None, False),
        (None, None, False),
    ],
)
def test_container_disk_boundaries(disk: int | None, volume: str | None, raised: bool) -> None:
    """Under 20 GB with a volume, under 50 GB without one: a warning; at the limit: nothing."""
    found = only(run(cfg(disk=disk, volume=volume, gpu_ids="AMPERE_48,ADA_48_PRO")),
                 "container_disk_small")
    assert bool(found) is raised
    if found:
        d = found[0]
        assert d.severity == "warning"
        assert d.evidence["container_disk_gb"] == disk
        assert d.evidence["minimum_gb"] == (20 if volume else 50)
        assert "2.5x" in d.remedy


def test_container_disk_thresholds_are_settable() -> None:
    """The thresholds come from Thresholds."""
    th = Thresholds(container_disk_no_volume_min_gb=100)
    assert len(only(run(cfg(disk=60), th), "container_disk_small")) == 1



# --- REST v2 mode -------------------------------------------------------------------------


def run_rest(c: EndpointConfig) -> list[Diagnosis]:
    """The audit with the latest observation in REST v2 mode."""
    obs = [observation(k, [sample(Health(), config=c)], account=account(),
                       control_plane="rest") for k in (1, 2)]
    return audit.diagnose(build(obs), TH)


def _patch(remedy: str) -> dict[str, object]:
    """The body of the remedy's first PATCH."""
    for argv in curls(remedy):
        if "-X" in argv and argv[argv.index("-X") + 1] == "PATCH":
            return json.loads(argv[argv.index("-d") + 1])  # type: ignore[no-any-return]
    raise AssertionError(remedy)


def test_rest_volume_path_fix_patches_the_whole_env_on_the_endpoint() -> None:
    """The fix is a PATCH of the whole env with the path moved under /runpod-volume, the
    other values kept and a credential replaced by a secret reference."""
    c = cfg(volume=VOL, env=[("HF_HOME", "/workspace/hf"), ("HF_TOKEN", HF), ("A", "1")])
    (d,) = only(run_rest(c), "volume_path_mismatch")
    assert _patch(d.remedy) == {"env": {
        "HF_HOME": "/runpod-volume/hf", "HF_TOKEN": "{{ RUNPOD_SECRET_HF_TOKEN }}", "A": "1",
    }}
    assert "editing the template alone changes nothing" in d.remedy
    assert '{"templateId": "tpl-9"}' in d.remedy
    assert HF[3:] not in d.remedy


def test_rest_container_disk_and_secret_fixes() -> None:
    """A small disk is raised with {"disk": N}; a token in env becomes a secret reference
    and one in the start command a placeholder, never the token."""
    (disk,) = only(run_rest(cfg(disk=10, volume=VOL)), "container_disk_small")
    assert _patch(disk.remedy) == {"disk": 20}
    c = cfg(docker_args=f"git clone https://{GHP}@github.com/o/r /x", env=[("HF_TOKEN", HF)])
    (secret,) = only(run_rest(c), "secret_in_template")
    assert _patch(secret.remedy) == {
        "args": "<the start command without the token>",
        "env": {"HF_TOKEN": "{{ RUNPOD_SECRET_HF_TOKEN }}"},
    }
    assert GH_BODY not in repr(secret)
