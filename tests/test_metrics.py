"""The exposition of spec/metrics.md: names, types, labels, values, and series lifetimes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from model.observation import (
    Account,
    EndpointConfig,
    EndpointSample,
    EnvVar,
    GpuStock,
    Health,
    Job,
    NetworkVolume,
    Observation,
    Template,
    TrackedJob,
    Worker,
    Workers,
)
from monitor import __version__
from monitor.metrics import ERROR_REASONS, CycleFacts, MonitorMetrics, error_reason
from monitor.pipeline.probes import ProbeCall
from rules.diagnosis import Diagnosis

# spec/metrics.md: name -> (type, labels)
CONTRACT: dict[str, tuple[str, frozenset[str]]] = {
    "runpod_account_balance_usd": ("gauge", frozenset()),
    "runpod_account_spend_usd_per_hour": ("gauge", frozenset()),
    "runpod_account_runway_seconds": ("gauge", frozenset()),
    "runpod_endpoint_info": (
        "gauge",
        frozenset({"endpoint_id", "endpoint", "gpu_ids", "network_volume_id", "datacenter"}),
    ),
    "runpod_endpoint_workers": ("gauge", frozenset({"endpoint_id", "endpoint", "state"})),
    "runpod_endpoint_workers_max": ("gauge", frozenset({"endpoint_id", "endpoint"})),
    "runpod_endpoint_workers_min": ("gauge", frozenset({"endpoint_id", "endpoint"})),
    "runpod_endpoint_jobs": ("gauge", frozenset({"endpoint_id", "endpoint", "state"})),
    "runpod_endpoint_queue_delay_seconds": ("gauge", frozenset({"endpoint_id", "endpoint"})),
    "runpod_job_delay_seconds": ("histogram", frozenset({"endpoint_id", "endpoint"})),
    "runpod_job_execution_seconds": ("histogram", frozenset({"endpoint_id", "endpoint"})),
    "runpod_endpoint_up": ("gauge", frozenset({"endpoint_id", "endpoint"})),
    "runpod_endpoint_http_status": ("gauge", frozenset({"endpoint_id", "endpoint"})),
    "runpod_diagnosis_active": (
        "gauge", frozenset({"endpoint_id", "endpoint", "code", "severity"}),
    ),
    "runpod_diagnoses_raised_total": ("counter", frozenset({"code", "severity"})),
    "runpod_probe_duration_seconds": ("histogram", frozenset({"probe"})),
    "runpod_probe_errors_total": ("counter", frozenset({"probe", "reason"})),
    "runpod_probe_last_success_timestamp_seconds": ("gauge", frozenset({"probe"})),
    "runpod_monitor_cycle_duration_seconds": ("histogram", frozenset()),
    "runpod_alerts_sent_total": ("counter", frozenset({"sink", "kind"})),
    "runpod_alerts_failed_total": ("counter", frozenset({"sink"})),
    "runpod_alerts_pending": ("gauge", frozenset({"sink"})),
    "runpod_monitor_build_info": ("gauge", frozenset({"version"})),
}
POLLED = {
    "runpod_account_balance_usd", "runpod_account_spend_usd_per_hour",
    "runpod_account_runway_seconds", "runpod_endpoint_info", "runpod_endpoint_workers",
    "runpod_endpoint_jobs", "runpod_endpoint_queue_delay_seconds", "runpod_endpoint_up",
    "runpod_endpoint_http_status", "runpod_probe_last_success_timestamp_seconds",
}
WORKER_STATES = {"idle", "initializing", "ready", "running", "throttled", "unhealthy"}
JOB_STATES = {"in_queue", "in_progress", "completed", "failed", "retried"}

SECRET = "rpa_9F3K2LQX7W1ZC8VBN4M6T0YHJ5DS"
VOL = NetworkVolume("vol1", "models", 100.0, "EU-RO-1")
ACCOUNT = Account(balance=42.5, spend_per_hr=1.25, network_volumes=(VOL,))


def cfg(eid: str = "e1", name: str = "sdxl", **kw: object) -> EndpointConfig:
    base: dict[str, object] = {
        "gpu_ids": "AMPERE_48,-NVIDIA A40", "network_volume_id": "vol1",
        "workers_min": 1, "workers_max": 3,
    }
    base.update(kw)
    return EndpointConfig(eid, name, **base)  # type: ignore[arg-type]


def smp(
    eid: str = "e1",
    health: Health | None = None,
    *,
    outcome: str = "ok",
    status: int | None = None,
    jobs: Sequence[Job] | None = None,
    config: EndpointConfig | None = None,
    configured: bool = True,
) -> EndpointSample:
    if outcome == "ok" and health is None:
        health = Health()
    if configured and config is None:
        config = cfg(eid, f"name-{eid}")
    if status is None:
        status = 200 if outcome == "ok" else 0
    return EndpointSample(
        eid, outcome, status, health if outcome == "ok" else None,
        tuple(jobs) if jobs is not None else None, config is not None, config,
    )


def diag(code: str, eid: str | None = "e1", severity: str = "warning",
         name: str | None = None) -> Diagnosis:
    scope = "endpoint" if eid else "account"
    return Diagnosis(code, scope, severity, f"{code} summary", "fix", {}, eid, name)  # type: ignore[arg-type]


def cycle(
    n: int,
    samples: Sequence[EndpointSample],
    *,
    account: Account | None = ACCOUNT,
    graphql: str = "ok",
    active: Sequence[Diagnosis] = (),
    raised: Sequence[Diagnosis] = (),
    calls: Sequence[ProbeCall] = (),
    duration_s: float = 0.5,
) -> CycleFacts:
    obs = Observation(
        cycle=n,
        t=1000.0 + 30 * n,
        control_outcome=graphql,
        control_status=200 if graphql == "ok" else 0,
        account=account if graphql == "ok" else None,
        listed_ids=frozenset(s.endpoint_id for s in samples) if graphql == "ok" else None,
        endpoints={s.endpoint_id: s for s in samples},
    )
    return CycleFacts(obs, list(active), list(raised), list(calls), None, duration_s)


def parse(m: MonitorMetrics) -> dict[str, tuple[str, str, list[Sample]]]:
    """family name as the contract spells it -> (type, help, samples)."""
    body, _ = m.render()
    out = {}
    for f in text_string_to_metric_families(body.decode()):
        name = f.name + "_total" if f.type == "counter" else f.name
        out[name] = (f.type, f.documentation, list(f.samples))
    return out


Labels = frozenset[tuple[str, str]]


def values(m: MonitorMetrics, sample_name: str, **match: str) -> dict[Labels, float]:
    """The samples named `sample_name` whose labels include `match`: labels -> value."""
    body, _ = m.render()
    return {
        frozenset(s.labels.items()): s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
        if s.name == sample_name and match.items() <= s.labels.items()
    }


def one(m: MonitorMetrics, sample_name: str, **match: str) -> float:
    found = values(m, sample_name, **match)
    assert len(found) == 1, (sample_name, match, found)
    return next(iter(found.values()))


def busy_cycle(n: int = 1) -> CycleFacts:
    """A cycle that touches every metric: jobs in and out of the queue, a raised diagnosis,
    an account diagnosis, good and failed probe calls."""
    jobs = [
        Job("j-queued", "IN_QUEUE", delay_ms=95_000),
        Job("j-running", "IN_PROGRESS", delay_ms=4_000, worker_id="w1"),
        Job("j-done", "COMPLETED", delay_ms=2_000, execution_ms=30_000, worker_id="w2"),
    ]
    health = Health(completed=7, failed=1, in_progress=1, in_queue=1, retried=2,
                    idle=1, initializing=2, ready=1, running=1, throttled=3, unhealthy=0)
    backlog = diag("queue_backlog", "e1")
    low = diag("low_balance", None)
    return cycle(
        n,
        [smp("e1", health, jobs=jobs, config=cfg())],
        active=[backlog, low],
        raised=[backlog],
        calls=[
            ProbeCall("graphql", "ok", 200, 0.3),
            ProbeCall("health", "ok", 200, 0.1, "e1"),
            ProbeCall("requests", "timeout", 0, 10.0, "e1"),
        ],
    )


def test_every_contract_metric_with_exactly_its_labels() -> None:
    """After a cycle, a job and alert activity, every name of the contract is exposed, with
    its type and exactly its documented labels, and no other name."""
    m = MonitorMetrics()
    m.observe_cycle(busy_cycle())
    m.observe_job("e1", "sdxl", 1.5, 20.0, job_id="mine-1")
    m.alert_sent("slack", "firing")
    m.alert_failed("slack")
    m.set_alerts_pending("slack", 2)
    fams = parse(m)
    assert set(fams) == set(CONTRACT)
    for name, (kind, labels) in CONTRACT.items():
        got_kind, help_text, samples = fams[name]
        assert got_kind == kind, name
        assert help_text.strip(), name
        assert samples, name
        for s in samples:
            assert set(s.labels) - {"le"} == labels, (name, s)


def test_help_says_a_scrape_never_calls_runpod() -> None:
    """The HELP of the polled gauges and of the freshness gauge says scrapes never call RunPod."""
    m = MonitorMetrics()
    m.observe_cycle(busy_cycle())
    fams = parse(m)
    for name in POLLED:
        assert "a scrape never calls RunPod" in fams[name][1], name


def test_no_created_series_and_own_registry() -> None:
    """The exposition has no undocumented `_created` series, each instance has its own registry
    (the global one untouched), and render gives the text format's content type."""
    before = {f.name for f in REGISTRY.collect()}
    a, b = MonitorMetrics(), MonitorMetrics()
    a.observe_cycle(busy_cycle())
    body, ctype = a.render()
    assert b"_created" not in body
    assert ctype.startswith("text/plain")
    assert "version=0.0.4" in ctype
    assert {f.name for f in REGISTRY.collect()} == before
    assert a.registry is not b.registry
    shared = CollectorRegistry()
    c = MonitorMetrics(shared)
    assert c.registry is shared


