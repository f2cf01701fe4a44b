"""Worker logs kept with their incident in SQLite: masked, bounded, written only when they
change, gone with the incident, read back after a restart (and a schema 2 file migrates)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from model.history import Memory
from model.observation import (
    Account,
    EndpointSample,
    Health,
    LogLine,
    Observation,
    WorkerLogs,
)
from monitor.state.incidents import Incident, Key
from monitor.state.store import SCHEMA_VERSION, Store
from rules.diagnosis import Diagnosis
from rules.log_evidence import KEEP_BYTES, KEEP_SNAPSHOTS

GHP = "ghp_" + "Q9w8E7r6T5y4U3i2O1p0" * 2  # token-shaped
KEY: Key = ("crash_loop", "ep1")


def obs(cycle: int, logs: tuple[WorkerLogs, ...] | None = None) -> Observation:
    s = EndpointSample("ep1", "ok", 200, Health(in_queue=2, running=1), logs=logs)
    return Observation(cycle, cycle * 30.0, "ok", 200, Account(5.0, 0.1), frozenset({"ep1"}),
                       {"ep1": s})


def active() -> dict[Key, Incident]:
    d = Diagnosis("crash_loop", "endpoint", "critical", "s", "r", {}, "ep1", "ep1")
    return {KEY: Incident(d, since=30.0, raised_cycle=1)}


def snap(worker: str, *texts: str) -> WorkerLogs:
    return WorkerLogs(worker, tuple(LogLine(1000.0 + i, "system", t) for i, t in enumerate(texts)))


def rows(path: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT code, endpoint_id, json FROM incident_logs").fetchall()


def test_round_trip_across_a_restart_masked(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    kept = {KEY: (snap("w1", "Killed", f"token {GHP}"), snap("w2", "exit code 137"))}
    store = Store(path)
    store.save_cycle(obs(1, kept[KEY]), Memory(), active(), set(), (), kept)
    store.close()
    state = Store(path).load()
    assert state.incident_logs == {KEY: (
        snap("w1", "Killed", "token ghp_****"), snap("w2", "exit code 137"))}
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))
    assert GHP.encode() not in blob
    assert GHP[-8:].encode() not in blob
    # the observation row keeps its snapshot masked too (codec), for the window
    assert state.observations[0].endpoints["ep1"].logs == state.incident_logs[KEY]


def test_bounded_per_incident(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    many = tuple(snap(f"w{i}", *["x" * 500] * 60) for i in range(10))
    store = Store(path)
    store.save_cycle(obs(1), Memory(), active(), set(), (), {KEY: many})
    (_, _, text), = rows(path)
    got = store.load().incident_logs[KEY]
    assert len(got) <= KEEP_SNAPSHOTS
    assert sum(len(ll.line) for s in got for ll in s.lines) <= KEEP_BYTES
    assert got[-1].worker_id == "w9"  # the newest kept
    assert len(text) < 2 * KEEP_BYTES


def test_written_when_changed_and_gone_with_the_incident(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = Store(path)
    kept = {KEY: (snap("w1", "Killed"),)}
    store.save_cycle(obs(1), Memory(), active(), set(), (), kept)
    with sqlite3.connect(path) as db:  # a change behind the store's back shows a rewrite
        db.execute("UPDATE incident_logs SET json = '[]'")
    store.save_cycle(obs(2), Memory(), active(), set(), (), dict(kept))  # same objects
    assert rows(path)[0][2] == "[]"
    kept2 = {KEY: (snap("w1", "Killed"), snap("w2", "Killed"))}
    store.save_cycle(obs(3), Memory(), active(), set(), (), kept2)
    assert len(store.load().incident_logs[KEY]) == 2
    store.save_cycle(obs(4), Memory(), {}, set(), (), {})  # the incident resolved
    assert rows(path) == []
    assert store.load().incident_logs == {}


def test_rolled_back_write_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = Store(path)
    kept = {KEY: (snap("w1", "Killed"),)}

    class Boom(Exception):
        pass

    try:
        with store._tx() as db:
            store._save_logs(db, kept)
            raise Boom
    except Boom:
        pass
    store.save_cycle(obs(1), Memory(), active(), set(), (), kept)
    assert store.load().incident_logs == kept


def test_schema_2_file_migrates(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = Store(path)
    store.save_cycle(obs(1), Memory(), active(), set())
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE incident_logs")
        db.execute("UPDATE schema_version SET version = 2")
    store = Store(path)
    assert store._db.execute("SELECT version FROM schema_version").fetchall() == [
        (SCHEMA_VERSION,)]
    assert SCHEMA_VERSION == 3
    state = store.load()
    assert state.incident_logs == {}
    assert list(state.active) == [KEY]
