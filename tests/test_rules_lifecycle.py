"""The lifecycle family: crash_loop, workers_unhealthy, idle_workers_queued."""

from __future__ import annotations

import pytest
from remedykit import posted
from rulekit import (
    EID,
    TH,
    Health,
    Memory,
    account,
    config,
    endpoint_history,
    healthy_traffic,
    job,
    prefixes,
    template,
    worker,
    workers,
)

from model.history import History
from model.observation import EndpointConfig, NetworkVolume, Workers, queued_wait_ms
from rules import lifecycle, worker_records
from rules.diagnosis import Diagnosis
from rules.lifecycle import count_restarts, head_wait_ms, larger_tiers
from rules.thresholds import Thresholds

CFG = config(
    gpu_ids="AMPERE_48",
    network_volume_id="vol-tx3",
    template=template(container_disk_gb=20),
)
TX3 = account(80.0, 0.047, volumes=[NetworkVolume("vol-tx3", "models", 50, "US-TX-3")])

STARTING = Health(in_queue=3, running=1)  # in startup code: "running" but not processing
RESTARTED = Health(in_queue=3, idle=1, ready=1)  # the worker died and came back
SILENT = Health(in_queue=3)  # no worker at all
MOVING = Health(completed=1, in_queue=2, in_progress=1, running=1)


def codes(history: History, th: Thresholds = TH) -> list[str]:
    return [d.code for d in lifecycle.diagnose(history, th)]


def only(history: History, code: str, th: Thresholds = TH) -> Diagnosis:
    found = [d for d in lifecycle.diagnose(history, th) if d.code == code]
    assert len(found) == 1, found
    return found[0]


def looping(n: int, restarts: int = 2) -> list[Health | None]:
    """n stalled samples with a worker present and `restarts` running -> restarted drops."""
    hs: list[Health | None] = [STARTING] * n
    for k in range(restarts):
        hs[2 + 3 * k] = RESTARTED
    return hs


# --- crash_loop ----------------------------------------------------------------------


def test_crash_loop_with_restarts_one_sample_below_the_duration() -> None:
    """Two restarts in 270 s of stalled queue (under crash_loop_s) raise nothing."""
    assert codes(endpoint_history(looping(10), config=CFG)) == []


def test_crash_loop_with_restarts_at_the_duration() -> None:
    """Two restarts in 300 s of stalled queue with a worker present raise crash_loop."""
    d = only(endpoint_history(looping(11), config=CFG), "crash_loop")
    assert d.severity == "critical"
    assert d.scope == "endpoint"
    assert d.endpoint_id == EID
    assert d.evidence["restarts"] == 2
    assert d.evidence["stalled_s"] == 300
    assert d.evidence["threshold_s"] == 300


def test_crash_loop_needs_the_restart_count() -> None:
    """One restart (under crash_loop_restarts) at 300 s is not enough; restarts=3 needs 3."""
    assert codes(endpoint_history(looping(11, restarts=1), config=CFG)) == []
    th = Thresholds.model_validate({"crash_loop_restarts": 3})
    assert codes(endpoint_history(looping(11, restarts=2), config=CFG), th) == []
    assert codes(endpoint_history(looping(11, restarts=3), config=CFG), th) == ["crash_loop"]


def test_crash_loop_summary_says_restarts_were_seen() -> None:
    """With restarts the summary gives the queue, the time and the restarts seen."""
    d = only(endpoint_history(looping(11), config=CFG), "crash_loop")
    assert d.summary == (
        "mocha-video has had 3 jobs queued and none started for 5 min (11 cycles) with "
        "workers present in 11 of 11 samples and 2 worker restarts seen: the worker dies "
        "during startup, before runpod.serverless.start(), and RunPod keeps restarting it. "
        "It has cost about 0.10 USD of GPU time since it began (an estimate from billed "
        "workers over 5 min at 1.22 USD/h each, the AMPERE_48 list price)."
    )


