"""The REST v2 client's config keys: runpod.v2_url, control_plane, v2_paths, v2_pagination,
logs (defaults, every invalid value reported by its dotted path, and what client_for passes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from monitor.config import ConfigError, load_settings, settings_from_dict
from monitor.runpod.client import client_for
from monitor.runpod.rest_v2 import LogBounds, V2Pagination, V2Paths

REPO = Path(__file__).resolve().parents[1]


def test_defaults_in_the_shipped_config() -> None:
    s = load_settings(REPO / "config.yaml", env={})
    r = s.runpod
    assert (r.v2_url, r.control_plane) == (None, "auto")  # None: graphql_url's origin + /v2
    assert (r.v2_paths.balance, r.v2_paths.account_limits, r.v2_paths.account) == (
        "/billing/balance", "/account/limits", "/account")
    pages = r.v2_pagination
    assert (pages.limit_param, pages.cursor_param, pages.next_field, pages.page_size,
            pages.max_pages) == ("limit", "cursor", "nextCursor", 100, 50)
    assert (r.logs.max_lines, r.logs.max_bytes, r.logs.max_seconds) == (200, 32768, 3)


def test_client_for_passes_the_v2_keys() -> None:
    s = settings_from_dict({"runpod": {
        "api_key": "k", "v2_url": "http://127.0.0.1:9/v2/", "control_plane": "REST",
        "v2_paths": {"balance": "/user/balance"},
        "v2_pagination": {"next_field": "next", "page_size": 7, "max_pages": 3},
        "logs": {"max_lines": 5, "max_bytes": 2048, "max_seconds": 0.5}}}, env={})
    assert s.runpod.control_plane == "rest"
    client = client_for(s)
    assert client._v2_url == "http://127.0.0.1:9/v2"
    assert client._v2_paths == V2Paths(balance="/user/balance")
    assert client._v2_pages == V2Pagination(next_field="next", page_size=7, max_pages=3)
    assert client._log_bounds == LogBounds(5, 2048, 0.5)


@pytest.mark.parametrize(("runpod", "problem"), [
    ({"control_plane": "soap"},
     "runpod.control_plane: must be one of: auto, rest, graphql (got 'soap')"),
    ({"v2_url": "api.runpod.io/v2"}, "runpod.v2_url: not an http(s) URL (got "
                                     "'api.runpod.io/v2')"),
    ({"v2_paths": {"balance": "billing/balance"}},
     "runpod.v2_paths.balance: must be a path like /billing/balance (got 'billing/balance')"),
    ({"v2_paths": {"account_limits": "/account/../x"}},
     "runpod.v2_paths.account_limits: must be a path like /billing/balance (got "
     "'/account/../x')"),
    ({"v2_paths": {"account": "/account?x=1"}},
     "runpod.v2_paths.account: must be a path like /billing/balance (got '/account?x=1')"),
    ({"v2_paths": {"bogus": "/x"}}, "runpod.v2_paths.bogus: unknown key"),
    ({"v2_pagination": {"cursor_param": "a b"}},
     "runpod.v2_pagination.cursor_param: must be a plain name like cursor (got 'a b')"),
    ({"v2_pagination": {"page_size": 0}},
     "runpod.v2_pagination.page_size: must be at least 1 (got 0)"),
    ({"v2_pagination": {"max_pages": 5000}},
     "runpod.v2_pagination.max_pages: must be at most 1000 (got 5000)"),
    ({"logs": {"max_lines": 0}}, "runpod.logs.max_lines: must be at least 1 (got 0)"),
    ({"logs": {"max_bytes": 100}}, "runpod.logs.max_bytes: must be at least 1024 (got 100)"),
    ({"logs": {"max_seconds": 0}}, "runpod.logs.max_seconds: must be greater than 0 (got 0)"),
    ({"logs": {"max_seconds": 60}}, "runpod.logs.max_seconds: must be at most 30 (got 60)"),
])
def test_invalid_values_name_the_field(runpod: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_dict({"runpod": runpod}, env={}, source="c.yaml")
    assert info.value.problems == [problem]


def test_an_invalid_v2_key_exits_2_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("runpod:\n  logs: {max_lines: -1}\n", encoding="utf-8")
    path.chmod(0o600)
    out = subprocess.run([sys.executable, "-m", "monitor", "check", "--config", str(path)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert "runpod.logs.max_lines: must be at least 1 (got -1)" in out.stderr


def test_v2_url_defaults_to_the_graphql_origin() -> None:
    """RunPod serves REST v2 beside GraphQL (api.runpod.io); so does the simulator, on its
    own port: a config that points graphql_url at a simulator never reaches RunPod."""
    from monitor.runpod.client import v2_url_of

    assert v2_url_of("https://api.runpod.io/graphql") == "https://api.runpod.io/v2"
    assert v2_url_of("http://127.0.0.1:8123/graphql") == "http://127.0.0.1:8123/v2"
    s = load_settings(None, env={"RUNPOD_API_KEY": "k" * 24}, overrides={
        "runpod": {"graphql_url": "http://127.0.0.1:9/graphql"}})
    from monitor.runpod.client import client_for

    assert client_for(s)._v2_url == "http://127.0.0.1:9/v2"
