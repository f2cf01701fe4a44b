"""The log evidence post-pass: the failing worker's lines name the cause of the diagnoses
they explain, masked; which workers' logs to read; what an incident keeps."""

from __future__ import annotations

from dataclasses import replace

from rulekit import (
    EID,
    TH,
    Health,
    build,
    config,
    endpoint_history,
    observation,
    sample,
    template,
)

from model.history import History
from model.observation import LogLine, Observation, Worker, WorkerLogs, Workers
from rules.diagnosis import Diagnosis
from rules.engine import evaluate
from rules.log_evidence import (
    EVIDENCE_KEY,
    KEEP_BYTES,
    KEEP_SNAPSHOTS,
    LAST_BYTES,
    LAST_LINES,
    WANT_PER_CYCLE,
    attach_logs,
    bounded,
    by_endpoint,
    excerpt,
    excerpt_title,
    keep_logs,
    logs_wanted,
    read_workers,
)

T0 = 1_780_000_000.0
HF = "hf_" + "Qx7Vb2Nm4Kp9Lr3Tw6Yz1Ac5Df8Gh0Jk2"  # token-shaped
DBPW = "plain-db-passw0rd-77"  # not token-shaped: only the template's env says it is secret
CFG = config(template=template(env=[("HF_TOKEN", HF), ("DB_PASSWORD", DBPW),
                                    ("HF_HOME", "/runpod-volume/hf")]))
UNHEALTHY = Health(unhealthy=1, running=0, in_queue=3)


def snap(worker: str, *texts: str, source: str = "container") -> WorkerLogs:
    return WorkerLogs(worker, tuple(LogLine(T0 + i, source, t) for i, t in enumerate(texts)))


def with_logs(history: History, *logs: WorkerLogs, at: int = -1,
              workers: Workers | None = None) -> History:
    """`history` with the sample of observation `at` carrying `logs` (and `workers`)."""
    obs = list(history.observations)
    o = obs[at]
    s = replace(o.endpoints[EID], logs=tuple(logs) if logs else None,
                workers=workers if workers is not None else o.endpoints[EID].workers)
    obs[at] = replace(o, endpoints={**o.endpoints, EID: s})
    return History(tuple(obs), history.memory, history.kept_logs)


def unhealthy_history() -> History:
    return endpoint_history([UNHEALTHY] * 3, config=CFG)


def only(found: list[Diagnosis], code: str) -> Diagnosis:
    (d,) = [d for d in found if d.code == code]
    return d


OOM = ["loading model ...", "ERROR | warmup failed, retrying", "Killed",
       "worker exited with exit code 137"]


def test_a_matched_signature_names_the_cause_with_lines_and_remedy() -> None:
    plain = only(evaluate(unhealthy_history(), TH), "workers_unhealthy")
    h = with_logs(unhealthy_history(), snap("w1", *OOM * 4, source="system"))
    d = only(evaluate(h, TH), "workers_unhealthy")
    assert d.summary == ("Worker logs: the worker was OOM-killed (exit 137) 4 times. "
                         + plain.summary)
    assert d.remedy.startswith("From the worker logs (the worker was OOM-killed (exit 137) 4 "
                               "times): The process was killed for memory")
    assert d.remedy.endswith(plain.remedy)
    assert d.evidence["log_signature"] == "oom_killed"
    assert d.evidence["log_signature_count"] == 4
    logs = d.evidence[EVIDENCE_KEY]
    assert logs["kind"] == "matched"
    assert logs["workers"] == ["w1"]
    assert len(logs["lines"]) == 8  # 4 x ("Killed", "exit code 137"); the ERROR lines not
    assert logs["lines"][0] == {"t": "2026-05-28T20:26:42Z", "worker_id": "w1",
                                "source": "system", "line": "Killed"}
    assert all("ERROR" not in x["line"] for x in logs["lines"])
    # the other evidence stays as the rule gave it
    mine = {EVIDENCE_KEY, "log_signature", "log_signature_count"}
    assert {k: v for k, v in d.evidence.items() if k not in mine} == dict(plain.evidence)


