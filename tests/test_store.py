"""The state store and its JSON codec: round trips, crash safety, pruning, the outbox."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.history import Memory
from model.observation import (
    Account,
    EndpointConfig,
    EndpointSample,
    EnvVar,
    GpuStock,
    Health,
    Job,
    LogLine,
    NetworkVolume,
    Observation,
    Pod,
    Release,
    ReleaseChange,
    Releases,
    Template,
    Worker,
    WorkerLogs,
    Workers,
)
from monitor.state import codec
from monitor.state.incidents import Incident, Key
from monitor.state.store import Store, unpack
from rules.diagnosis import Diagnosis

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "ghp_" + "A1b2C3d4E5" * 3 + "f6G7h8"  # ghp_ + 36 characters

# --- strategies -------------------------------------------------------------------------

text = st.text(max_size=8)
opt_text = st.none() | text
ints = st.integers(-(2**40), 2**40)
opt_int = st.none() | ints
floats = st.floats(allow_nan=False)

healths = st.builds(Health, *[st.integers(0, 1000)] * 11)
jobs = st.builds(Job, text, text, opt_int, opt_int, opt_text, opt_text, opt_text, opt_int)
templates = st.builds(
    Template, text, text, text, text, opt_int,
    st.lists(st.builds(EnvVar, text, text), max_size=3).map(tuple),
)
configs = st.builds(
    EndpointConfig, text, text, text, opt_text, ints, ints, opt_int, opt_int, opt_text,
    opt_int, opt_text, st.none() | templates, st.lists(text, max_size=2).map(tuple),
    opt_int, opt_text, opt_text,
)
opt_float = st.none() | floats
workers = st.builds(
    Workers, opt_int, st.lists(st.builds(
        Worker, text, text, st.booleans(), opt_int, opt_float, opt_int, opt_text, opt_text,
        ints, opt_text,
    ), max_size=2).map(tuple),
)
releases = st.builds(
    Releases, opt_int, st.lists(st.builds(
        Release, ints, opt_float, text, opt_text, opt_int,
        st.lists(st.builds(ReleaseChange, text, text, text), max_size=2).map(tuple),
    ), max_size=2).map(tuple), st.none() | st.booleans(), opt_float,
)
logs = st.lists(st.builds(
    WorkerLogs, text, st.lists(st.builds(LogLine, opt_float, text, text), max_size=2)
    .map(tuple), st.booleans(),
), max_size=2).map(tuple)
samples = st.builds(
    EndpointSample, text, text, ints, st.none() | healths,
    st.none() | st.lists(jobs, max_size=3).map(tuple), st.none() | st.booleans(),
    st.none() | configs, st.none() | workers, st.none() | releases, st.none() | logs,
)
accounts = st.builds(
    Account, floats, floats, st.none() | floats,
    st.lists(st.builds(NetworkVolume, text, text, floats, opt_text), max_size=2).map(tuple),
    st.lists(st.builds(Pod, text, text, text, floats), max_size=2).map(tuple), opt_text,
)
stock = st.lists(st.builds(
    GpuStock, text, opt_text, opt_text,
    st.lists(st.tuples(text, text), max_size=2).map(tuple), opt_float,
), max_size=2).map(tuple)
observations = st.builds(
    Observation, ints, floats, text, ints, st.none() | accounts,
    st.none() | st.frozensets(text, max_size=3),
    st.dictionaries(text, samples, max_size=3), st.just(()), text,
    st.dictionaries(text, text, max_size=2), opt_text,
    st.none() | st.dictionaries(text, floats, max_size=2), st.none() | stock,
)
memories = st.builds(
    Memory, st.frozensets(text, max_size=3), st.booleans(),
    st.dictionaries(text, ints, max_size=3), st.dictionaries(text, text, max_size=3),
)
hashables = st.recursive(
    st.none() | st.booleans() | ints | floats | text,
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
values = st.recursive(
    hashables,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(text, inner, max_size=3)
        | st.dictionaries(hashables, inner, max_size=3)
    ),
    max_leaves=10,
)
diagnoses = st.builds(
    Diagnosis, text, st.sampled_from(["endpoint", "account"]),
    st.sampled_from(["critical", "warning", "info"]), text, text,
    st.dictionaries(text, values, max_size=4), opt_text, opt_text,
)
incidents = st.builds(Incident, diagnoses, floats, ints, st.none() | floats, opt_int)


# --- fixtures ---------------------------------------------------------------------------

def make_obs(cycle: int, *, env_value: str = "plain", t: float | None = None) -> Observation:
    tpl = Template("tpl", "worker", "img:1", f"--token {env_value}", 40,
                   (EnvVar("HF_HOME", "/runpod-volume"), EnvVar("GITHUB_TOKEN", env_value)))
    cfg = EndpointConfig("ep1", "mocha", "AMPERE_48", None, 0, 2, template=tpl)
    sample = EndpointSample("ep1", "ok", 200, Health(in_queue=cycle, idle=1),
                            (Job("j1", "COMPLETED", 1200, 300, "w1"),), True, cfg)
    return Observation(cycle, cycle * 30.0, "ok", 200, Account(12.5, 0.4, None,
                       (NetworkVolume("v1", "vol", 50.0, "EU-RO-1"),), ()),
                       frozenset({"ep1"}), {"ep1": sample})


def make_incident(code: str, eid: str | None, cycle: int) -> Incident:
    scope: Any = "endpoint" if eid else "account"
    d = Diagnosis(code, scope, "critical", "s", "r", {"n": cycle, "pair": (1, "x")}, eid, eid)
    return Incident(d, since=cycle * 30.0, raised_cycle=cycle)


def save(store: Store, cycle: int) -> tuple[Memory, dict[Key, Incident], set[Key]]:
    memory = Memory(frozenset({"ep1"}), False, {"ep1": 1200}, {"ep1": "mocha"})
    active: dict[Key, Incident] = {
        ("crash_loop", "ep1"): make_incident("crash_loop", "ep1", cycle),
        ("low_balance", None): make_incident("low_balance", None, cycle),
    }
    announced: set[Key] = {("crash_loop", "ep1"), ("low_balance", None)}
    store.save_cycle(make_obs(cycle), memory, active, announced)
    return memory, active, announced


def db_bytes(path: Path) -> bytes:
    """The database's files, then every stored observation unpacked: a secret must not
    hide in a compressed row either."""
    files = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = [unpack(v).encode() for (v,) in db.execute("SELECT json FROM observations")]
    return files + b"".join(rows)


# --- codec ------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(observations)
def test_codec_observation_round_trip(obs: Observation) -> None:
    """Any observation survives to-JSON and back exactly, through a JSON string too."""
    back = codec.observation_from_json(json.loads(json.dumps(codec.observation_to_json(obs))))
    assert back == obs


@settings(max_examples=200, deadline=None)
@given(memories, incidents)
def test_codec_memory_and_incident_round_trip(memory: Memory, incident: Incident) -> None:
    """Memory, incidents and their diagnoses (evidence with tuples, sets, odd keys) round-trip."""
    back = codec.incident_from_json(json.loads(json.dumps(codec.incident_to_json(incident))))
    assert back == incident
    assert back.diagnosis.evidence == incident.diagnosis.evidence
    assert codec.memory_from_json(json.loads(json.dumps(codec.memory_to_json(memory)))) == memory
    dj = codec.diagnosis_to_json(incident.diagnosis)
    assert codec.diagnosis_from_json(json.loads(json.dumps(dj))) == incident.diagnosis


def test_codec_keeps_container_types() -> None:
    """Tuples come back as tuples, frozensets as frozensets, not lists."""
    obs = codec.observation_from_json(codec.observation_to_json(make_obs(3)))
    sample = obs.endpoints["ep1"]
    assert isinstance(obs.listed_ids, frozenset)
    assert isinstance(sample.jobs, tuple)
    assert sample.config is not None
    assert sample.config.template is not None
    assert isinstance(sample.config.template.env, tuple)
    inc = codec.incident_from_json(codec.incident_to_json(make_incident("c", "e", 1)))
    assert isinstance(inc.diagnosis.evidence["pair"], tuple)


# --- store ------------------------------------------------------------------------------

def test_empty_store_loads_empty(tmp_path: Path) -> None:
    """A new file (in a new directory) loads as an empty state with last_cycle 0."""
    store = Store(tmp_path / "a" / "b" / "state.db")
    r = store.load()
    assert (r.observations, r.memory, r.active, r.announced, r.last_cycle) == (
        [], Memory(), {}, set(), 0
    )
    store.close()


def test_round_trip_and_reopen(tmp_path: Path) -> None:
    """Everything saved comes back, oldest first, from the same and from a reopened store."""
    path = tmp_path / "state.db"
    store = Store(path)
    for c in range(1, 4):
        memory, active, announced = save(store, c)
    for s in (store, Store(path)):
        r = s.load()
        assert r.observations == [make_obs(c) for c in range(1, 4)]
        assert (r.memory, r.active, r.announced, r.last_cycle) == (memory, active, announced, 3)
    store.close()
    reopened = Store(path)
    r = reopened.load()
    assert [o.cycle for o in r.observations] == [1, 2, 3]
    assert r.active == active
    reopened.close()


def test_save_replaces_incident_and_announced_sets(tmp_path: Path) -> None:
    """Each save replaces the active and announced sets rather than adding to them."""
    store = Store(tmp_path / "state.db")
    save(store, 1)
    only: dict[Key, Incident] = {("x", None): make_incident("x", None, 2)}
    store.save_cycle(make_obs(2), Memory(), only, [])
    r = store.load()
    assert r.active == only
    assert r.announced == set()
    assert r.memory == Memory()
    store.close()


def test_wal_mode(tmp_path: Path) -> None:
    """The file is in WAL mode (seen from a fresh connection) with synchronous=NORMAL."""
    path = tmp_path / "state.db"
    store = Store(path)
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1
    other = sqlite3.connect(path)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert other.execute("SELECT version FROM schema_version").fetchall() == [(3,)]
    other.close()
    store.close()


def test_newer_schema_refused(tmp_path: Path) -> None:
    """A file written by a newer schema is refused rather than misread."""
    path = tmp_path / "state.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_version SET version = 99")
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="schema version 99"):
        Store(path)


_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from tests.test_store import save
    from monitor.state.store import Store
    store = Store(sys.argv[1])
    cycle = 0
    while True:
        cycle += 1
        save(store, cycle)
        print(cycle, flush=True)
""")