def test_snapshot_values() -> None:
    """Account, endpoint configuration, workers, jobs, queue delay, up and status carry the
    cycle's values; info carries gpu_ids, the volume and the volume's datacenter."""
    m = MonitorMetrics()
    m.observe_cycle(busy_cycle())
    ep = {"endpoint_id": "e1", "endpoint": "sdxl"}
    assert one(m, "runpod_account_balance_usd") == 42.5
    assert one(m, "runpod_account_spend_usd_per_hour") == 1.25
    assert one(m, "runpod_account_runway_seconds") == pytest.approx(34.0 * 3600)
    info = values(m, "runpod_endpoint_info")
    assert info == {frozenset({**ep, "gpu_ids": "AMPERE_48,-NVIDIA A40",
                               "network_volume_id": "vol1", "datacenter": "EU-RO-1"}.items()): 1}
    workers = {dict(k)["state"]: v for k, v in values(m, "runpod_endpoint_workers", **ep).items()}
    assert workers == {"idle": 1, "initializing": 2, "ready": 1, "running": 1,
                       "throttled": 3, "unhealthy": 0}
    jobs = {dict(k)["state"]: v for k, v in values(m, "runpod_endpoint_jobs", **ep).items()}
    assert jobs == {"in_queue": 1, "in_progress": 1, "completed": 7, "failed": 1, "retried": 2}
    assert one(m, "runpod_endpoint_workers_max", **ep) == 3
    assert one(m, "runpod_endpoint_workers_min", **ep) == 1
    assert one(m, "runpod_endpoint_queue_delay_seconds", **ep) == 95.0
    assert one(m, "runpod_endpoint_up", **ep) == 1
    assert one(m, "runpod_endpoint_http_status", **ep) == 200
    assert values(m, "runpod_diagnosis_active") == {
        frozenset({**ep, "code": "queue_backlog", "severity": "warning"}.items()): 1,
        frozenset({"endpoint_id": "", "endpoint": "", "code": "low_balance",
                   "severity": "warning"}.items()): 1,
    }
    assert one(m, "runpod_monitor_build_info", version=__version__) == 1
    assert one(m, "runpod_monitor_cycle_duration_seconds_count") == 1
    assert one(m, "runpod_monitor_cycle_duration_seconds_sum") == 0.5