def test_first_cold_start_downloading_for_12_minutes_is_not_a_crash_loop() -> None:
    """The trap: running=1 with a stalled queue for 12 min and no restart raises nothing."""
    hs = (
        [Health()] + [Health(in_queue=1, initializing=1)] * 2 + [Health(in_queue=1, running=1)] * 24
    )
    for h in prefixes(endpoint_history(hs, config=CFG)):
        assert codes(h) == []


def test_no_restart_one_sample_below_and_at_the_hang_limit() -> None:
    """Without restarts: 870 s raise nothing, 900 s (crash_loop_no_restart_s) raise."""
    assert codes(endpoint_history([STARTING] * 30, config=CFG)) == []
    d = only(endpoint_history([STARTING] * 31, config=CFG), "crash_loop")
    assert "no worker restart seen" in d.summary
    assert "the startup may be hanging" in d.summary
    assert "15 min" in d.summary
    assert d.evidence["restarts"] == 0
    assert d.evidence["threshold_s"] == 900


def test_one_restart_falls_back_to_the_hang_limit() -> None:
    """Fewer restarts than required still raise once the no-restart limit has passed."""
    d = only(endpoint_history(looping(31, restarts=1), config=CFG), "crash_loop")
    assert "1 worker restart seen" in d.summary


def test_hang_limit_is_twice_the_longest_cold_start_when_longer() -> None:
    """A 10 min cold start on record moves the no-restart limit to 20 min."""
    memory = Memory(longest_cold_start_ms={EID: 600_000})
    assert codes(endpoint_history([STARTING] * 40, config=CFG, memory=memory)) == []
    d = only(endpoint_history([STARTING] * 41, config=CFG, memory=memory), "crash_loop")
    assert "2x its longest cold start of 10 min" in d.summary
    assert d.evidence["threshold_s"] == 1200
    assert d.evidence["longest_cold_start_ms"] == 600_000


def test_longest_cold_start_comes_from_completed_jobs_delay() -> None:
    """The memory the history builds from a completed job's delayTime sets the limit."""
    done = [job("j0", "COMPLETED", delay_ms=900_000)]  # a 15 min cold start: limit 30 min

    def stalled_for(n: int) -> History:
        hs = [Health(completed=1)] + [Health(completed=1, in_queue=1, running=1)] * n
        return endpoint_history(hs, config=CFG, jobs=[done] + [None] * n)

    assert codes(stalled_for(60)) == []  # 29.5 min
    assert codes(stalled_for(61)) == ["crash_loop"]  # 30 min


def test_stalled_queue_without_workers_is_not_a_crash_loop() -> None:
    """Jobs waiting with no worker at all for 20 min is a capacity problem, not a loop."""
    assert codes(endpoint_history([SILENT] * 41, config=CFG)) == []


def test_workers_present_in_a_minority_of_samples_is_not_a_crash_loop() -> None:
    """A worker in only one of three samples is not 'workers present in most samples'."""
    hs = [STARTING if i % 3 == 0 else SILENT for i in range(40)]
    assert codes(endpoint_history(hs, config=CFG)) == []


def test_head_of_queue_wait_growing_is_required_when_jobs_are_known() -> None:
    """A head-of-queue wait that grows raises; one that does not (new head) raises nothing."""
    growing = [[job("j1", delay_ms=10_000 + 30_000 * i)] for i in range(11)]
    history = endpoint_history(looping(11), config=CFG, jobs=growing)
    d = only(history, "crash_loop")
    assert d.evidence["head_wait_first_ms"] == 10_000
    assert d.evidence["head_wait_last_ms"] == 310_000
    flat = [[job(f"j{i}", delay_ms=5_000)] for i in range(11)]
    assert codes(endpoint_history(looping(11), config=CFG, jobs=flat)) == []


