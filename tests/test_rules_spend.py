"""Spend rules: job_overrun, empty_output, cold_start_regression, and job costs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

import pytest
from rulekit import (
    EID,
    TH,
    Health,
    Job,
    build,
    config,
    job,
    observation,
    prefixes,
    sample,
)

from model.history import History
from model.job_memory import EndpointJobs, jobs_updated, percentile
from model.observation import (
    EndpointConfig,
    GpuStock,
    Observation,
    TrackedJob,
    Worker,
    Workers,
)
from monitor.config import ConfigError, settings_from_dict
from monitor.state.codec import memory_from_json, memory_to_json
from rules.engine import evaluate
from rules.gpus import POOL_FLEX_USD_PER_S
from rules.spend import (
    _cold_start_regression,
    _empty_output,
    _job_overrun,
    job_cost,
    running_since,
    worker_price,
)
from rules.thresholds import Thresholds

RUNNING = Health(in_progress=1, running=1)


def codes(history: History, th: Thresholds = TH) -> set[str]:
    return {d.code for d in evaluate(history, th)}


def history_of(
    jobs_per_cycle: list[list[Job] | None],
    *,
    cfg: EndpointConfig | None = None,
    health: Health = RUNNING,
    tracked: list[list[Job]] | None = None,
    prior: Sequence[Observation] = (),
) -> History:
    """One endpoint, one observation per entry; `tracked` adds /status answers per cycle."""
    cfg = cfg or config(gpu_ids="ADA_24")
    obs = list(prior)
    for i, jobs in enumerate(jobs_per_cycle):
        o = observation(len(obs) + 1, [sample(health, jobs=jobs, config=cfg)])
        if tracked is not None:
            o = replace(o, tracked_jobs=tuple(TrackedJob(EID, j) for j in tracked[i]))
        obs.append(o)
    return build(obs)


def finished(n: int, execution_ms: int, prefix: str = "done") -> list[Observation]:
    """`n` cycles each listing one more COMPLETED job of `execution_ms` (the p95's data)."""
    cfg = config(gpu_ids="ADA_24")
    return [
        observation(c + 1, [sample(Health(completed=c + 1), config=cfg, jobs=[
            job(f"{prefix}-{c}", "COMPLETED", delay_ms=500, execution_ms=execution_ms)])])
        for c in range(n)
    ]


# --- job_overrun -----------------------------------------------------------------------

def test_overrun_past_the_endpoint_timeout_quotes_job_cost_and_cancel() -> None:
    """timeout 10 min: a job seen IN_PROGRESS for 11 min is past it (+60 s grace); at
    10.5 min it is not yet."""
    cfg = config(gpu_ids="ADA_24", timeout_ms=600_000)
    running = [[job("j-long", "IN_PROGRESS", delay_ms=900, worker_id="w1")]] * 23
    h = history_of(running, cfg=cfg)
    assert h.observations[-1].t - h.observations[0].t == 660
    f = _job_overrun(h, TH, EID, h.observations[-1].t)
    assert f is None  # 660 s is not past 600 + 60
    h = history_of([*running, running[0]], cfg=cfg)
    f = _job_overrun(h, TH, EID, h.observations[-1].t)
    assert f is not None
    ev = f.evidence
    assert (ev["job_id"], ev["basis"], ev["running_s"], ev["timeout_s"]) == (
        "j-long", "timeout", 690.0, 600.0)
    assert ev["gpu_cost_usd"] == pytest.approx(690 * POOL_FLEX_USD_PER_S["ADA_24"], abs=1e-4)
    assert "list price (ADA_24), an estimate" in ev["price_source"]
    assert "/cancel/j-long" in f.remedy
    assert "$" in f.summary


def test_overrun_past_its_own_history() -> None:
    """p95 of 60 s jobs: 3x is 180 s, under the 10 min floor; 11 min running raises."""
    prior = finished(10, 60_000)
    job_run = [[job("j-stuck", "IN_PROGRESS", delay_ms=400)]] * 20
    h = history_of(job_run, prior=prior)
    assert "job_overrun" not in codes(h)  # seen running for 570 s
    h = history_of([*job_run, *job_run[:2]], prior=prior)  # 630 s
    f = _job_overrun(h, TH, EID, h.observations[-1].t)
    assert f is not None
    assert (f.evidence["basis"], f.evidence["p95_s"], f.evidence["limit_s"]) == (
        "history", 60.0, 600.0)
    assert '"timeout": 600000' in f.remedy  # the setting that bounds it
    assert "job_overrun" in codes(h)


def test_long_but_normal_job_on_a_long_job_endpoint_stays_silent() -> None:
    """Jobs of an hour are this endpoint's norm: one at 1.5 h is within 3x its p95."""
    prior = finished(6, 3_600_000)
    h = history_of([[job("j-normal", "IN_PROGRESS")]] * 180, prior=prior)  # 90 min
    assert running_since(h, EID)["j-normal"][0] == h.observations[6].t
    assert all("job_overrun" not in codes(p) for p in prefixes(h))


def test_no_timeout_and_no_history_no_overrun() -> None:
    h = history_of([[job("j", "IN_PROGRESS")]] * 200)  # 100 min, nothing to compare with
    assert "job_overrun" not in codes(h)


def test_the_run_is_unbroken_by_unknown_samples_and_broken_by_a_list_without_it() -> None:
    j = [job("j", "IN_PROGRESS")]
    h = history_of([j, None, j, j])
    assert running_since(h, EID)["j"][0] == 0.0  # the unknown sample neither counts nor breaks
    h = history_of([j, [], j, j])
    assert running_since(h, EID)["j"][0] == 60.0  # a list without it ended the first run


def test_a_tracked_job_is_followed_through_status() -> None:
    """A registered job /requests does not list is timed from its /status answers."""
    cfg = config(gpu_ids="ADA_24", timeout_ms=60_000)
    t = [job("tracked-1", "IN_PROGRESS", worker_id="w9")]
    h = history_of([[]] * 6, cfg=cfg, tracked=[t] * 6)
    f = _job_overrun(h, TH, EID, h.observations[-1].t)
    assert f is not None
    assert f.evidence["job_id"] == "tracked-1"


# --- empty_output ----------------------------------------------------------------------

def completed(jid: str, kind: str, size: int | None = None) -> Job:
    return replace(job(jid, "COMPLETED", delay_ms=100, execution_ms=2000),
                   output_kind=kind, output_bytes=size)


def test_empty_outputs_quote_ids_and_kinds_never_content() -> None:
    answers = [[completed("a", "null")], [completed("b", "absent")], [completed("c", "value", 812)],
               [completed("d", "empty")]]
    h = history_of([[]] * 4, health=Health(completed=4), tracked=answers)
    f = _empty_output(h, TH, EID, h.observations[-1].t)
    assert f is not None
    ev = f.evidence
    assert (ev["empty_jobs"], ev["completed_read"], ev["empty_share"]) == (3, 4, 0.75)
    assert {ev["job_1"], ev["job_2"], ev["job_3"]} == {"a", "b", "d"}
    assert {ev["job_1_output"], ev["job_2_output"], ev["job_3_output"]} == {
        "null", "absent", "empty"}
    assert ev["a_good_output_bytes"] == 812
    assert ev["wasted_usd"] == pytest.approx(3 * 2 * POOL_FLEX_USD_PER_S["ADA_24"], abs=1e-4)
    assert "empty_output_expected" in f.remedy


def test_lost_results_count_and_each_job_counts_once() -> None:
    lost = [completed(f"l{i}", "lost") for i in range(3)]
    h = history_of([[]] * 3, health=Health(completed=3), tracked=[lost, lost, lost])
    f = _empty_output(h, TH, EID, h.observations[-1].t)
    assert f is not None
    assert (f.evidence["empty_jobs"], f.evidence["output_lost"]) == (3, 3)
    assert "Failed to return job results" in f.remedy


def test_empty_output_needs_the_minimum_and_the_share() -> None:
    two = [[completed("a", "null")], [completed("b", "null")], [completed("c", "value", 5)]]
    h = history_of([[]] * 3, health=Health(), tracked=two)
    assert "empty_output" not in codes(h)
    many_good = [[completed(f"g{i}", "value", 5)] for i in range(4)] + [
        [completed(f"e{i}", "null")] for i in range(3)]
    h = history_of([[]] * 7, health=Health(), tracked=many_good)
    assert "empty_output" not in codes(h)  # 3 of 7 is under half


def test_an_endpoint_that_returns_nothing_by_design_is_left_alone() -> None:
    answers = [[completed(f"n{i}", "null")] for i in range(5)]
    h = history_of([[]] * 5, health=Health(), tracked=answers)
    assert "empty_output" in codes(h)
    for ref in (EID, "mocha-video"):
        th = Thresholds.model_validate({"empty_output_expected": [ref]})
        assert "empty_output" not in codes(h, th)


def test_empty_output_expected_is_validated() -> None:
    with pytest.raises(ValueError, match="empty_output_expected"):
        Thresholds.model_validate({"empty_output_expected": [""]})
    with pytest.raises(ValueError, match="empty_output_expected"):
        Thresholds.model_validate({"empty_output_expected": "ep1"})


# --- cold_start_regression -------------------------------------------------------------

def cold_starts(delays_s: list[float], *, versions: list[int] | None = None,
                throttled_at: int | None = None) -> History:
    """Scale-ups from zero, one per delay: zero workers, the job queued, then running with
    its delayTime, then done and back to zero. `versions`: v2 endpointVersion per start."""
    cfg = config(gpu_ids="AMPERE_80")
    obs: list[Observation] = []

    def add(h: Health, jobs: list[Job], version: int | None) -> None:
        s = sample(h, jobs=jobs, config=cfg)
        if version is not None:
            s = replace(s, workers=Workers(version, ()))
        obs.append(observation(len(obs) + 1, [s]))

    for i, d in enumerate(delays_s):
        v = versions[i] if versions else None
        q = f"job-{i}"
        add(Health(completed=i), [], v)
        add(Health(completed=i, in_queue=1, initializing=1,
                   throttled=1 if throttled_at == i else 0), [job(q)], v)
        add(Health(completed=i, in_progress=1, running=1),
            [job(q, "IN_PROGRESS", delay_ms=int(d * 1000))], v)
        add(Health(completed=i + 1, idle=1),
            [job(q, "COMPLETED", delay_ms=int(d * 1000), execution_ms=3000)], v)
    return build(obs)


def test_cold_starts_are_learned_from_the_first_job_after_zero_workers() -> None:
    h = cold_starts([20, 22, 25])
    mem = h.memory.jobs[EID]
    assert [c.delay_ms for c in mem.cold_starts] == [20_000, 22_000, 25_000]
    assert [ms for _, ms in mem.executions] == [3000, 3000, 3000]


def test_cold_start_regression_names_the_release_it_began_with() -> None:
    h = cold_starts([20, 22, 21, 95, 110], versions=[3, 3, 3, 4, 4])
    f = _cold_start_regression(h, TH, EID, h.observations[-1].t)
    assert f is not None
    assert (f.evidence["baseline_s"], f.evidence["recent_min_s"]) == (21.0, 95.0)
    assert f.evidence["began_with"] == "release v3 -> v4"
    assert "release v3 -> v4" in f.summary
    extra = (102.5 - 21) * POOL_FLEX_USD_PER_S["AMPERE_80"]
    assert f.evidence["extra_usd_per_cold_start"] == pytest.approx(extra, abs=1e-4)
    assert "cold_start_regression" in codes(h)


def test_first_cold_start_and_a_slightly_slower_release_stay_silent() -> None:
    assert all("cold_start_regression" not in codes(p) for p in prefixes(cold_starts([300])))
    slightly = cold_starts([20, 22, 21, 30, 32], versions=[3, 3, 3, 4, 4])
    assert "cold_start_regression" not in codes(slightly)
    # twice as slow but by only 8 s: under the absolute margin
    quick = cold_starts([4, 4, 4, 12, 12])
    assert "cold_start_regression" not in codes(quick)
    # one slow cold start is not yet a regression
    assert "cold_start_regression" not in codes(cold_starts([20, 22, 21, 21, 95]))


def test_worker_start_to_ready_from_v2_records_regresses_too() -> None:
    """A worker seen INITIALIZING and then IDLE in the next /workers answer was ready at
    about the midpoint; five boots, the last two slow after release 8."""
    obs: list[Observation] = []
    boots = [(40, 7), (44, 7), (42, 7), (160, 8), (170, 8)]
    for i, (ready_s, version) in enumerate(boots):
        started = 10_000.0 * (i + 1)
        for status, at in (("INITIALIZING", started + ready_s - 15),
                           ("IDLE", started + ready_s + 15)):
            w = Worker(f"w{i}", status, version=version, started_at=started,
                       image=f"acme/llm:{version}")
            s = replace(sample(Health(idle=1)), workers=Workers(version, (w,)))
            obs.append(replace(observation(len(obs) + 1, [s]), t=at))
    h = build(obs)
    mem = h.memory.jobs[EID]
    assert [c.delay_ms for c in mem.ready_starts] == [40_000, 44_000, 42_000, 160_000, 170_000]
    f = _cold_start_regression(h, TH, EID, h.observations[-1].t)
    assert f is not None
    assert f.evidence["measure"].startswith("worker start-to-ready")
    assert f.evidence["began_with"] == "release v7 -> v8, image acme/llm:7 -> acme/llm:8"
    text = json.dumps(memory_to_json(h.memory))
    assert memory_from_json(json.loads(text)) == h.memory


def test_a_capacity_wait_is_not_a_cold_start() -> None:
    h = cold_starts([20, 400, 22], throttled_at=1)
    assert [c.delay_ms for c in h.memory.jobs[EID].cold_starts] == [20_000, 22_000]


def test_job_memory_survives_a_restart() -> None:
    """The baseline is part of Memory, persisted by the store through the codec."""
    h = cold_starts([20, 22, 21, 95], versions=[3, 3, 3, 4])
    h = build(list(h.observations[:-2]))  # waiting at zero: at_zero is set
    text = json.dumps(memory_to_json(h.memory))
    back = memory_from_json(json.loads(text))
    assert back == h.memory
    mem = back.jobs[EID]
    assert (len(mem.cold_starts), mem.at_zero, mem.version) == (3, frozenset(), 4)


def test_an_unchanged_cycle_keeps_the_same_job_memory() -> None:
    o = observation(1, [sample(Health(), jobs=[])])
    first = jobs_updated({}, o)
    assert jobs_updated(first, replace(o, cycle=2, t=30.0)) is first
    assert first[EID] == EndpointJobs(at_zero=frozenset())


def test_percentile_nearest_rank() -> None:
    assert percentile([], 0.95) is None
    assert percentile([5], 0.95) == 5
    assert percentile(range(1, 101), 0.95) == 95
    assert percentile(range(1, 11), 0.95) == 10


# --- costs -----------------------------------------------------------------------------

def test_worker_price_prefers_the_catalog_for_the_worker_s_gpu() -> None:
    cfg = config(gpu_ids="ADA_24,AMPERE_24")
    workers = Workers(1, (Worker("w1", "RUNNING", gpu_type="NVIDIA GeForce RTX 4090",
                                 gpu_count=2),))
    stock = (GpuStock("NVIDIA GeForce RTX 4090", "ADA_24", price_serverless=1.1),)
    p = worker_price(cfg, workers, stock, "w1")
    assert p is not None
    assert (p.usd_per_s, p.source) == (pytest.approx(2 * 1.1 / 3600), "catalog")
    listed = worker_price(cfg, None, None, "w1")
    assert listed is not None
    assert (listed.usd_per_s, listed.source, listed.gpu) == (0.00031, "list price", "ADA_24")
    assert worker_price(config(gpu_ids="CPU3C"), None, None) is None


def test_job_cost_adds_the_idle_tail_only_when_the_worker_idles() -> None:
    p = worker_price(config(gpu_ids="AMPERE_16"), None, None)
    assert p is not None
    alone = job_cost(10_000, 5, p, idles_after=True)
    assert (alone.billed_s, alone.usd) == (15.0, pytest.approx(15 * 0.00016))
    busy = job_cost(10_000, 5, p, idles_after=False)
    assert busy.billed_s == 10.0
    assert job_cost(1000, None, p, idles_after=True).billed_s == 6.0  # RunPod's default 5 s


def test_a_token_in_an_image_reference_is_masked_in_the_stored_memory_and_evidence() -> None:
    token = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    secret_image = f"{token}@registry.example/acme/sdxl:2"
    h = cold_starts([20, 22, 21, 95, 110])
    mem = h.memory.jobs[EID]
    cs = mem.cold_starts
    slow = tuple(replace(c, image=secret_image) if i >= 3 else replace(c, image="acme/sdxl:1")
                 for i, c in enumerate(cs))
    h = History(h.observations, replace(
        h.memory, jobs={EID: replace(mem, cold_starts=slow, image=secret_image)}))
    assert token not in json.dumps(memory_to_json(h.memory))
    f = _cold_start_regression(h, TH, EID, h.observations[-1].t)
    assert f is not None
    assert token not in f.summary + f.remedy + json.dumps(dict(f.evidence))
    assert "registry.example/acme/sdxl:2" in f.summary


def test_bad_spend_config_names_each_field() -> None:
    """An empty endpoint reference and a sample out of range are config errors (exit 2)."""
    with pytest.raises(ConfigError) as info:
        settings_from_dict({"rules": {"empty_output_expected": ["ep1", " "],
                                      "cold_start_factor": 1},
                            "runpod": {"sample_completions": 21}}, env={}, source="c.yaml")
    fields = sorted(p.split(":")[0] for p in info.value.problems)
    assert fields == ["rules.cold_start_factor", "rules.empty_output_expected[1]",
                      "runpod.sample_completions"]