def test_info_without_volume_or_unknown_datacenter() -> None:
    """No volume gives empty network_volume_id and datacenter; a volume the account does not
    list gives its id and an empty datacenter."""
    m = MonitorMetrics()
    m.observe_cycle(cycle(1, [smp("a", config=cfg("a", "a", network_volume_id=None)),
                              smp("b", config=cfg("b", "b", network_volume_id="vol-x"))]))
    info = {dict(k)["endpoint_id"]: dict(k) for k in values(m, "runpod_endpoint_info")}
    assert info["a"]["network_volume_id"] == ""
    assert info["a"]["datacenter"] == ""
    assert info["b"]["network_volume_id"] == "vol-x"
    assert info["b"]["datacenter"] == ""


def test_dropped_endpoint_has_no_series_left() -> None:
    """An endpoint missing from the next cycle loses every series at once: snapshot gauges,
    active diagnoses and job histograms; the endpoint still watched keeps its own."""
    m = MonitorMetrics()
    done = [Job("x1", "COMPLETED", delay_ms=1_000, execution_ms=2_000)]
    m.observe_cycle(cycle(1, [smp("keep", jobs=done), smp("gone", jobs=done)],
                          active=[diag("crash_loop", "gone"), diag("crash_loop", "keep")]))
    m.observe_job("gone", "name-gone", 1.0, 1.0)
    body, _ = m.render()
    assert b'endpoint_id="gone"' in body
    m.observe_cycle(cycle(2, [smp("keep")], active=[diag("crash_loop", "keep")]))
    body, _ = m.render()
    assert b"gone" not in body
    for name in ("runpod_endpoint_up", "runpod_endpoint_info", "runpod_endpoint_workers",
                 "runpod_job_delay_seconds_count", "runpod_job_execution_seconds_count",
                 "runpod_diagnosis_active"):
        assert values(m, name, endpoint_id="keep"), name


