"""Silences: mute notifications by diagnosis code and/or endpoint until a given time.

They come from `alerts.silences` in the configuration and from `POST /api/v1/silences`.
Those added through the API are kept in a small JSON file beside the state database
(written atomically), so a restart keeps them; expired ones are dropped when it is
rewritten. A silence mutes firing messages and reminders; an incident that was already
announced still gets its resolved message. Silences are local to one monitor process:
replicas behind Alertmanager should silence in Alertmanager.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from model.observation import iso_utc
from monitor.config import Silence
from monitor.state.incidents import Key
from rules.catalog import CODES

log = structlog.get_logger("monitor.alerts")

# The longest endpoint or job id a write route takes (RunPod's are 14 and ~40 characters):
# what the API stores stays small whatever a client sends.
MAX_ID_CHARS = 256




@dataclass(frozen=True, slots=True)
class SilenceRule:
    """One silence: matches a code, an endpoint, or both; ends at `until` (unix seconds)."""

    id: str
    code: str | None
    endpoint_id: str | None
    until: float
    source: str = "config"  # config | api
    created_at: float | None = None

    def matches(self, key: Key) -> bool:
        code, endpoint_id = key
        return (self.code is None or self.code == code) and (
            self.endpoint_id is None or self.endpoint_id == endpoint_id
        )

    def active(self, t: float) -> bool:
        return t < self.until

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "code": self.code,
            "endpoint_id": self.endpoint_id,
            "until": iso_utc(self.until),
            "source": self.source,
            "created_at": None if self.created_at is None else iso_utc(self.created_at),
        }


class SilenceBook:
    """The silences in force: the configured ones and those added at run time."""

    def __init__(self, configured: Iterable[Silence] = (), path: Path | None = None) -> None:
        self.path = path
        self.rules: list[SilenceRule] = [
            SilenceRule(f"config-{i}", s.code, s.endpoint_id, s.until.timestamp(), "config")
            for i, s in enumerate(configured)
        ]
        self.rules.extend(self._load())

    def _load(self) -> list[SilenceRule]:
        if self.path is None or not self.path.exists():
            return []
        try:
            items = json.loads(self.path.read_text(encoding="utf-8"))
            return [
                SilenceRule(str(i["id"]), i.get("code"), i.get("endpoint_id"),
                            float(i["until"]), "api", i.get("created_at"))
                for i in items
            ]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("silences file unreadable; starting without API silences",
                        path=str(self.path), error=type(exc).__name__)
            return []

    def _save(self, now: float) -> None:
        if self.path is None:
            return
        items = [
            {"id": r.id, "code": r.code, "endpoint_id": r.endpoint_id, "until": r.until,
             "created_at": r.created_at}
            for r in self.rules if r.source == "api" and r.active(now)
        ]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(items, f)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def add(
        self, code: str | None, endpoint_id: str | None, until: float, now: float
    ) -> SilenceRule:
        """Add a silence (source "api") and persist it; drop expired ones."""
        rule = SilenceRule(f"s-{secrets.token_hex(6)}", code, endpoint_id, until, "api", now)
        self.rules = [r for r in self.rules if r.source == "config" or r.active(now)]
        self.rules.append(rule)
        self._save(now)
        return rule

    def added_in_force(self, t: float) -> int:
        """How many silences added through the API are in force at `t`."""
        return sum(1 for r in self.rules if r.source == "api" and r.active(t))

    def active(self, t: float) -> list[SilenceRule]:
        """The silences in force at `t`, soonest to end first."""
        return sorted((r for r in self.rules if r.active(t)), key=lambda r: (r.until, r.id))

    def silencing(self, key: Key, t: float) -> SilenceRule | None:
        """The silence muting `key` at `t`, if any."""
        for rule in self.rules:
            if rule.active(t) and rule.matches(key):
                return rule
        return None


def parse_silence(body: Any, now: float) -> tuple[str | None, str | None, float] | str:
    """Validate a `POST /api/v1/silences` body: (code, endpoint_id, until) or the problem,
    naming the field."""
    if not isinstance(body, Mapping):
        return "body must be a JSON object"
    problems: list[str] = []
    unknown = sorted(set(body) - {"code", "endpoint_id", "until"})
    problems.extend(f"{k}: unknown field" for k in unknown)
    code = body.get("code")
    if code is not None and (not isinstance(code, str) or code not in CODES):
        problems.append(f"code: not a known diagnosis code (got {code!r})")
    endpoint_id = body.get("endpoint_id")
    if endpoint_id is not None and (
        not isinstance(endpoint_id, str) or not 0 < len(endpoint_id) <= MAX_ID_CHARS
    ):
        problems.append(f"endpoint_id: must be a non-empty string of at most {MAX_ID_CHARS} "
                        "characters")
    if code is None and endpoint_id is None:
        problems.append("code: a silence needs a code, an endpoint_id or both")
    until = body.get("until")
    until_t: float | None = None
    if until is None:
        problems.append("until: required, an ISO-8601 date-time with a time zone")
    elif not isinstance(until, str):
        problems.append("until: must be an ISO-8601 date-time string with a time zone")
    else:
        try:
            parsed = datetime.fromisoformat(until.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            problems.append(f"until: not an ISO-8601 date-time (got {until!r})")
        else:
            if parsed.tzinfo is None:
                problems.append("until: must include a time zone, e.g. 2025-01-31T18:00:00Z")
            elif parsed.timestamp() <= now:
                problems.append(f"until: must be in the future (got {until!r})")
            else:
                until_t = parsed.timestamp()
    if problems or until_t is None:
        return "; ".join(problems)
    return (code, endpoint_id, until_t)


def book_rules(book: SilenceBook, t: float) -> Mapping[str, Any]:
    """The JSON of `GET /api/v1/silences`."""
    return {"silences": [r.to_json() for r in book.active(t)]}