@pytest.mark.integration
def test_sigkill_mid_loop_leaves_last_committed_cycle(tmp_path: Path) -> None:
    """A writer SIGKILLed mid-loop leaves a loadable file whose state is one whole cycle."""
    path = tmp_path / "state.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), str(ROOT)],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    committed = 0
    try:
        while committed < 150:
            line = proc.stdout.readline()
            assert line, "writer exited early"
            committed = int(line)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    store = Store(path)
    r = store.load()
    last = r.last_cycle
    assert last >= committed  # everything it reported as saved is there
    assert [o.cycle for o in r.observations] == list(range(1, last + 1))
    assert r.observations[-1] == make_obs(last)
    assert {k: i.raised_cycle for k, i in r.active.items()} == {
        ("crash_loop", "ep1"): last, ("low_balance", None): last
    }
    assert r.announced == {("crash_loop", "ep1"), ("low_balance", None)}
    assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.close()


def test_prune_bounds_rows(tmp_path: Path) -> None:
    """prune deletes the observations older than t, counts them, and keeps the rest."""
    store = Store(tmp_path / "state.db")
    for c in range(1, 101):
        save(store, c)
    assert store.prune(80 * 30.0) == 79
    assert store.prune(80 * 30.0) == 0
    r = store.load()
    assert [o.cycle for o in r.observations] == list(range(80, 101))
    assert r.last_cycle == 100
    assert store.prune(1e9) == 21
    assert store.load().last_cycle == 100  # the cycle count outlives its observations
    store.close()


