"""Configuration: the shipped example, every broken-config report word for word, secrets."""

from __future__ import annotations

import os
import pickle
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from monitor.config import (
    ConfigError,
    Settings,
    load_settings,
    require_api_key,
    settings_from_dict,
)
from rules.thresholds import Thresholds

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, mode: int = 0o600, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def report_of(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=env or {})
    return str(info.value)


def test_shipped_config_loads_with_defaults() -> None:
    """The repo's config.yaml loads with no env vars and holds exactly the documented defaults."""
    s = load_settings(REPO / "config.yaml", env={})
    assert s == load_settings(None, env={})
    assert s.interval_s == 30
    assert s.endpoints == ()
    assert s.runpod.api_key is None
    assert s.runpod.api_key_file is None
    assert s.runpod.graphql_url == "https://api.runpod.io/graphql"
    assert s.runpod.rest_url == "https://api.runpod.ai/v2"
    assert (s.runpod.timeout_s, s.runpod.max_concurrency) == (10, 16)
    assert s.runpod.track_requests is True
    assert s.shard is None
    assert s.shard_spec is None
    assert s.rules == Thresholds.model_validate({})
    assert (s.http.listen, s.http.host, s.http.port) == ("127.0.0.1:9108", "127.0.0.1", 9108)
    assert s.http.basic_auth is None
    assert s.state.path == Path("data/runpod-monitor.db")
    assert s.state.retention_s == 7200
    assert (s.alerts.group_wait_s, s.alerts.repeat_interval_s) == (30, 14400)
    assert s.alerts.silences == ()
    slack = s.alerts.slack
    assert (slack.webhook_url, slack.bot_token, slack.channel) == (None, None, None)
    assert (slack.min_severity, slack.max_per_second) == ("warning", 1.0)
    assert (s.alerts.alertmanager.url, s.alerts.alertmanager.min_severity) == (None, "info")
    assert (s.log.level, s.log.format) == ("info", "auto")
    api = s.api
    assert (api.write_routes, api.write_token, api.allow_unauthenticated_writes) == (
        True, None, False)
    assert (api.max_body_bytes, api.max_silences, api.max_jobs) == (16384, 1000, 10000)
    assert s.secrets() == []


def test_shipped_config_takes_secrets_from_env() -> None:
    """The shipped file's ${VAR}s pick up the secrets from the environment."""
    env = {
        "RUNPOD_API_KEY": "rpa_key",
        "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/x",
        "RUNPOD_MONITOR_WRITE_TOKEN": "write-token-0123456789",
    }
    s = load_settings(REPO / "config.yaml", env=env)
    assert require_api_key(s) == "rpa_key"
    assert s.secrets() == ["rpa_key", "https://hooks.slack.com/services/T/B/x",
                           "write-token-0123456789"]


MISSING = object()  # the case's file is not created

