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


class V2BudgetSettings(_Section):
    """`runpod.v2_budget`: how the REST v2 calls are paced (monitor.pipeline.budget,
    docs/budget.md)."""

    # the quota assumed until the first RateLimit-Policy header (the schema example)
    assumed_per_minute: int = Field(default=60, ge=1)
    assumed_per_hour: int = Field(default=3000, ge=1)
    assumed_per_day: int = Field(default=50000, ge=1)
    reserve: int = Field(default=2, ge=0, le=1000)  # calls per cycle kept for worker logs
    list_period_s: float = Field(default=150.0, ge=0)  # 0: only at start or on an unknown id
    # slow facts; 0: never
    balance_period_s: float = Field(default=30.0, ge=0)
    account_limits_period_s: float = Field(default=900.0, ge=0)
    billing_period_s: float = Field(default=900.0, ge=0)
    network_volumes_period_s: float = Field(default=900.0, ge=0)
    pods_period_s: float = Field(default=30.0, ge=0)
    catalog_period_s: float = Field(default=900.0, ge=0)
    exempt_after: int = Field(default=3, ge=1)  # 2xx answers without headers -> exempt key
    exempt_per_minute: int = Field(default=300, ge=1)  # the pace of an exempt key
    shrink_on_429: float = Field(default=0.75, gt=0, lt=1)  # quota x this per 429

    @property
    def assumed(self) -> dict[str, int]:
        """The assumed quota per window, as `monitor.pipeline.budget.V2Budget` takes it."""
        return {"minute": self.assumed_per_minute, "hour": self.assumed_per_hour,
                "day": self.assumed_per_day}

    @property
    def fact_periods_s(self) -> dict[str, float]:
        """Each slow fact's period, as `monitor.pipeline.budget.Planner` takes it."""
        return {f: getattr(self, f"{f}_period_s") for f in (
            "balance", "account_limits", "billing", "network_volumes", "pods", "catalog")}


# A path under runpod.v2_url: "/billing/balance"; no query, fragment or dot segment.
_V2_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)+")
# A query parameter or JSON member name of the v2 pagination.
_V2_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


def _v2_path(value: str) -> str:
    if not _V2_PATH.fullmatch(value) or any(p in (".", "..") for p in value.split("/")):
        raise ValueError(f"must be a path like /billing/balance (got {_got(value)})")
    return value


def _v2_name(value: str) -> str:
    if not _V2_NAME.fullmatch(value):
        raise ValueError(f"must be a plain name like cursor (got {_got(value)})")
    return value


V2Path = Annotated[str, AfterValidator(_v2_path)]
V2Name = Annotated[str, AfterValidator(_v2_name)]


class V2PathSettings(_Section):
    """Where the v2 routes whose request lines no source showed are (UNCONFIRMED)."""

    balance: V2Path = "/billing/balance"
    account_limits: V2Path = "/account/limits"
    account: V2Path = "/account"


class V2PaginationSettings(_Section):
    """How the paged v2 lists page (UNCONFIRMED names; the simulator's by default)."""

    limit_param: V2Name = "limit"
    cursor_param: V2Name = "cursor"
    next_field: V2Name = "nextCursor"
    page_size: int = Field(default=100, ge=1, le=1000)
    max_pages: int = Field(default=50, ge=1, le=1000)


class LogReadSettings(_Section):
    """Bounds on one read of a worker's log stream (it stays open)."""

    max_lines: int = Field(default=200, ge=1, le=5000)
    max_bytes: int = Field(default=32768, ge=1024, le=4 * 1024**2)
    max_seconds: float = Field(default=3.0, gt=0, le=30)


class RunPodSettings(_Section):
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    graphql_url: HttpUrl = "https://api.runpod.io/graphql"
    rest_url: BaseUrl = "https://api.runpod.ai/v2"
    # None: graphql_url's origin + /v2 (https://api.runpod.io/v2), where RunPod serves it
    v2_url: BaseUrl | None = None
    # which API feeds the control-plane facts: auto (REST v2 where it answers, GraphQL as
    # the fallback until it is retired), rest, or graphql (read by the prober)
    control_plane: Annotated[Literal["auto", "rest", "graphql"], BeforeValidator(_lower)] = (
        "auto")
    v2_paths: V2PathSettings = Field(default_factory=V2PathSettings)
    v2_pagination: V2PaginationSettings = Field(default_factory=V2PaginationSettings)
    logs: LogReadSettings = Field(default_factory=LogReadSettings)
    timeout_s: float = Field(default=10.0, gt=0)
    max_concurrency: int = Field(default=16, ge=1, le=1000)
    track_requests: bool = True
    # completions /requests listed, read once each through /status per endpoint per cycle
    # (empty_output's sample; monitor/pipeline/jobs.py bounds it within RunPod's limits); 0: none
    sample_completions: int = Field(default=2, ge=0, le=20)
    # what one answer may cost (monitor.bodies.RUNPOD_BODY_LIMITS): bytes read, bytes
    # decoded; 64 KiB..1 GiB, a cap outside that is a typo or no cap at all
    max_answer_bytes: int = Field(default=32 * 1024**2, ge=64 * 1024, le=1024**3)
    max_decoded_bytes: int = Field(default=64 * 1024**2, ge=64 * 1024, le=1024**3)
    v2_budget: V2BudgetSettings = Field(default_factory=V2BudgetSettings)


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


class ActionSwitch(_Section):
    """One guarded fix (docs/actions.md): off unless `enabled`; `auto` approves its own
    proposals (else each waits for POST /api/v1/actions/{id}/approve)."""

    enabled: bool = False
    auto: bool = False

    @model_validator(mode="after")
    def _auto_needs_enabled(self) -> ActionSwitch:
        if self.auto and not self.enabled:
            # a switch that reads "auto" must not look armed while it is off
            raise ValueError("auto: true needs enabled: true")
        return self


class PurgeAction(ActionSwitch):
    min_queued: int = Field(default=1, ge=1, le=1_000_000)


class SpendGuardAction(ActionSwitch):
    max_usd: float = Field(default=10.0, gt=0)
    usd_per_worker_hr: float | None = Field(default=None, gt=0)


class ActionsSettings(_Section):
    """The `actions:` section: guarded fixes tied to diagnoses, every one off by default."""

    base_url: BaseUrl | None = None  # how alerts name this daemon in the approve command
    expire_s: float = Field(default=3600.0, gt=0)
    max_per_cycle: int = Field(default=5, ge=1, le=100)
    cancel_overrun: ActionSwitch = Field(default_factory=ActionSwitch)
    purge_after_crash_loop: PurgeAction = Field(default_factory=PurgeAction)
    spend_guard: SpendGuardAction = Field(default_factory=SpendGuardAction)


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
    actions: ActionsSettings = Field(default_factory=ActionsSettings)

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