def test_template_tokens_not_in_file(tmp_path: Path) -> None:
    """A ghp_ token in a template env value and docker args is masked before it hits disk."""
    path = tmp_path / "state.db"
    store = Store(path)
    store.save_cycle(make_obs(1, env_value=TOKEN), Memory(), {}, [])
    assert TOKEN.encode() not in db_bytes(path)
    cfg = store.load().observations[0].endpoints["ep1"].config
    assert cfg is not None
    assert cfg.template is not None
    assert cfg.template.env[1] == EnvVar("GITHUB_TOKEN", "ghp_****")
    assert cfg.template.docker_args == "--token ghp_****"
    assert cfg.template.env[0] == EnvVar("HF_HOME", "/runpod-volume")
    store.close()
    assert TOKEN.encode() not in db_bytes(path)


def test_v2_facts_survive_a_restart_with_tokens_masked(tmp_path: Path) -> None:
    """Worker records, releases, log snapshots and the GPU catalog come back from the file
    as they went in, except that a token in a log line or a release diff never reaches it."""
    path = tmp_path / "state.db"
    store = Store(path)
    base = make_obs(1)
    sample = base.endpoints["ep1"]
    v2 = replace(
        sample,
        workers=Workers(4, (Worker("w1", "UNHEALTHY", True, 3, 100.0, 40, "L4", "EU-RO-1"),)),
        releases=Releases(4, (Release(4, 90.0, "MANUAL", None, 1, (
            ReleaseChange("template.env", '{"HF_TOKEN":"old"}', f'{{"HF_TOKEN":"{TOKEN}"}}'),
        )),), True, 50.0),
        logs=(WorkerLogs("w1", (LogLine(101.0, "container", f"login with {TOKEN}"),
                                LogLine(102.0, "system", "start container")), True),),
    )
    obs = replace(base, endpoints={"ep1": v2}, control_plane="rest",
                  sources={"endpoints": "rest", "balance": "rest"},
                  gpu_stock=(GpuStock("NVIDIA L4", "ADA_24", "LOW", (("EU-RO-1", "LOW"),), 0.4),),
                  endpoint_spend={"ep1": 0.69})
    store.save_cycle(obs, Memory(), {}, [])
    store.close()
    assert TOKEN.encode() not in db_bytes(path)
    back = Store(path).load().observations[0]
    s = back.endpoints["ep1"]
    assert s.workers == v2.workers
    assert s.releases is not None
    assert s.releases.releases[0].diff[0].new == '{"HF_TOKEN":"ghp_****"}'
    assert s.logs is not None
    assert s.logs[0].lines[0].line == "login with ghp_****"
    assert s.logs[0].lines[1] == LogLine(102.0, "system", "start container")
    assert (back.gpu_stock, back.endpoint_spend, back.sources, back.control_plane) == (
        obs.gpu_stock, obs.endpoint_spend, obs.sources, "rest")