BROKEN: list[tuple[str, object, dict[str, str], int, str]] = [
    (
        "spec-example",
        "interval_s: -5\nrunpod:\n  graphql_url: ftp://x\nrules:\n  throtled_cycles: 3\n",
        {},
        0o600,
        "{path}: 3 problems\n"
        "  interval_s: must be greater than 0 (got -5)\n"
        "  runpod.graphql_url: not an http(s) URL (got 'ftp://x')\n"
        "  rules.throtled_cycles: unknown key",
    ),
    (
        "unknown-top-level-key",
        "intervall_s: 30\n",
        {},
        0o600,
        "{path}: 1 problem\n  intervall_s: unknown key",
    ),
    (
        "wrong-type-integer",
        "runpod:\n  max_concurrency: lots\n",
        {},
        0o600,
        "{path}: 1 problem\n  runpod.max_concurrency: must be an integer (got 'lots')",
    ),
    (
        "wrong-type-number-and-bool",
        "runpod:\n  timeout_s: soon\n  track_requests: maybe\n",
        {},
        0o600,
        "{path}: 2 problems\n"
        "  runpod.timeout_s: must be a number (got 'soon')\n"
        "  runpod.track_requests: must be true or false (got 'maybe')",
    ),
    (
        "interval-under-one-second",
        "interval_s: 0.5\n",
        {},
        0o600,
        "{path}: 1 problem\n  interval_s: must be at least 1 (got 0.5)",
    ),
    (
        "section-not-a-mapping",
        "runpod: 5\nendpoints: abc\n",
        {},
        0o600,
        "{path}: 2 problems\n"
        "  runpod: must be a mapping (got 5)\n"
        "  endpoints: must be a list (got 'abc')",
    ),
    (
        "unset-env-var-in-plain-field",
        "state:\n  path: ${DATA_DIR}/monitor.db\n",
        {},
        0o600,
        "{path}: 1 problem\n  state.path: environment variable DATA_DIR is not set",
    ),
    (
        "malformed-env-reference",
        "alerts:\n  slack:\n    channel: ${1abc}\n",
        {},
        0o600,
        "{path}: 1 problem\n"
        "  alerts.slack.channel: malformed ${...} reference (write $${ for a literal ${)",
    ),
    (
        "file-missing",
        MISSING,
        {},
        0o600,
        "{path}: cannot read: No such file or directory",
    ),
    (
        "bad-urls",
        "runpod:\n  rest_url: api.runpod.ai/v2\nalerts:\n  alertmanager:\n"
        "    url: localhost:9093\n",
        {},
        0o600,
        "{path}: 2 problems\n"
        "  runpod.rest_url: not an http(s) URL (got 'api.runpod.ai/v2')\n"
        "  alerts.alertmanager.url: not an http(s) URL (got 'localhost:9093')",
    ),
    (
        "thresholds-out-of-range",
        "rules:\n  job_failures_ratio: 1.5\n  throttled_cycles: 0\n  queue_backlog_s: -1\n",
        {},
        0o600,
        "{path}: 3 problems\n"
        "  rules.job_failures_ratio: must be at most 1 (got 1.5)\n"
        "  rules.throttled_cycles: must be at least 1 (got 0)\n"
        "  rules.queue_backlog_s: must be greater than 0 (got -1)",
    ),
    (
        "bad-listen-no-port",
        "http:\n  listen: localhost\n",
        {},
        0o600,
        "{path}: 1 problem\n  http.listen: must be host:port, IPv6 as [::1]:9108 (got 'localhost')",
    ),
    (
        "bad-listen-ipv6-without-brackets",
        "http:\n  listen: '::1:9108'\n",
        {},
        0o600,
        "{path}: 1 problem\n  http.listen: must be host:port, IPv6 as [::1]:9108 (got '::1:9108')",
    ),
    (
        "bad-listen-port-range",
        "http:\n  listen: '[::1]:70000'\n",
        {},
        0o600,
        "{path}: 1 problem\n  http.listen: port must be 0..65535 (got '[::1]:70000')",
    ),
    (
        "bad-shard",
        "shard: 2/2\n",
        {},
        0o600,
        "{path}: 1 problem\n  shard: must be 'I/N' with 0 <= I < N (got '2/2')",
    ),
    (
        "bad-silences",
        "alerts:\n  silences:\n"
        "    - {code: gpu_on_fire, until: '2030-01-01T00:00:00Z'}\n"
        "    - {endpoint_id: abc}\n"
        "    - {until: '2030-01-01T00:00:00'}\n"
        "    - {code: idle_spend, until: tomorrow}\n",
        {},
        0o600,
        "{path}: 5 problems\n"
        "  alerts.silences[0].code: not a known diagnosis code (got 'gpu_on_fire')\n"
        "  alerts.silences[1].until: required\n"
        "  alerts.silences[2]: needs a code, an endpoint_id or both\n"
        "  alerts.silences[2].until: must include a time zone, e.g. 2025-01-31T18:00:00Z"
        " (got '2030-01-01T00:00:00')\n"
        "  alerts.silences[3].until: must be an ISO-8601 date-time with a time zone"
        " (got 'tomorrow')",
    ),
    (
        "unknown-log-level-and-severity",
        "alerts:\n  slack:\n    min_severity: loud\nlog:\n  level: chatty\n",
        {},
        0o600,
        "{path}: 2 problems\n"
        "  alerts.slack.min_severity: must be one of: info, warning, critical (got 'loud')\n"
        "  log.level: must be one of: debug, info, warning, error (got 'chatty')",
    ),
    (
        "bot-token-without-channel",
        "alerts:\n  slack:\n    min_severity: critical\n",
        {"SLACK_BOT_TOKEN": "xoxb-123"},
        0o600,
        "{path}: 1 problem\n  alerts.slack.channel: required with a bot token",
    ),
    (
        "basic-auth-incomplete",
        "http:\n  basic_auth:\n    password_file: null\n",
        {},
        0o600,
        "{path}: 2 problems\n"
        "  http.basic_auth.username: required\n"
        "  http.basic_auth.password: required (set password or password_file)",
    ),
    (
        "bad-yaml",
        "interval_s: 30\nendpoints: [abc\nlog: {}\n",
        {},
        0o600,
        "{path}: 1 problem\n  line 3, column 4: expected ',' or ']', but got ':'",
    ),
    (
        "top-level-list",
        "- interval_s: 30\n",
        {},
        0o600,
        "{path}: 1 problem\n  the top level must be a mapping of settings (got a list)",
    ),
    (
        "duplicate-key",
        "interval_s: 30\nlog: {level: info}\ninterval_s: 60\n",
        {},
        0o600,
        "{path}: 1 problem\n  interval_s: duplicate key (again on line 3)",
    ),
    (
        "world-readable-literal-secret",
        "runpod:\n  api_key: rpa_LITERAL\nalerts:\n  slack:\n    bot_token: ${SLACK_BOT_TOKEN}\n"
        "    channel: '#ops'\n",
        {"SLACK_BOT_TOKEN": "xoxb-1"},
        0o644,
        "{path}: 1 problem\n"
        "  runpod.api_key: the file is readable by every user and holds this secret; "
        "chmod 600 {path} or use ${RUNPOD_API_KEY}",
    ),
    (
        "secret-of-wrong-type",
        "runpod:\n  api_key: 123456789\n",
        {},
        0o600,
        "{path}: 1 problem\n  runpod.api_key: must be a string",
    ),
    (
        "secret-file-unreadable",
        "runpod:\n  api_key_file: /nonexistent/runpod_key\n",
        {"RUNPOD_API_KEY": "from-env"},
        0o600,
        "{path}: 1 problem\n"
        "  runpod.api_key_file: cannot read /nonexistent/runpod_key: No such file or directory",
    ),
    (
        "many-problems-in-file-order",
        "log:\n  format: pretty\nstate:\n  retention_s: 0\ninterval_s: x\nendpoints: ['']\n",
        {},
        0o600,
        "{path}: 4 problems\n"
        "  log.format: must be one of: auto, json, console (got 'pretty')\n"
        "  state.retention_s: must be greater than 0 (got 0)\n"
        "  interval_s: must be a number (got 'x')\n"
        "  endpoints[0]: must not be empty (got '')",
    ),
]


