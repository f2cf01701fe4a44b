"""Fuzzing with hypothesis: every RunPod response parser, the client's whole decode path on
arbitrary HTTP answers, config loading and scenario loading never raise an unhandled
exception; each answers a value or its own error type.

Each target tries FUZZ_EXAMPLES inputs (default 400 in CI); the count of inputs actually
tried is printed per target (`-s`); docs/reliability.md records the counts of deeper runs.
"""

from __future__ import annotations

import asyncio
import math
import os
import string
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proxykit import LoopbackProxy

from model.observation import FAILURE_KINDS, RETIRED, Health, Job
from monitor.config import ConfigError, Settings, load_settings, settings_from_dict
from monitor.runpod import Failure, Myself, Ok, RunPodClient
from monitor.runpod.parse import (
    NOT_JSON,
    decode_json,
    error_message,
    graphql_errors,
    is_missing_job,
    is_not_found,
    parse_health,
    parse_job,
    parse_jobs,
    parse_myself,
    parse_retry_after,
)
from monitor.simulator import Scenario, ScenarioError, load_scenario
from rules.thresholds import Thresholds

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "400"))
TRIED: Counter[str] = Counter()
KEY = "rpa_FUZZSECRET0123456789abcdefXYZ"


def fuzz(
    name: str, strategy: st.SearchStrategy[Any], check: Callable[[Any], None],
    examples: int = EXAMPLES,
) -> None:
    """Run `check` on `examples` inputs drawn from `strategy`; count and print them."""

    # CI replays the same inputs every run (a red CI must be reproducible); local runs
    # draw new ones each time, which is where new bugs come from
    @settings(max_examples=examples, deadline=None, database=None,
              derandomize=bool(os.environ.get("CI")),
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much])
    @given(strategy)
    def run(value: Any) -> None:
        TRIED[name] += 1
        check(value)

    run()
    print(f"\nfuzz {name}: {TRIED[name]} inputs")


E = TypeVar("E", bound=Exception)
V = TypeVar("V")


def either(call: Callable[[], V], error: type[E]) -> V | E:
    """The value of `call()`, or the `error` it raised; any other exception propagates."""
    try:
        return call()
    except error as exc:
        return exc


# ---------------------------------------------------------------- strategies

SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from([0, 1, -1, 3.0, 2.5, "", "0", "ok", "Not Found", "request does not exist",
                     "IN_QUEUE", "COMPLETED", "FAILED", "null", 10**20, -0.0]),
)


def trees(keys: list[str], leaves: st.SearchStrategy[Any] = SCALARS,
          max_leaves: int = 15) -> st.SearchStrategy[Any]:
    """JSON/YAML-like trees whose mapping keys are mostly from `keys` (to reach deep code)."""
    key = st.one_of(st.sampled_from(keys), st.sampled_from(keys), st.text(max_size=6))
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(key, inner, max_size=6),
        ),
        max_leaves=max_leaves,
    )


HEALTH_KEYS = ["jobs", "workers", "completed", "failed", "inProgress", "inQueue", "retried",
               "idle", "initializing", "ready", "running", "throttled", "unhealthy", "message"]
JOB_KEYS = ["requests", "id", "status", "delayTime", "executionTime", "workerId", "error",
            "output", "message"]
MYSELF_KEYS = [
    "data", "myself", "errors", "message", "id", "clientBalance", "currentSpendPerHr",
    "spendLimit", "endpoints", "networkVolumes", "pods", "name", "gpuIds", "networkVolumeId",
    "workersMin", "workersMax", "workersStandby", "idleTimeout", "scalerType", "scalerValue",
    "locations", "template", "templateId", "imageName", "dockerArgs", "containerDiskInGb",
    "env", "key", "value", "size", "dataCenterId", "desiredStatus", "costPerHr",
]
COUNT = st.one_of(st.integers(min_value=-3, max_value=10**6), SCALARS)


def _health_shaped() -> st.SearchStrategy[Any]:
    section = st.dictionaries(st.sampled_from(HEALTH_KEYS), COUNT, max_size=8)
    return st.fixed_dictionaries({}, optional={"jobs": section | SCALARS,
                                               "workers": section | SCALARS})


