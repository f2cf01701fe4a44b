"""Settings: the models of `config.yaml`, loading with `${VAR}` and `*_file` secrets, and
an error report that names every problem by its dotted field path, in file order.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from rules.catalog import CODES
from rules.thresholds import Thresholds

# dotted path -> (sibling *_file key, environment variable); an unset ${VAR} there means
# "not given in the file" rather than an error
_ENV_SECRETS: dict[str, tuple[str, str]] = {
    "runpod.api_key": ("api_key_file", "RUNPOD_API_KEY"),
    "alerts.slack.webhook_url": ("webhook_url_file", "SLACK_WEBHOOK_URL"),
    "alerts.slack.bot_token": ("bot_token_file", "SLACK_BOT_TOKEN"),
    "api.write_token": ("write_token_file", "RUNPOD_MONITOR_WRITE_TOKEN"),
}
_SECRETS = (*_ENV_SECRETS, "http.basic_auth.password")
_SECRET_NAMES = frozenset(p.rsplit(".", 1)[1] for p in _SECRETS)
_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")


_AUTH_INCOMPLETE = "required (set password or password_file)"
_NO_TARGET = "needs a code, an endpoint_id or both"
_NO_CHANNEL = "required with a bot token"
_OPEN_WRITES = (
    "required: http.listen {listen!r} is reachable beyond this machine, and anyone who "
    "reaches it could silence every alert (POST /api/v1/silences). Set api.write_token "
    "(or api.write_token_file, or RUNPOD_MONITOR_WRITE_TOKEN) or http.basic_auth; or "
    "api.write_routes: false; or, knowingly, api.allow_unauthenticated_writes: true"
)


class ConfigError(Exception):
    """A configuration that cannot be used; `str(e)` is the full report."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(self.report())

    def report(self) -> str:
        if self.source is None:
            return "\n".join(self.problems)
        n = len(self.problems)
        head = f"{self.source}: {n} problem{'' if n == 1 else 's'}"
        return "\n".join([head, *(f"  {p}" for p in self.problems)])

    def __str__(self) -> str:
        return self.report()

    def __reduce__(self) -> tuple[Any, ...]:
        return (ConfigError, (self.problems, self.source))


class _FieldProblem(ValueError):
    """A model-level check that blames one field (or list index) of that model."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _got(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return repr(str(value))


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


# ---------------------------------------------------------------- error messages


def _reason(err: Any, secret: bool) -> str:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    got = "" if secret else f" (got {_got(value)})"
    if kind == "value_error" or kind == "assertion_error":
        exc = ctx.get("error")
        return exc.reason if isinstance(exc, _FieldProblem) else str(exc)
    simple: dict[str, str] = {
        "extra_forbidden": "unknown key",
        "missing": "required",
        "string_type": "must be a string",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "list_type": "must be a list",
        "tuple_type": "must be a list",
        "model_type": "must be a mapping",
        "model_attributes_type": "must be a mapping",
        "dict_type": "must be a mapping",
        "path_type": "must be a path",
        "datetime_type": "must be an ISO-8601 date-time with a time zone",
        "datetime_parsing": "must be an ISO-8601 date-time with a time zone",
        "datetime_from_date_parsing": "must be an ISO-8601 date-time with a time zone",
        "timezone_aware": "must include a time zone, e.g. 2025-01-31T18:00:00Z",
        "string_too_short": "must not be empty",
    }
    if kind in ("missing", "extra_forbidden"):
        return simple[kind]
    if kind in simple:
        return simple[kind] + got
    if kind.startswith("int_"):
        return "must be an integer" + got
    if kind.startswith("float_"):
        return "must be a number" + got
    bounds = {
        "greater_than": ("must be greater than", "gt"),
        "greater_than_equal": ("must be at least", "ge"),
        "less_than": ("must be less than", "lt"),
        "less_than_equal": ("must be at most", "le"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        limit = ctx.get(key)
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)
        return f"{words} {limit}{got}"
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"must be one of: {', '.join(options)}{got}"
    if secret:
        return "invalid value"
    msg = str(err.get("msg", "invalid"))
    return (msg[:1].lower() + msg[1:]) + got


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _pydantic_problems(exc: ValidationError) -> list[tuple[tuple[Any, ...], str]]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        found = (err.get("ctx") or {}).get("error")
        if isinstance(found, _FieldProblem):
            loc = (*loc, found.field)
        secret = any(isinstance(p, str) and p in _SECRET_NAMES for p in loc)
        problems.append((loc, _reason(err, secret)))
    return problems


def _order(data: Any) -> dict[tuple[Any, ...], tuple[int, int]]:
    """Each path's pre-order index in the data (its place in the file) and its subtree's end."""
    order: dict[tuple[Any, ...], tuple[int, int]] = {}

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        start = len(order)
        order[path] = (start, start)
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, (*path, key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, (*path, i))
        order[path] = (start, len(order) - 1)

    walk(data, ())
    return order


def _sorted_report(problems: list[tuple[tuple[Any, ...], str]], data: Any) -> list[str]:
    """The problems as report lines, in file order; a key not in the file goes after its
    parent's other keys."""
    order = _order(data)

    def position(item: tuple[int, tuple[tuple[Any, ...], str]]) -> tuple[int, int, int]:
        n, (loc, _) = item
        if loc in order:
            return order[loc][0], 0, n
        for k in range(len(loc) - 1, -1, -1):
            if loc[:k] in order:
                return order[loc[:k]][1], 1, n
        return len(order), 1, n

    ranked = sorted(enumerate(problems), key=position)
    return [f"{_dotted(loc)}: {reason}" for _, (loc, reason) in ranked]