@pytest.mark.parametrize(
    ("text", "env", "mode", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in BROKEN],
)
def test_broken_config_report(
    tmp_path: Path, text: object, env: dict[str, str], mode: int, expected: str
) -> None:
    """Each broken config yields exactly this report: every problem, by dotted path, in order."""
    path = tmp_path / "config.yaml" if text is MISSING else write(tmp_path, str(text), mode)
    assert report_of(path, env) == expected.replace("{path}", str(path))


def test_error_lists_problems() -> None:
    """ConfigError.problems holds one line per problem, without the header or indent."""
    with pytest.raises(ConfigError) as info:
        settings_from_dict({"interval_s": 0, "bogus": 1}, env={}, source="x.yaml")
    assert info.value.problems == [
        "interval_s: must be greater than 0 (got 0)",
        "bogus: unknown key",
    ]
    assert str(info.value).splitlines()[0] == "x.yaml: 2 problems"
    copy = pickle.loads(pickle.dumps(info.value))  # noqa: S301 (our own bytes)
    assert (copy.problems, str(copy)) == (info.value.problems, str(info.value))


def test_secret_precedence(tmp_path: Path) -> None:
    """A secret comes from the file's value, else its *_file (stripped), else the env var."""
    keyfile = write(tmp_path, "  from-file\n", name="key")
    env = {"RUNPOD_API_KEY": "from-env", "MY_KEY": "from-var"}
    both = {"runpod": {"api_key": "${MY_KEY}", "api_key_file": str(keyfile)}}
    assert require_api_key(settings_from_dict(both, env=env)) == "from-var"
    only_file = {"runpod": {"api_key_file": str(keyfile)}}
    assert require_api_key(settings_from_dict(only_file, env=env)) == "from-file"
    assert require_api_key(settings_from_dict({}, env=env)) == "from-env"
    unset_var = {"runpod": {"api_key": "${UNSET_KEY}"}}
    assert require_api_key(settings_from_dict(unset_var, env=env)) == "from-env"
    empty = {"runpod": {"api_key": "${UNSET_KEY:-}"}}
    assert settings_from_dict(empty, env={}).runpod.api_key is None