def _job_shaped() -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {"id": st.text(max_size=8) | SCALARS, "status": st.sampled_from(
            ["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", ""]) | SCALARS},
        optional={"delayTime": COUNT, "executionTime": COUNT, "workerId": SCALARS,
                  "error": trees(JOB_KEYS, max_leaves=6), "output": trees(JOB_KEYS, max_leaves=6)},
    )


def _myself_shaped() -> st.SearchStrategy[Any]:
    leaf = trees(MYSELF_KEYS, max_leaves=8)
    endpoint = st.fixed_dictionaries(
        {"id": st.text(max_size=8) | SCALARS},
        optional={k: leaf for k in MYSELF_KEYS[12:26]},
    )
    myself = st.fixed_dictionaries(
        {}, optional={"clientBalance": COUNT, "currentSpendPerHr": COUNT, "spendLimit": COUNT,
                      "endpoints": st.lists(endpoint, max_size=3) | SCALARS,
                      "networkVolumes": st.lists(leaf, max_size=3) | SCALARS,
                      "pods": st.lists(leaf, max_size=3) | SCALARS},
    )
    return st.fixed_dictionaries(
        {"data": st.fixed_dictionaries({"myself": myself}) | SCALARS},
        optional={"errors": leaf},
    )


HEALTH_BODIES = st.one_of(trees(HEALTH_KEYS), _health_shaped())
JOBS_BODIES = st.one_of(trees(JOB_KEYS),
                        st.fixed_dictionaries({"requests": st.lists(_job_shaped(), max_size=4)
                                               | SCALARS}))
JOB_BODIES = st.one_of(trees(JOB_KEYS), _job_shaped())
MYSELF_BODIES = st.one_of(trees(MYSELF_KEYS), _myself_shaped())


# ---------------------------------------------------------------- the parsers


def _nonneg_ints(health: Health) -> bool:
    return all(isinstance(v, int) and v >= 0 for v in vars_of(health))


def vars_of(obj: Any) -> list[Any]:
    return [getattr(obj, f) for f in obj.__dataclass_fields__]


def test_fuzz_parse_health() -> None:
    """parse_health on arbitrary and health-shaped bodies: a Health of counts >= 0, or None."""
    def check(body: Any) -> None:
        out = parse_health(body)
        assert out is None or (isinstance(out, Health) and _nonneg_ints(out))

    fuzz("parse_health", HEALTH_BODIES, check)


def test_fuzz_parse_jobs_and_job() -> None:
    """parse_jobs and parse_job on any body: well-formed Jobs, or None."""
    def good(job: Job) -> bool:
        return (isinstance(job.id, str) and bool(job.id) and isinstance(job.status, str)
                and all(v is None or (isinstance(v, int) and v >= 0)
                        for v in (job.delay_ms, job.execution_ms))
                and (job.error is None or isinstance(job.error, str)))

    def check_jobs(body: Any) -> None:
        out = parse_jobs(body)
        assert out is None or (isinstance(out, tuple) and all(good(j) for j in out))

    def check_job(body: Any) -> None:
        out = parse_job(body)
        assert out is None or good(out)
        assert isinstance(is_missing_job(body), bool)

    fuzz("parse_jobs", JOBS_BODIES, check_jobs)
    fuzz("parse_job", JOB_BODIES, check_job)


def test_fuzz_parse_myself_and_error_bodies() -> None:
    """parse_myself and the error-body readers on any body: a sane value, or None; no exception."""
    def check(body: Any) -> None:
        out = parse_myself(body)
        if out is not None:
            assert isinstance(out, Myself)
            if out.account is not None:
                assert math.isfinite(out.account.balance)
                assert out.account.spend_per_hr >= 0
            assert all(isinstance(e.id, str) and e.id for e in out.endpoints)
        errors = graphql_errors(body)
        assert all(isinstance(e, str) and len(e) <= 200 for e in errors)
        assert len(error_message(body)) <= 200
        assert isinstance(is_not_found(body), bool)

    fuzz("parse_myself", MYSELF_BODIES, check)


