"""Loading: YAML parsed within bounds, `${VAR}` interpolation, `*_file` and environment
secrets, the cross-field checks, then the models."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    TypeAdapter,
    ValidationError,
)

from monitor.config.errors import (
    ConfigError,
    _dotted,
    _got,
    _pydantic_problems,
    _scrub,
    _sorted_report,
)
from monitor.config.schema import (
    _NO_CHANNEL,
    _NO_TARGET,
    HttpSettings,
    Settings,
    _split_listen,
    is_loopback,
)

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
_OPEN_WRITES = (
    "required: http.listen {listen!r} is reachable beyond this machine, and anyone who "
    "reaches it could silence every alert (POST /api/v1/silences). Set api.write_token "
    "(or api.write_token_file, or RUNPOD_MONITOR_WRITE_TOKEN) or http.basic_auth; or "
    "api.write_routes: false; or, knowingly, api.allow_unauthenticated_writes: true"
)


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
        checks.extend(_pydantic_problems(exc, _SECRET_NAMES))
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

