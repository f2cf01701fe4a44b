"""structlog set-up: JSON lines off a TTY, lines a person reads on one; every secret
scrubbed on both paths.

Events carry short fields and ids. The daemon's `incident` events also carry the Diagnosis
itself (under `diagnosis`): the console draws it as a block (what, why, fix), the JSON
path drops it (the full remedy is in the API, the status page and the alert).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

from rules.secrets import mask

# Long opaque strings after "Bearer" or "api_key=" are keys whatever their shape.
_BEARER = re.compile(r"(?i)(bearer\s+|api_key=)[A-Za-z0-9_\-\.]{8,}")


class Redactor:
    """A structlog processor that removes known secrets and anything token-shaped."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Also scrub these exact values from now on (longest first)."""
        self.secrets = sorted({*self.secrets, *(s for s in secrets if s and len(s) >= 4)},
                              key=len, reverse=True)

    def scrub(self, text: str) -> str:
        """`text` with every known secret and token-shaped string replaced."""
        for secret in self.secrets:
            text = text.replace(secret, "****")
        return mask(_BEARER.sub(r"\1****", text))

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.scrub(repr(value))

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        return {k: self._clean(v) for k, v in event_dict.items()}


REDACTOR = Redactor()

# a line a terminal shows whole, whatever a field holds (the JSON path keeps everything)
CONSOLE_LINE_LIMIT = 300
# a quiet cycle is still shown this often (seconds of cycle time), so a person sees it runs
QUIET_EVERY_S = 300.0
_TEXT = "_text"  # the presenter's rendered lines, which the console renderer prints as is


def _clock(event: MutableMapping[str, Any]) -> str:
    """HH:MM:SS (UTC) of the cycle the event is about, else of the event itself."""
    t = event.get("t")
    return time.strftime("%H:%M:%S", time.gmtime(t if isinstance(t, int | float) else None))


class Presenter:
    """The console's structlog processor: a short line for each cycle worth reading (news,
    failed calls, or the first after QUIET_EVERY_S), a block per raised or escalated
    incident, a line per resolved one and per alert the log sink sends."""

    def __init__(self) -> None:
        self._last_shown: float | None = None
        self._last_batch: Any = None

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        name = event.get("event")
        if name == "cycle":
            return self._cycle(event)
        if name == "incident" and event.get("diagnosis") is not None:
            return self._incident(event)
        if name == "alert" and event.get("text"):
            # one line per message: its notifications (one per incident) share the text
            if event.get("batch") and event.get("batch") == self._last_batch:
                raise structlog.DropEvent
            self._last_batch = event.get("batch")
            return {_TEXT: f"{_clock(event)}  alert     {event['text']}"}
        event.pop("diagnosis", None)
        return event

    def _cycle(self, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        t = float(event.get("t") or 0.0)
        raised, resolved = event.get("raised") or [], event.get("resolved") or []
        failures = int(event.get("failures") or 0)
        skipped = int(event.get("skipped") or 0)
        quiet = not (raised or resolved or failures)
        if quiet and self._last_shown is not None and t - self._last_shown < QUIET_EVERY_S:
            raise structlog.DropEvent
        self._last_shown = t
        line = (f"{_clock(event)}  cycle {event.get('cycle', '?'):<4} "
                f"{event.get('endpoints', 0)} endpoints, {event.get('calls', 0)} calls"
                f"{f', {failures} failed' if failures else ''}"
                f"{f', {skipped} held back' if skipped else ''}, "
                f"{event.get('active', 0)} active")
        if raised:
            line += f" | raised {', '.join(map(str, raised))}"
        if resolved:
            line += f" | resolved {', '.join(map(str, resolved))}"
        return {_TEXT: line}

    def _incident(self, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        from monitor.alerts.message import incident_block, place
        from rules.signals import minutes

        d = event["diagnosis"]
        change = str(event.get("change", "raised")).upper()
        head = (f"{_clock(event)}  cycle {event.get('cycle', '?'):<4} {change:<9} "
                f"{d.severity:<8} {d.code}  {place(d)}")
        if change == "RESOLVED":
            lasted = event.get("lasted_s")
            after = f"  (after {minutes(float(lasted))})" if lasted is not None else ""
            return {_TEXT: head + after}
        return {_TEXT: "\n".join(["", *incident_block(d, head)])}


def drop_objects(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The JSON path's processor: the Diagnosis an `incident` event carries is not logged."""
    event.pop("diagnosis", None)
    return event


class ConsoleLines:
    """The console renderer: the presenter's lines as they are, any other event as
    structlog's console line; each line cut at CONSOLE_LINE_LIMIT."""

    def __init__(self) -> None:
        self._plain = structlog.dev.ConsoleRenderer(colors=False)

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        text = event.get(_TEXT)
        if not isinstance(text, str):
            text = str(self._plain(logger, method, event))
        return "\n".join(
            line if len(line) <= CONSOLE_LINE_LIMIT else line[: CONSOLE_LINE_LIMIT - 1] + "…"
            for line in text.split("\n")
        )


def is_console(fmt: str) -> bool:
    """True when `fmt` ("auto", "console", "json") means lines for a person here."""
    return fmt == "console" or (fmt == "auto" and sys.stderr.isatty())


def configure(level: str = "info", fmt: str = "auto", secrets: Iterable[str] = ()) -> None:
    """Set up structlog for the process; `secrets` are scrubbed from every line, on the
    console and in JSON alike (the redactor runs after the presenter, before rendering)."""
    REDACTOR.add(secrets)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if is_console(fmt):
        processors += [Presenter(), REDACTOR, ConsoleLines()]
    else:
        processors += [drop_objects, REDACTOR, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
