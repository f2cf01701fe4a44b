"""The capacity family: no_gpu_capacity, not_scheduling, queue_backlog."""

from __future__ import annotations

import json
from dataclasses import replace

from remedykit import curls, posted
from rulekit import (
    EID,
    TH,
    Health,
    account,
    build,
    config,
    endpoint_history,
    healthy_traffic,
    observation,
    prefixes,
    sample,
)

from model.history import History
from model.observation import GpuStock, NetworkVolume
from rules import capacity
from rules.diagnosis import Diagnosis
from rules.thresholds import Thresholds

WIDER = "AMPERE_48,ADA_48_PRO,AMPERE_80,ADA_80_PRO"
PINNED = config(gpu_ids="AMPERE_48", network_volume_id="vol-tx3", workers_max=1)
TX3 = account(80.0, 0.047, volumes=[NetworkVolume("vol-tx3", "models", 50, "US-TX-3")])

IDLE = Health(completed=40)
THROTTLED = Health(completed=40, in_queue=2, throttled=1)  # stalled: 2 wait, none run
CHURN = Health(completed=40, in_queue=3, in_progress=2, running=2, throttled=1)
SILENT = Health(completed=40, in_queue=3)  # jobs wait, no worker in any state
BACKLOG = Health(completed=40, in_queue=12, in_progress=3, running=3)


def codes(history: History, th: Thresholds = TH) -> list[str]:
    return [d.code for d in capacity.diagnose(history, th)]


def only(history: History, code: str, th: Thresholds = TH) -> Diagnosis:
    found = [d for d in capacity.diagnose(history, th) if d.code == code]
    assert len(found) == 1, found
    return found[0]


def churning(n: int) -> list[Health]:
    """Throttled beside working workers, with completed jobs rising every cycle."""
    return [
        Health(completed=40 + i, in_queue=3, in_progress=2, running=2, throttled=1)
        for i in range(n)
    ]


# --- no_gpu_capacity -----------------------------------------------------------------


def test_one_throttled_sample_is_not_a_capacity_problem() -> None:
    """A single throttled sample (one below throttled_cycles) raises nothing."""
    assert codes(endpoint_history([IDLE, THROTTLED], config=PINNED)) == []


def test_throttled_in_two_consecutive_cycles_raises() -> None:
    """Throttled in throttled_cycles (2) consecutive cycles raises no_gpu_capacity."""
    d = only(endpoint_history([IDLE, THROTTLED, THROTTLED], config=PINNED), "no_gpu_capacity")
    assert d.scope == "endpoint"
    assert d.endpoint_id == EID
    assert d.endpoint_name == "mocha-video"
    assert d.evidence["throttled_cycles"] == 2


def test_throttled_cycles_threshold_is_honoured() -> None:
    """With throttled_cycles=3, two throttled cycles raise nothing and three do."""
    th = Thresholds.model_validate({"throttled_cycles": 3})
    assert codes(endpoint_history([IDLE, THROTTLED, THROTTLED], config=PINNED), th) == []
    three = endpoint_history([IDLE, THROTTLED, THROTTLED, THROTTLED], config=PINNED)
    assert codes(three, th) == ["no_gpu_capacity"]


def test_unknown_sample_between_throttled_neither_counts_nor_breaks() -> None:
    """throttled, unknown, throttled is two consecutive known cycles; one known is not."""
    d = only(endpoint_history([IDLE, THROTTLED, None, THROTTLED], config=PINNED), "no_gpu_capacity")
    assert d.evidence["throttled_cycles"] == 2
    assert codes(endpoint_history([IDLE, None, THROTTLED], config=PINNED)) == []


def test_throttled_flapping_every_cycle_never_raises() -> None:
    """Throttled on and off every cycle never raises, at any point in the history."""
    flapping = [THROTTLED if i % 2 else IDLE for i in range(20)]
    for h in prefixes(endpoint_history(flapping, config=PINNED)):
        assert codes(h) == []