def test_jobs_without_delay_leave_the_stalled_queue_enough() -> None:
    """Queued jobs listed without delayTime give no head wait: the stalled queue suffices."""
    listed = [[job("j1"), job("j2")]] * 11
    assert codes(endpoint_history(looping(11), config=CFG, jobs=listed)) == ["crash_loop"]


def test_crash_loop_unknown_samples_inside_neither_count_nor_break() -> None:
    """An unknown sample inside keeps the 300 s run; a leading one adds no time."""
    inside = looping(11)
    inside[7] = None
    assert codes(endpoint_history(inside, config=CFG)) == ["crash_loop"]
    leading: list[Health | None] = [None, *looping(10)]
    assert codes(endpoint_history(leading, config=CFG)) == []


def test_restart_seen_across_an_unknown_sample() -> None:
    """running falling between two known samples with an unknown between them is a restart."""
    run = [(0.0, STARTING), (60.0, RESTARTED), (90.0, STARTING), (120.0, Health(in_queue=3))]
    assert count_restarts(run) == 2
    hs: list[Health | None] = [STARTING] * 11
    hs[2], hs[3] = None, RESTARTED
    hs[6], hs[7] = None, RESTARTED
    assert only(endpoint_history(hs, config=CFG), "crash_loop").evidence["restarts"] == 2


def test_crash_loop_moving_queue_flapping_never_raises() -> None:
    """A queue that moves every other cycle never raises, whatever the restarts."""
    hs = [STARTING if i % 2 else MOVING for i in range(40)]
    for h in prefixes(endpoint_history(hs, config=CFG)):
        assert "crash_loop" not in codes(h)


def test_crash_loop_latest_unknown_returns_nothing() -> None:
    """A crash loop followed by a failed probe returns nothing for the endpoint."""
    assert codes(endpoint_history([*looping(20), None], config=CFG)) == []


def test_crash_loop_remedy_gives_purge_queue_and_release() -> None:
    """The remedy names logs, disk room, the saveEndpoint release and the purge-queue curl."""
    d = only(endpoint_history(looping(11), config=CFG, account=TX3), "crash_loop")
    assert "curl -s -X POST https://api.runpod.ai/v2/ep1/purge-queue" in d.remedy
    assert 'saveEndpoint(input: { id: "ep1"' in posted(d.remedy)
    assert "network volume vol-tx3 of 50 GB" in d.remedy
    assert "containerDiskInGb 20" in d.remedy
    no_config = only(endpoint_history(looping(11), config=None), "crash_loop")
    assert "purge-queue" in no_config.remedy
    assert "saveEndpoint(input" not in no_config.remedy


# --- workers_unhealthy ---------------------------------------------------------------


UNHEALTHY = Health(in_queue=2, in_progress=1, running=1, unhealthy=1)


def test_unhealthy_zero_raises_nothing_and_one_raises_critical() -> None:
    """workers.unhealthy 0 raises nothing; 1 in the latest sample raises it, critical."""
    assert codes(endpoint_history([Health(running=1)] * 3, config=CFG)) == []
    d = only(endpoint_history([UNHEALTHY], config=CFG), "workers_unhealthy")
    assert d.severity == "critical"
    assert d.summary == (
        "mocha-video has 1 unhealthy worker (crashed) for 1 cycle (0 s), beside 1 running "
        "worker and 2 queued jobs."
    )
    assert d.evidence["unhealthy"] == 1
    assert d.evidence["container_disk_gb"] == 20


def test_unhealthy_judged_on_the_latest_known_sample() -> None:
    """Unhealthy earlier but not now raises nothing; latest unknown returns nothing."""
    assert codes(endpoint_history([UNHEALTHY, Health(running=1)], config=CFG)) == []
    assert codes(endpoint_history([UNHEALTHY, UNHEALTHY, None], config=CFG)) == []