def test_fuzz_decode_json_and_retry_after() -> None:
    """decode_json on any bytes and parse_retry_after on any text never raise."""
    def mangle(data: tuple[Any, int, bytes]) -> bytes:
        tree, cut, junk = data
        try:
            raw = yaml.safe_dump(tree).encode() if cut % 2 else repr(tree).encode()
        except (yaml.YAMLError, ValueError, RecursionError):
            raw = b""
        return raw[: cut % (len(raw) + 1)] + junk

    raw_bytes = st.one_of(
        st.binary(max_size=300),
        st.builds(lambda s: s.encode(), st.text(max_size=200)),
        st.tuples(trees(MYSELF_KEYS), st.integers(0, 10**6), st.binary(max_size=8)).map(mangle),
        st.sampled_from([b"[" * 100_000, b'{"a":' * 50_000, b"NaN", b"Infinity", b"-Infinity",
                         b"1e999", b"\xff\xfe{}", b'"\\ud800"', b"\x00"]),
    )

    def check_bytes(raw: bytes) -> None:
        out = decode_json(raw)
        assert out is NOT_JSON or out is None or isinstance(out, dict | list | str | int | float)

    retry = st.one_of(
        st.none(), st.text(max_size=40),
        st.sampled_from(["0", "-5", "1e309", "nan", "inf", "120", " 3 ",
                         "Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00",
                         "Mon, 99 Foo 9999 99:99:99 GMT", "Fri, 31 Dec 9999 23:59:59 GMT"]),
    )

    def check_retry(value: str | None) -> None:
        out = parse_retry_after(value, 1_767_225_600.0)
        assert out is None or (math.isfinite(out) and out >= 0)

    fuzz("decode_json", raw_bytes, check_bytes)
    fuzz("parse_retry_after", retry, check_retry)


# ---------------------------------------------------------------- the client, end to end


HEADER_TEXT = st.text(alphabet=string.printable.strip("\r\n\x0b\x0c") + " ", max_size=40)
ANSWERS = st.fixed_dictionaries({
    "status": st.one_of(st.sampled_from([200, 200, 200, 201, 204, 301, 400, 401, 403, 404,
                                         429, 500, 502, 503, 504]),
                        st.integers(min_value=100, max_value=599)),
    "body": st.one_of(
        st.binary(max_size=200),
        HEALTH_BODIES.map(lambda b: _dump(b)),
        JOBS_BODIES.map(lambda b: _dump(b)),
        JOB_BODIES.map(lambda b: _dump(b)),
        MYSELF_BODIES.map(lambda b: _dump(b)),
        st.sampled_from([b'{"message": "Not Found"}', b'{"error": "request does not exist"}',
                         f'{{"error": "bad key {KEY}"}}'.encode(), b"<html>502</html>"]),
    ),
    "retry_after": st.none() | HEADER_TEXT,
    "encoding": st.sampled_from([None, None, "gzip", "deflate", "br", "identity", "zstd",
                                 "x-unknown"]),
    "content_type": st.sampled_from(["application/json", "text/html", "text/plain",
                                     "application/problem+json", ""]),
})


def _dump(body: Any) -> bytes:
    import json

    try:
        return json.dumps(body, allow_nan=True).encode()
    except (ValueError, TypeError, RecursionError):
        return b"{}"


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