def test_latest_sample_unknown_returns_nothing() -> None:
    """When the latest /health probe failed, nothing is returned for the endpoint."""
    history = endpoint_history([THROTTLED] * 4 + [None], config=PINNED)
    assert capacity.diagnose(history, TH) == []


def test_critical_while_the_queue_is_stalled() -> None:
    """Throttled while jobs wait and none run or finish is critical."""
    d = only(endpoint_history([IDLE, THROTTLED, THROTTLED], config=PINNED), "no_gpu_capacity")
    assert d.severity == "critical"


def test_warning_when_throttled_beside_working_workers() -> None:
    """Throttled beside running workers that finish jobs is routine churn: warning."""
    d = only(endpoint_history(churning(4), config=PINNED), "no_gpu_capacity")
    assert d.severity == "warning"
    assert "2 running workers" in d.summary


def test_warning_when_only_the_latest_sample_is_stalled() -> None:
    """Critical needs the last two known samples stalled; one stalled sample gives warning."""
    history = endpoint_history([*churning(3), THROTTLED], config=PINNED)
    assert only(history, "no_gpu_capacity").severity == "warning"


def test_summary_and_evidence_carry_the_numbers() -> None:
    """The summary names throttled workers, cycles, queued jobs, the tier and datacenter."""
    history = endpoint_history([IDLE, *[THROTTLED] * 4], config=PINNED, account=TX3)
    d = only(history, "no_gpu_capacity")
    assert d.summary == (
        "mocha-video has had 1 throttled worker for 4 cycles (90 s) while 2 jobs wait and "
        "none run: US-TX-3, the datacenter its network volume pins, has no AMPERE_48 capacity."
    )
    assert d.evidence["throttled"] == 1
    assert d.evidence["in_queue"] == 2
    assert d.evidence["throttled_s"] == 90
    assert d.evidence["suggested_gpu_ids"] == WIDER
    assert d.evidence["datacenter"] == "US-TX-3"


def test_remedy_gives_save_endpoint_with_wider_gpu_list_and_volume_unpin() -> None:
    """The remedy holds this endpoint's saveEndpoint with every compatible tier, and unpin."""
    d = only(endpoint_history([THROTTLED] * 2, config=PINNED, account=TX3), "no_gpu_capacity")
    assert 'saveEndpoint(input: { id: "ep1"' in posted(d.remedy)
    assert f'gpuIds: "{WIDER}"' in posted(d.remedy)
    assert 'networkVolumeId: ""' in posted(d.remedy)
    assert "gpuTypes" in d.remedy


def test_remedy_without_a_volume_offers_no_unpin() -> None:
    """Without a network volume the remedy widens gpuIds and does not offer to unpin."""
    d = only(endpoint_history([THROTTLED] * 2, config=config()), "no_gpu_capacity")
    assert f'gpuIds: "{WIDER}"' in posted(d.remedy)
    assert "network volume pin" not in d.remedy
    assert "createNetworkVolume" not in d.remedy


def test_unknown_config_still_raises_with_a_remedy_without_mutation() -> None:
    """No GraphQL configuration: still raised, the remedy explains but prefills no mutation."""
    d = only(endpoint_history([THROTTLED] * 2, config=None), "no_gpu_capacity")
    assert "saveEndpoint(input" not in d.remedy
    assert "gpuIds" in d.remedy


def test_throttled_capacity_scenario_timeline() -> None:
    """scenarios/throttled-capacity: quiet at cycle 2, critical by cycle 4, gone once served."""
    hs = (
        [IDLE] * 2
        + [THROTTLED] * 12
        + [Health(completed=40, in_queue=1, in_progress=1, running=1)] * 3
        + [Health(completed=42, idle=1, ready=1)] * 4
    )
    seen = {
        h.latest.cycle: codes(h)
        for h in prefixes(endpoint_history(hs, config=PINNED))
        if h.latest is not None
    }
    assert seen[2] == []
    assert seen[3] == []
    assert all(seen[c] == ["no_gpu_capacity"] for c in range(4, 15))
    assert all(seen[c] == [] for c in range(15, 22))