def test_rows_written_before_the_rename_still_read() -> None:
    """An observation stored with `graphql_outcome` (schema 2 before REST v2) reads back."""
    d = codec.observation_to_json(make_obs(2))
    d["graphql_outcome"], d["graphql_status"] = d.pop("control_outcome"), d.pop("control_status")
    back = codec.observation_from_json(d)
    assert (back.control_outcome, back.control_status) == ("ok", 200)


# --- outbox -----------------------------------------------------------------------------

def test_outbox_due_sent_failed_backoff(tmp_path: Path) -> None:
    """Items are due at once, oldest first; failures count attempts and wait for their time."""
    store = Store(tmp_path / "state.db")
    a = store.enqueue("slack", {"text": "a"}, now=100.0)
    b = store.enqueue("slack", {"text": "b", "n": [1, 2]}, now=101.0)
    c = store.enqueue("webhook", {"text": "c"}, now=102.0)
    assert a is not None
    assert b is not None
    assert c is not None
    due = store.due("slack", now=100.0)
    assert [(i.id, i.payload, i.attempts, i.created_t) for i in due] == [
        (a, {"text": "a"}, 0, 100.0), (b, {"text": "b", "n": [1, 2]}, 0, 101.0)
    ]
    assert [i.sink for i in store.due("webhook", now=0.0)] == ["webhook"]
    assert len(store.due("slack", now=200.0, limit=1)) == 1
    store.mark_sent(a, now=105.0)
    store.mark_failed(b, next_attempt=110.0, error="HTTP 500")
    assert store.due("slack", now=109.9) == []
    [retry] = store.due("slack", now=110.0)
    assert (retry.id, retry.attempts) == (b, 1)
    store.mark_failed(b, next_attempt=130.0, error="HTTP 500")
    assert store.due("slack", now=129.0) == []
    assert store.due("slack", now=130.0)[0].attempts == 2
    assert (store.pending(), store.pending("slack"), store.pending("webhook")) == (2, 1, 1)
    store.mark_sent(b, now=131.0)
    assert store.pending("slack") == 0
    assert store.due("slack", now=1e9) == []
    assert store.prune_outbox(131.0) == 1  # a (sent at 105); b was sent at 131
    assert store.prune_outbox(1e9) == 1
    assert store.pending() == 1  # c, never sent, is never pruned
    store.close()


