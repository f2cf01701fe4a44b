"""Configs stored by content (schema 2): references, counting and pruning, the schema 1
migration, shared objects on load, and secrets kept out of the file."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_store import TOKEN, db_bytes, make_obs, observations

from model.history import Memory
from model.observation import (
    Account,
    EndpointConfig,
    EndpointSample,
    EnvVar,
    Health,
    Job,
    Observation,
    Template,
)
from monitor.state import codec
from monitor.state.store import Store, unpack

# --- builders ---------------------------------------------------------------------------


def config(i: int, version: int = 1, *, github: str = "plain") -> EndpointConfig:
    env = tuple(EnvVar(f"VAR_{k}", f"value-{k}-{i}") for k in range(8))
    tpl = Template(f"tpl{i}", f"worker-{i}", f"acme/worker:{version}", f"--token {github}", 60,
                   (*env, EnvVar("GITHUB_TOKEN", github)))
    return EndpointConfig(f"ep{i}", f"name-{i}", "AMPERE_48,ADA_48_PRO", None, 0, 3, 0, 5,
                          "QUEUE_DELAY", 4, None, tpl)


class Fleet:
    """Observations of endpoints ep0..ep{n-1}, built like the prober: what did not change
    is the object of the last cycle."""

    def __init__(self, n: int) -> None:
        self.configs: dict[str, EndpointConfig | None] = {f"ep{i}": config(i) for i in range(n)}
        self.health: dict[str, Health] = {e: Health(completed=1, idle=1) for e in self.configs}
        self.jobs: dict[str, tuple[Job, ...] | None] = dict.fromkeys(self.configs)
        self.previous: dict[str, EndpointSample] = {}
        self.account = Account(100.0, 0.5)
        self.listed = frozenset(self.configs)

    def observation(self, cycle: int) -> Observation:
        samples = {}
        for eid, cfg in self.configs.items():
            s = EndpointSample(eid, "ok", 200, self.health[eid], self.jobs[eid],
                               cfg is not None, cfg)
            p = self.previous.get(eid)
            if p is not None and p == s:
                s = p
            self.previous[eid] = samples[eid] = s
        return Observation(cycle, cycle * 30.0, "ok", 200, self.account, self.listed, samples)


def save(store: Store, obs: Observation) -> None:
    store.save_cycle(obs, Memory(), {}, [])


def config_rows(path: Path) -> dict[str, str]:
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT hash, json FROM configs").fetchall())
    finally:
        db.close()


def distinct_configs(observations: list[Observation]) -> set[EndpointConfig]:
    return {codec.masked_config(s.config) for o in observations
            for s in o.endpoints.values() if s.config is not None}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "state.db")
    yield s
    s.close()


# --- codec ------------------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(st.lists(observations, max_size=4))
def test_codec_encoder_decoder_round_trip(history: list[Observation]) -> None:
    """Any sequence of observations encoded with configs by reference decodes to the masked
    originals, through JSON text."""
    encoder = codec.ObservationEncoder()
    texts: dict[str, str] = {}
    encoded = []
    for obs in history:
        enc = encoder.encode(obs)
        texts.update(enc.texts)
        assert set(enc.configs) == codec.config_refs(enc.json)
        # the text kept sample by sample is the whole JSON's text
        assert enc.text == codec.json_text(enc.json)
        encoded.append(enc.text)
    decoder = codec.HistoryDecoder(texts)
    assert [decoder.decode(json.loads(t)) for t in encoded] == [codec.masked(o) for o in history]


def test_config_text_is_canonical_and_masked() -> None:
    """Equal configs give the same text and digest; a config's secrets are masked in it."""
    a, b = config(1, github=TOKEN), config(1, github=TOKEN)
    assert a is not b
    assert codec.config_text(a) == codec.config_text(b)
    assert TOKEN not in codec.config_text(a)
    assert codec.config_digest(codec.config_text(a)) != codec.config_digest(
        codec.config_text(config(1, version=2)))
    back = codec.config_from_json(json.loads(codec.config_text(a)))
    assert back == codec.masked_config(a)


# --- round trips ------------------------------------------------------------------------