# --- not_scheduling ------------------------------------------------------------------


def test_not_scheduling_one_sample_below_the_duration_raises_nothing() -> None:
    """Ten silent samples span 270 s, under not_scheduling_s (300 s): nothing."""
    assert codes(endpoint_history([SILENT] * 10, config=PINNED)) == []


def test_not_scheduling_at_the_duration_raises_critical() -> None:
    """Eleven silent samples span 300 s: not_scheduling, critical, with the numbers."""
    d = only(endpoint_history([SILENT] * 11, config=PINNED, account=TX3), "not_scheduling")
    assert d.severity == "critical"
    assert d.summary.startswith(
        "mocha-video has had 3 jobs queued and no worker in any state "
        "for 5 min (11 cycles) although workersMax is 1"
    )
    assert "US-TX-3" in d.summary
    assert d.evidence["not_scheduling_s"] == 300
    assert d.evidence["in_queue"] == 3
    assert d.evidence["workers_max"] == 1


def test_not_scheduling_remedy_widens_gpu_ids_and_checks_gpu_types() -> None:
    """The remedy holds the saveEndpoint with the wider list, the unpin and gpuTypes."""
    d = only(endpoint_history([SILENT] * 11, config=PINNED), "not_scheduling")
    assert f'gpuIds: "{WIDER}"' in posted(d.remedy)
    assert 'networkVolumeId: ""' in posted(d.remedy)
    assert "gpuTypes" in d.remedy


def test_not_scheduling_unknown_inside_the_window_neither_counts_nor_breaks() -> None:
    """An unknown sample inside keeps the run (300 s still spanned); one at the start adds none."""
    inside = [SILENT] * 5 + [None] + [SILENT] * 5
    assert codes(endpoint_history(inside, config=PINNED)) == ["not_scheduling"]
    leading = [None] + [SILENT] * 10
    assert codes(endpoint_history(leading, config=PINNED)) == []


def test_not_scheduling_broken_by_any_worker() -> None:
    """A worker in any state (initializing, throttled) breaks the silent run."""
    for worker in (Health(in_queue=3, initializing=1), Health(in_queue=3, unhealthy=1)):
        hs = [SILENT] * 6 + [worker] + [SILENT] * 6
        assert "not_scheduling" not in codes(endpoint_history(hs, config=PINNED))
    throttled = [Health(completed=40, in_queue=3, throttled=1)] * 11
    assert codes(endpoint_history(throttled, config=PINNED)) == ["no_gpu_capacity"]


def test_not_scheduling_needs_a_known_config_with_workers_max() -> None:
    """Unknown config or workersMax 0 (workers_max_zero's case) raise no not_scheduling."""
    assert codes(endpoint_history([SILENT] * 20, config=None)) == []
    assert codes(endpoint_history([SILENT] * 20, config=config(workers_max=0))) == []


def test_not_scheduling_flapping_queue_never_raises() -> None:
    """A queue that empties every other cycle never raises."""
    hs = [SILENT if i % 2 else IDLE for i in range(30)]
    for h in prefixes(endpoint_history(hs, config=PINNED)):
        assert codes(h) == []


def test_not_scheduling_latest_unknown_returns_nothing() -> None:
    """Ten minutes silent, then the probe fails: nothing is returned."""
    assert codes(endpoint_history([SILENT] * 20 + [None], config=PINNED)) == []


# --- queue_backlog -------------------------------------------------------------------


CAPPED = config(workers_max=3, scaler_type="QUEUE_DELAY", scaler_value=4)


def test_queue_backlog_below_and_at_the_job_threshold() -> None:
    """9 queued jobs at workersMax for 5 min raise nothing; 10 raise queue_backlog."""
    nine = Health(in_queue=9, in_progress=3, running=3)
    assert codes(endpoint_history([nine] * 11, config=CAPPED)) == []
    ten = Health(in_queue=10, in_progress=3, running=3)
    d = only(endpoint_history([ten] * 11, config=CAPPED), "queue_backlog")
    assert d.severity == "warning"


