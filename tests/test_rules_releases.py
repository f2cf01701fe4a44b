"""The releases family: stale_release (stuck rollout, template drift) and the release
correlation every endpoint diagnosis gets (rules.releases.correlate, via the engine)."""

from __future__ import annotations

import json
from typing import Any

from remedykit import curls, posted
from rulekit import (
    EID,
    TH,
    Health,
    build,
    config,
    endpoint_history,
    healthy_traffic,
    observation,
    prefixes,
    release,
    releases,
    sample,
    template,
    worker,
    workers,
)

from model.history import History
from model.observation import Releases, Workers
from monitor.state.codec import memory_from_json, memory_to_json
from monitor.state.incidents import IncidentTracker
from rules import releases as family
from rules.diagnosis import Diagnosis
from rules.engine import evaluate
from rules.thresholds import Thresholds

CFG = config(workers_min=1, workers_max=3,
             template=template(image_name="acme/w:2", container_disk_gb=60))
OLD = worker("w-old", version=1, stale=True, started_at=-7200, image="acme/w:1")
NEW = worker("w-new", version=2, started_at=60, image="acme/w:2")
STUCK = workers(OLD, NEW, version=2)
QUIET = Health(completed=100, running=1, idle=1, ready=1)
STARTING = Health(in_queue=3, running=1)
TOKEN = "hf_abcdefghijklmnopqrstuvwxyz0123456789AB"  # a fake, token-shaped


def codes(history: History, th: Thresholds = TH) -> list[str]:
    return [d.code for d in family.diagnose(history, th)]


def only(history: History, code: str = "stale_release", th: Thresholds = TH) -> Diagnosis:
    found = [d for d in evaluate(history, th) if d.code == code]
    assert len(found) == 1, found
    return found[0]


def patch_bodies(remedy: str) -> list[tuple[str, dict[str, Any]]]:
    """(url, JSON body) of every PATCH curl in the remedy, parsed as a shell would."""
    out = []
    for argv in curls(remedy):
        if "PATCH" in argv:
            url = next(a for a in argv if a.startswith("https://"))
            out.append((url, json.loads(argv[argv.index("-d") + 1])))
    return out


def steady(n: int, recs: Workers | None, rels: Releases | None = None, *,
           cfg: Any = CFG, health: Health = QUIET, first_cycle: int = 1,
           control_plane: str = "graphql") -> History:
    return endpoint_history([health] * n, config=cfg, workers=[recs] * n,
                            releases=[rels] * n, first_cycle=first_cycle,
                            control_plane=control_plane)


# --- stuck rollout -------------------------------------------------------------------------


def test_stale_workers_30_min_after_the_release_is_a_stuck_rollout() -> None:
    """Release 2 created at t=0; a worker still serves release 1 at 29.5 min (nothing) and
    at 30 min (stale_release, warning, with the numbers)."""
    rels = releases(release(2, 0.0, ("template.imageName", '"acme/w:1"', '"acme/w:2"')),
                    release(1, -86400.0), in_progress=True, percent=50)
    assert codes(steady(1, STUCK, rels, first_cycle=60)) == []  # t = 1770
    d = only(steady(1, STUCK, rels, first_cycle=61))  # t = 1800
    assert d.severity == "warning"
    assert d.summary == (
        "mocha-video's rollout is stuck: 1 worker still serves release 1 (release 2 came "
        "30 min ago): requests keep reaching the old version."
    )
    assert d.evidence["stale_workers"] == 1
    assert d.evidence["stale_worker_ids"] == ["w-old"]
    assert d.evidence["endpoint_version"] == 2
    assert d.evidence["percent_on_latest"] == 50
    assert d.evidence["release_created_at"] == "1970-01-01T00:00:00Z"
    assert "saveEndpoint" in posted(d.remedy)
    assert "workersMin: 0" in posted(d.remedy)


def test_a_release_not_read_yet_is_not_the_one_before() -> None:
    """The workers say version 2 but the last /releases read knows only release 1, made a
    month ago: release 2's age is unknown (read the cycle after), so a stale worker seen
    once is no stuck rollout; 30 min of stale records still decide."""
    old_only = releases(release(1, -30 * 86400.0), version=1)
    assert codes(steady(1, STUCK, old_only, first_cycle=61)) == []
    assert codes(steady(61, STUCK, old_only)) == ["stale_release"]


def test_without_releases_30_min_of_stale_records_decide() -> None:
    """/releases not read: stale in every record for 30 min raises, 29.5 min does not."""
    assert codes(steady(60, STUCK)) == []
    d = only(steady(61, STUCK))
    assert "(for 30 min)" in d.summary
    assert d.evidence["stale_seen_s"] == 1800


