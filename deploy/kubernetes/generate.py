"""The Kubernetes manifests of runpod-monitor, generated from one pod template.

    python deploy/kubernetes/generate.py            # writes deploy/kubernetes/**/*.yaml
    python deploy/kubernetes/generate.py --check    # exit 1 when a committed file is stale

Four directories, applied with `kubectl apply -f` (docs/deploy.md, "Kubernetes"):
  base/                 ConfigMap (deploy/config.docker.yaml, verbatim) and Service
  single/               one replica: a Deployment and the PVC of its SQLite state
  sharded/              several: a StatefulSet whose pod ordinal becomes `--shard I/N`,
                        one PVC each, and its headless Service
  prometheus-operator/  ServiceMonitor and PrometheusRule (deploy/prometheus/alerts.yml's
                        groups, verbatim), for clusters that run the operator

The Deployment and the StatefulSet share the same pod spec (`pod_spec`), so probes,
secrets, the non-root user and the read-only root filesystem cannot drift apart; the
ConfigMap and the PrometheusRule are copies of the files Docker Compose uses, so there is
one source for the configuration and one for the alert rules.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
DEPLOY = HERE.parent
CONFIG_SOURCE = DEPLOY / "config.docker.yaml"
ALERTS_SOURCE = DEPLOY / "prometheus" / "alerts.yml"

NAME = "runpod-monitor"
SECRET = NAME
IMAGE = "runpod-monitor:0.1.0"   # build it from the Dockerfile and push it where the cluster pulls
PORT = 9108
UID = 10001                      # the image's runpod-monitor user and group (Dockerfile)
SHARDS = 3
CONFIG_DIR = "/etc/runpod-monitor"
STATE_DIR = "/var/lib/runpod-monitor"   # state.path of deploy/config.docker.yaml lives here
LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": NAME}

Manifest = dict[str, Any]

# The StatefulSet's pod name is <statefulset>-<ordinal>; the shell keeps what follows the
# last "-". The pod-index label (apps.kubernetes.io/pod-index) would avoid the shell, but
# only from Kubernetes 1.28 on; the pod name works on every version.
SHARD_ENTRYPOINT = 'exec runpod-monitor "$@" --shard "${POD_NAME##*-}/${SHARD_COUNT}"'


def _meta(name: str, **labels: str) -> Manifest:
    return {"name": name, "labels": {**LABELS, **labels}}


def _secret_env(env: str, *, optional: bool) -> Manifest:
    ref: Manifest = {"name": SECRET, "key": env}
    if optional:
        ref["optional"] = True
    return {"name": env, "valueFrom": {"secretKeyRef": ref}}


def container_env() -> list[Manifest]:
    """The variables deploy/config.docker.yaml reads, secrets from the `runpod-monitor` Secret.

    The API key and the write token are required: without either key in the Secret the pod
    does not start (and the daemon itself refuses write routes on a non-loopback listener
    without a credential). Slack is optional.
    """
    return [
        {"name": "RUNPOD_MONITOR_LISTEN", "value": f"0.0.0.0:{PORT}"},
        _secret_env("RUNPOD_API_KEY", optional=False),
        _secret_env("RUNPOD_MONITOR_WRITE_TOKEN", optional=False),
        _secret_env("SLACK_WEBHOOK_URL", optional=True),
        _secret_env("SLACK_BOT_TOKEN", optional=True),
    ]


def pod_spec(*, sharded: bool, state_volume: Manifest | None) -> Manifest:
    """The pod both workloads run: non-root, read-only root filesystem, probes on /healthz."""
    def probe() -> Manifest:
        return {"httpGet": {"path": "/healthz", "port": "http"}, "timeoutSeconds": 5}

    container: Manifest = {
        "name": NAME,
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        **({"command": ["/bin/sh", "-c", SHARD_ENTRYPOINT, NAME]} if sharded else {}),
        "args": ["run", "--config", f"{CONFIG_DIR}/config.yaml"],
        "env": container_env(),
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        # /healthz answers 503 once no probe cycle completed for 3 intervals (a wedged
        # daemon); it stays 200 while RunPod itself fails, which the alerts report instead.
        "readinessProbe": {**probe(), "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {**probe(), "periodSeconds": 30, "failureThreshold": 3},
        "resources": {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "state", "mountPath": STATE_DIR},
            # Python and SQLite may want a scratch directory; the root filesystem is read-only
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 (a mount in the pod)
        ],
    }
    if sharded:
        container["env"] = [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            # must equal the StatefulSet's replicas (tests/test_kubernetes.py checks it)
            {"name": "SHARD_COUNT", "value": str(SHARDS)},
            *container["env"],
        ]
    volumes: list[Manifest] = [
        {"name": "config", "configMap": {"name": NAME}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    if state_volume is not None:
        volumes.append(state_volume)
    return {
        "automountServiceAccountToken": False,   # the daemon never calls the Kubernetes API
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,                      # the state volume is writable by that group
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }


def _state_claim(name: str) -> Manifest:
    return {
        "metadata": {"name": name, "labels": dict(LABELS)},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def configmap() -> Manifest:
    return {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(NAME),
        "data": {"config.yaml": CONFIG_SOURCE.read_text(encoding="utf-8")},
    }


def service() -> Manifest:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(NAME, **{"app.kubernetes.io/component": "server"}),
        "spec": {
            "selector": {"app.kubernetes.io/name": NAME},
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def servicemonitor() -> Manifest:
    """Scrapes every pod behind the Service; the job label is the Service's name, as the
    alert rules and the dashboard expect (`up{job="runpod-monitor"}`)."""
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": _meta(NAME),
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": NAME,
                                         "app.kubernetes.io/component": "server"}},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s",
                           "scrapeTimeout": "10s"}],
        },
    }


def prometheusrule() -> Manifest:
    groups = yaml.safe_load(ALERTS_SOURCE.read_text(encoding="utf-8"))["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": _meta(NAME),
        "spec": {"groups": groups},
    }


def deployment() -> Manifest:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(NAME),
        "spec": {
            "replicas": 1,
            # one writer of the SQLite file and of the alerts: never two pods at once
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
            "template": {
                "metadata": {"labels": dict(LABELS)},
                "spec": pod_spec(sharded=False, state_volume={
                    "name": "state", "persistentVolumeClaim": {"claimName": f"{NAME}-state"},
                }),
            },
        },
    }


def pvc() -> Manifest:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", **_state_claim(f"{NAME}-state")}


def statefulset() -> Manifest:
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta(NAME),
        "spec": {
            "replicas": SHARDS,
            "serviceName": f"{NAME}-shards",
            # shards are independent: start and replace them all at once
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
            "template": {
                "metadata": {"labels": dict(LABELS)},
                "spec": pod_spec(sharded=True, state_volume=None),
            },
            "volumeClaimTemplates": [_state_claim("state")],
        },
    }


def headless_service() -> Manifest:
    """The StatefulSet's governing Service (stable pod DNS names); not scraped."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(f"{NAME}-shards", **{"app.kubernetes.io/component": "shards"}),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {"app.kubernetes.io/name": NAME},
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