def test_queue_backlog_below_and_at_the_duration() -> None:
    """270 s of backlog raise nothing; 300 s raise it with the numbers in the summary."""
    assert codes(endpoint_history([BACKLOG] * 10, config=CAPPED)) == []
    d = only(endpoint_history([BACKLOG] * 11, config=CAPPED), "queue_backlog")
    assert d.summary == (
        "mocha-video has had 12 jobs queued for 5 min (11 cycles) while all 3 workers its "
        "workersMax allows run: capacity is capped by workersMax."
    )
    assert d.evidence["in_queue"] == 12
    assert d.evidence["workers_max"] == 3
    assert d.evidence["backlog_s"] == 300


def test_queue_backlog_needs_every_allowed_worker_running() -> None:
    """A backlog with fewer running workers than workersMax is not capped by workersMax."""
    two = Health(in_queue=12, in_progress=2, running=2)
    assert codes(endpoint_history([two] * 20, config=CAPPED)) == []
    assert codes(endpoint_history([BACKLOG] * 20, config=None)) == []


def test_queue_backlog_unknown_inside_neither_counts_nor_breaks() -> None:
    """An unknown sample in the middle of a 300 s backlog keeps it raised."""
    hs = [BACKLOG] * 5 + [None] + [BACKLOG] * 5
    assert codes(endpoint_history(hs, config=CAPPED)) == ["queue_backlog"]


def test_queue_backlog_flapping_never_raises() -> None:
    """A backlog that dips under the threshold every other cycle never raises."""
    low = Health(in_queue=4, in_progress=3, running=3)
    hs = [BACKLOG if i % 2 else low for i in range(30)]
    for h in prefixes(endpoint_history(hs, config=CAPPED)):
        assert codes(h) == []


def test_queue_backlog_remedy_raises_workers_max_and_lowers_scaler() -> None:
    """The remedy gives saveEndpoint with a higher workersMax and a lower scalerValue."""
    d = only(endpoint_history([BACKLOG] * 11, config=CAPPED), "queue_backlog")
    assert "workersMax: 6" in d.remedy
    assert "scalerValue: 2" in d.remedy
    assert 'saveEndpoint(input: { id: "ep1"' in posted(d.remedy)


def test_queue_backlog_latest_unknown_returns_nothing() -> None:
    """A backlog followed by a failed probe returns nothing."""
    assert codes(endpoint_history([BACKLOG] * 11 + [None], config=CAPPED)) == []


# --- all together --------------------------------------------------------------------


def test_healthy_busy_endpoint_raises_nothing() -> None:
    """scenarios/healthy-traffic: a cold start and a worked-off burst raise nothing, ever."""
    for h in prefixes(healthy_traffic()):
        assert capacity.diagnose(h, TH) == []


def test_each_watched_endpoint_is_judged_on_its_own() -> None:
    """Only the throttled endpoint is raised; an unknown one beside it returns nothing."""
    obs = [
        observation(
            c,
            [
                sample(THROTTLED, endpoint_id="a", config=config("a", name="alpha")),
                sample(IDLE, endpoint_id="b", config=config("b", name="beta")),
                sample(THROTTLED if c < 3 else None, endpoint_id="c", config=config("c")),
            ],
        )
        for c in range(1, 4)
    ]
    found = capacity.diagnose(build(obs), TH)
    assert [(d.code, d.endpoint_id, d.endpoint_name) for d in found] == [
        ("no_gpu_capacity", "a", "alpha")
    ]


def test_empty_history_returns_nothing() -> None:
    """No observation at all: nothing."""
    assert capacity.diagnose(History(()), TH) == []


# --- live GPU stock in the remedy (REST v2 catalog) ------------------------------------


def gpu(
    gpu_type: str, pool: str, *where: tuple[str, str], level: str | None = None
) -> GpuStock:
    """A catalog GPU type with its stock per datacenter."""
    overall = level or ("HIGH" if any(lvl != "NONE" for _, lvl in where) else "NONE")
    return GpuStock(gpu_type, pool, overall, tuple(where), 0.00044)