def test_a_rollout_that_finishes_raises_nothing() -> None:
    """Stale workers for 20 min, then all on the new release: nothing at any cycle."""
    done = workers(NEW, worker("w-new2", version=2, image="acme/w:2"), version=2)
    recs: list[Workers | None] = [STUCK] * 40 + [done] * 20
    history = endpoint_history([QUIET] * 60, config=CFG, workers=recs)
    for h in prefixes(history):
        assert codes(h) == []


def test_stuck_rollout_remedy_in_rest_mode_is_a_v2_patch_and_a_rollback() -> None:
    """rest: the workers PATCH (min 0, max kept) and the rollback PATCH of the release."""
    rels = releases(release(2, 0.0, ("template.imageName", '"acme/w:1"', '"acme/w:2"')))
    d = only(steady(1, STUCK, rels, first_cycle=61, control_plane="rest"))
    bodies = patch_bodies(d.remedy)
    assert bodies == [
        (f"https://api.runpod.io/v2/serverless/{EID}",
         {"workers": {"min": 0, "max": 3, "idleTimeout": 5}}),
        (f"https://api.runpod.io/v2/serverless/{EID}", {"image": "acme/w:1"}),
    ]


def test_a_stale_worker_held_when_the_workers_answer_is_missing() -> None:
    """Source v2: a cycle without a /workers answer holds an active stale_release."""
    history = steady(61, STUCK)
    tracker = IncidentTracker()
    tracker.update(history.observations[-1], evaluate(history, TH))
    nothing = observation(62, [sample(QUIET, config=CFG)])  # workers not asked
    changes = tracker.update(nothing, [])
    assert [i.key for i in changes.held] == [("stale_release", EID)]
    answered = observation(63, [sample(QUIET, config=CFG, workers=workers(NEW, version=2))])
    assert [i.key for i in tracker.update(answered, []).resolved] == [("stale_release", EID)]


# --- template drift -------------------------------------------------------------------------


def test_config_image_no_current_worker_runs_is_a_template_edit_not_released() -> None:
    """The config names acme/w:3, the workers on release 2 run acme/w:2: 9.5 min nothing,
    10 min stale_release with both images."""
    cfg = config(template=template(image_name="acme/w:3"))
    recs = workers(NEW, version=2)
    assert codes(steady(20, recs, cfg=cfg)) == []
    d = only(steady(21, recs, cfg=cfg))
    assert d.summary == (
        "mocha-video's configuration names image acme/w:3, but the workers on its current "
        "release 2 run acme/w:2 (10 min): a template edit that never reached the endpoint."
    )
    assert d.evidence["config_image"] == "acme/w:3"
    assert d.evidence["worker_images"] == ["acme/w:2"]
    assert "saveEndpoint" in posted(d.remedy)
    rest = only(steady(21, recs, cfg=cfg, control_plane="rest"))
    assert patch_bodies(rest.remedy) == [
        (f"https://api.runpod.io/v2/serverless/{EID}", {"image": "acme/w:3"})]


def test_same_image_spelled_differently_or_only_stale_workers_is_no_drift() -> None:
    """docker.io/library and an implied :latest are the same image; a config whose new
    image only stale workers contradict (a rollout under way) is no drift either."""
    cfg = config(template=template(image_name="docker.io/library/python"))
    same = workers(worker("w", version=2, image="python:latest"), version=2)
    assert codes(steady(40, same, cfg=cfg)) == []
    only_stale = workers(worker("w", version=1, stale=True, image="acme/w:1"), version=2)
    assert codes(steady(40, only_stale, cfg=CFG,
                        rels=None)) == []  # 20 min of stale only: under stale_release_s


# --- release correlation --------------------------------------------------------------------

ENV_OLD = json.dumps({"MODEL_ID": "org/model-a", "HF_TOKEN": TOKEN, "DB_PASSWORD": "hunter2"})
ENV_NEW = json.dumps({"MODEL_ID": "org/model-b", "HF_TOKEN": TOKEN, "DB_PASSWORD": "swordfish",
                      "EXTRA": "ghp_" + "x" * 36})
SEVEN = release(7, 120.0, ("env", ENV_OLD, ENV_NEW))


def crash_after_release(rels: Releases, control_plane: str = "rest") -> History:
    """A 15 min no-restart stall from t=300 (cycle 11); `rels` read on every cycle."""
    return endpoint_history([STARTING] * 31, config=config(), first_cycle=11,
                            releases=[rels] * 31, control_plane=control_plane)