def test_outbox_dedupe_key_idempotent_across_restart(tmp_path: Path) -> None:
    """A dedupe_key already queued for the sink inserts nothing, also after a reopen."""
    path = tmp_path / "state.db"
    store = Store(path)
    first = store.enqueue("slack", {"text": "fire"}, dedupe_key="crash_loop/ep1/1")
    assert first is not None
    assert store.enqueue("slack", {"text": "again"}, dedupe_key="crash_loop/ep1/1") is None
    store.mark_sent(first, now=1.0)
    store.close()
    store = Store(path)
    assert store.enqueue("slack", {"text": "again"}, dedupe_key="crash_loop/ep1/1") is None
    assert store.enqueue("webhook", {"text": "fire"}, dedupe_key="crash_loop/ep1/1") is not None
    assert store.enqueue("slack", {"text": "x"}) != store.enqueue("slack", {"text": "x"})
    assert store.pending("slack") == 2
    assert store.pending() == 3
    store.close()


def test_failed_error_is_masked(tmp_path: Path) -> None:
    """An error message holding a Slack webhook URL is stored masked."""
    path = tmp_path / "state.db"
    store = Store(path)
    item = store.enqueue("slack", {"text": "x"})
    assert item is not None
    url = "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"
    store.mark_failed(item, 5.0, f"POST {url} failed")
    store.close()
    assert b"XXXXXXXXXXXXXXXXXXXXXXXX" not in db_bytes(path)


def test_the_memory_text_is_memory_to_json_encoded_each_record_once() -> None:
    """The stored memory is the text of `codec.memory_to_json`, byte for byte, whether its
    job records are encoded afresh or kept from the last save (an unchanged record is the
    same object); a changed or vanished endpoint's record is not kept."""
    from model.job_memory import ColdStart, EndpointJobs
    from monitor.state.store import MemoryText, _dumps

    jobs = {
        "ep1": EndpointJobs(executions=(("j1", 1200), ("j2", 900)), image="img:1", version=3),
        "ep2": EndpointJobs(cold_starts=(ColdStart(1.0, 2500, "j3"),), at_zero=frozenset({"a"})),
        "é 3": EndpointJobs(throttled=True),
    }
    memory = Memory(frozenset({"ep1"}), True, {"ep1": 1200}, {"ep1": "mocha"}, jobs=jobs)
    texts = MemoryText()
    assert texts.text(memory) == _dumps(codec.memory_to_json(memory))
    assert texts.text(memory) == _dumps(codec.memory_to_json(memory))  # all kept
    changed = Memory(memory.ever_ok, jobs={**jobs, "ep2": EndpointJobs(version=4)})
    assert texts.text(changed) == _dumps(codec.memory_to_json(changed))
    assert codec.memory_from_json(json.loads(texts.text(changed))) == changed
    empty = Memory()
    assert texts.text(empty) == _dumps(codec.memory_to_json(empty))