def throttled_remedy(stock: list[GpuStock] | None, plane: str = "rest", **cfg: object) -> str:
    c = replace(PINNED, **cfg) if cfg else PINNED
    history = endpoint_history(
        [THROTTLED] * 3, config=c, account=TX3, control_plane=plane, gpu_stock=stock
    )
    return only(history, "no_gpu_capacity").remedy


def patches(remedy: str) -> list[dict[str, object]]:
    """The JSON bodies of the remedy's PATCH commands."""
    return [
        json.loads(argv[argv.index("-d") + 1])
        for argv in curls(remedy)
        if "-X" in argv and argv[argv.index("-X") + 1] == "PATCH"
    ]


def test_stock_in_the_pinned_datacenter_lists_it_and_keeps_the_pin() -> None:
    """Compatible tiers with stock in US-TX-3 are listed (and those without), the pools
    widen to them, and dropping the pin is not offered."""
    stock = [
        gpu("NVIDIA A40", "AMPERE_48", ("US-TX-3", "NONE"), ("EU-RO-1", "HIGH")),
        gpu("NVIDIA L40S", "ADA_48_PRO", ("US-TX-3", "MEDIUM")),
        gpu("NVIDIA A100 80GB PCIe", "AMPERE_80", ("US-TX-3", "LOW"), ("US-KS-2", "HIGH")),
    ]
    remedy = throttled_remedy(stock)
    assert "stock in US-TX-3 now: ADA_48_PRO (US-TX-3 MEDIUM); AMPERE_80 (US-TX-3 LOW)" in remedy
    assert "none there: AMPERE_48, ADA_80_PRO" in remedy
    assert patches(remedy) == [{"gpu": {"pools": ["AMPERE_48", "ADA_48_PRO", "AMPERE_80"]}}]
    assert "pin" not in remedy.lower()


def test_no_stock_in_the_pinned_datacenter_but_elsewhere_drops_the_pin() -> None:
    """No compatible tier has stock in US-TX-3 but some has in EU-RO-1: drop the pin (the
    volume, here), with the stocked tiers, or move the volume there."""
    stock = [
        gpu("NVIDIA A40", "AMPERE_48", ("US-TX-3", "NONE"), ("EU-RO-1", "HIGH")),
        gpu("NVIDIA A100 80GB PCIe", "AMPERE_80", ("EU-RO-1", "LOW")),
        gpu("NVIDIA L40S", "ADA_48_PRO", level="NONE"),
    ]
    remedy = throttled_remedy(stock)
    assert "no compatible tier has stock in US-TX-3 now" in remedy
    assert "elsewhere: AMPERE_48 (EU-RO-1 HIGH); AMPERE_80 (EU-RO-1 LOW)" in remedy
    assert patches(remedy) == [
        {"gpu": {"pools": ["AMPERE_48", "AMPERE_80"]}, "networkVolumes": []}
    ]
    assert "new network volume in EU-RO-1" in remedy


def test_a_locations_pin_is_dropped_with_data_center_ids() -> None:
    """An endpoint pinned by dataCenterIds (no volume) drops them: {"dataCenterIds": []};
    GraphQL mode drops `locations` in saveEndpoint."""
    stock = [gpu("NVIDIA A40", "AMPERE_48", ("EU-RO-1", "NONE"), ("US-KS-2", "HIGH"))]
    remedy = throttled_remedy(stock, locations="EU-RO-1", network_volume_id=None)
    assert patches(remedy) == [{"dataCenterIds": []}]
    graphql = throttled_remedy(
        stock, "graphql", locations="EU-RO-1", network_volume_id=None
    )
    assert 'locations: ""' in posted(graphql)
    assert "-X PATCH" not in graphql


