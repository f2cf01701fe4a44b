"""structlog set-up: JSON lines (console on a TTY), with every secret scrubbed."""

from __future__ import annotations

import logging
import re
import sys
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


def configure(level: str = "info", fmt: str = "auto", secrets: Iterable[str] = ()) -> None:
    """Set up structlog for the process; `secrets` are scrubbed from every line."""
    REDACTOR.add(secrets)
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False) if console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            REDACTOR,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
