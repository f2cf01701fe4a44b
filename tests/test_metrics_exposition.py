"""The fast `/metrics` renderer writes exactly what prometheus_client's generate_latest
writes for the same registry, for random sequences of cycles, jobs and alert events.

MonitorMetrics.render hand-writes the per-endpoint families (benchmarks/README.md: a
scrape of N = 1000 in 18 ms instead of 845) and claims byte-identity with
generate_latest(registry); this is that claim, checked after every event.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from model.observation import (
    FAILURE_KINDS,
    OK,
    RETIRED,
    SKIPPED,
    Account,
    EndpointConfig,
    EndpointSample,
    GpuStock,
    Health,
    Job,
    NetworkVolume,
    Observation,
    Worker,
    Workers,
)
from monitor.metrics import MonitorMetrics
from monitor.pipeline.budget import BudgetReading, WindowReading
from monitor.pipeline.cycle import CycleResult
from monitor.pipeline.probes import ProbeCall
from monitor.state.incidents import Changes, Incident
from rules.catalog import CODES
from rules.diagnosis import Diagnosis

# Label text that exercises the escapes (quote, backslash, newline) and non-ASCII.
TEXT = st.text(alphabet='ab-_ é"\\\n/', max_size=6)
IDS = ("e1", "e2", 'e"3', "e\\4")
VOLUMES = ("vol1", "vol2")
NUMBER = st.one_of(
    st.integers(-10**6, 10**9),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
)
COUNT = st.integers(0, 10**6)
SECONDS = st.floats(0, 1e6, allow_nan=False)


def health() -> st.SearchStrategy[Health]:
    return st.builds(Health, *([COUNT] * 11))


def config(eid: str) -> st.SearchStrategy[EndpointConfig]:
    return st.builds(
        EndpointConfig, st.just(eid), name=TEXT,
        gpu_ids=st.one_of(TEXT, st.sampled_from(["ADA_24", "AMPERE_80,ADA_24"])),
        idle_timeout=st.one_of(st.none(), st.integers(1, 3600)),
        network_volume_id=st.one_of(st.none(), st.sampled_from(VOLUMES)),
        workers_min=COUNT, workers_max=COUNT,
    )


JOB = st.builds(
    Job, st.sampled_from(["j1", "j2", "j3", "j4"]),
    st.sampled_from(["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED"]),
    delay_ms=st.one_of(st.none(), st.integers(0, 10**8)),
    execution_ms=st.one_of(st.none(), st.integers(0, 10**8)),
)


# REST v2 worker records: ids that come and go, startedAt that moves (restarts), stale ones
WORKER = st.builds(
    Worker, st.sampled_from(["w1", "w2", "w3"]),
    st.sampled_from(["RUNNING", "IDLE", "INITIALIZING", "THROTTLED"]), stale=st.booleans(),
    started_at=st.one_of(st.none(), st.sampled_from([0.0, 100.0, 500.0])),
)
WORKERS = st.builds(
    Workers, st.one_of(st.none(), st.integers(0, 10**6)),
    st.lists(WORKER, max_size=3, unique_by=lambda w: w.id).map(tuple),
)
WORDS = st.sampled_from(["NONE", "LOW", "MEDIUM", "HIGH", "", "SOME"])
STOCK = st.lists(st.builds(
    GpuStock, st.sampled_from(["NVIDIA A40", 'x"\\\n', "RTX 4090"]),
    pool=st.one_of(st.none(), st.sampled_from(["ADA_24", "AMPERE_48"])),
    availability=st.one_of(st.none(), WORDS),
    datacenters=st.lists(st.tuples(st.sampled_from(["US-TX-3", "EU-RO-1", "é"]), WORDS),
                         max_size=2).map(tuple),
), max_size=3).map(tuple)


@st.composite
def sample(draw: st.DrawFn, eid: str) -> EndpointSample:
    outcome = draw(st.sampled_from([OK, OK, "http_404", "timeout", "http_5xx"]))
    known = outcome == OK
    cfg = draw(st.one_of(st.none(), config(eid)))
    return EndpointSample(
        eid, outcome, 200 if known else draw(st.sampled_from([0, 404, 503])),
        draw(health()) if known else None,
        tuple(draw(st.lists(JOB, max_size=4))) if known and draw(st.booleans()) else None,
        cfg is not None, cfg, workers=draw(st.one_of(st.none(), WORKERS)),
    )


ACCOUNT = st.builds(
    Account, NUMBER, st.one_of(st.just(0.0), NUMBER),
    network_volumes=st.lists(
        st.builds(NetworkVolume, st.sampled_from(VOLUMES),
                  datacenter=st.one_of(st.none(), TEXT)),
        max_size=2,
    ).map(tuple),
)


def diagnosis() -> st.SearchStrategy[Diagnosis]:
    return st.builds(
        lambda code, eid, severity, name: Diagnosis(
            code, "endpoint" if eid else "account", severity, "s", "r", {}, eid, name
        ),
        st.sampled_from(CODES), st.one_of(st.none(), st.sampled_from(IDS)),
        st.sampled_from(["critical", "warning", "info"]), st.one_of(st.none(), TEXT),
    )


CALL = st.builds(
    ProbeCall,
    st.sampled_from(["graphql", "health", "requests", "status", "v2_workers", "v2_catalog",
                     "v2_something_new"]),
    st.sampled_from([OK, *FAILURE_KINDS, "http_418", RETIRED, SKIPPED]),
    st.sampled_from([0, 200, 429, 500]), SECONDS,
)


@st.composite
def cycle(draw: st.DrawFn, n: int) -> CycleResult:
    ids = draw(st.lists(st.sampled_from(IDS), unique=True, max_size=len(IDS)))
    graphql = draw(st.sampled_from([OK, OK, "timeout"]))
    obs = Observation(
        n, 1000.0 + 30 * n, graphql,
        account=draw(st.one_of(st.none(), ACCOUNT)) if graphql == OK else None,
        listed_ids=frozenset(ids) if graphql == OK else None,
        endpoints={eid: draw(sample(eid)) for eid in ids},
        # v2 billing per endpoint (the cost families' reconciliation gauge)
        endpoint_spend=draw(st.one_of(
            st.none(), st.dictionaries(st.sampled_from(IDS), st.floats(0, 100), max_size=2))),
        gpu_stock=draw(st.one_of(st.none(), STOCK)),
    )
    active = draw(st.lists(diagnosis(), max_size=4))
    raised = [Incident(d, obs.t, n) for d in active if draw(st.booleans())]
    listed = draw(st.one_of(st.none(), st.lists(st.sampled_from(IDS).flatmap(config),
                                                 max_size=2).map(tuple)))
    return CycleResult(obs, Changes(raised=raised), active, [],
                       draw(st.lists(CALL, max_size=4)), listed, draw(SECONDS))


BUDGET = st.builds(
    BudgetReading,
    st.lists(st.builds(WindowReading, st.sampled_from(["minute", "hour", "day", 'x"\\\n']),
                       COUNT, COUNT, COUNT), max_size=4).map(tuple),
    COUNT, st.booleans(),
    st.lists(st.tuples(st.sampled_from(["workers", "list", "logs"]), COUNT), max_size=3)
    .map(tuple),
    COUNT, COUNT,
    st.dictionaries(st.sampled_from(IDS), st.one_of(SECONDS, st.integers(0, 10**10)),
                    max_size=len(IDS)),
)

SINK = st.sampled_from(["slack", "alertmanager"])
EVENT = st.one_of(
    st.tuples(st.just("cycle")),
    st.tuples(st.just("job"), st.sampled_from(IDS), TEXT,
              st.one_of(st.none(), SECONDS), st.one_of(st.none(), SECONDS),
              st.one_of(st.none(), st.sampled_from(["j1", "j2"]))),
    st.tuples(st.just("sent"), SINK, st.sampled_from(["firing", "resolved", "reminder"])),
    st.tuples(st.just("failed"), SINK),
    st.tuples(st.just("pending"), SINK, st.integers(0, 50)),
    st.tuples(st.just("init"), SINK),
    st.tuples(st.just("skipped")),
    st.tuples(st.just("budget"), BUDGET),
)


def apply(m: MonitorMetrics, event: tuple[Any, ...], n: int, data: st.DataObject) -> None:
    kind, *args = event
    if kind == "cycle":
        facts = data.draw(cycle(n)).facts
        if data.draw(st.booleans()):
            facts = replace(facts, budget=data.draw(BUDGET))
        m.observe_cycle(facts)
    elif kind == "budget":
        m.observe_budget(args[0])
    elif kind == "job":
        eid, name, delay, execution, job_id = args
        m.observe_job(eid, name, delay, execution, job_id=job_id)
    elif kind == "sent":
        m.alert_sent(*args)
    elif kind == "failed":
        m.alert_failed(*args)
    elif kind == "pending":
        m.set_alerts_pending(*args)
    elif kind == "init":
        m.init_sink(*args)
    else:
        m.cycle_skipped()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.booleans(), st.booleans(), st.lists(EVENT, min_size=1, max_size=12))
def test_fast_render_equals_generate_latest(
    data: st.DataObject, extensions: bool, account: bool, events: list[tuple[Any, ...]]
) -> None:
    m = MonitorMetrics(extensions=extensions, account=account)
    assert m.render()[0] == generate_latest(m.registry)
    for n, event in enumerate(events, start=1):
        apply(m, event, n, data)
        body, _ = m.render()
        assert body == generate_latest(m.registry), event
        # a second scrape of an unchanged state (the cached bytes) is the same too
        assert m.render()[0] == body