def test_round_trip_with_config_changes_and_endpoints_coming_and_going(
    tmp_path: Path,
) -> None:
    """Saved observations load equal to the masked originals: configs changing, endpoints
    appearing and disappearing, configs None, the same cycle saved twice; reopened too."""
    path = tmp_path / "state.db"
    store = Store(path)
    fleet = Fleet(5)
    saved = []
    for c in range(1, 13):
        if c == 3:
            fleet.configs["ep1"] = config(1, version=2, github=TOKEN)
        if c == 4:  # GraphQL stops listing ep2
            fleet.configs["ep2"] = None
        if c == 5:  # ep3 goes away, ep9 appears
            for d in (fleet.configs, fleet.health, fleet.jobs):
                del d["ep3"]
            fleet.configs["ep9"], fleet.health["ep9"], fleet.jobs["ep9"] = (
                config(9), Health(in_queue=2), (Job("j1", "IN_QUEUE"),))
        if c == 7:
            fleet.configs["ep2"] = config(2)  # listed again
            fleet.health["ep0"] = Health(completed=2, idle=1)
        if c == 9:
            fleet.configs["ep1"] = config(1)  # back to the first version
        saved.append(fleet.observation(c))
        save(store, saved[-1])
    fleet.configs["ep4"] = config(4, version=3)
    saved[-1] = fleet.observation(12)
    save(store, saved[-1])  # cycle 12 again, with another config
    want = [codec.masked(o) for o in saved]
    assert store.load().observations == want
    store.close()
    store = Store(path)
    assert store.load().observations == want
    store.close()
    assert len(config_rows(path)) == len(distinct_configs(saved))


def test_empty_and_configless_observations(store: Store) -> None:
    """Observations without endpoints or without any config round-trip and store no config."""
    a = Observation(1, 30.0, "timeout")
    b = Observation(2, 60.0, "ok", 200, None, frozenset(),
                    {"x": EndpointSample("x", "timeout"), "y": EndpointSample("y", "http_404",
                                                                               404, listed=False)})
    save(store, a)
    save(store, b)
    assert store.load().observations == [a, b]
    assert config_rows(store.path) == {}


# --- what is written --------------------------------------------------------------------

def test_unchanged_observation_writes_far_less(tmp_path: Path) -> None:
    """The second save of an unchanged fleet writes no config and a fraction of the bytes
    of the first; each distinct config is one row."""
    path = tmp_path / "state.db"
    store = Store(path)
    fleet = Fleet(200)

    def size() -> int:
        return sum(p.stat().st_size for p in tmp_path.glob("state.db*"))

    def configs() -> int:
        return int(store._db.execute("SELECT COUNT(*) FROM configs").fetchone()[0])

    before = size()
    save(store, fleet.observation(1))
    first = size() - before  # WAL frames
    assert configs() == 200
    before = size()
    save(store, fleet.observation(2))
    second = size() - before
    assert configs() == 200
    assert second * 2 < first, (first, second)
    # the row itself: a reference per endpoint instead of the config
    [row] = store._db.execute("SELECT json FROM observations WHERE cycle = 2").fetchall()
    inline = json.dumps(codec.observation_to_json(codec.masked(fleet.observation(2))))
    assert len(unpack(row[0])) * 3 < len(inline), (len(unpack(row[0])), len(inline))
    assert len(row[0]) * 5 < len(unpack(row[0]))  # and compressed
    store.close()