async def _raw_http_server(answer: dict[str, Any]) -> tuple[asyncio.Server, int]:
    """A loopback server that writes `answer` as raw HTTP/1.1 bytes, whatever it holds
    (any status, any Content-Encoding over any bytes), then closes the connection."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            headers = [f"Content-Type: {answer['content_type']}"]
            if answer["retry_after"] is not None:
                headers.append(f"Retry-After: {answer['retry_after']}")
            if answer["encoding"] is not None:
                headers.append(f"Content-Encoding: {answer['encoding']}")
            body: bytes = answer["body"]
            headers += [f"Content-Length: {len(body)}", "Connection: close"]
            writer.write(f"HTTP/1.1 {answer['status']} Fuzz\r\n".encode()
                         + "\r\n".join(headers).encode() + b"\r\n\r\n" + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("path", ["direct", "through a proxy"])
def test_fuzz_client_decode_path(
    loop: asyncio.AbstractEventLoop, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any HTTP answer through the client's four calls: Ok or a known Failure, never the key;
    raw bytes over a real socket, straight and through a loopback proxy."""
    answer: dict[str, Any] = {}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    proxy = None
    if path == "through a proxy":
        proxy = loop.run_until_complete(LoopbackProxy().start())
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
    server, port = loop.run_until_complete(_raw_http_server(answer))
    client = RunPodClient(api_key=KEY, graphql_url=f"http://127.0.0.1:{port}/graphql",
                          rest_url=f"http://127.0.0.1:{port}/v2", timeout_s=2)

    async def calls() -> list[Any]:
        return [await client.health("ep1"), await client.requests("ep1"),
                await client.status("ep1", "job/1?x"), await client.myself()]

    def check(value: dict[str, Any]) -> None:
        answer.clear()
        answer.update(value)
        for result in loop.run_until_complete(calls()):
            assert isinstance(result, Ok | Failure)
            if isinstance(result, Failure):
                assert result.kind in (*FAILURE_KINDS, RETIRED)  # RETIRED: myself only
                assert KEY not in result.message
                assert result.retry_after_s is None or (
                    math.isfinite(result.retry_after_s) and result.retry_after_s >= 0)

    old = structlog.get_config()
    structlog.configure(processors=[_drop], cache_logger_on_first_use=False)
    try:
        fuzz(f"client decode path, {path} (4 calls each)", ANSWERS, check)
    finally:
        structlog.configure(**old)
        loop.run_until_complete(client.aclose())
        server.close()
        loop.run_until_complete(server.wait_closed())
        if proxy is not None:
            assert proxy.seen, "the proxy was not used"
            loop.run_until_complete(proxy.stop())


def _drop(*_: Any) -> Any:
    """A structlog processor dropping every event (thousands of failed-call warnings)."""
    raise structlog.DropEvent


# ---------------------------------------------------------------- configuration

CONFIG_KEYS = [
    "interval_s", "endpoints", "runpod", "api_key", "api_key_file", "graphql_url", "rest_url",
    "timeout_s", "max_concurrency", "track_requests", "shard", "rules", "http", "listen",
    "basic_auth", "username", "password", "password_file", "state", "path", "retention_s",
    "alerts", "group_wait_s", "repeat_interval_s", "silences", "code", "endpoint_id", "until",
    "slack", "webhook_url", "webhook_url_file", "bot_token", "bot_token_file", "channel",
    "min_severity", "max_per_second", "alertmanager", "url", "log", "level", "format",
    "api", "write_routes", "write_token", "write_token_file", "allow_unauthenticated_writes",
    "max_body_bytes", "max_silences", "max_jobs",
    *Thresholds.model_fields,
]
CONFIG_LEAVES = st.one_of(
    SCALARS,
    st.sampled_from([
        "${RUNPOD_API_KEY}", "${UNSET_VAR}", "${UNSET_VAR:-fallback}", "$${literal}", "${",
        "${1BAD}", "${RUNPOD_MONITOR_WRITE_TOKEN}", "0.0.0.0:9108", "http://127.0.0.1:1/graphql", "https://hooks.slack.com/services/T/B/x",
        "ftp://x", "127.0.0.1:9108", "[::1]:0", "host:99999", "0/2", "2/2", "1/3", "warning",
        "critical", "DEBUG", "json", "2030-01-01T00:00:00Z", "2030-01-01T00:00:00",
        "crash_loop", "/nonexistent/secret", "/dev/null", "rpa_ABCDEF0123456789ABCDEF",
        "xoxb-123-456-abcdef", "user:pass@host",
    ]),
)
CONFIG_TREES = st.one_of(
    trees(CONFIG_KEYS, CONFIG_LEAVES, max_leaves=20),
    st.fixed_dictionaries({}, optional={
        k: trees(CONFIG_KEYS, CONFIG_LEAVES, max_leaves=6)
        for k in ("interval_s", "endpoints", "runpod", "shard", "rules", "http", "api",
                  "state", "alerts", "log")
    }),
)
ENVS = st.sampled_from([{}, {"RUNPOD_API_KEY": KEY}, {"RUNPOD_API_KEY": "", "UNSET_VAR": "x"},
                        {"SLACK_WEBHOOK_URL": "not a url", "SLACK_BOT_TOKEN": "xoxb-1"}])