def test_unhealthy_unknown_inside_neither_counts_nor_breaks() -> None:
    """unhealthy, unknown, unhealthy counts two cycles of unhealthy workers."""
    d = only(endpoint_history([UNHEALTHY, None, UNHEALTHY], config=CFG), "workers_unhealthy")
    assert d.evidence["unhealthy_cycles"] == 2


def test_unhealthy_remedy_explains_exit_codes_with_a_larger_tier() -> None:
    """The remedy explains exits 137, 139 and 2, with saveEndpoint to a larger GPU tier."""
    d = only(endpoint_history([UNHEALTHY], config=CFG), "workers_unhealthy")
    for code in ("exit 137", "exit 139", "exit 2"):
        assert code in d.remedy
    assert 'gpuIds: "AMPERE_80,ADA_80_PRO"' in posted(d.remedy)
    assert "containerDiskInGb (now 20 GB)" in d.remedy


def test_larger_tiers_go_one_size_up() -> None:
    """larger_tiers starts one VRAM size above the largest current tier."""
    assert larger_tiers(["AMPERE_48"]) == ["AMPERE_80", "ADA_80_PRO"]
    assert larger_tiers(["AMPERE_24", "ADA_24"])[0] == "ADA_32_PRO"
    assert larger_tiers(["BLACKWELL_180"]) == []
    assert larger_tiers(["UNKNOWN"]) == []


# --- idle_workers_queued -------------------------------------------------------------


IDLE_QUEUED = Health(completed=5, in_queue=4, idle=2, ready=2)


def test_idle_workers_queued_below_and_at_the_duration() -> None:
    """Idle workers beside a queue for 270 s raise nothing; for 300 s raise a warning."""
    assert codes(endpoint_history([IDLE_QUEUED] * 10, config=CFG)) == []
    d = only(endpoint_history([IDLE_QUEUED] * 11, config=CFG), "idle_workers_queued")
    assert d.severity == "warning"
    assert d.summary == (
        "mocha-video has had 4 jobs queued beside 2 idle workers (0 in progress) for 5 min "
        "(11 cycles): jobs wait while workers sit idle."
    )
    assert d.evidence["idle_queued_s"] == 300


def test_idle_workers_queued_broken_by_an_empty_queue_or_no_idle_worker() -> None:
    """One sample without queue or without idle workers restarts the clock."""
    for gap in (Health(completed=9, idle=2, ready=2), Health(in_queue=4, running=2)):
        hs = [IDLE_QUEUED] * 6 + [gap] + [IDLE_QUEUED] * 6
        assert "idle_workers_queued" not in codes(endpoint_history(hs, config=CFG))


def test_idle_workers_queued_unknown_inside_neither_counts_nor_breaks() -> None:
    """An unknown sample inside a 300 s run keeps it raised; a leading one adds no time."""
    hs = [IDLE_QUEUED] * 5 + [None] + [IDLE_QUEUED] * 5
    assert "idle_workers_queued" in codes(endpoint_history(hs, config=CFG))
    assert codes(endpoint_history([None] + [IDLE_QUEUED] * 10, config=CFG)) == []


def test_idle_workers_queued_flapping_never_raises() -> None:
    """Idle workers that take the queue every other cycle never raise."""
    hs = [IDLE_QUEUED if i % 2 else Health(in_progress=2, running=2) for i in range(30)]
    for h in prefixes(endpoint_history(hs, config=CFG)):
        assert codes(h) == []


def test_idle_workers_queued_latest_unknown_returns_nothing() -> None:
    """A long idle-beside-queue run followed by a failed probe returns nothing."""
    assert codes(endpoint_history([IDLE_QUEUED] * 20 + [None], config=CFG)) == []


def test_idle_workers_queued_remedy_names_the_sdk_fix() -> None:
    """The remedy gives the SDK upgrade (1.10.1), the volume, and the concurrency setting."""
    d = only(endpoint_history([IDLE_QUEUED] * 11, config=CFG), "idle_workers_queued")
    assert "runpod>=1.10.1" in d.remedy
    assert "vol-tx3" in d.remedy
    assert "concurrency_modifier" in d.remedy