def test_runway_absent_while_spend_is_zero() -> None:
    """With spend 0 the runway series is absent while balance and spend are exposed."""
    m = MonitorMetrics()
    m.observe_cycle(cycle(1, [], account=Account(balance=10.0, spend_per_hr=0.0)))
    assert one(m, "runpod_account_balance_usd") == 10.0
    assert one(m, "runpod_account_spend_usd_per_hour") == 0.0
    assert values(m, "runpod_account_runway_seconds") == {}
    m.observe_cycle(cycle(2, [], account=Account(balance=10.0, spend_per_hr=0.5)))
    assert one(m, "runpod_account_runway_seconds") == 20.0 * 3600


def test_account_gauges_only_where_asked() -> None:
    """A replica other than shard 0 exposes no account gauges: one balance series per fleet."""
    m = MonitorMetrics(account=False)
    m.observe_cycle(cycle(1, [smp("e1")], account=Account(balance=10.0, spend_per_hr=0.5)))
    for name in ("runpod_account_balance_usd", "runpod_account_spend_usd_per_hour",
                 "runpod_account_runway_seconds"):
        assert values(m, name) == {}, name
    assert values(m, "runpod_endpoint_info")


def test_failed_graphql_keeps_last_account_and_config() -> None:
    """Before any account data the account gauges are absent; when GraphQL fails they keep the
    last known values, and the endpoint keeps its name, configuration and datacenter."""
    m = MonitorMetrics()
    m.observe_cycle(cycle(1, [smp("e1", configured=False)], graphql="timeout"))
    assert values(m, "runpod_account_balance_usd") == {}
    assert values(m, "runpod_account_runway_seconds") == {}
    m.observe_cycle(cycle(2, [smp("e1", config=cfg())]))
    m.observe_cycle(cycle(3, [smp("e1", configured=False)], graphql="http_5xx"))
    assert one(m, "runpod_account_balance_usd") == 42.5
    assert one(m, "runpod_account_spend_usd_per_hour") == 1.25
    assert one(m, "runpod_account_runway_seconds") == pytest.approx(34.0 * 3600)
    assert one(m, "runpod_endpoint_workers_max", endpoint_id="e1", endpoint="sdxl") == 3
    (info,) = values(m, "runpod_endpoint_info")
    assert dict(info)["datacenter"] == "EU-RO-1"
    assert dict(info)["endpoint"] == "sdxl"


