"""The observations the rules look back over, bounded in time, with their long-lived memory."""

from __future__ import annotations

from collections import deque

from model.history import History, Memory
from model.observation import Observation


class HistoryBuffer:
    """A ring buffer of observations no older than `retention_s`, plus the Memory they built."""

    def __init__(self, retention_s: float, memory: Memory | None = None) -> None:
        self.retention_s = retention_s
        self.memory = memory or Memory()
        self._observations: deque[Observation] = deque()

    def __len__(self) -> int:
        return len(self._observations)

    def append(self, obs: Observation) -> None:
        """Add the newest observation and drop the ones that fell out of the window."""
        self._observations.append(obs)
        self.memory = self.memory.updated(obs)
        horizon = obs.t - self.retention_s
        while self._observations and self._observations[0].t < horizon:
            self._observations.popleft()

    def restore(self, observations: list[Observation], memory: Memory) -> None:
        """Load persisted observations (oldest first) and memory, e.g. after a restart."""
        self._observations = deque(observations)
        self.memory = memory

    def view(self) -> History:
        """An immutable snapshot for the rules."""
        return History(tuple(self._observations), self.memory)

    @property
    def latest(self) -> Observation | None:
        return self._observations[-1] if self._observations else None