def test_a_problem_beginning_after_a_release_names_it_and_its_masked_diff() -> None:
    """crash_loop began 3 min after release 7 (created t=120, stall from t=300): the
    summary names the release and its env diff, masked; the evidence carries it."""
    d = only(crash_after_release(releases(SEVEN, release(6, -86400.0))), "crash_loop")
    assert d.summary.endswith(
        "It began 3 min after release 7, which changed env DB_PASSWORD **** -> ****; env "
        "EXTRA (unset) -> ghp_****; env MODEL_ID org/model-a -> org/model-b.")
    assert d.evidence["release"] == {
        "version": 7, "created_at": "1970-01-01T00:02:00Z", "began_after_s": 180.0,
        "diff": [
            {"field": "env DB_PASSWORD", "old": "****", "new": "****"},
            {"field": "env EXTRA", "old": "(unset)", "new": "ghp_****"},
            {"field": "env MODEL_ID", "old": "org/model-a", "new": "org/model-b"},
        ],
    }
    assert "purge-queue" in d.remedy  # the fix stays, the rollback is beside it
    rollback = d.remedy[d.remedy.index("Or roll back release 7"):]
    ((url, body),) = patch_bodies(rollback)
    assert url == f"https://api.runpod.io/v2/serverless/{EID}"
    assert body == {"env": {"MODEL_ID": "org/model-a",
                            "HF_TOKEN": "{{ RUNPOD_SECRET_HF_TOKEN }}",
                            "DB_PASSWORD": "{{ RUNPOD_SECRET_DB_PASSWORD }}"}}
    assert "store it as a RunPod secret of that name" in rollback
    text = json.dumps([d.summary, d.remedy, dict(d.evidence)])
    for secret in (TOKEN, "hunter2", "swordfish", "x" * 36):
        assert secret not in text


def test_graphql_mode_rollback_names_the_template_values_and_save_endpoint() -> None:
    """graphql: the old values to put back in the template, and the saveEndpoint."""
    image = release(7, 120.0, ("template.imageName", '"acme/w:1"', '"acme/w:2"'))
    d = only(crash_after_release(releases(image), control_plane="graphql"), "crash_loop")
    assert "which changed imageName acme/w:1 -> acme/w:2." in d.summary
    assert "restore image acme/w:1 in the endpoint's template (saveTemplate)" in d.remedy
    assert patch_bodies(d.remedy) == []


def test_a_release_long_before_or_after_the_onset_is_not_named() -> None:
    """Release 7 an hour before the stall began, or after it began: no annotation."""
    early = release(7, 300.0 - 3600.0, ("template.imageName", '"a:1"', '"a:2"'))
    late = release(8, 600.0, ("template.imageName", '"a:2"', '"a:3"'))
    for rels in (releases(early), releases(late)):
        d = only(crash_after_release(rels), "crash_loop")
        assert "release" not in d.evidence
        assert "It began" not in d.summary


def test_correlation_is_stable_while_the_incident_lasts() -> None:
    """The onset is the stall's start, so every cycle names the same release and the
    incident is held, never raised again, as its summary grows."""
    tracker = IncidentTracker()
    raised = 0
    for h in prefixes(endpoint_history(
            [STARTING] * 40, config=config(), first_cycle=11,
            releases=[releases(SEVEN)] * 40, control_plane="rest")):
        found = evaluate(h, TH)
        for d in found:
            assert d.evidence["release"]["began_after_s"] == 180.0
        raised += len(tracker.update(h.observations[-1], found).raised)
    assert raised == 1


def test_diagnoses_of_other_endpoints_and_account_ones_are_untouched() -> None:
    """Only the endpoint whose releases were read gets the annotation."""
    other = Diagnosis("low_balance", "account", "warning", "s", "r", {})
    mine = Diagnosis("crash_loop", "endpoint", "critical", "s.", "r", {"stalled_s": 60},
                     EID, "x")
    elsewhere = Diagnosis("crash_loop", "endpoint", "critical", "s.", "r", {"stalled_s": 60},
                          "ep2", "y")
    obs = [observation(c, [sample(STARTING, releases=releases(SEVEN)),
                           sample(STARTING, endpoint_id="ep2")]) for c in range(7, 12)]
    out = family.correlate(build(obs), TH, [other, mine, elsewhere])
    assert [d.summary for d in out] == ["s", "s. It began 2 min after release 7, which changed "
                                        "env DB_PASSWORD **** -> ****; env EXTRA (unset) -> "
                                        "ghp_****; env MODEL_ID org/model-a -> org/model-b.",
                                        "s."]


# --- the traps ------------------------------------------------------------------------------