def test_failed_health_keeps_last_counts_and_reports_status() -> None:
    """When /health fails the worker and job gauges keep the last known values while up is 0
    and http_status tells the status (0 with no answer)."""
    m = MonitorMetrics()
    ep = {"endpoint_id": "e1", "endpoint": "sdxl"}
    m.observe_cycle(cycle(1, [smp("e1", Health(running=2, in_queue=5), config=cfg())]))
    m.observe_cycle(cycle(2, [smp("e1", outcome="timeout", config=cfg())]))
    assert one(m, "runpod_endpoint_workers", state="running", **ep) == 2
    assert one(m, "runpod_endpoint_jobs", state="in_queue", **ep) == 5
    assert one(m, "runpod_endpoint_up", **ep) == 0
    assert one(m, "runpod_endpoint_http_status", **ep) == 0
    m.observe_cycle(cycle(3, [smp("e1", outcome="http_5xx", status=503, config=cfg())]))
    assert one(m, "runpod_endpoint_http_status", **ep) == 503
    assert one(m, "runpod_endpoint_workers", state="running", **ep) == 2
    m.observe_cycle(cycle(4, [smp("e1", Health(running=1), config=cfg())]))
    assert one(m, "runpod_endpoint_workers", state="running", **ep) == 1
    assert one(m, "runpod_endpoint_up", **ep) == 1


def test_no_health_data_yet_means_no_count_series() -> None:
    """An endpoint that never answered /health with data has up and status but no counts."""
    m = MonitorMetrics()
    m.observe_cycle(cycle(1, [smp("e1", outcome="http_404", status=404)]))
    assert values(m, "runpod_endpoint_workers") == {}
    assert values(m, "runpod_endpoint_jobs") == {}
    assert one(m, "runpod_endpoint_up") == 0
    assert one(m, "runpod_endpoint_http_status") == 404


def test_queue_delay_oldest_zero_or_kept() -> None:
    """Queue delay is the oldest queued job's wait, 0 when the jobs are known and none is
    queued, the last value when the jobs are unknown, and absent before any job data."""
    m = MonitorMetrics()
    m.observe_cycle(cycle(1, [smp("e1")]))
    assert values(m, "runpod_endpoint_queue_delay_seconds") == {}
    queued = [Job("a", "IN_QUEUE", 3_000), Job("b", "IN_QUEUE", 7_500),
              Job("c", "IN_PROGRESS", 60_000)]
    m.observe_cycle(cycle(2, [smp("e1", jobs=queued)]))
    assert one(m, "runpod_endpoint_queue_delay_seconds") == 7.5
    m.observe_cycle(cycle(3, [smp("e1", jobs=None)]))
    assert one(m, "runpod_endpoint_queue_delay_seconds") == 7.5
    m.observe_cycle(cycle(4, [smp("e1", jobs=[Job("c", "IN_PROGRESS", 60_000)])]))
    assert one(m, "runpod_endpoint_queue_delay_seconds") == 0


