"""State that survives a restart: observations, memory, incidents, and the alert outbox.

One SQLite file in WAL mode. Each cycle is saved in one transaction, so a crash at any
point leaves the last committed cycle loadable. Template secrets are masked before they
are written. The caller bounds the file with `prune`, `prune_outbox` and `prune_episodes`.

`episodes` (the incident history of monitor/state/episodes.py) came after schema 2 without a new
version: a table more, which an older monitor ignores and a new one creates in an old file.
So did `actions` and `action_audit` (guarded fixes, monitor/actions/: each proposal's JSON
by id, and the audit log, newest MAX kept).

Endpoint configs are stored by content: `configs` holds each masked config's JSON once,
keyed by its digest, and an observation refers to it (`codec.ObservationEncoder`). A config
row goes when no stored observation refers to it any more; the store counts the references
in memory (from `load`, or from the file on the first write), so only one `Store` may
write a file. Schema 1 files (configs inline) are read as they are; their rows age out.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import zlib
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from model.history import Memory
from model.job_memory import EndpointJobs
from model.observation import LogLine, Observation, WorkerLogs
from monitor.state import codec
from monitor.state.episodes import Episode
from monitor.state.incidents import Incident, Key
from rules.log_evidence import bounded
from rules.secrets import mask

# 3: worker logs kept with their incident (table `incident_logs`); 2: configs by reference
# (table `configs`); 1: configs inline
SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS observations (
    cycle INTEGER PRIMARY KEY, t REAL NOT NULL, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS observations_t ON observations (t);
CREATE TABLE IF NOT EXISTS configs (hash TEXT PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS incidents (code TEXT NOT NULL, endpoint_id TEXT, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS announced (code TEXT NOT NULL, endpoint_id TEXT);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    payload TEXT NOT NULL,
    dedupe_key TEXT,
    created_t REAL NOT NULL,
    next_attempt REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    sent_t REAL,
    last_error TEXT,
    UNIQUE (sink, dedupe_key));
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (sink, sent_t, next_attempt);
CREATE INDEX IF NOT EXISTS outbox_sent_t ON outbox (sent_t);
CREATE TABLE IF NOT EXISTS episodes (
    code TEXT NOT NULL, endpoint_id TEXT NOT NULL, since REAL NOT NULL, ended_t REAL,
    json TEXT NOT NULL, PRIMARY KEY (code, endpoint_id, since));
CREATE TABLE IF NOT EXISTS incident_logs (
    code TEXT NOT NULL, endpoint_id TEXT NOT NULL, json TEXT NOT NULL,
    PRIMARY KEY (code, endpoint_id));
CREATE TABLE IF NOT EXISTS actions (id TEXT PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS action_audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, t REAL NOT NULL, action_id TEXT NOT NULL,
    json TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class PipelineState:
    """What the pipeline carries from one cycle to the next: what `Store.load` reads back
    (empty for a new file) and `Pipeline.snapshot` gives."""

    observations: list[Observation] = field(default_factory=list)  # oldest first
    memory: Memory = field(default_factory=Memory)
    active: dict[Key, Incident] = field(default_factory=dict)
    announced: set[Key] = field(default_factory=set)
    last_cycle: int = 0
    episodes: list[Episode] = field(default_factory=list)
    # worker-log snapshots each active incident keeps (rules/log_evidence.py keep_logs)
    incident_logs: dict[Key, tuple[WorkerLogs, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    sink: str
    payload: dict[str, Any]
    attempts: int
    created_t: float


_dumps = codec.json_text


class MemoryText:
    """The memory's JSON text, as `_dumps(codec.memory_to_json(memory))` writes it, with
    each endpoint's job memory encoded only when it is not the object encoded last time
    (the job memory hands back an unchanged endpoint's record: at 1000 endpoints nearly all
    of them, 7 ms of a cycle's CPU when all were encoded again)."""

    def __init__(self) -> None:
        self._jobs: dict[str, tuple[EndpointJobs, str]] = {}

    def text(self, memory: Memory) -> str:
        head = codec.memory_to_json(replace(memory, jobs={}))
        last, seen = self._jobs, {}
        parts = []
        for eid, e in memory.jobs.items():
            known = last.get(eid)
            if known is None or known[0] is not e:
                known = (e, f"{_dumps(eid)}:{_dumps(codec.endpoint_jobs_to_json(e))}")
            seen[eid] = known
            parts.append(known[1])
        self._jobs = seen  # only the endpoints of this memory: a vanished one is forgotten
        return codec.json_text_with(head, "jobs", parts)


def pack(text: str) -> bytes:
    """An observation's JSON as stored: zlib at level 1. A cycle's samples repeat the same
    keys for every endpoint, so this writes ~10x fewer bytes for ~1 ms of CPU at N = 1000."""
    return zlib.compress(text.encode(), 1)


def unpack(value: str | bytes) -> str:
    """A stored observation's JSON; rows written before compression are text."""
    return value if isinstance(value, str) else zlib.decompress(value).decode()


def logs_to_json(snapshots: Iterable[WorkerLogs]) -> list[Any]:
    """An incident's log snapshots as stored: each line masked again (the keeper masked the
    template's own secrets; this is the store's guarantee for token-shaped ones)."""
    return [
        {"worker_id": s.worker_id, "truncated": s.truncated,
         "lines": [[ll.t, ll.source, mask(ll.line)] for ll in s.lines]}
        for s in bounded(list(snapshots))
    ]


def logs_from_json(items: list[Any]) -> tuple[WorkerLogs, ...]:
    return tuple(
        WorkerLogs(str(d["worker_id"]),
                   tuple(LogLine(t, str(src), str(line)) for t, src, line in d["lines"]),
                   bool(d.get("truncated", False)))
        for d in items
    )


class Store:
    """The daemon's SQLite state. Safe to call from several threads, one call at a time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # autocommit; `_tx` opens the transactions explicitly
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._encoder = codec.ObservationEncoder()
        self._memory = MemoryText()
        # config digest -> how many stored observations refer to it, and each stored
        # cycle's digests; None until built (by `load` or the first write), and dropped
        # when a transaction rolls back
        self._refs: dict[str, int] | None = None
        self._cycle_refs: dict[int, frozenset[str]] = {}
        self._last_refs: frozenset[str] = frozenset()
        self._writes = 0  # committed saves and prunes, so `load` knows its counts are current
        # the incident logs as last written (the keeper hands unchanged entries back as the
        # same objects, so a cycle writes only what changed); None: unknown, write them all
        self._logs_written: dict[Key, tuple[WorkerLogs, ...]] | None = None
        try:
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    def _migrate(self) -> None:
        """Create the tables of a new file; refuse a file from a newer schema.

        From 1 to 2 the `configs` table is added; the observations of schema 1, with their
        configs inline, stay as they are (the decoder reads both forms) until pruned. From 2
        to 3 the `incident_logs` table is added (empty: older monitors read no logs)."""
        with self._tx() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            if row[0] is None:
                db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has schema version {row[0]}, newer than this "
                    f"monitor's {SCHEMA_VERSION}"
                )
            elif row[0] < SCHEMA_VERSION:
                db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    @contextmanager
    def _tx(self, begin: str = "BEGIN IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """One transaction: committed whole or rolled back."""
        with self._lock:
            self._db.execute(begin)
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._refs = None  # it may hold changes that were rolled back
                self._cycle_refs = {}
                self._logs_written = None
                raise

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- cycles ---------------------------------------------------------------------

    def save_cycle(
        self,
        obs: Observation,
        memory: Memory,
        active: Mapping[Key, Incident],
        announced: Iterable[Key],
        episodes: Iterable[Episode] = (),
        logs: Mapping[Key, tuple[WorkerLogs, ...]] | None = None,
    ) -> None:
        """Save one cycle: its observation, the memory, the active incidents, the announced
        keys, the incident history's `episodes` this cycle changed, and the worker logs the
        active incidents keep (`logs`; None leaves them as stored). All or nothing.

        A config is masked and encoded only when it is not the object saved last time for
        its endpoint, and written only when no stored observation refers to it yet."""
        incidents = [(k[0], k[1], _dumps(codec.incident_to_json(i))) for k, i in active.items()]
        keys = [(k[0], k[1]) for k in set(announced)]
        history = [
            (e.code, e.endpoint_id or "", e.since, e.ended_at, _dumps(e.to_json()))
            for e in episodes
        ]
        with self._tx() as db:
            enc = self._encoder.encode(obs)  # under the lock: the encoder keeps a cache
            obs_json = pack(enc.text)
            refs_now = self._shared(frozenset(enc.configs))
            refs = self._references(db)
            new = [
                (h, enc.texts.get(h) or codec.config_text(enc.configs[h]))
                for h in refs_now if refs.get(h, 0) == 0
            ]
            db.executemany("INSERT OR IGNORE INTO configs (hash, json) VALUES (?, ?)", new)
            db.execute(
                "INSERT OR REPLACE INTO observations (cycle, t, json) VALUES (?, ?, ?)",
                (obs.cycle, obs.t, obs_json),
            )
            # a cycle saved again replaces its observation and what that referred to
            replaced = self._cycle_refs.get(obs.cycle, frozenset())
            self._count(db, added=refs_now - replaced, removed=replaced - refs_now)
            self._cycle_refs[obs.cycle] = refs_now
            db.executemany(
                "INSERT OR REPLACE INTO state (name, json) VALUES (?, ?)",
                [("memory", self._memory.text(memory)), ("last_cycle", str(obs.cycle))],
            )
            db.execute("DELETE FROM incidents")
            db.executemany("INSERT INTO incidents VALUES (?, ?, ?)", incidents)
            db.execute("DELETE FROM announced")
            db.executemany("INSERT INTO announced VALUES (?, ?)", keys)
            db.executemany("INSERT OR REPLACE INTO episodes VALUES (?, ?, ?, ?, ?)", history)
            if logs is not None:
                self._save_logs(db, logs)

    def _save_logs(self, db: sqlite3.Connection, logs: Mapping[Key, tuple[WorkerLogs, ...]]
                   ) -> None:
        """Write the incident logs that changed; delete those of incidents that ended."""
        last = self._logs_written
        if last is None:
            db.execute("DELETE FROM incident_logs")
            last = {}
        gone = [(c, e or "") for c, e in last if (c, e) not in logs]
        db.executemany("DELETE FROM incident_logs WHERE code = ? AND endpoint_id = ?", gone)
        changed = [(c, e or "", _dumps(logs_to_json(snaps))) for (c, e), snaps in logs.items()
                   if last.get((c, e)) is not snaps]
        db.executemany("INSERT OR REPLACE INTO incident_logs VALUES (?, ?, ?)", changed)
        self._logs_written = dict(logs)

    def load(self) -> PipelineState:
        """The state as of the last committed cycle. Unchanged parts of consecutive
        observations are shared objects, as in the live history."""
        with self._tx("BEGIN") as db:  # one snapshot of every table
            rows = db.execute("SELECT cycle, json FROM observations ORDER BY cycle").fetchall()
            configs = dict(db.execute("SELECT hash, json FROM configs").fetchall())
            state = dict(db.execute("SELECT name, json FROM state").fetchall())
            incidents = db.execute("SELECT code, endpoint_id, json FROM incidents").fetchall()
            announced = db.execute("SELECT code, endpoint_id FROM announced").fetchall()
            episodes = db.execute("SELECT json FROM episodes").fetchall()
            logs = db.execute("SELECT code, endpoint_id, json FROM incident_logs").fetchall()
            writes = self._writes
        decoder = codec.HistoryDecoder(configs)
        observations = []
        cycle_refs: dict[int, frozenset[str]] = {}
        last: frozenset[str] = frozenset()
        rows.reverse()
        while rows:  # each text freed once decoded
            cycle, text = rows.pop()
            observations.append(decoder.decode(json.loads(unpack(text))))
            if decoder.refs != last:  # one set for a run of cycles referring to the same
                last = frozenset(decoder.refs)
            cycle_refs[cycle] = last
        with self._lock:
            if self._refs is None and self._writes == writes:  # nothing written since
                self._set_references(cycle_refs)
        memory = state.get("memory")
        return PipelineState(
            observations=observations,
            memory=Memory() if memory is None else codec.memory_from_json(json.loads(memory)),
            active={(c, e): codec.incident_from_json(json.loads(j)) for c, e, j in incidents},
            announced={(c, e) for c, e in announced},
            last_cycle=int(state.get("last_cycle", 0)),
            episodes=[Episode.from_json(json.loads(j)) for (j,) in episodes],
            incident_logs={(c, e or None): logs_from_json(json.loads(j)) for c, e, j in logs},
        )

    def prune(self, older_than_t: float) -> int:
        """Delete the observations taken before `older_than_t`, and the configs no remaining
        observation refers to; return how many observations."""
        with self._tx() as db:
            cycles = [c for (c,) in db.execute(
                "SELECT cycle FROM observations WHERE t < ?", (older_than_t,))]
            if not cycles:
                return 0
            self._references(db)
            n = db.execute("DELETE FROM observations WHERE t < ?", (older_than_t,)).rowcount
            removed: list[str] = []
            for c in cycles:
                removed.extend(self._cycle_refs.pop(c, ()))
            self._count(db, added=(), removed=removed)
            return int(n)

    def prune_episodes(self, older_than_t: float, keep: int) -> int:
        """Delete the episodes that ended before `older_than_t`, then all but the `keep`
        newest (active ones first, then by end); return how many."""
        with self._tx() as db:
            n = db.execute("DELETE FROM episodes WHERE ended_t < ?", (older_than_t,)).rowcount
            if db.execute("SELECT COUNT(*) FROM episodes").fetchone()[0] > keep:
                n += db.execute(
                    "DELETE FROM episodes WHERE rowid NOT IN (SELECT rowid FROM episodes "
                    "ORDER BY ended_t IS NULL DESC, ended_t DESC LIMIT ?)", (keep,)
                ).rowcount
            return int(n)

    # --- config references ------------------------------------------------------------

    def _set_references(self, cycle_refs: dict[int, frozenset[str]]) -> None:
        refs: dict[str, int] = {}
        if cycle_refs:
            self._last_refs = cycle_refs[max(cycle_refs)]
        for hashes in cycle_refs.values():
            for h in hashes:
                refs[h] = refs.get(h, 0) + 1
        self._refs, self._cycle_refs = refs, cycle_refs

    def _references(self, db: sqlite3.Connection) -> dict[str, int]:
        """The reference counts; read from the file when `load` did not build them.
        Call in a write transaction."""
        if self._refs is None:
            self._set_references({
                cycle: self._shared(frozenset(codec.config_refs(json.loads(unpack(text)))))
                for cycle, text in db.execute("SELECT cycle, json FROM observations ORDER BY cycle")
            })
        assert self._refs is not None
        return self._refs

    def _shared(self, hashes: frozenset[str]) -> frozenset[str]:
        """`hashes`, or the equal set of the last cycle counted: the cycles of a stable
        fleet then hold one set (of a thousand digests), not one each."""
        if hashes == self._last_refs:
            return self._last_refs
        self._last_refs = hashes
        return hashes

    def _count(
        self, db: sqlite3.Connection, *, added: Collection[str], removed: Iterable[str]
    ) -> None:
        """Count references gained and lost (in the write transaction that made them); delete
        the configs left with none. A rollback drops the counts (`_tx`)."""
        refs = self._references(db)
        for h in added:
            refs[h] = refs.get(h, 0) + 1
        dead = []
        for h in removed:
            n = refs.get(h, 0) - 1
            if n > 0:
                refs[h] = n
            else:
                refs.pop(h, None)
                dead.append((h,))
        db.executemany("DELETE FROM configs WHERE hash = ?", dead)
        self._writes += 1

    # --- guarded fixes (monitor/actions) ---------------------------------------------

    def save_action(self, action_id: str, proposal: Mapping[str, Any],
                    audit: Mapping[str, Any], keep_audit: int) -> None:
        """Write a proposal as it stands and its audit entry in one transaction; keep the
        newest `keep_audit` entries."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO actions (id, json) VALUES (?, ?)",
                       (action_id, mask(_dumps(dict(proposal)))))
            db.execute("INSERT INTO action_audit (t, action_id, json) VALUES (?, ?, ?)",
                       (float(audit["t"]), action_id, mask(_dumps(dict(audit)))))
            db.execute("DELETE FROM action_audit WHERE seq <= "
                       "(SELECT MAX(seq) FROM action_audit) - ?", (keep_audit,))

    def load_actions(self) -> list[dict[str, Any]]:
        return [json.loads(j) for (j,) in self._query("SELECT json FROM actions ORDER BY id")]

    def load_audit(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` audit entries, oldest first."""
        rows = self._query("SELECT json FROM action_audit ORDER BY seq DESC LIMIT ?", (limit,))
        return [json.loads(j) for (j,) in reversed(rows)]

    def delete_actions(self, ids: Collection[str]) -> None:
        with self._tx() as db:
            db.executemany("DELETE FROM actions WHERE id = ?", [(i,) for i in ids])

    # --- alert outbox ---------------------------------------------------------------

    def enqueue(
        self, sink: str, payload: Mapping[str, Any], dedupe_key: str | None = None,
        *, now: float | None = None,
    ) -> int | None:
        """Queue a payload for `sink`, due at once; its row id. None, and nothing queued,
        when `sink` already has an item with `dedupe_key` (sent or not, until pruned).
        `created_t` is `now`, the wall clock by default."""
        created_t = time.time() if now is None else now
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO outbox (sink, payload, dedupe_key, created_t, next_attempt)"
                " VALUES (?, ?, ?, ?, ?)",
                (sink, _dumps(dict(payload)), dedupe_key, created_t, 0.0),
            )
            return cur.lastrowid if cur.rowcount == 1 else None

    def due(self, sink: str, now: float, limit: int = 50) -> list[OutboxItem]:
        """The unsent items of `sink` whose next attempt is due by `now`, oldest first."""
        rows = self._query(
            "SELECT id, sink, payload, attempts, created_t FROM outbox WHERE sink = ? AND "
            "sent_t IS NULL AND next_attempt <= ? ORDER BY id LIMIT ?",
            (sink, now, limit),
        )
        return [OutboxItem(i, s, json.loads(p), a, c) for i, s, p, a, c in rows]

    def mark_sent(self, item_id: int, now: float) -> None:
        with self._tx() as db:
            db.execute("UPDATE outbox SET sent_t = ? WHERE id = ?", (now, item_id))

    def mark_failed(self, item_id: int, next_attempt: float, error: str) -> None:
        """Count a failed attempt and set when to try again; the error is kept masked."""
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ? "
                "WHERE id = ?",
                (next_attempt, mask(error)[:1000], item_id),
            )

    def pending(self, sink: str | None = None) -> int:
        """How many items are not sent yet, for `sink` or for every sink."""
        sql = "SELECT COUNT(*) FROM outbox WHERE sent_t IS NULL"
        rows = self._query(sql, ()) if sink is None else self._query(sql + " AND sink = ?", (sink,))
        return int(rows[0][0])

    def prune_outbox(self, older_than_t: float) -> int:
        """Delete the items sent before `older_than_t`; return how many."""
        with self._tx() as db:
            return db.execute("DELETE FROM outbox WHERE sent_t < ?", (older_than_t,)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
