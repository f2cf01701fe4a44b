"""deploy/kubernetes: up to date, valid for Kubernetes and prometheus-operator, one source.

Built-in kinds are validated strictly (unknown fields rejected) with kubernetes-validate,
against the oldest and the newest Kubernetes it ships schemas for. ServiceMonitor and
PrometheusRule are CRDs, which kubernetes-validate cannot check: they are parsed by
cloudcoil's prometheus-operator models (generated from the CRDs' OpenAPI schemas: required
fields, enums, patterns), and a round trip through the model must give the manifest back,
which rejects unknown fields (the models would silently drop them).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from daemonkit import (
    PYTHON,
    Proc,
    base_env,
    free_port,
    http,
    metric_samples,
    procs,
    start_simulator,
    wait_until,
    write_yaml,
)

from monitor.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
BUILTIN_KINDS = {"ConfigMap", "Service", "Deployment", "PersistentVolumeClaim", "StatefulSet"}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
SECRET_ENV = {
    "RUNPOD_API_KEY": "k8s-test-key-0123456789abcdef",
    "RUNPOD_MONITOR_WRITE_TOKEN": "k8s-test-write-token-0123456789",
}


@cache
def generator() -> ModuleType:
    """deploy/kubernetes/generate.py, imported from its path."""
    spec = importlib.util.spec_from_file_location("k8s_generate", K8S / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def manifests() -> dict[str, dict[str, Any]]:
    """Every committed manifest, by its path under deploy/kubernetes."""
    out = {}
    for path in sorted(K8S.rglob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
        assert len(docs) == 1, path
        out[str(path.relative_to(K8S))] = docs[0]
    return out


def one(kind: str, name: str = "runpod-monitor") -> dict[str, Any]:
    found = [m for m in manifests().values()
             if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


def workloads() -> list[dict[str, Any]]:
    return [one("Deployment"), one("StatefulSet")]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


# -- the files ---------------------------------------------------------------------------


def test_committed_manifests_match_generator(tmp_path: Path) -> None:
    """`generate.py --check` passes on the committed files and fails on an edited one."""
    script = str(K8S / "generate.py")
    ok = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert set(manifests()) == set(generator().FILES)
    subprocess.run([sys.executable, script, "--output", str(tmp_path)], check=True, timeout=60)
    edited = tmp_path / "base" / "service.yaml"
    edited.write_text(edited.read_text().replace("9108", "9109"))
    bad = subprocess.run([sys.executable, script, "--check", "--output", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "base/service.yaml" in bad.stderr


def test_kinds() -> None:
    """One of each promised resource: the kinds the issue lists, nothing more."""
    kinds = sorted(m["kind"] for m in manifests().values())
    assert kinds == sorted(["ConfigMap", "Service", "Service", "ServiceMonitor",
                            "PrometheusRule", "Deployment", "PersistentVolumeClaim",
                            "StatefulSet"])


# -- schemas -----------------------------------------------------------------------------


def _k8s_versions() -> tuple[str, str]:
    from kubernetes_validate import utils

    versions = utils.all_versions()
    return versions[0], versions[-1]


@pytest.mark.parametrize("which", ["oldest", "newest"])
def test_builtin_kinds_are_valid_kubernetes(which: str) -> None:
    """Each built-in resource passes Kubernetes' own OpenAPI schema, strictly."""
    import kubernetes_validate

    version = _k8s_versions()[0 if which == "oldest" else 1]
    checked = 0
    for manifest in manifests().values():
        if manifest["kind"] in BUILTIN_KINDS:
            kubernetes_validate.validate(manifest, version, strict=True)
            checked += 1
    assert checked == 6


def test_strict_validation_catches_a_typo() -> None:
    """The strict check is not a pass-through: a misspelt field or a wrong type fails it."""
    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError

    version = _k8s_versions()[1]
    bad = one("Deployment")
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(bad, version, strict=True)
    bad = one("StatefulSet")
    bad["spec"]["replicas"] = "three"
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(bad, version, strict=True)


def _crd_model(kind: str) -> Any:
    from cloudcoil.models.prometheus_operator import v1

    return {"ServiceMonitor": v1.ServiceMonitor, "PrometheusRule": v1.PrometheusRule}[kind]


def _through_crd_model(manifest: dict[str, Any]) -> dict[str, Any]:
    """`manifest` parsed by its prometheus-operator model and dumped back as the API sees it."""
    model = _crd_model(manifest["kind"]).model_validate(manifest)
    back: dict[str, Any] = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return back


@pytest.mark.parametrize("kind", sorted(CRD_KINDS))
def test_crds_are_valid_for_prometheus_operator(kind: str) -> None:
    """ServiceMonitor and PrometheusRule pass the operator's CRD schema, with no field lost."""
    manifest = one(kind)
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    assert _through_crd_model(manifest) == manifest