# --- all together --------------------------------------------------------------------


def test_healthy_busy_endpoint_raises_nothing() -> None:
    """scenarios/healthy-traffic: a cold start and a worked-off burst raise nothing, ever."""
    for h in prefixes(healthy_traffic()):
        assert lifecycle.diagnose(h, TH) == []


def test_head_wait_is_the_oldest_queued_job() -> None:
    """head_wait_ms is the largest delay among IN_QUEUE jobs, None without data."""
    jobs = [job("a", delay_ms=5), job("b", delay_ms=9), job("c", "IN_PROGRESS", delay_ms=99)]
    assert head_wait_ms(jobs) == 9
    assert head_wait_ms([job("a")]) is None
    assert head_wait_ms(None) is None
    assert head_wait_ms([job("c", "IN_PROGRESS", delay_ms=99)]) is None, "none queued"


def test_queued_wait_tells_none_queued_from_unknown() -> None:
    """queued_wait_ms: 0 with nothing queued, None when queued jobs tell no delay."""
    assert queued_wait_ms([]) == 0
    assert queued_wait_ms([job("c", "IN_PROGRESS", delay_ms=99)]) == 0
    assert queued_wait_ms([job("a"), job("b", delay_ms=0)]) == 0
    assert queued_wait_ms([job("a")]) is None
    assert queued_wait_ms([job("a", delay_ms=5), job("b", delay_ms=9), job("c")]) == 9


def test_empty_history_returns_nothing() -> None:
    """No observation at all: nothing."""
    assert lifecycle.diagnose(History(()), TH) == []


# --- crash_loop from REST v2 worker records -----------------------------------------------


def _crashing_records(n: int, life_s: int = 40, every: int = 2) -> list[Workers | None]:
    """A worker replaced by a new id every `every` cycles, each seen alive at most `life_s`."""
    out: list[Workers | None] = []
    for i in range(n):
        k = i // every
        t = i * 30.0
        born = k * every * 30.0 - 10
        out.append(workers(worker(f"w-{k}", started_at=born, uptime_s=min(life_s,
                                                                          int(t - born)))))
    return out


def test_record_restarts_raise_sooner_with_numbers() -> None:
    """Two workers replaced within a 2 min stall raise crash_loop at 120 s (crash_loop_records_s),
    where /health alone (no running flip) would wait for the 15 min hang limit."""
    hs = [STARTING] * 5
    assert codes(endpoint_history(hs, config=CFG)) == []
    assert codes(endpoint_history(hs[:4], config=CFG, workers=_crashing_records(4))) == []
    d = only(endpoint_history(hs, config=CFG, workers=_crashing_records(5)), "crash_loop")
    assert d.evidence["restarts"] == 2
    assert d.evidence["restarts_from"] == "worker records"
    assert d.evidence["restarted_workers"] == ["w-0", "w-1"]
    assert d.evidence["longest_life_s"] == 40
    assert d.evidence["restart_period_s"] == 60
    assert d.evidence["threshold_s"] == 120
    assert d.summary == (
        "mocha-video has had 3 jobs queued and none started for 2 min (5 cycles): the worker "
        "records show 2 restarts in 2 min (one every 60 s), none seen alive past 40 s. The "
        "worker dies during startup, before runpod.serverless.start(), and RunPod keeps "
        "restarting it. It has cost about 0.04 USD of GPU time since it began (an estimate "
        "from billed workers over 2 min at 1.22 USD/h each, the AMPERE_48 list price)."
    )
    assert "purge-queue" in d.remedy