def test_all_secret_kinds_resolve(tmp_path: Path) -> None:
    """Slack webhook, bot token and basic-auth password resolve and appear in secrets()."""
    token = write(tmp_path, "xoxb-file\n", name="token")
    data = {
        "alerts": {"slack": {"bot_token_file": str(token), "channel": "#ops"}},
        "http": {"basic_auth": {"username": "prom", "password": "${METRICS_PW}"}},
    }
    env = {"SLACK_WEBHOOK_URL": "https://hooks.slack.com/x", "METRICS_PW": "pw-1"}
    s = settings_from_dict(data, env=env)
    assert s.alerts.slack.bot_token is not None
    assert s.alerts.slack.bot_token.get_secret_value() == "xoxb-file"
    assert s.secrets() == ["https://hooks.slack.com/x", "xoxb-file", "pw-1"]
    assert s.alerts.slack.bot_token_file == token


def test_require_api_key_message() -> None:
    """Without any key, require_api_key raises the one-line how-to-fix message."""
    with pytest.raises(ConfigError) as info:
        require_api_key(load_settings(None, env={}))
    assert str(info.value) == (
        "runpod.api_key: no API key: set RUNPOD_API_KEY, runpod.api_key or runpod.api_key_file"
    )


SECRET = "sk-TOPSECRET-value"


@pytest.mark.parametrize(
    "data",
    [
        {"runpod": {"api_key": [SECRET]}},
        {"runpod": {"api_key": {SECRET: 1}}},
        {"alerts": {"slack": {"webhook_url": SECRET}}},
        {"alerts": {"slack": {"bot_token": SECRET}}},
        {"http": {"basic_auth": {"username": 5, "password": [SECRET]}}},
        {"runpod": {"api_key": SECRET, "timeout_s": "x"}},
    ],
)
def test_secrets_never_in_errors(data: dict[str, object]) -> None:
    """No error message or repr carries a secret's value, whatever is wrong with it."""
    with pytest.raises(ConfigError) as info:
        settings_from_dict(data, env={"RUNPOD_API_KEY": SECRET})
    err = info.value
    assert SECRET not in str(err)
    assert SECRET not in repr(err)
    assert all(SECRET not in p for p in err.problems)
    assert err.__cause__ is None
    assert err.__suppress_context__