def test_no_stock_anywhere_does_not_recommend_dropping_the_pin() -> None:
    """No compatible tier has stock in any datacenter: the remedy says so, widens the pools
    to every compatible tier, and offers no unpin."""
    stock = [
        gpu("NVIDIA A40", "AMPERE_48", ("US-TX-3", "NONE")),
        gpu("NVIDIA L40S", "ADA_48_PRO", level="NONE"),
    ]
    remedy = throttled_remedy(stock)
    assert "has stock in any datacenter now, so dropping the datacenter pin would not help" in (
        remedy
    )
    assert patches(remedy) == [{"gpu": {"pools": WIDER.split(",")}}]


def test_unknown_or_stale_stock_gives_the_advice_without_it() -> None:
    """No catalog read, or one older than STOCK_MAX_AGE_S, or one that names none of the
    endpoint's tiers: the remedy is the one without stock data."""
    without = throttled_remedy(None)
    assert "GPU stock" not in without
    assert {"networkVolumes": []} in patches(without)
    unrelated = [gpu("NVIDIA H100", "HOPPER_141", ("US-TX-3", "HIGH"))]
    assert throttled_remedy(unrelated) == without
    stale_obs = [
        observation(c, [sample(THROTTLED, config=PINNED)], account=TX3, control_plane="rest",
                    gpu_stock=[gpu("NVIDIA L40S", "ADA_48_PRO", ("US-TX-3", "HIGH"))]
                    if c == 1 else None)
        for c in range(1, 23)  # the read is 630 s old at the last cycle
    ]
    assert only(build(stale_obs), "no_gpu_capacity").remedy == without


def test_excluded_gpu_types_do_not_count_as_stock() -> None:
    """A GPU type the endpoint excludes (`-NVIDIA L40S`) is not stock of its pool; the
    PATCH restates the exclusion beside the pools."""
    stock = [
        gpu("NVIDIA L40S", "ADA_48_PRO", ("US-TX-3", "HIGH")),
        gpu("NVIDIA A100 80GB PCIe", "AMPERE_80", ("US-TX-3", "LOW")),
    ]
    remedy = throttled_remedy(stock, gpu_ids="AMPERE_48,-NVIDIA L40S")
    assert "none there: AMPERE_48, ADA_48_PRO, ADA_80_PRO" in remedy
    assert patches(remedy) == [
        {"gpu": {"pools": ["AMPERE_48", "AMPERE_80"], "excludedTypes": ["NVIDIA L40S"]}}
    ]


def test_not_scheduling_reads_the_stock_too() -> None:
    """not_scheduling's remedy comes from the same catalog."""
    stock = [gpu("NVIDIA L40S", "ADA_48_PRO", ("US-TX-3", "HIGH"))]
    history = endpoint_history(
        [SILENT] * 11, config=PINNED, account=TX3, control_plane="rest", gpu_stock=stock
    )
    remedy = only(history, "not_scheduling").remedy
    assert "stock in US-TX-3 now: ADA_48_PRO (US-TX-3 HIGH)" in remedy


def test_summary_names_a_datacenter_pin_without_a_volume() -> None:
    """An endpoint pinned by locations / dataCenterIds names them in the summary."""
    c = replace(PINNED, network_volume_id=None, locations="EU-RO-1")
    d = only(endpoint_history([THROTTLED] * 3, config=c), "no_gpu_capacity")
    assert "EU-RO-1, where it is pinned, has no AMPERE_48 capacity" in d.summary


def test_the_stock_read_is_in_the_evidence() -> None:
    """The evidence carries what the catalog said and how old the read is; nothing
    without a read."""
    stock = [gpu("NVIDIA A40", "AMPERE_48", ("US-TX-3", "NONE"), ("EU-RO-1", "HIGH"))]
    history = endpoint_history(
        [THROTTLED] * 3, config=PINNED, account=TX3, control_plane="rest", gpu_stock=stock
    )
    ev = only(history, "no_gpu_capacity").evidence
    assert ev["stock_read_s_ago"] == 0
    assert ev["stock_where_pinned"] == "none"
    assert ev["stock_elsewhere"] == "AMPERE_48 (EU-RO-1 HIGH)"
    plain = only(endpoint_history([THROTTLED] * 3, config=PINNED), "no_gpu_capacity")
    assert "stock_read_s_ago" not in plain.evidence