FILES: dict[str, tuple[str, Any]] = {
    "base/configmap.yaml": ("deploy/config.docker.yaml", configmap),
    "base/service.yaml": ("", service),
    "prometheus-operator/servicemonitor.yaml": ("", servicemonitor),
    "prometheus-operator/prometheusrule.yaml": ("deploy/prometheus/alerts.yml", prometheusrule),
    "single/deployment.yaml": ("", deployment),
    "single/pvc.yaml": ("", pvc),
    "sharded/statefulset.yaml": ("", statefulset),
    "sharded/service-headless.yaml": ("", headless_service),
}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the embedded config) as literal blocks, readable in review;
    no anchors or aliases, which many YAML tools around Kubernetes do not expect."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(relpath: str) -> str:
    """One manifest file's text: a header naming its sources, then the YAML."""
    source, build = FILES[relpath]
    origin = f" from {source}" if source else ""
    header = f"# Generated by deploy/kubernetes/generate.py{origin}.\n# Edit that, not this file.\n"
    return header + yaml.dump(build(), Dumper=_Dumper, sort_keys=False, width=100,
                              allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a committed manifest differs from the generated one")
    parser.add_argument("--output", type=Path, default=HERE,
                        help="directory to write to or check (default: beside this script)")
    args = parser.parse_args(argv)
    stale = []
    for relpath in FILES:
        path = args.output / relpath
        text = render(relpath)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(relpath)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale: {', '.join(stale)}: run python deploy/kubernetes/generate.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