def test_record_restart_by_started_at_and_uptime_reset_of_the_same_id() -> None:
    """The same id whose startedAt moves later, or whose uptime goes down, restarted."""
    by_start = [workers(worker("w", started_at=s, uptime_s=None))
                for s in (0, 0, 50, 50, 110)]
    assert worker_records.restarts(
        [(i * 30.0, w) for i, w in enumerate(by_start)]
    ) == [worker_records.Restart(60.0, "w", "restarted", 30.0),
          worker_records.Restart(120.0, "w", "restarted", 40.0)]
    by_uptime = [workers(worker("w", uptime_s=u)) for u in (10, 40, 5, 35, 8)]
    found = worker_records.restarts([(i * 30.0, w) for i, w in enumerate(by_uptime)])
    assert [(r.t, r.lived_s) for r in found] == [(60.0, 40.0), (120.0, 35.0)]
    d = only(endpoint_history([STARTING] * 5, config=CFG, workers=list(by_uptime)),
             "crash_loop")
    assert d.evidence["restarts"] == 2


def test_a_stale_worker_replaced_by_the_new_release_is_no_restart() -> None:
    """A rollout replaces old-version workers: that is not a restart."""
    recs = [
        (0.0, workers(worker("old-1", version=1, stale=True, started_at=-600), version=2)),
        (30.0, workers(worker("new-1", version=2, started_at=20), version=2)),
        (60.0, workers(worker("new-1", version=2, started_at=20), version=2)),
    ]
    assert worker_records.restarts(recs) == []
    # scaling down (an id gone, none new) and a throttled placeholder are no restarts either
    down = [(0.0, workers(worker("a"), worker("b"))), (30.0, workers(worker("a")))]
    assert worker_records.restarts(down) == []
    throttled = [(0.0, workers(worker("t1", "THROTTLED"))),
                 (30.0, workers(worker("t2", "THROTTLED")))]
    assert worker_records.restarts(throttled) == []


def test_running_flips_still_count_beside_records_that_show_none() -> None:
    """Records that show the same worker up all along do not hide /health's running flips:
    today's inference still raises at 5 min, saying where the restarts came from."""
    recs: list[Workers | None] = [workers(worker("w", started_at=-10, uptime_s=10 + 30 * i))
                                  for i in range(11)]
    assert codes(endpoint_history(looping(10), config=CFG, workers=recs[:10])) == []
    d = only(endpoint_history(looping(11), config=CFG, workers=recs), "crash_loop")
    assert d.evidence["restarts_from"] == "running flips"
    assert d.evidence["restarts"] == 2
    assert d.evidence["threshold_s"] == 300
    assert "restarted_workers" not in d.evidence


def test_without_records_in_the_stall_the_flips_count_as_before() -> None:
    """One record (or none asked) during the stall: today's inference from running flips."""
    recs: list[Workers | None] = [None] * 11
    recs[0] = workers(worker("w"))
    d = only(endpoint_history(looping(11), config=CFG, workers=recs), "crash_loop")
    assert d.evidence["restarts_from"] == "running flips"
    assert d.evidence["restarts"] == 2


def test_single_restart_after_an_execution_timeout_is_not_a_crash_loop() -> None:
    """The trap: a job runs past executionTimeout, fails, its worker is replaced once, and
    the queue moves on: no crash_loop at any cycle."""
    busy = [Health(completed=10, in_progress=1, in_queue=2, running=1)] * 10
    timed_out = [Health(completed=10, failed=1, in_queue=2, initializing=1)]
    back = [Health(completed=10 + i, failed=1, in_progress=1, in_queue=1, running=1)
            for i in range(1, 20)]
    hs = busy + timed_out + back
    recs: list[Workers | None] = [workers(worker("w-1", started_at=-60))] * 10
    recs += [workers(worker("w-2", "INITIALIZING", started_at=300))]
    recs += [workers(worker("w-2", started_at=300))] * 19
    for h in prefixes(endpoint_history(hs, config=CFG, workers=recs)):
        assert codes(h) == []