@pytest.mark.parametrize(("outcome", "reason"), [
    ("timeout", "timeout"), ("connect", "connect"), ("http_401", "auth"), ("http_403", "auth"),
    ("http_429", "http_429"), ("http_5xx", "http_5xx"), ("http_404", "http_4xx"),
    ("http_4xx", "http_4xx"), ("malformed", "malformed"), ("graphql_error", "malformed"),
])
def test_probe_error_reasons(outcome: str, reason: str) -> None:
    """Each failure kind counts under its documented reason; the other reasons stay at 0."""
    m = MonitorMetrics()
    m.observe_cycle(cycle(1, [], calls=[ProbeCall("graphql", outcome, 0, 1.0)]))
    errors = {dict(k)["reason"]: v
              for k, v in values(m, "runpod_probe_errors_total", probe="graphql").items()}
    assert errors[reason] == 1
    assert sum(errors.values()) == 1
    assert set(errors) == {"timeout", "connect", "http_4xx", "http_429", "http_5xx",
                           "malformed", "auth"}


def test_error_reason_is_bounded() -> None:
    """Every known failure kind maps into the documented reasons, and so do unknown ones."""
    documented = {"timeout", "connect", "http_4xx", "http_429", "http_5xx", "malformed", "auth"}
    assert set(ERROR_REASONS.values()) <= documented
    assert {error_reason(k) for k in ("http_418", "http_502", "weird")} == {
        "http_4xx", "http_5xx", "malformed"}


def test_probe_durations_and_last_success() -> None:
    """Every call is timed under its probe; the last-success time is the observation time of the
    last good call and a later failure leaves it alone."""
    m = MonitorMetrics()
    m.observe_cycle(cycle(1, [], calls=[ProbeCall("graphql", "ok", 200, 0.2),
                                        ProbeCall("health", "ok", 200, 0.1, "e1"),
                                        ProbeCall("health", "ok", 200, 0.3, "e2")]))
    t1 = 1030.0
    assert one(m, "runpod_probe_last_success_timestamp_seconds", probe="graphql") == t1
    assert one(m, "runpod_probe_duration_seconds_count", probe="health") == 2
    assert one(m, "runpod_probe_duration_seconds_sum", probe="health") == pytest.approx(0.4)
    m.observe_cycle(cycle(2, [], calls=[ProbeCall("graphql", "timeout", 0, 10.0),
                                        ProbeCall("health", "ok", 200, 0.1, "e1")]))
    assert one(m, "runpod_probe_last_success_timestamp_seconds", probe="graphql") == t1
    assert one(m, "runpod_probe_last_success_timestamp_seconds", probe="health") == t1 + 30
    assert one(m, "runpod_probe_errors_total", probe="graphql", reason="timeout") == 1


def test_diagnoses_raised_counted_once_per_raise() -> None:
    """Raised incidents count by code and severity; held ones (still active) do not count."""
    m = MonitorMetrics()
    assert one(m, "runpod_diagnoses_raised_total", code="crash_loop", severity="critical") == 0
    d = diag("crash_loop", "e1", "critical")
    m.observe_cycle(cycle(1, [smp("e1")], active=[d], raised=[d]))
    m.observe_cycle(cycle(2, [smp("e1")], active=[d]))
    assert one(m, "runpod_diagnoses_raised_total", code="crash_loop", severity="critical") == 1
    m.observe_cycle(cycle(3, [smp("e1")]))
    assert values(m, "runpod_diagnosis_active") == {}


def test_job_delay_and_execution_observed_once() -> None:
    """A job's delay is observed once when first seen out of the queue and its execution once
    when first seen finished, however many cycles list it; queued jobs are not observed."""
    m = MonitorMetrics()
    ep = {"endpoint_id": "e1", "endpoint": "sdxl"}
    stages = [
        [Job("j1", "IN_QUEUE", 5_000)],
        [Job("j1", "IN_PROGRESS", 12_000)],
        [Job("j1", "IN_PROGRESS", 12_000)],
        [Job("j1", "COMPLETED", 12_000, 40_000)],
        [Job("j1", "COMPLETED", 12_000, 40_000)],
    ]
    for n, jobs in enumerate(stages, 1):
        m.observe_cycle(cycle(n, [smp("e1", jobs=jobs, config=cfg())]))
        if n == 1:  # the series exist at 0 from the first cycle; a queued job is not observed
            assert one(m, "runpod_job_delay_seconds_count", **ep) == 0
    assert one(m, "runpod_job_delay_seconds_count", **ep) == 1
    assert one(m, "runpod_job_delay_seconds_sum", **ep) == 12.0
    assert one(m, "runpod_job_delay_seconds_bucket", le="30.0", **ep) == 1
    assert one(m, "runpod_job_delay_seconds_bucket", le="10.0", **ep) == 0
    assert one(m, "runpod_job_execution_seconds_count", **ep) == 1
    assert one(m, "runpod_job_execution_seconds_sum", **ep) == 40.0