def test_healthy_traffic_and_a_flapping_standby_raise_nothing() -> None:
    """Routine traffic, and a standby worker replaced every other cycle on the current
    release with the config's image: no stale_release at any cycle."""
    for h in prefixes(healthy_traffic()):
        assert codes(h) == []
    recs: list[Workers | None] = [
        workers(worker(f"w-{i // 2}", "IDLE", version=2, image="acme/w:2"), version=2)
        for i in range(40)]
    history = endpoint_history([QUIET] * 40, config=CFG, workers=recs)
    for h in prefixes(history):
        assert evaluate(h, TH) == []


def test_the_memory_of_worker_answers_survives_a_restart() -> None:
    """Memory.workers_seen_t round-trips through the store's JSON (an older row has none),
    and a memory without the endpoint reads as no record in the window."""
    history = steady(3, STUCK)
    assert history.memory.workers_seen_t == {EID: 60.0}
    assert memory_from_json(json.loads(json.dumps(memory_to_json(history.memory)))) == \
        history.memory
    later = History(history.observations[-1:], history.memory)
    assert later.has_worker_records(EID)
    assert not History(history.observations[-1:],
                       type(history.memory)()).has_worker_records(EID)
    old_row = {k: v for k, v in memory_to_json(history.memory).items() if k != "workers_seen_t"}
    assert memory_from_json(old_row).workers_seen_t == {}  # a row saved before the field


def test_a_long_execution_timeout_gives_a_busy_worker_time_to_finish() -> None:
    """A 1 h executionTimeout: a stale worker 30 min after the release may still be on its
    job, so stale_release waits for the hour."""
    cfg = config(workers_min=1, workers_max=3, timeout_ms=3_600_000,
                 template=template(image_name="acme/w:2", container_disk_gb=60))
    rels = releases(release(2, 0.0, ("template.imageName", '"acme/w:1"', '"acme/w:2"')))
    assert codes(steady(1, STUCK, rels, cfg=cfg, first_cycle=61)) == []
    assert codes(steady(1, STUCK, rels, cfg=cfg, first_cycle=120)) == []
    d = only(steady(1, STUCK, rels, cfg=cfg, first_cycle=121))
    assert d.evidence["threshold_s"] == 3600


def test_a_diagnosis_without_an_onset_is_not_tied_to_a_release() -> None:
    """A finding whose evidence tells no duration (a config audit) is left as it is."""
    audit = Diagnosis("container_disk_small", "endpoint", "warning", "s.", "r", {}, EID, "x")
    obs = [observation(c, [sample(STARTING, releases=releases(SEVEN))]) for c in range(7, 9)]
    assert family.correlate(build(obs), TH, [audit]) == [audit]


MUTABLE = {  # spec/runpod-rest-v2.md 2.10: the fields PATCH /v2/serverless/{id} accepts
    "name", "gpu", "cpu", "workers", "scaling", "dataCenterIds", "networkVolumes", "timeout",
    "flashboot", "image", "args", "disk", "ports", "env", "registry", "templateId",
}


def test_rest_mode_release_remedies_quote_v2_only() -> None:
    """In rest mode the stuck rollout, the template drift and the rollback quote no GraphQL,
    and every PATCH body holds only fields v2 accepts."""
    image = release(2, 0.0, ("template.imageName", '"acme/w:1"', '"acme/w:2"'),
                    ("workers.max", "5", "3"), ("template.dockerArgs", '""', '"run.sh"'))
    drift_cfg = config(template=template(image_name="acme/w:3", container_disk_gb=60))
    found = [
        only(steady(1, STUCK, releases(image), first_cycle=61, control_plane="rest")),
        only(steady(21, workers(NEW, version=2), cfg=drift_cfg, control_plane="rest")),
        only(crash_after_release(releases(SEVEN)), "crash_loop"),
    ]
    for d in found:
        text = d.remedy.lower()
        for word in ("mutation", "graphql", "saveendpoint", "savetemplate"):
            assert word not in text, (d.code, word)
        for _, body in patch_bodies(d.remedy):
            assert set(body) <= MUTABLE, body
    rollback = patch_bodies(found[0].remedy)[-1][1]
    assert rollback == {"image": "acme/w:1", "workers": {"min": 1, "max": 5}, "args": ""}


def test_graphql_mode_env_rollback_names_every_key_without_a_secret() -> None:
    """graphql: the whole old env to put back, secrets as RunPod secret references."""
    d = only(crash_after_release(releases(SEVEN), control_plane="graphql"), "crash_loop")
    assert ('restore env {"MODEL_ID": "org/model-a", "HF_TOKEN": "{{ RUNPOD_SECRET_HF_TOKEN '
            '}}", "DB_PASSWORD": "{{ RUNPOD_SECRET_DB_PASSWORD }}"}') in d.remedy
    for secret in (TOKEN, "hunter2", "swordfish"):
        assert secret not in d.remedy + d.summary
