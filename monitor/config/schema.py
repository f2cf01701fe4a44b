"""The models of `config.yaml`: frozen sections, no unknown keys, each field validated."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from monitor.config.errors import _FieldProblem, _got
from rules.catalog import CODES
from rules.thresholds import Thresholds

_NO_TARGET = "needs a code, an endpoint_id or both"
_NO_CHANNEL = "required with a bot token"



def _http_url(value: str, *, secret: bool = False) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("not an http(s) URL" + ("" if secret else f" (got {_got(value)})"))
    return value


def _rstrip_slash(value: str) -> str:
    return value.rstrip("/")


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
BaseUrl = Annotated[str, AfterValidator(_http_url), AfterValidator(_rstrip_slash)]


def _secret_url(value: SecretStr) -> SecretStr:
    _http_url(value.get_secret_value(), secret=True)
    return value


SecretUrl = Annotated[SecretStr, AfterValidator(_secret_url)]
SeverityName = Annotated[Literal["info", "warning", "critical"], BeforeValidator(_lower)]


class _Section(BaseModel):
    """Frozen, no unknown keys; an empty (null) sub-section or list means its default."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    @model_validator(mode="before")
    @classmethod
    def _null_sections(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        out = dict(data)
        for key, value in data.items():
            field = cls.model_fields.get(key) if isinstance(key, str) else None
            if value is None and field is not None and not field.is_required():
                default = field.get_default(call_default_factory=True)
                if isinstance(default, BaseModel | tuple | list):
                    del out[key]
        return out


class RunPodSettings(_Section):
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    graphql_url: HttpUrl = "https://api.runpod.io/graphql"
    rest_url: BaseUrl = "https://api.runpod.ai/v2"
    timeout_s: float = Field(default=10.0, gt=0)
    max_concurrency: int = Field(default=16, ge=1, le=1000)
    track_requests: bool = True
    # completions /requests listed, read once each through /status per endpoint per cycle
    # (empty_output's sample; monitor/jobs.py bounds it within RunPod's limits); 0: none
    sample_completions: int = Field(default=2, ge=0, le=20)
    # what one answer may cost (monitor.bodies.RUNPOD_BODY_LIMITS): bytes read, bytes
    # decoded; 64 KiB..1 GiB, a cap outside that is a typo or no cap at all
    max_answer_bytes: int = Field(default=32 * 1024**2, ge=64 * 1024, le=1024**3)
    max_decoded_bytes: int = Field(default=64 * 1024**2, ge=64 * 1024, le=1024**3)


class BasicAuth(_Section):
    username: str = Field(min_length=1)
    password: SecretStr  # from password_file when not given
    password_file: Path | None = None


class HttpSettings(_Section):
    listen: str = "127.0.0.1:9108"
    basic_auth: BasicAuth | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        _split_listen(value)
        return value

    @property
    def host(self) -> str:
        return _split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return _split_listen(self.listen)[1]

    @property
    def loopback(self) -> bool:
        """True when only this machine can reach the listener."""
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """Whether a listen host is a loopback address (a hostname other than localhost is not:
    what it resolves to can change)."""
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback


def _split_listen(value: str) -> tuple[str, int]:
    bad = f"must be host:port, IPv6 as [::1]:9108 (got {_got(value)})"
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(bad)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host:
            raise ValueError(bad)
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError(bad)
    if int(port) > 65535:
        raise ValueError(f"port must be 0..65535 (got {_got(value)})")
    return host, int(port)


_TOKEN_MIN = 16


class ApiSettings(_Section):
    write_routes: bool = True
    write_token: SecretStr | None = None
    write_token_file: Path | None = None
    allow_unauthenticated_writes: bool = False
    max_body_bytes: int = Field(default=16_384, ge=256, le=1_048_576)
    max_silences: int = Field(default=1_000, ge=1, le=100_000)
    max_jobs: int = Field(default=10_000, ge=1, le=1_000_000)

    @field_validator("write_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < _TOKEN_MIN:
            raise ValueError(f"must be at least {_TOKEN_MIN} characters "
                             "(e.g. `openssl rand -hex 32`)")
        return value


class StateSettings(_Section):
    path: Path = Path("./data/runpod-monitor.db")
    retention_s: float = Field(default=7200.0, gt=0)


class Silence(_Section):
    code: str | None = None
    endpoint_id: str | None = None
    until: AwareDatetime

    @field_validator("code")
    @classmethod
    def _known_code(cls, value: str | None) -> str | None:
        if value is not None and value not in CODES:
            raise ValueError(f"not a known diagnosis code (got {_got(value)})")
        return value

    @model_validator(mode="after")
    def _has_target(self) -> Silence:
        if self.code is None and self.endpoint_id is None:
            raise ValueError(_NO_TARGET)
        return self


class SlackSettings(_Section):
    webhook_url: SecretUrl | None = None
    webhook_url_file: Path | None = None
    bot_token: SecretStr | None = None
    bot_token_file: Path | None = None
    channel: str | None = None
    min_severity: SeverityName = "warning"
    max_per_second: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _channel_with_token(self) -> SlackSettings:
        if self.bot_token is not None and not self.channel:
            raise _FieldProblem("channel", _NO_CHANNEL)
        return self


class AlertmanagerSettings(_Section):
    url: BaseUrl | None = None
    min_severity: SeverityName = "info"


class AlertSettings(_Section):
    group_wait_s: float = Field(default=30.0, ge=0)
    repeat_interval_s: float = Field(default=14400.0, gt=0)
    silences: tuple[Silence, ...] = ()
    slack: SlackSettings = Field(default_factory=SlackSettings)
    alertmanager: AlertmanagerSettings = Field(default_factory=AlertmanagerSettings)


class LogSettings(_Section):
    level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = "info"
    format: Annotated[Literal["auto", "json", "console"], BeforeValidator(_lower)] = "auto"


def _at_least_one(value: float) -> float:
    if value < 1:
        raise ValueError(f"must be at least 1 (got {_got(value)})")
    return value


def _endpoint_ids(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    return value


def _unique(ids: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ids))


_SHARD = re.compile(r"(\d+)/(\d+)")


def _shard(value: Any) -> Any:
    if value is None:
        return None
    m = _SHARD.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None or int(m[1]) >= int(m[2]):
        raise ValueError(f"must be 'I/N' with 0 <= I < N (got {_got(value)})")
    return f"{int(m[1])}/{int(m[2])}"


class Settings(_Section):
    """The whole configuration; attribute names are the YAML keys."""

    interval_s: Annotated[float, Field(gt=0), AfterValidator(_at_least_one)] = 30.0
    endpoints: Annotated[
        tuple[Annotated[str, Field(min_length=1)], ...],
        BeforeValidator(_endpoint_ids),
        AfterValidator(_unique),
    ] = ()
    runpod: RunPodSettings = Field(default_factory=RunPodSettings)
    shard: Annotated[str | None, BeforeValidator(_shard)] = None
    rules: Thresholds = Field(default_factory=lambda: Thresholds.model_validate({}))
    http: HttpSettings = Field(default_factory=HttpSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @property
    def shard_spec(self) -> tuple[int, int] | None:
        """(index, count) of this replica, or None when not sharded."""
        if self.shard is None:
            return None
        i, n = self.shard.split("/")
        return int(i), int(n)

    def secrets(self) -> list[str]:
        """Every secret value present, for log redaction."""
        auth = self.http.basic_auth
        found = [
            self.runpod.api_key,
            self.alerts.slack.webhook_url,
            self.alerts.slack.bot_token,
            auth.password if auth is not None else None,
            self.api.write_token,
        ]
        return [s.get_secret_value() for s in found if s is not None and s.get_secret_value()]