def test_crd_check_catches_errors() -> None:
    """An unknown field, a bad enum and a malformed duration each fail the CRD check."""
    import pydantic

    unknown = one("ServiceMonitor")
    unknown["spec"]["endpoints"][0]["scrapeIntervall"] = "30s"
    assert _through_crd_model(unknown) != unknown
    scheme = one("ServiceMonitor")
    scheme["spec"]["endpoints"][0]["scheme"] = "ftp"
    with pytest.raises(pydantic.ValidationError):
        _through_crd_model(scheme)
    duration = one("PrometheusRule")
    duration["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    with pytest.raises(pydantic.ValidationError):
        _through_crd_model(duration)


# -- one source --------------------------------------------------------------------------


def test_prometheusrule_rules_equal_alerts_yml() -> None:
    """The PrometheusRule's groups are deploy/prometheus/alerts.yml's, rule for rule."""
    alerts = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    groups = one("PrometheusRule")["spec"]["groups"]
    assert groups == alerts["groups"]
    assert sum(len(g["rules"]) for g in groups) >= 5


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not on PATH")
def test_prometheusrule_rules_pass_promtool(tmp_path: Path) -> None:
    """What the operator hands Prometheus (spec.groups) is a rule file promtool accepts."""
    rules = write_yaml(tmp_path / "rules.yml", {"groups": one("PrometheusRule")["spec"]["groups"]})
    done = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_configmap_is_the_docker_config() -> None:
    """The mounted config.yaml is deploy/config.docker.yaml byte for byte."""
    data = one("ConfigMap")["data"]
    assert data == {"config.yaml": (ROOT / "deploy" / "config.docker.yaml").read_text()}


def test_configmap_config_loads_with_the_pods_environment(tmp_path: Path) -> None:
    """The config, given the env the pod gets, is valid; its state lives on the volume."""
    env = {e["name"]: e.get("value", "") for e in container(one("Deployment"))["env"]}
    env.update(SECRET_ENV)
    path = tmp_path / "config.yaml"
    path.write_text(one("ConfigMap")["data"]["config.yaml"])
    path.chmod(0o644)   # a ConfigMap's files are world-readable: no secret may be inline
    settings = load_settings(path, env=env)
    assert settings.http.listen == "0.0.0.0:9108"
    assert settings.runpod.api_key is not None
    mounts = {m["name"]: m["mountPath"] for m in container(one("Deployment"))["volumeMounts"]}
    assert Path(settings.state.path).parent == Path(mounts["state"])


# -- what the pods promise -----------------------------------------------------------------


def _dockerfile_uid() -> int:
    text = (ROOT / "Dockerfile").read_text()
    m = re.search(r"^USER (\d+):(\d+)$", text, re.MULTILINE)
    assert m is not None
    return int(m.group(1))


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
def test_pod_is_locked_down(kind: str) -> None:
    """Non-root as the image's user, read-only root filesystem, no privilege, no API token."""
    workload = one(kind)
    pod = workload["spec"]["template"]["spec"]
    c = container(workload)
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == _dockerfile_uid()
    assert pod["securityContext"]["fsGroup"] == _dockerfile_uid()
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    # every writable path is a volume: the state, and a scratch /tmp
    writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/var/lib/runpod-monitor", "/tmp"}


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
def test_probes_secrets_and_state(kind: str) -> None:
    """Probes on /healthz; the API key and the write token from the Secret, required; a
    claim for the state; the config from the ConfigMap where the image's CMD reads it."""
    workload = one(kind)
    c = container(workload)
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    assert {"name": "http", "containerPort": 9108, "protocol": "TCP"} in c["ports"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"]
            if "secretKeyRef" in e.get("valueFrom", {})}
    assert set(refs) == {"RUNPOD_API_KEY", "RUNPOD_MONITOR_WRITE_TOKEN", "SLACK_WEBHOOK_URL",
                         "SLACK_BOT_TOKEN"}
    for name, ref in refs.items():
        assert ref["name"] == "runpod-monitor"
        assert ref["key"] == name
        assert ref.get("optional", False) is name.startswith("SLACK_"), name
    assert not [e for e in c["env"] if "KEY" in e["name"] or "TOKEN" in e["name"]
                if "value" in e], "a secret inline"
    assert c["args"] == ["run", "--config", "/etc/runpod-monitor/config.yaml"]
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "runpod-monitor"
    if kind == "Deployment":
        claim = volumes["state"]["persistentVolumeClaim"]["claimName"]
        assert one("PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert workload["spec"]["replicas"] == 1
        assert workload["spec"]["strategy"] == {"type": "Recreate"}
    else:
        assert "state" not in volumes
        assert [t["metadata"]["name"] for t in workload["spec"]["volumeClaimTemplates"]] == [
            "state"]


def test_statefulset_shard_count_is_its_replicas() -> None:
    """SHARD_COUNT (the N of --shard I/N) equals the StatefulSet's replicas."""
    sts = one("StatefulSet")
    env = {e["name"]: e for e in container(sts)["env"]}
    assert int(env["SHARD_COUNT"]["value"]) == sts["spec"]["replicas"] > 1
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert sts["spec"]["serviceName"] == one("Service", "runpod-monitor-shards")["metadata"][
        "name"]


def test_servicemonitor_scrapes_the_service_once() -> None:
    """The ServiceMonitor selects the `runpod-monitor` Service (so job="runpod-monitor", as
    the rules and the dashboard expect) by a port it has, and not the headless one."""
    selector = one("ServiceMonitor")["spec"]["selector"]["matchLabels"]
    services = [m for m in manifests().values() if m["kind"] == "Service"]
    picked = [s["metadata"]["name"] for s in services
              if selector.items() <= s["metadata"]["labels"].items()]
    assert picked == ["runpod-monitor"]
    ports = {p["name"] for p in one("Service")["spec"]["ports"]}
    assert {e["port"] for e in one("ServiceMonitor")["spec"]["endpoints"]} <= ports
    pod_labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    for s in services:
        assert s["spec"]["selector"].items() <= pod_labels.items()
    assert 'up{job="runpod-monitor"}' in (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()


# -- the shard entrypoint, run for real ------------------------------------------------------


SCENARIO = {
    "name": "k8s-shards", "interval_s": 30,
    "account": {"clientBalance": 500.0, "currentSpendPerHr": 1.0},
    # two daemons at one cycle a second: more REST v2 calls than its default 60 a minute
    "v2": {"quota": {"minute": 100_000, "hour": 10_000_000, "day": 100_000_000}},
    "endpoints": [{"id": f"k8sshard{i:06d}", "name": f"shard-ep-{i}", "gpuIds": "AMPERE_48",
                   "workersMax": 2, "health": {"workers": {"idle": 1}}} for i in range(8)],
    "steps": [{"cycles": 100}],
}


@pytest.mark.integration
@pytest.mark.skipif(not Path("/bin/sh").exists(), reason="no /bin/sh")
def test_statefulset_entrypoint_turns_the_ordinal_into_a_shard(tmp_path: Path) -> None:
    """The StatefulSet's command, run by /bin/sh as in the pod with POD_NAME runpod-monitor-0
    and -1 of 2, starts two daemons that watch disjoint halves covering every endpoint, and
    only ordinal 0 exports the account."""
    c = container(one("StatefulSet"))
    scenario = write_yaml(tmp_path / "scenario.yaml", SCENARIO)
    config = yaml.safe_load(one("ConfigMap")["data"]["config.yaml"])
    exposed: dict[int, list[tuple[str, dict[str, str], float]]] = {}
    with procs(tmp_path) as group:
        url = start_simulator(group, scenario, SECRET_ENV["RUNPOD_API_KEY"])
        bases = {}
        for ordinal in (0, 1):
            cfg = dict(config, interval_s=1)
            cfg["runpod"] = {**config["runpod"], "graphql_url": f"{url}/graphql",
                             "rest_url": f"{url}/v2"}
            cfg["state"] = {"path": str(tmp_path / f"state-{ordinal}.db")}
            path = write_yaml(tmp_path / f"config-{ordinal}.yaml", cfg, mode=0o644)
            port = free_port()
            env = base_env(
                **SECRET_ENV, POD_NAME=f"runpod-monitor-{ordinal}", SHARD_COUNT="2",
                RUNPOD_MONITOR_LISTEN=f"127.0.0.1:{port}",
                PATH=f"{Path(PYTHON).parent}:/usr/bin:/bin",
            )
            args = [*c["command"], "run", "--config", str(path)]
            assert args[:2] == ["/bin/sh", "-c"]
            out, err = tmp_path / f"shard{ordinal}.out", tmp_path / f"shard{ordinal}.err"
            with out.open("wb") as fout, err.open("wb") as ferr:
                popen = subprocess.Popen(args, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                                         stdout=fout, stderr=ferr, start_new_session=True)
            proc = Proc(f"shard{ordinal}", popen, out, err)
            group.started.append(proc)
            bases[ordinal] = (proc, f"http://127.0.0.1:{port}")
        with http() as client:
            for ordinal, (proc, base) in bases.items():
                def scraped(proc: Proc = proc, base: str = base) -> Any:
                    if not proc.alive():
                        raise AssertionError(proc.tail())
                    try:
                        text = client.get(f"{base}/metrics").text
                    except OSError:
                        return None
                    samples = metric_samples(text)
                    return samples if any(s[0] == "runpod_endpoint_up" for s in samples) else None

                exposed[ordinal] = wait_until(f"shard {ordinal}'s endpoints", scraped, 30)
    watched = {o: {s[1]["endpoint_id"] for s in samples if s[0] == "runpod_endpoint_up"}
               for o, samples in exposed.items()}
    everything = {e["id"] for e in SCENARIO["endpoints"]}
    assert watched[0]
    assert watched[1]
    assert not watched[0] & watched[1]
    assert watched[0] | watched[1] == everything
    accounts = {o: [s for s in samples if s[0] == "runpod_account_balance_usd"]
                for o, samples in exposed.items()}
    assert [s[2] for s in accounts[0]] == [500.0]
    assert accounts[1] == []