def test_observe_job_for_registered_jobs() -> None:
    """Jobs followed through /status are observed under the endpoint's watched name, once per
    job id, also when /requests lists the same job."""
    m = MonitorMetrics()
    ep = {"endpoint_id": "e1", "endpoint": "sdxl"}
    m.observe_cycle(cycle(1, [smp("e1", config=cfg())]))
    m.observe_job("e1", "whatever-the-caller-calls-it", 2.0, None, job_id="u1")
    m.observe_job("e1", "sdxl", 2.0, 30.0, job_id="u1")
    m.observe_cycle(cycle(2, [smp("e1", jobs=[Job("u1", "COMPLETED", 2_000, 30_000)],
                                  config=cfg())]))
    assert one(m, "runpod_job_delay_seconds_count", **ep) == 1
    assert one(m, "runpod_job_execution_seconds_count", **ep) == 1
    m.observe_job("e1", "sdxl", 3.0, 4.0)
    assert one(m, "runpod_job_delay_seconds_count", **ep) == 2
    assert one(m, "runpod_job_execution_seconds_sum", **ep) == 34.0


def test_seen_job_memory_is_bounded() -> None:
    """The memory of jobs already observed never grows past its cap."""
    m = MonitorMetrics(seen_jobs_max=10)
    for n in range(1, 6):
        jobs = [Job(f"j{n}-{i}", "COMPLETED", 1_000, 1_000) for i in range(8)]
        m.observe_cycle(cycle(n, [smp("e1", jobs=jobs)]))
    assert len(m._delay_seen) == 10
    assert len(m._execution_seen) == 10
    assert one(m, "runpod_job_delay_seconds_count") == 40


def test_endpoint_label_is_config_name_then_last_known_then_id() -> None:
    """The endpoint label is the configured name, the last known one while GraphQL is out, the
    id when no name was ever known; a rename moves the job histograms to the new name."""
    m = MonitorMetrics()
    m.observe_cycle(cycle(1, [smp("e1", configured=False)], graphql="timeout"))
    assert one(m, "runpod_endpoint_up", endpoint_id="e1") == 1
    assert values(m, "runpod_endpoint_up", endpoint="e1")
    done = [Job("a", "COMPLETED", 1_000, 1_000)]
    m.observe_cycle(cycle(2, [smp("e1", jobs=done, config=cfg(name="old"))]))
    m.observe_cycle(cycle(3, [smp("e1", configured=False)], graphql="timeout"))
    assert values(m, "runpod_endpoint_up", endpoint="old")
    assert values(m, "runpod_job_delay_seconds_count", endpoint="old")
    m.observe_cycle(cycle(4, [smp("e1", jobs=[Job("b", "COMPLETED", 1_000, 1_000)],
                                  config=cfg(name="new"))]))
    body, _ = m.render()
    assert b'endpoint="old"' not in body
    assert one(m, "runpod_job_delay_seconds_count", endpoint="new") == 1