def test_standby_worker_flapping_with_no_jobs_is_not_a_crash_loop() -> None:
    """The trap: a workersMin=1 worker replaced every other cycle with nothing queued."""
    hs = [Health(completed=50, idle=1, ready=1)] * 30
    recs = _crashing_records(30, life_s=50)
    for h in prefixes(endpoint_history(hs, config=CFG, workers=recs)):
        assert codes(h) == []


# --- ghosts --------------------------------------------------------------------------------

WAITING = Health(in_queue=3, initializing=1)


def test_a_worker_initializing_past_the_hang_limit_is_a_ghost() -> None:
    """INITIALIZING in every record for 15 min: a ghost, with the capacity remedies."""
    recs: list[Workers | None] = [workers(worker("w-ghost", "INITIALIZING"))] * 31
    d = only(endpoint_history([WAITING] * 31, config=CFG, workers=recs, account=TX3),
             "crash_loop")
    assert "worker w-ghost has been INITIALIZING for 15 min" in d.summary
    assert "ghost" in d.summary
    assert "may be hanging" not in d.summary
    assert d.evidence["ghost_workers"] == ["w-ghost"]
    assert d.evidence["ghost_s"] == 900
    assert "gpuIds" in d.remedy
    assert "AMPERE_48,ADA_48_PRO" in d.remedy  # the wider tiers of the capacity remedy
    # the same stall without records: the hang reading, as before
    plain = only(endpoint_history([WAITING] * 31, config=CFG), "crash_loop")
    assert "the startup may be hanging" in plain.summary
    assert "ghost" not in plain.summary


def test_a_worker_initializing_for_less_than_the_limit_is_no_ghost() -> None:
    """Records that began 5 min ago do not prove 15 min of INITIALIZING: the hang reading."""
    recs: list[Workers | None] = [None] * 21 + [workers(worker("w", "INITIALIZING"))] * 10
    d = only(endpoint_history([WAITING] * 31, config=CFG, workers=recs), "crash_loop")
    assert "may be hanging" in d.summary
    assert "ghost_workers" not in d.evidence


def test_a_worker_health_counts_but_the_records_do_not_list_is_a_ghost() -> None:
    """/health counts a running worker, the records list none, for 15 min: a ghost."""
    recs: list[Workers | None] = [workers()] * 31
    d = only(endpoint_history([STARTING] * 31, config=CFG, workers=recs), "crash_loop")
    assert "/health has counted 1 worker for 15 min that the worker records do not list" \
        in d.summary
    assert d.evidence["ghost_workers"] == ["absent"]


# --- the declared start-up budget ------------------------------------------------------------


def _with_init_timeout(value: str) -> EndpointConfig:
    return config(gpu_ids="AMPERE_48", template=template(
        container_disk_gb=40, env=[("RUNPOD_INIT_TIMEOUT", value), ("HF_HOME", "/x")]))


def test_a_declared_init_timeout_longer_than_the_limit_is_honoured() -> None:
    """RUNPOD_INIT_TIMEOUT=1800: not paged at 15 min, paged at 30, saying why."""
    cfg = _with_init_timeout("1800")
    assert codes(endpoint_history([STARTING] * 31, config=cfg)) == []
    assert codes(endpoint_history([STARTING] * 60, config=cfg)) == []
    d = only(endpoint_history([STARTING] * 61, config=cfg), "crash_loop")
    assert d.evidence["threshold_s"] == 1800
    assert d.evidence["init_timeout_s"] == 1800
    assert "the 30 min its RUNPOD_INIT_TIMEOUT declares a startup may take" in d.summary


@pytest.mark.parametrize("junk", ["abc", "-5", "0", "nan", "inf", "", "12m"])
def test_a_junk_or_shorter_init_timeout_changes_nothing(junk: str) -> None:
    """Junk (or a budget under crash_loop_no_restart_s) keeps the 15 min limit."""
    for value in (junk, "600"):
        d = only(endpoint_history([STARTING] * 31, config=_with_init_timeout(value)),
                 "crash_loop")
        assert d.evidence["threshold_s"] == 900
    assert worker_records.declared_init_timeout_s(_with_init_timeout(junk)) is None
    assert worker_records.declared_init_timeout_s(_with_init_timeout(" 1e9 ")) == 86400