# ---------------------------------------------------------------- interpolation, secrets


def _interpolate(
    node: Any, path: tuple[Any, ...], env: Mapping[str, str], problems: list[Any]
) -> Any:
    """The tree with `${VAR}` / `${VAR:-default}` replaced in every string value."""
    if isinstance(node, Mapping):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            new = _interpolate(value, (*path, key), env, problems)
            if new is not _UNSET:
                out[key] = new
        return out
    if isinstance(node, list):
        return [_interpolate(v, (*path, i), env, problems) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node
    dotted = _dotted(path)
    missing: list[str] = []
    malformed = False

    def sub(m: re.Match[str]) -> str:
        nonlocal malformed
        if m[0] == "$${":
            return "${"
        if m[1] is None:
            malformed = True
            return ""
        value = env.get(m[1])
        if m[2] is not None and not value:
            return m[2]
        if value is None:
            missing.append(m[1])
            return ""
        return value

    result = _VAR.sub(sub, node)
    if malformed:
        problems.append((path, "malformed ${...} reference (write $${ for a literal ${)"))
    elif missing and dotted in _ENV_SECRETS:
        return _UNSET
    elif missing:
        problems.extend((path, f"environment variable {v} is not set") for v in missing)
    return result


_UNSET = object()


def _literal(raw: str) -> bool:
    """True when a secret string carries text of its own rather than only `${VAR}`s."""
    rest = _VAR.sub(lambda m: (m[2] or "") if m[1] else m[0], raw)
    return bool(rest.strip())


def _dig(node: Any, *path: Any) -> Any:
    """The value at `path` in nested mappings, or None."""
    for part in path:
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _resolve_secrets(data: dict[str, Any], env: Mapping[str, str]) -> list[Any]:
    """Fill each secret from its value, else its `*_file`, else its environment variable."""
    problems: list[Any] = []
    wanted = [(p, f, v) for p, (f, v) in _ENV_SECRETS.items()]
    wanted.append(("http.basic_auth.password", "password_file", ""))
    for dotted, file_key, var in wanted:
        *parents, key = dotted.split(".")
        section: Any = data
        for part in parents:
            if isinstance(section, dict) and section.get(part) is None and env.get(var):
                section[part] = {}
            section = section.get(part) if isinstance(section, dict) else None
        if not isinstance(section, dict):
            continue
        value = section.get(key)
        if isinstance(value, str) and not value.strip():
            del section[key]
        if section.get(key) is not None:
            continue
        file_path = section.get(file_key)
        if isinstance(file_path, str | os.PathLike):
            try:
                text = Path(file_path).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or "not UTF-8 text"
                problems.append(((*parents, file_key), f"cannot read {file_path}: {reason}"))
                continue
            if not text:
                problems.append(((*parents, file_key), f"{file_path} is empty"))
                continue
            section[key] = text
        elif var and env.get(var):
            section[key] = env[var]
    return problems


def _cross_checks(tree: dict[str, Any]) -> list[Any]:
    """The checks that span fields, on raw data so they show beside every other problem."""

    problems: list[Any] = []
    auth = _dig(tree, "http", "basic_auth")
    if isinstance(auth, dict) and auth.get("password") is None:
        problems.append((("http", "basic_auth", "password"), _AUTH_INCOMPLETE))
    slack = _dig(tree, "alerts", "slack")
    if isinstance(slack, dict) and slack.get("bot_token") is not None and not slack.get("channel"):
        problems.append((("alerts", "slack", "channel"), _NO_CHANNEL))
    problems.extend(_open_writes(tree))
    silences = _dig(tree, "alerts", "silences")
    for i, item in enumerate(silences if isinstance(silences, list) else []):
        if isinstance(item, dict) and item.get("code") is None and item.get("endpoint_id") is None:
            problems.append((("alerts", "silences", i), _NO_TARGET))
    return problems


_BOOL: TypeAdapter[bool] = TypeAdapter(bool)


def _flag(value: Any, default: bool) -> bool | None:
    """A raw boolean as the model will read it ("yes", 1, "true" included); None when it is
    not one (the model reports that)."""
    if value is None:
        return default
    try:
        return _BOOL.validate_python(value)
    except ValidationError:
        return None


def _open_writes(tree: dict[str, Any]) -> list[Any]:
    """A listener beyond loopback whose write routes anyone who reaches it could call."""
    listen = _dig(tree, "http", "listen")
    listen = HttpSettings.model_fields["listen"].default if listen is None else listen
    api = _dig(tree, "api")
    api = api if isinstance(api, dict) else {}
    try:
        host = _split_listen(listen)[0] if isinstance(listen, str) else None
    except ValueError:
        host = None  # reported on http.listen
    if host is None or is_loopback(host) or _flag(api.get("write_routes"), True) is not True:
        return []
    credential = api.get("write_token") is not None or isinstance(
        _dig(tree, "http", "basic_auth"), dict)
    if credential or _flag(api.get("allow_unauthenticated_writes"), False) is not False:
        return []
    return [(("api", "write_token"), _OPEN_WRITES.format(listen=listen))]


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` deep-merged onto `base`: mappings merge, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        both = isinstance(old, Mapping) and isinstance(value, Mapping)
        out[key] = _merge(old, value) if both else value  # type: ignore[arg-type]
    return out


# ---------------------------------------------------------------- loading


def _build(
    data: Any,
    env: Mapping[str, str],
    source: str,
    exposed: Callable[[], list[Any]] | None = None,
) -> Settings:
    if not isinstance(data, Mapping):
        raise ConfigError(
            [f"the top level must be a mapping of settings (got {_got(data)})"], source
        )
    problems: list[Any] = []
    tree = _interpolate(data, (), env, problems)
    unreadable = _resolve_secrets(tree, env)
    problems.extend(unreadable)
    if exposed is not None:
        problems.extend(exposed())
    checks: list[Any] = []
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(tree)
    except ValidationError as exc:
        checks.extend(_pydantic_problems(exc))
    cross = _cross_checks(tree)
    # a field is blamed once: by the cross-field check, or on the *_file that failed
    blamed = {loc for loc, _ in cross}
    checks = [p for p in checks if p[0] not in blamed] + cross
    blamed = {(*loc[:-1], str(loc[-1]).removesuffix("_file")) for loc, _ in unreadable}
    for problem in checks:
        if problem[0] not in blamed and problem not in problems:
            problems.append(problem)
    if problems or settings is None:
        report = _sorted_report(problems, data)
        raise ConfigError(_scrub(report, _secret_values(tree, env)), source) from None
    return settings


def _secret_values(tree: Any, env: Mapping[str, str]) -> list[str]:
    """Every secret the configuration holds or points at: the secret fields' values (also
    read from their files) and the secret environment variables."""
    found = [env.get(var, "") for _, var in _ENV_SECRETS.values()]
    for dotted in _SECRETS:
        value = _dig(tree, *dotted.split("."))
        if isinstance(value, str):
            found.append(value)
    return sorted({v for v in found if len(v) >= 4}, key=len, reverse=True)


def _scrub(lines: list[str], secrets: list[str]) -> list[str]:
    """`lines` with each secret replaced: a `${RUNPOD_API_KEY}` put in a field that is not a
    secret would otherwise be echoed back in that field's error."""
    out = []
    for line in lines:
        for secret in secrets:
            line = line.replace(secret, "****")
        out.append(line)
    return out


def settings_from_dict(
    data: Mapping[str, Any], *, env: Mapping[str, str] | None = None, source: str = "<config>"
) -> Settings:
    """Validated settings from already-parsed data; raises ConfigError listing every problem."""
    return _build(data, os.environ if env is None else env, source)


# A real configuration holds a few hundred values; aliases nested in aliases can make a
# few lines hold billions, which every later walk over the data would expand.
MAX_VALUES = 100_000


def _expanded_size(root: yaml.Node | None) -> int:
    """How many nodes the document holds once its aliases are expanded (each aliased node
    is counted once per use, computed once)."""
    sizes: dict[int, int] = {}

    def size(n: yaml.Node) -> int:
        known = sizes.get(id(n))
        if known is not None:
            return known
        children: list[yaml.Node] = []
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                children += (key, value)
        elif isinstance(n, yaml.SequenceNode):
            children = list(n.value)
        total = 1 + sum(size(c) for c in children)
        sizes[id(n)] = total
        return total

    return 0 if root is None else size(root)


def _parse_yaml(text: str, source: str) -> tuple[Any, list[Any]]:
    """The document's data and its duplicate keys (YAML would silently keep the last)."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # a control character: the reader refuses the text
        reason = f"character #x{exc.character:04x} at position {exc.position}: {exc.reason}"
        raise ConfigError([f"not valid YAML: {reason}"], source) from None
    syntax = ""  # raised outside the handler: the YAML error's snippet may quote a secret
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except RecursionError:
        syntax = "not valid YAML: nested too deeply"
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        syntax = f"{where}{exc.problem or exc.context}"
    except yaml.YAMLError as exc:
        syntax = f"not valid YAML: {type(exc).__name__}"
    finally:
        loader.dispose()
    if syntax:
        raise ConfigError([syntax], source)
    if _expanded_size(node) > MAX_VALUES:
        raise ConfigError([f"the document expands to more than {MAX_VALUES} values "
                           "through YAML aliases (anchors used inside anchors)"], source)
    duplicates: list[Any] = []

    def walk(n: yaml.Node | None, path: tuple[Any, ...]) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in n.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                if isinstance(name, str) and name != "<<":
                    if name in seen:
                        line = key.start_mark.line + 1
                        duplicates.append(((*path, name), f"duplicate key (again on line {line})"))
                    seen.add(name)
                walk(value, (*path, name))
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, (*path, i))

    walk(node, ())
    return data, duplicates


def load_settings(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from a YAML file (None: all defaults), with `overrides` deep-merged on top."""
    env = os.environ if env is None else env
    if path is None:
        return _build(_merge({}, overrides or {}), env, "<config>")
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
        mode = os.stat(path).st_mode
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError([f"{source}: cannot read: {reason}"]) from None
    try:
        return _load_text(text, mode, source, env, overrides)
    except RecursionError:  # an anchor that contains itself (`a: &x [*x]`)
        raise ConfigError(
            [f"{source}: a YAML anchor refers to itself (or the document nests too deeply)"]
        ) from None


def _load_text(
    text: str,
    mode: int,
    source: str,
    env: Mapping[str, str],
    overrides: Mapping[str, Any] | None,
) -> Settings:
    raw, duplicates = _parse_yaml(text, source)
    if raw is None:
        raw = {}
    data = _merge(raw, overrides or {}) if isinstance(raw, Mapping) else raw

    def exposed() -> list[Any]:
        """Duplicate keys, and secrets written literally in a file every user can read."""
        found = list(duplicates)
        if not mode & 0o004:
            return found
        for dotted in _SECRETS:
            *parents, key = dotted.split(".")
            node = _dig(raw, *parents, key)
            if isinstance(node, str) and _literal(node):
                var = _ENV_SECRETS.get(dotted, ("", ""))[1]
                fix = f"${{{var}}}" if var else f"{key}_file"
                found.append(
                    (
                        (*parents, key),
                        "the file is readable by every user and holds this secret; "
                        f"chmod 600 {source} or use {fix}",
                    )
                )
        return found

    return _build(data, env, source, exposed)


def require_api_key(settings: Settings) -> str:
    """The RunPod API key, or a ConfigError saying how to give one."""
    key = settings.runpod.api_key
    if key is None or not key.get_secret_value():
        raise ConfigError(
            [
                "runpod.api_key: no API key: set RUNPOD_API_KEY, runpod.api_key or "
                "runpod.api_key_file"
            ]
        )
    return key.get_secret_value()
