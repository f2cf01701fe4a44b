"""The incident history (monitor/state/episodes.py): raised, escalated, resolved; bounded by time
and count; persisted by the store in the cycle's transaction and restored after a restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from model.history import Memory
from model.observation import Observation
from monitor.state.episodes import Episode, EpisodeLog
from monitor.state.incidents import Changes, Incident
from monitor.state.store import Store
from rules.diagnosis import Diagnosis

T0 = 1_767_225_600.0


def _incident(severity: str = "warning", since: float = T0, code: str = "no_gpu_capacity",
              endpoint_id: str | None = "ep1", **kw: Any) -> Incident:
    d = Diagnosis(code=code, scope="endpoint" if endpoint_id else "account",
                  severity=severity,  # type: ignore[arg-type]
                  summary=f"{code} at {severity}", remedy="fix it", endpoint_id=endpoint_id,
                  endpoint_name="flux" if endpoint_id else None)
    return Incident(d, since=since, raised_cycle=1, **kw)


def test_raise_escalate_resolve() -> None:
    """One incident's life: raised (warning), escalated once when it turns critical, not
    again while critical, ended when resolved; each change is returned once."""
    log = EpisodeLog(retention_s=7200)
    [raised] = log.update(Changes(raised=[_incident()]), T0, 1)
    assert (raised.first_severity, raised.severity, raised.active) == ("warning", "warning", True)
    assert log.update(Changes(held=[_incident()]), T0 + 30, 2) == []
    [up] = log.update(Changes(held=[_incident("critical")]), T0 + 60, 3)
    assert (up.severity, up.escalated_at, up.summary) == ("critical", T0 + 60,
                                                          "no_gpu_capacity at critical")
    assert log.update(Changes(held=[_incident("warning")]), T0 + 90, 4) == []
    assert log.update(Changes(held=[_incident("critical")]), T0 + 120, 5) == []
    resolved = _incident("critical", resolved_at=T0 + 150, resolved_cycle=6)
    [ended] = log.update(Changes(resolved=[resolved]), T0 + 150, 6)
    assert (ended.ended_at, ended.ended_cycle, ended.escalated_at) == (T0 + 150, 6, T0 + 60)
    assert log.episodes() == [ended]


def test_same_key_again_is_a_new_episode_newest_first() -> None:
    """An incident that resolves and comes back is a second episode; newest raised first."""
    log = EpisodeLog(retention_s=7200)
    log.update(Changes(raised=[_incident()]), T0, 1)
    log.update(Changes(resolved=[_incident(resolved_at=T0 + 30, resolved_cycle=2)]), T0 + 30, 2)
    log.update(Changes(raised=[_incident(since=T0 + 60)]), T0 + 60, 3)
    assert [(e.since, e.active) for e in log.episodes()] == [(T0 + 60, True), (T0, False)]


def test_bounded_by_retention_and_cap() -> None:
    """Ended episodes leave after the retention window; past the cap the first to end go."""
    log = EpisodeLog(retention_s=100, cap=3)
    for k in range(5):
        t = T0 + 10 * k
        inc = _incident(since=t, endpoint_id=f"ep{k}")
        log.update(Changes(raised=[inc]), t, k)
        log.update(Changes(resolved=[_incident(since=t, endpoint_id=f"ep{k}",
                                               resolved_at=t + 1, resolved_cycle=k)]), t + 1, k)
    assert [e.endpoint_id for e in log.episodes()] == ["ep4", "ep3", "ep2"]
    log.update(Changes(), T0 + 135, 9)  # ep2 ended at T0+21, ep3 at T0+31: out of 100 s
    assert [e.endpoint_id for e in log.episodes()] == ["ep4"]


def test_incident_active_before_the_log_existed_gets_an_episode() -> None:
    """After an upgrade the tracker holds incidents the log never saw: held once, they get
    their episode (from their own since); one the tracker dropped without resolving ends."""
    log = EpisodeLog(retention_s=7200)
    log.restore([Episode.opened(_incident(code="crash_loop"))])
    changed = log.update(Changes(held=[_incident(since=T0 - 600)]), T0, 1)
    assert {(e.code, e.since, e.ended_at) for e in changed} == {
        ("no_gpu_capacity", T0 - 600, None), ("crash_loop", T0, T0)}


def _obs(cycle: int) -> Observation:
    return Observation(cycle=cycle, t=T0 + 30 * cycle, control_outcome="ok")


def test_store_keeps_episodes_across_a_restart(tmp_path: Path) -> None:
    """Saved with the cycle, an episode is upserted (raised, then resolved: one row) and
    loaded by a new Store on the same file."""
    path = tmp_path / "state.db"
    store = Store(path)
    log = EpisodeLog(retention_s=7200)
    inc = _incident()
    store.save_cycle(_obs(1), Memory(), {inc.key: inc}, [],
                     log.update(Changes(raised=[inc]), T0, 1))
    done = _incident(resolved_at=T0 + 60, resolved_cycle=2)
    store.save_cycle(_obs(2), Memory(), {}, [], log.update(Changes(resolved=[done]), T0 + 60, 2))
    account = _incident("critical", code="low_balance", endpoint_id=None, since=T0 + 60)
    store.save_cycle(_obs(3), Memory(), {account.key: account}, [],
                     log.update(Changes(raised=[account]), T0 + 60, 3))
    store.close()
    again = Store(path)
    restored = again.load()
    again.close()
    assert sorted(restored.episodes, key=lambda e: e.since) == sorted(
        log.episodes(), key=lambda e: e.since)
    fresh = EpisodeLog(retention_s=7200)
    fresh.restore(restored.episodes)
    assert fresh.episodes() == log.episodes()
    rows = sqlite3.connect(path).execute("SELECT COUNT(*) FROM episodes").fetchone()[0]
    assert rows == 2


def test_store_prunes_episodes_by_time_then_count(tmp_path: Path) -> None:
    """prune_episodes drops those ended before the horizon, then all but the newest `keep`
    (active ones kept first)."""
    store = Store(tmp_path / "state.db")
    eps = [Episode("c", f"ep{k}", None, "s", "info", "info", T0 + k, k,
                   ended_at=T0 + 10 + k, ended_cycle=k) for k in range(6)]
    eps.append(Episode("c", "live", None, "s", "info", "info", T0, 0))
    store.save_cycle(_obs(1), Memory(), {}, [], eps)
    assert store.prune_episodes(T0 + 12, keep=3) == 4  # ep0, ep1 by time; ep2, ep3 by count
    left = {e.endpoint_id for e in store.load().episodes}
    store.close()
    assert left == {"live", "ep4", "ep5"}