def test_fuzz_settings_from_dict() -> None:
    """settings_from_dict on any config-shaped tree: Settings or a ConfigError without secrets."""
    def check(value: tuple[Any, dict[str, str]]) -> None:
        tree, env = value
        out = either(lambda: settings_from_dict(tree, env=env), ConfigError)
        if isinstance(out, ConfigError):
            assert out.problems
            assert KEY not in str(out)
        else:
            assert isinstance(out, Settings)

    fuzz("settings_from_dict", st.tuples(CONFIG_TREES, ENVS), check)


def _yaml_texts(keys: list[str], leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    def dump(tree: Any) -> str:
        try:
            return yaml.safe_dump(tree, sort_keys=False)
        except (yaml.YAMLError, ValueError, RecursionError):
            return ""

    def splice(data: tuple[str, int, str]) -> str:
        text, at, junk = data
        at %= len(text) + 1
        return text[:at] + junk + text[at:]

    yaml_junk = st.one_of(st.text(max_size=6), st.sampled_from(
        [":", "- ", "\n  ", "&a ", "*a", "!!python/object:os.system ", "{", "]", "\t",
         "<<: *a\n", "---\n", "%YAML 1.1\n", "? ", "'", '"', "\\", "\ufeff"]))
    dumped = trees(keys, leaves).map(dump)
    return st.one_of(
        st.text(max_size=300),
        dumped,
        st.tuples(dumped, st.integers(min_value=0), yaml_junk).map(splice),
        st.sampled_from(["", "---", "~", "[]", "42", "a: &x [*x]", "a: !!binary AAAA",
                         "a:\n  a: 1\n  a: 2", "\x00", "\x1f", "a: 1\n" * 3,
                         "&a [*a, *a]", "a: &x {b: *x}", "x: " + "[" * 60 + "]" * 60]),
    )


# found by this fuzzing (each was an unhandled exception before): a control character
# (ReaderError before parsing), nesting deeper than the recursion limit, an anchor that
# contains itself; deep ones cost up to a second each, so they are tried once here, not
# thousands of times above
HOSTILE_YAML = ["\x1f", "a: \x07", "[" * 1000, "x: " + "[" * 1000 + "]" * 1000,
                "x:\n" + "".join("  " * i + "- \n" for i in range(1000)),
                "a: &x [*x]", "&a [*a, *a]", "a: &x {b: *x}"]


@pytest.mark.parametrize("text", HOSTILE_YAML, ids=range(len(HOSTILE_YAML)))
def test_hostile_yaml_is_an_error_not_a_crash(scratch: Path, text: str) -> None:
    """Control characters, deep nesting, self-referencing anchors: an error, never a crash."""
    path = scratch / "file.yaml"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    with pytest.raises(ConfigError):
        load_settings(path, env={})
    assert isinstance(either(lambda: load_scenario(path), ScenarioError),
                      Scenario | ScenarioError)


@pytest.fixture
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def test_fuzz_load_settings_files(scratch: Path) -> None:
    """load_settings on any text file, private or world-readable: Settings or a ConfigError."""
    path = scratch / "config.yaml"

    def check(value: tuple[str, bool]) -> None:
        text, public = value
        path.write_text(text, encoding="utf-8")
        path.chmod(0o644 if public else 0o600)
        out = either(lambda: load_settings(path, env={}), ConfigError)
        assert isinstance(out, Settings) or out.problems

    fuzz("load_settings (files)",
         st.tuples(_yaml_texts(CONFIG_KEYS, CONFIG_LEAVES), st.booleans()), check)


# ---------------------------------------------------------------- scenarios

SCENARIO_KEYS = [
    "name", "description", "interval_s", "monitor", "account", "clientBalance",
    "currentSpendPerHr", "spendLimit", "networkVolumes", "pods", "gpuTypes", "endpoints", "id",
    "job_ms", "health", "rest", "jobs", "completed", "inQueue", "workers", "running", "idle",
    "throttled", "status", "delayTime", "executionTime", "steps", "cycles", "graphql",
    "add_endpoints", "remove_endpoints", "config", "expect", "cycle", "active", "inactive",
    "never", "code", "endpoint_id", "retry_after", "errors", "template",
]
SCENARIO_LEAVES = st.one_of(
    SCALARS,
    st.sampled_from(["ok", "401", 404, 429, "timeout", "reset", "malformed", "errors",
                     "soak", "ep1", "ep2", "IN_QUEUE", "COMPLETED", "crash_loop", "bad name!"]),
)
STEP = st.fixed_dictionaries({"cycles": st.integers(-1, 5) | SCALARS}, optional={
    "graphql": SCENARIO_LEAVES | st.fixed_dictionaries(
        {"errors": SCALARS}) | st.fixed_dictionaries({"code": SCENARIO_LEAVES},
                                                     optional={"retry_after": COUNT}),
    "endpoints": st.dictionaries(st.sampled_from(["ep1", "ep2", "ep3"]),
                                 trees(SCENARIO_KEYS, SCENARIO_LEAVES, max_leaves=10),
                                 max_size=2),
    "remove_endpoints": st.lists(st.sampled_from(["ep1", "ep2", "ep3"]), max_size=2),
    "add_endpoints": st.lists(st.fixed_dictionaries({"id": st.sampled_from(["ep2", "ep3"])}),
                              max_size=2),
    "account": trees(SCENARIO_KEYS, SCENARIO_LEAVES, max_leaves=6),
})
SCENARIO_TREES = st.one_of(
    trees(SCENARIO_KEYS, SCENARIO_LEAVES, max_leaves=20),
    st.fixed_dictionaries(
        {"name": st.sampled_from(["soak", "a.b-c_1", "", "bad name!"]) | SCALARS},
        optional={
            "interval_s": COUNT,
            "endpoints": st.lists(st.fixed_dictionaries(
                {"id": st.sampled_from(["ep1", "ep2"]) | SCALARS},
                optional={"health": trees(SCENARIO_KEYS, SCENARIO_LEAVES, max_leaves=8),
                          "rest": SCENARIO_LEAVES, "job_ms": COUNT,
                          "jobs": trees(SCENARIO_KEYS, SCENARIO_LEAVES, max_leaves=8)}),
                max_size=3),
            "steps": st.lists(STEP, max_size=4),
            "expect": trees(SCENARIO_KEYS, SCENARIO_LEAVES, max_leaves=8),
            "monitor": trees(CONFIG_KEYS, CONFIG_LEAVES, max_leaves=8),
            "account": trees(SCENARIO_KEYS, SCENARIO_LEAVES, max_leaves=8),
        },
    ),
)


def test_fuzz_scenario_from_dict() -> None:
    """Scenario.from_dict on any scenario-shaped tree: a usable Scenario or a ScenarioError."""
    def check(tree: Any) -> None:
        sc = either(lambda: Scenario.from_dict(tree), ScenarioError)
        if isinstance(sc, ScenarioError):
            assert str(sc)
        else:
            assert sc.total_cycles >= 1
            assert sc.step_index(sc.total_cycles) >= -1

    fuzz("Scenario.from_dict", SCENARIO_TREES, check)


def test_fuzz_load_scenario_files(scratch: Path) -> None:
    """load_scenario on arbitrary text files: a Scenario or a ScenarioError, nothing else."""
    path = scratch / "scenario.yaml"

    def check(text: str) -> None:
        path.write_text(text, encoding="utf-8")
        out = either(lambda: load_scenario(path), ScenarioError)
        assert isinstance(out, Scenario) or str(out)

    fuzz("load_scenario (files)", _yaml_texts(SCENARIO_KEYS, SCENARIO_LEAVES), check)