def test_a_worker_replaced_after_a_poll_with_none_is_a_restart() -> None:
    """Gone in one record, none the next, a new id after: a restart (RunPod often shows no
    worker between the two); a new id 10 min after the last one went is a scale-up."""
    recs = [(0.0, workers(worker("a", started_at=-20))), (30.0, workers()),
            (60.0, workers(worker("b", started_at=50)))]
    assert [(r.t, r.worker_id, r.how) for r in worker_records.restarts(recs)] == [
        (60.0, "a", "replaced")]
    later = [(0.0, workers(worker("a"))), (30.0, workers()), (630.0, workers(worker("b")))]
    assert worker_records.restarts(later) == []


# --- what a crash loop has cost so far (issue 15 part 6) -------------------------------


def _billed(history: History, usd_per_hr: float) -> History:
    """`history` with v2 billing's USD per hour for the endpoint on its newest cycle."""
    from dataclasses import replace

    *older, last = history.observations
    return History((*older, replace(last, endpoint_spend={EID: usd_per_hr})), history.memory)


def test_crash_loop_cost_from_v2_billing_times_the_stall() -> None:
    """With v2 billing: its USD/h for the endpoint times the 300 s the loop has lasted."""
    d = only(_billed(endpoint_history(looping(11), config=CFG), 0.72), "crash_loop")
    assert d.evidence["cost_so_far_usd"] == pytest.approx(0.06)
    assert d.evidence["cost_basis"] == "v2 billing's 0.72 USD/h over 5 min (an estimate)"
    assert d.summary.endswith(
        "It has cost about 0.06 USD of GPU time since it began (an estimate from v2 "
        "billing's 0.72 USD/h over 5 min).")


def test_crash_loop_cost_from_billed_workers_and_the_catalog_price() -> None:
    """Without billing: each sample's billed workers until the next one, at the catalog's
    serverless price of the pool (2 workers for 300 s at 1.80 USD/h = 0.30 USD)."""
    from model.observation import GpuStock

    two = [None if h is None else Health(in_queue=3, running=h.running, idle=h.idle,
                                         initializing=1) for h in looping(11)]
    d = only(endpoint_history(two, config=CFG,
                              gpu_stock=[GpuStock("NVIDIA A40", "AMPERE_48", "LOW",
                                                  price_serverless=1.8)]), "crash_loop")
    assert d.evidence["cost_so_far_usd"] == pytest.approx(0.30)
    assert d.evidence["cost_basis"].startswith("billed workers over 5 min")
    assert "at 1.80 USD/h each, the AMPERE_48 catalog price" in d.summary


def test_crash_loop_cost_unknown_is_left_out() -> None:
    """No billing and no price for the endpoint's pool: no cost, not a zero."""
    cfg = config(gpu_ids="SOME_NEW_POOL")
    d = only(endpoint_history(looping(11), config=cfg), "crash_loop")
    assert "cost_so_far_usd" not in d.evidence
    assert "USD" not in d.summary


def test_spend_guard_reads_the_crash_loop_cost() -> None:
    """The actions' spend guard takes the rule's estimate first (evidence cost_so_far_usd)."""
    from monitor.actions.policy import incident_cost
    from monitor.state.incidents import Incident

    history = _billed(endpoint_history(looping(11), config=CFG), 0.72)
    d = only(history, "crash_loop")
    assert history.latest is not None
    cost = incident_cost(Incident(d, since=0.0, raised_cycle=1), history.latest, 99.0, 1e6)
    assert cost == (pytest.approx(0.06), "evidence cost_so_far_usd")