def test_unmatched_logs_are_attached_as_bounded_last_lines() -> None:
    many = [f"step {i}: ERROR something odd happened" for i in range(100)]
    d = only(evaluate(with_logs(unhealthy_history(), snap("w1", *many)), TH),
             "workers_unhealthy")
    plain = only(evaluate(unhealthy_history(), TH), "workers_unhealthy")
    assert d.summary == plain.summary
    assert d.remedy == plain.remedy
    logs = d.evidence[EVIDENCE_KEY]
    assert logs["kind"] == "last_lines"
    assert "log_signature" not in d.evidence
    assert len(logs["lines"]) == LAST_LINES
    assert logs["lines"][-1]["line"] == "step 99: ERROR something odd happened"
    big = [("x" * 290) + str(i) for i in range(40)]
    logs = only(evaluate(with_logs(unhealthy_history(), snap("w1", *big)), TH),
                "workers_unhealthy").evidence[EVIDENCE_KEY]
    assert sum(len(x["line"]) for x in logs["lines"]) <= LAST_BYTES
    assert logs["lines"][-1]["line"].endswith("39")
    assert excerpt_title(d.evidence) == "Worker logs: last lines (no known failure signature)"


def test_secrets_in_log_lines_are_masked_the_template_env_values_too() -> None:
    h = with_logs(unhealthy_history(), snap(
        "w1", f"HF_TOKEN={HF} DB_PASSWORD={DBPW}",
        f"fatal: Authentication failed for 'https://x:{DBPW}@github.com/acme/w.git/'",
        f"huggingface_hub.errors.GatedRepoError: 403 Client Error. token {HF}"))
    d = only(evaluate(h, TH), "workers_unhealthy")
    text = repr(d)
    assert HF not in text
    assert HF[-8:] not in text
    assert DBPW not in text
    assert "token hf_****" in text
    assert "x:****@github.com" in text
    assert d.evidence["log_signature"] == "hf_download"
    # unmatched lines ('last lines') are masked the same way
    h = with_logs(unhealthy_history(), snap("w1", f"HF_TOKEN={HF} DB_PASSWORD={DBPW}"))
    d = only(evaluate(h, TH), "workers_unhealthy")
    assert d.evidence[EVIDENCE_KEY]["lines"][0]["line"] == "HF_TOKEN=hf_**** DB_PASSWORD=****"


def test_crash_loop_and_not_every_code() -> None:
    """crash_loop takes the logs; a rule the logs do not explain is left alone."""
    stalled = [Health(in_queue=3, running=1), Health(in_queue=3, running=0, idle=1)] * 8
    base = endpoint_history(stalled, config=CFG)
    h = with_logs(base, snap("w2", "ModuleNotFoundError: No module named 'diffusers'"))
    found = evaluate(h, TH)
    d = only(found, "crash_loop")
    assert d.summary.startswith("Worker logs: a Python module is missing (diffusers) once. ")
    assert [x for x in found if x.code != "crash_loop"] == \
        [x for x in evaluate(base, TH) if x.code != "crash_loop"]


def test_no_logs_no_change() -> None:
    found = evaluate(unhealthy_history(), TH)
    assert attach_logs(unhealthy_history(), TH, found) == found
    assert all(EVIDENCE_KEY not in d.evidence for d in found)


def test_kept_logs_outlive_the_window() -> None:
    """A restart (or the window) lost the sample that carried them: the kept ones stand."""
    kept = {EID: (snap("w1", "OSError: [Errno 28] No space left on device"),)}
    h = replace(unhealthy_history(), kept_logs=kept)
    d = only(evaluate(h, TH), "workers_unhealthy")
    assert d.evidence["log_signature"] == "disk_full"


def test_excerpt_is_short() -> None:
    h = with_logs(unhealthy_history(), snap("w1", *OOM * 4, source="system"))
    d = only(evaluate(h, TH), "workers_unhealthy")
    lines = excerpt(d.evidence, max_lines=3, max_chars=30)
    assert lines == ["20:26:42Z system w1: Killed",
                     "20:26:43Z system w1: worker e…", "20:26:46Z system w1: Killed"]
    assert excerpt({}) == []
    assert excerpt_title({}) == ""


# --- logs_wanted -----------------------------------------------------------------------