def test_no_secret_becomes_a_label() -> None:
    """Secrets in template env, job errors and diagnosis text or evidence never reach the
    exposition; every label value is an id, a name, configuration or a bounded word."""
    m = MonitorMetrics()
    template = Template("t1", "tpl", "img:latest", env=(EnvVar("HF_TOKEN", SECRET),))
    config = cfg(template=template)
    jobs = [Job("j1", "FAILED", 1_000, 2_000, worker_id="w1", error=f"auth failed {SECRET}")]
    leak = Diagnosis("secret_in_template", "endpoint", "critical", f"found {SECRET}",
                     f"rotate {SECRET}", {"value": SECRET, "key": "HF_TOKEN"}, "e1", "sdxl")
    m.observe_cycle(cycle(1, [smp("e1", Health(failed=1), jobs=jobs, config=config)],
                          active=[leak], raised=[leak],
                          calls=[ProbeCall("health", "http_401", 401, 0.1, "e1")]))
    m.observe_job("e1", "sdxl", 1.0, 2.0, job_id="j9")
    m.alert_sent("slack", "firing")
    body, _ = m.render()
    assert SECRET.encode() not in body
    assert b"HF_TOKEN" not in body
    allowed = {
        "e1", "sdxl", "AMPERE_48,-NVIDIA A40", "vol1", "EU-RO-1", "secret_in_template",
        "critical", "health", "slack", "firing", __version__,
        *WORKER_STATES, *JOB_STATES, *ERROR_REASONS.values(),
    }
    for f in text_string_to_metric_families(body.decode()):
        for s in f.samples:
            for key, value in s.labels.items():
                if key == "le" or f.name == "runpod_diagnoses_raised":
                    continue
                assert value in allowed, (s.name, key, value)


def test_job_costs_per_endpoint_and_in_all_with_the_billing_beside_them() -> None:
    """Extensions only: each finished job is costed once (execution, plus the idle timeout
    when nothing else was queued or running, at the pool's list price, or the catalog's
    price for the worker's GPU); the billed hourly spend of v2 is set beside them; an
    unwatched endpoint's series go."""
    assert "runpod_job_cost_estimated_usd" not in parse(MonitorMetrics())
    m = MonitorMetrics(extensions=True)
    ep = {"endpoint_id": "e1", "endpoint": "sdxl"}
    c = cfg(gpu_ids="AMPERE_48", idle_timeout=10)
    done = Job("j1", "COMPLETED", 500, 20_000, "w1")
    facts = cycle(1, [smp("e1", Health(completed=1), jobs=[done], config=c)])
    m.observe_cycle(replace(facts, observation=replace(
        facts.observation, endpoint_spend={"e1": 0.42})))
    m.observe_cycle(cycle(2, [smp("e1", Health(completed=1), jobs=[done], config=c)]))
    assert one(m, "runpod_job_cost_estimated_usd_count", **ep) == 1
    assert one(m, "runpod_job_cost_estimated_usd_sum", **ep) == pytest.approx(30 * 0.00034)
    assert one(m, "runpod_jobs_cost_estimated_usd_total") == pytest.approx(30 * 0.00034)
    assert one(m, "runpod_endpoint_billed_usd_per_hour", **ep) == 0.42
    # busy after it: no idle tail; a tracked job's /status answer, priced from the catalog
    workers = Workers(2, (Worker("w9", "RUNNING", gpu_type="NVIDIA A40"),))
    busy = smp("e1", Health(completed=2, in_queue=3), jobs=[], config=c)
    facts = cycle(3, [replace(busy, workers=workers)])
    obs = replace(facts.observation, gpu_stock=(GpuStock("NVIDIA A40", "AMPERE_48",
                                                         price_serverless=1.8),),
                  tracked_jobs=(TrackedJob("e1", Job("t1", "FAILED", 100, 10_000, "w9")),))
    m.observe_cycle(replace(facts, observation=obs))
    assert one(m, "runpod_job_cost_estimated_usd_count", **ep) == 2
    assert one(m, "runpod_jobs_cost_estimated_usd_total") == pytest.approx(
        30 * 0.00034 + 10 * 1.8 / 3600)
    m.observe_cycle(cycle(4, [smp("e2")]))
    assert values(m, "runpod_job_cost_estimated_usd_count", endpoint_id="e1") == {}
    assert values(m, "runpod_endpoint_billed_usd_per_hour", endpoint_id="e1") == {}
    assert one(m, "runpod_jobs_cost_estimated_usd_total") > 0  # the total outlives it