def test_secret_not_in_yaml_error(tmp_path: Path) -> None:
    """A YAML syntax error on a secret's line names the place, not the line's text."""
    path = write(tmp_path, f"runpod:\n  api_key: {SECRET}: x\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    report = str(info.value)
    assert SECRET not in report
    assert info.value.__context__ is None
    assert report.endswith("line 2, column 30: mapping values are not allowed here")


def test_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    """Aliases nested in aliases (9**7 values in 8 lines) are refused, not walked for minutes;
    a configuration that shares a block through an anchor still loads."""
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdef", "bcdefg", strict=True):
        lines.append(f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
    path = write(tmp_path, "\n".join(lines) + "\nrunpod: {endpoints: *g}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert info.value.problems == [
        "the document expands to more than 100000 values through YAML aliases (anchors used "
        "inside anchors)"]
    shared = write(tmp_path, "x-ids: &ids [ep1, ep2]\nendpoints: *ids\n",
                   name="shared.yaml")
    with pytest.raises(ConfigError) as info:  # the helper key is unknown; the alias is fine
        load_settings(shared, env={})
    assert [p.split(":")[0] for p in info.value.problems] == ["x-ids"]


def test_secrets_not_in_repr(tmp_path: Path) -> None:
    """repr() and str() of settings hide every secret."""
    pw = write(tmp_path, SECRET + "-pw", name="pw")
    data = {
        "alerts": {"slack": {"webhook_url": "https://hooks.slack.com/" + SECRET}},
        "http": {"basic_auth": {"username": "u", "password_file": str(pw)}},
    }
    s = settings_from_dict(data, env={"RUNPOD_API_KEY": SECRET, "SLACK_BOT_TOKEN": ""})
    assert len(s.secrets()) == 3
    for text in (repr(s), str(s), repr(s.runpod), str(s.model_dump())):
        assert SECRET not in text


def test_world_readable_file_without_literal_secret_is_fine(tmp_path: Path) -> None:
    """A 0644 file whose secrets all come from ${VAR} or *_file loads."""
    text = "runpod:\n  api_key: ${RUNPOD_API_KEY}\nhttp:\n  basic_auth:\n    username: u\n"
    text += "    password_file: " + str(write(tmp_path, "pw\n", name="pw")) + "\n"
    path = write(tmp_path, text, mode=0o644)
    assert load_settings(path, env={"RUNPOD_API_KEY": "k"}).secrets() == ["k", "pw"]
    os.chmod(path, 0o600)
    literal = write(tmp_path, "runpod:\n  api_key: literal\n", mode=0o640, name="b.yaml")
    assert require_api_key(load_settings(literal, env={})) == "literal"


def test_overrides_deep_merge(tmp_path: Path) -> None:
    """Overrides merge into nested sections key by key, replacing lists and scalars."""
    path = write(
        tmp_path,
        "endpoints: [one, two]\nrunpod:\n  timeout_s: 3\nrules:\n"
        "  throttled_cycles: 5\n  not_scheduling_s: 100\n",
    )
    overrides = {"endpoints": ["abc"], "rules": {"throttled_cycles": 7}, "log": {"level": "debug"}}
    s = load_settings(path, env={}, overrides=overrides)
    assert s.endpoints == ("abc",)
    assert (s.rules.throttled_cycles, s.rules.not_scheduling_s) == (7, 100)
    assert s.runpod.timeout_s == 3
    assert s.log.level == "debug"
    assert load_settings(None, env={}, overrides=overrides).rules.not_scheduling_s == 300


def test_overrides_are_validated() -> None:
    """A bad override is reported like a bad file key."""
    with pytest.raises(ConfigError) as info:
        load_settings(None, env={}, overrides={"rules": {"bogus": 1}})
    assert str(info.value) == "<config>: 1 problem\n  rules.bogus: unknown key"


def test_interpolation_forms() -> None:
    """${VAR:-default}, $${ escapes, lists and non-string values all interpolate correctly."""
    data = {
        "endpoints": ["${EP1}", "${EP2:-fallback}", 12345, "${EP1}"],
        "interval_s": "${INTERVAL:-45}",
        "alerts": {"slack": {"channel": "$${literal} ${CH}"}},
        "state": {"path": "${DIR:-/tmp/x}/db"},
    }
    s = settings_from_dict(data, env={"EP1": "abc", "CH": "#ops: a # b", "DIR": ""})
    assert s.endpoints == ("abc", "fallback", "12345")
    assert s.interval_s == 45
    assert s.alerts.slack.channel == "${literal} #ops: a # b"
    assert s.state.path == Path("/tmp/x/db")


@given(st.text(min_size=1))
def test_interpolated_values_arrive_verbatim(value: str) -> None:
    """Any env value lands verbatim: interpolation runs after YAML parsing, so quoting holds."""
    s = settings_from_dict({"alerts": {"slack": {"channel": "${CH}"}}}, env={"CH": value})
    assert s.alerts.slack.channel == value


def test_shard_listen_and_null_sections(tmp_path: Path) -> None:
    """shard_spec, IPv6 listen and empty (null) sections parse as documented."""
    path = write(
        tmp_path,
        "shard: 1/3\nhttp:\n  listen: '[::1]:0'\nrules:\nalerts:\n  silences:\n"
        "    - {code: idle_spend, until: 2030-01-31T18:00:00Z}\nlog:\n  level: DEBUG\n",
    )
    s = load_settings(path, env={})
    assert s.shard_spec == (1, 3)
    assert (s.http.host, s.http.port) == ("::1", 0)
    assert s.rules == Thresholds.model_validate({})
    assert s.alerts.silences[0].until == datetime(2030, 1, 31, 18, tzinfo=UTC)
    assert s.log.level == "debug"


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after loading."""
    s = load_settings(None, env={})
    with pytest.raises(ValidationError):
        s.interval_s = 5
    assert isinstance(s, Settings)