def workers(*ws: Worker) -> Workers:
    return Workers(3, ws)


def test_logs_wanted_unhealthy_first_then_the_newest_restart() -> None:
    before = workers(Worker("ok1", "RUNNING", started_at=T0 - 900),
                     Worker("re1", "RUNNING", started_at=T0 - 600),
                     Worker("ini", "INITIALIZING", started_at=T0 - 300))
    now = workers(Worker("ok1", "RUNNING", started_at=T0 - 900),
                  Worker("re1", "RUNNING", started_at=T0 - 20),  # restarted since
                  Worker("ini", "INITIALIZING", started_at=T0 - 300),
                  Worker("thr", "THROTTLED"),
                  Worker("bad", "UNHEALTHY", started_at=T0 - 1200))
    h = with_logs(with_logs(unhealthy_history(), at=-2, workers=before), workers=now)
    active = evaluate(h, TH)
    assert logs_wanted(active, h, set()) == [(EID, "bad")]
    assert logs_wanted(active, h, {(EID, "bad")}) == [(EID, "re1")]
    assert logs_wanted(active, h, {(EID, "bad"), (EID, "re1")}) == [(EID, "ini")]
    assert logs_wanted(active, h, {(EID, w) for w in ("bad", "re1", "ini")}) == [(EID, "ok1")]
    assert logs_wanted(active, h, {(EID, w) for w in ("bad", "re1", "ini", "ok1")}) == []
    # a diagnosis the logs do not explain, or no workers listed: nothing to read
    other = [replace(d, code="low_balance") for d in active]
    assert logs_wanted(other, h, set()) == []
    assert logs_wanted(active, unhealthy_history(), set()) == []


def test_logs_wanted_is_capped_per_cycle_one_per_endpoint() -> None:
    eps = [f"ep{i}" for i in range(5)]
    obs = [observation(c, [replace(sample(UNHEALTHY, endpoint_id=e, config=config(e)),
                                   workers=workers(Worker("a", "UNHEALTHY"),
                                                   Worker("b", "UNHEALTHY")))
                           for e in eps]) for c in (1, 2)]
    h = build(obs)
    wanted = logs_wanted(evaluate(h, TH), h, set())
    assert len(wanted) == WANT_PER_CYCLE
    assert len({e for e, _ in wanted}) == WANT_PER_CYCLE


# --- keep_logs -------------------------------------------------------------------------

def _obs_with(h: History) -> Observation:
    return h.observations[-1]


def test_keep_logs_masks_bounds_and_drops_ended_incidents() -> None:
    key = ("workers_unhealthy", EID)
    h = with_logs(unhealthy_history(), snap("w1", f"token {HF} / {DBPW}", "Killed"))
    kept = keep_logs({}, {key: h.observations[0].t}, _obs_with(h), h)
    (s,) = kept[key]
    assert [ll.line for ll in s.lines] == ["token hf_**** / ****", "Killed"]
    assert read_workers(kept) == {(EID, "w1")}
    assert by_endpoint(kept) == {EID: (s,)}
    # the next cycle brings nothing new: the same objects (the store writes nothing)
    later = unhealthy_history()
    assert keep_logs(kept, {key: 0.0}, _obs_with(later), later)[key] is kept[key]
    # other codes keep nothing; an incident that ended keeps nothing
    assert keep_logs(kept, {("low_balance", None): 0.0}, _obs_with(h), h) == {}
    assert keep_logs(kept, {}, _obs_with(h), h) == {}


def test_bounded_snapshots_and_bytes() -> None:
    snaps = [snap(f"w{i}", "x" * 1000) for i in range(10)]
    assert [s.worker_id for s in bounded(snaps)] == [f"w{i}" for i in range(6, 10)]
    assert len(bounded(snaps)) == KEEP_SNAPSHOTS
    huge = [snap("a", *["y" * 1000] * 100), snap("b", *["z" * 1000] * 100)]
    out = bounded(huge)
    assert [s.worker_id for s in out] == ["b"]
    assert out[0].truncated
    assert sum(len(ll.line) + len(ll.source) + 24 for ll in out[0].lines) <= KEEP_BYTES