def test_config_masked_and_encoded_only_when_its_object_changes(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config that is the object saved last time for its endpoint is not masked or
    encoded again; an equal new object is, but adds no row."""
    calls: list[str] = []
    real = codec.config_text

    def counting(c: EndpointConfig) -> str:
        calls.append(c.id)
        return real(c)

    monkeypatch.setattr(codec, "config_text", counting)
    fleet = Fleet(10)
    save(store, fleet.observation(1))
    assert len(calls) == 10
    calls.clear()
    save(store, fleet.observation(2))
    assert calls == []
    fleet.configs["ep3"] = config(3, version=2)
    obs = fleet.observation(3)
    ep4 = replace(obs.endpoints["ep4"], config=config(4))  # equal to the last, a new object
    save(store, replace(obs, endpoints={**obs.endpoints, "ep4": ep4}))
    assert sorted(calls) == ["ep3", "ep4"]
    assert len(config_rows(store.path)) == 11


# --- counting and pruning ---------------------------------------------------------------

def test_prune_removes_unreferenced_configs_only(store: Store) -> None:
    """prune deletes the configs no remaining observation refers to and keeps the others;
    what remains loads; pruning everything empties the table."""
    fleet = Fleet(3)
    saved = []
    for c in range(1, 11):
        if c == 4:
            fleet.configs["ep0"] = config(0, version=2)  # v1 only in cycles 1-3
        if c == 8:
            fleet.configs["ep1"] = config(1, version=2)  # v1 in cycles 1-7
        saved.append(fleet.observation(c))
        save(store, saved[-1])
    assert len(config_rows(store.path)) == 5
    assert store.prune(4 * 30.0) == 3  # cycles 1-3: ep0's first config goes
    rows = config_rows(store.path)
    assert len(rows) == 4
    assert codec.config_digest(codec.config_text(config(0))) not in rows
    assert store.load().observations == [codec.masked(o) for o in saved[3:]]
    assert store.prune(8 * 30.0) == 4  # cycles 4-7: ep1's first config goes
    assert len(config_rows(store.path)) == 3
    assert store.load().observations == [codec.masked(o) for o in saved[7:]]
    assert store.prune(1e9) == 3
    assert config_rows(store.path) == {}
    assert store.load().observations == []


def test_saving_a_cycle_again_does_not_count_twice(store: Store) -> None:
    """INSERT OR REPLACE of a cycle swaps its references: the replaced config goes at once,
    and a config saved twice for the same cycle is counted once."""
    fleet = Fleet(1)
    save(store, fleet.observation(1))
    save(store, fleet.observation(1))
    fleet.configs["ep0"] = config(0, version=2)
    save(store, fleet.observation(1))
    rows = config_rows(store.path)
    assert list(rows) == [codec.config_digest(codec.config_text(config(0, version=2)))]
    save(store, fleet.observation(2))
    assert store.prune(2 * 30.0) == 1
    assert len(config_rows(store.path)) == 1  # still referred to by cycle 2
    assert store.prune(1e9) == 1
    assert config_rows(store.path) == {}


@pytest.mark.parametrize("first", ["save", "prune", "load"])
def test_counts_right_whichever_call_comes_first(tmp_path: Path, first: str) -> None:
    """A reopened store counts the file's references whether it is loaded, saved to or
    pruned first, and then prunes exactly the configs nothing refers to."""
    path = tmp_path / "state.db"
    fleet = Fleet(2)
    writer = Store(path)
    for c in range(1, 4):
        save(writer, fleet.observation(c))
    fleet.configs["ep0"] = config(0, version=2)
    save(writer, fleet.observation(4))
    writer.close()
    store = Store(path)
    if first == "save":
        save(store, fleet.observation(5))
    elif first == "prune":
        assert store.prune(2 * 30.0) == 1
    else:
        assert len(store.load().observations) == 4
    assert store.prune(4 * 30.0) == {"save": 3, "prune": 2, "load": 3}[first]
    rows = config_rows(path)
    assert set(rows) == {codec.config_digest(codec.config_text(c))
                         for c in (config(0, version=2), config(1))}
    last = 5 if first == "save" else 4
    assert store.load().observations[-1] == codec.masked(fleet.observation(last))
    store.close()


def test_load_racing_a_save_keeps_counts_right(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save that lands while `load` decodes (outside the lock) is not undone by the counts
    `load` built from its older snapshot."""
    fleet = Fleet(1)
    save(store, fleet.observation(1))
    fleet.configs["ep0"] = config(0, version=2)
    real = codec.HistoryDecoder.decode
    racing = [fleet.observation(2)]

    def decode(self: codec.HistoryDecoder, d: dict[str, object]) -> Observation:
        if racing:
            save(store, racing.pop())
        return real(self, d)

    monkeypatch.setattr(codec.HistoryDecoder, "decode", decode)
    assert [o.cycle for o in store.load().observations] == [1]
    assert store.prune(1e9) == 2
    assert config_rows(store.path) == {}


def test_rolled_back_save_leaves_counts_right(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save that fails mid-transaction leaves neither its config row nor a count behind."""
    fleet = Fleet(1)
    save(store, fleet.observation(1))
    fleet.configs["ep0"] = config(0, version=2)

    def boom(m: Memory) -> None:
        raise RuntimeError("disk on fire")

    with monkeypatch.context() as m:
        m.setattr(codec, "memory_to_json", boom)
        with pytest.raises(RuntimeError, match="disk on fire"):
            save(store, fleet.observation(2))
    assert len(config_rows(store.path)) == 1
    save(store, fleet.observation(3))
    assert len(config_rows(store.path)) == 2
    assert store.prune(3 * 30.0) == 1
    assert list(config_rows(store.path)) == [
        codec.config_digest(codec.config_text(config(0, version=2)))]
    assert store.load().observations == [codec.masked(fleet.observation(3))]


def test_missing_config_row_is_an_error(store: Store) -> None:
    """An observation referring to a config the file lacks fails to load, naming it."""
    save(store, Fleet(1).observation(1))
    store._db.execute("DELETE FROM configs")
    with pytest.raises(ValueError, match=r"endpoint ep0: config [0-9a-f]{32} is missing"):
        store.load()


# --- schema 1 ---------------------------------------------------------------------------

_V1_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE observations (cycle INTEGER PRIMARY KEY, t REAL NOT NULL, json TEXT NOT NULL);
CREATE INDEX observations_t ON observations (t);
CREATE TABLE state (name TEXT PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE incidents (code TEXT NOT NULL, endpoint_id TEXT, json TEXT NOT NULL);
CREATE TABLE announced (code TEXT NOT NULL, endpoint_id TEXT);
INSERT INTO schema_version VALUES (1);
"""


def write_v1(path: Path, history: list[Observation]) -> None:
    """A file as schema 1 wrote it: configs inline, masked, in every observation."""
    db = sqlite3.connect(path)
    db.executescript(_V1_SCHEMA)
    db.executemany("INSERT INTO observations VALUES (?, ?, ?)", [
        (o.cycle, o.t, json.dumps(codec.observation_to_json(codec.masked(o))))
        for o in history
    ])
    db.executemany("INSERT INTO state VALUES (?, ?)", [
        ("memory", json.dumps(codec.memory_to_json(Memory(frozenset({"ep0"}))))),
        ("last_cycle", str(history[-1].cycle)),
    ])
    db.commit()
    db.close()


def test_schema_1_file_migrates_without_losing_history(tmp_path: Path) -> None:
    """A schema 1 file opens as the current schema, loads its inline configs as they were (shared),
    takes new cycles by reference, and prunes its old rows."""
    path = tmp_path / "state.db"
    fleet = Fleet(3)
    old = [fleet.observation(c) for c in range(1, 4)]
    fleet.configs["ep0"] = config(0, version=2, github=TOKEN)
    old.append(fleet.observation(4))
    write_v1(path, old)
    store = Store(path)
    assert store._db.execute("SELECT version FROM schema_version").fetchall() == [(3,)]
    r = store.load()
    assert r.observations == [codec.masked(o) for o in old]
    assert (r.last_cycle, r.memory) == (4, Memory(frozenset({"ep0"})))
    a, b = r.observations[0].endpoints["ep1"], r.observations[3].endpoints["ep1"]
    assert a is b
    new = [fleet.observation(c) for c in range(5, 8)]
    for o in new:
        save(store, o)
    store.close()
    store = Store(path)
    loaded = store.load().observations
    assert loaded == [codec.masked(o) for o in old + new]
    # the inline config and the same one by reference are one object
    assert loaded[3].endpoints["ep1"].config is loaded[4].endpoints["ep1"].config
    assert loaded[3].endpoints["ep0"] is loaded[6].endpoints["ep0"]
    assert len(config_rows(path)) == 3
    assert store.prune(5 * 30.0) == 4
    assert store.load().observations == [codec.masked(o) for o in new]
    store.close()
    assert TOKEN.encode() not in db_bytes(path)


# --- shared objects ---------------------------------------------------------------------

def test_loaded_history_shares_unchanged_objects(store: Store) -> None:
    """After load, an unchanged sample, config, health, job list, account and listed ids are
    the object of the previous observation; a config is one object wherever it recurs."""
    fleet = Fleet(3)
    job = Job("j1", "IN_PROGRESS", 800, None, "w1")
    fleet.jobs["ep2"] = (job,)
    saved = [fleet.observation(1), fleet.observation(2)]
    fleet.health["ep0"] = Health(completed=5)  # ep0's health changes, its config does not
    fleet.jobs["ep2"] = (job, Job("j2", "IN_QUEUE"))
    saved.append(fleet.observation(3))
    fleet.configs["ep1"] = config(1, version=2)
    saved.append(fleet.observation(4))
    fleet.configs["ep1"] = config(1)  # back to the first one
    saved.append(fleet.observation(5))
    for o in saved:
        save(store, o)
    obs = store.load().observations
    assert obs == [codec.masked(o) for o in saved]
    first, second, third = obs[0].endpoints, obs[1].endpoints, obs[2].endpoints
    assert all(first[e] is second[e] for e in first)
    assert third["ep1"] is second["ep1"]
    assert third["ep0"] is not second["ep0"]
    assert third["ep0"].config is second["ep0"].config
    assert third["ep0"].health != second["ep0"].health
    assert third["ep2"].jobs is not None
    assert second["ep2"].jobs is not None
    assert third["ep2"].jobs[0] is second["ep2"].jobs[0]  # the same job, seen again
    assert obs[4].endpoints["ep1"].config is first["ep1"].config  # one object per config
    assert obs[3].endpoints["ep1"].config is not first["ep1"].config
    assert obs[3].endpoints["ep0"] is third["ep0"]
    assert all(o.account is obs[0].account for o in obs)
    assert all(o.listed_ids is obs[0].listed_ids for o in obs)


def test_loaded_history_shares_endpoint_ids_and_fields(store: Store) -> None:
    """Each endpoint id is one string across restored observations (keys and samples)."""
    fleet = Fleet(2)
    for c in range(1, 4):
        fleet.health["ep0"] = Health(completed=c)
        save(store, fleet.observation(c))
    obs = store.load().observations
    keys = [next(k for k in o.endpoints if k == "ep0") for o in obs]
    assert all(k is keys[0] for k in keys)
    assert all(o.endpoints["ep0"].endpoint_id is keys[0] for o in obs)


# --- secrets ----------------------------------------------------------------------------

def test_tokens_never_reach_the_file(tmp_path: Path) -> None:
    """A token in template env values and docker args is masked in every config row, as
    configs change and whether encoded anew or taken from the cache; the inline v1 path too."""
    path = tmp_path / "state.db"
    store = Store(path)
    fleet = Fleet(3)
    fleet.configs["ep0"] = config(0, github=TOKEN)
    for c in range(1, 6):
        if c == 3:
            fleet.configs["ep1"] = config(1, version=2, github=TOKEN)
        save(store, fleet.observation(c))
    save(store, make_obs(6, env_value=TOKEN))
    assert TOKEN.encode() not in db_bytes(path)
    cfg = store.load().observations[0].endpoints["ep0"].config
    assert cfg is not None
    assert cfg.template is not None
    assert cfg.template.docker_args == "--token ghp_****"
    assert cfg.template.env[-1] == EnvVar("GITHUB_TOKEN", "ghp_****")
    assert cfg.template.env[0] == EnvVar("VAR_0", "value-0-0")
    assert any("GITHUB_TOKEN" in text for text in config_rows(path).values())
    store.close()
    assert TOKEN.encode() not in db_bytes(path)


def test_masking_unchanged_for_configless_templates() -> None:
    """codec.masked still leaves samples without a template untouched (the same object)."""
    s = EndpointSample("a", "ok", 200, config=EndpointConfig("a"))
    obs = Observation(1, 1.0, "ok", endpoints={"a": s})
    assert codec.masked(obs).endpoints["a"] is s
    with_tpl = replace(s, config=config(0, github=TOKEN))
    masked = codec.masked(replace(obs, endpoints={"a": with_tpl})).endpoints["a"].config
    assert masked == codec.masked_config(config(0, github=TOKEN))
