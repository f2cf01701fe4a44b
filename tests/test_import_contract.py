"""The import contract (DESIGN.md's table, as import-linter contracts in pyproject.toml)
fails on a forbidden import, and names the rule it breaks."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.integration


def _copy_tree(dest: Path) -> None:
    """The three root packages and the contracts, as they are in the checkout."""
    for package in ("model", "rules", "monitor"):
        shutil.copytree(ROOT / package, dest / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    # The copy comes first on the path, ahead of the editable install of the checkout.
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-logo", "--no-cache"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def _add_import(tree: Path, module: str, line: str) -> None:
    path = tree / (module.replace(".", "/") + ".py")
    text = path.read_text()
    head, sep, rest = text.partition("from __future__ import annotations\n")
    assert sep, f"{module} has no __future__ import to anchor the new line"
    path.write_text(head + sep + line + "\n" + rest)


def test_the_untouched_tree_keeps_every_contract(tmp_path: Path) -> None:
    """The control: the copy itself passes, so a failure below is the added import's."""
    _copy_tree(tmp_path)
    result = _lint(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "rule", "chain"),
    [
        pytest.param("rules.signals", "import monitor.runpod.client  # noqa: F401",
                     "Rules never import Client, Sinks, Store or Faces",
                     "rules.signals -> monitor.runpod.client", id="rules-import-the-client"),
        pytest.param("monitor.runpod.parse", "import rules.engine  # noqa: F401",
                     "Client never imports Rules or Sinks",
                     "monitor.runpod.parse -> rules.engine", id="client-imports-the-rules"),
        pytest.param("model.observation", "import rules.diagnosis  # noqa: F401",
                     "Model imports nothing of ours",
                     "model.observation -> rules.diagnosis", id="model-imports-the-rules"),
        pytest.param("monitor.alerts.message", "import monitor.pipeline.probes  # noqa: F401",
                     "Sinks never import the Pipeline",
                     "monitor.alerts.message -> monitor.pipeline.probes",
                     id="a-sink-imports-the-probes"),
        pytest.param("monitor.state.store", "import monitor.http.web  # noqa: F401",
                     "Pipeline never imports Faces",
                     "monitor.state.store -> monitor.http.web", id="the-store-imports-a-face"),
    ],
)
def test_a_forbidden_import_fails_the_check_and_names_the_rule(
    tmp_path: Path, module: str, line: str, rule: str, chain: str
) -> None:
    _copy_tree(tmp_path)
    _add_import(tmp_path, module, line)
    result = _lint(tmp_path)
    assert result.returncode != 0
    out = " ".join(result.stdout.split())  # the report wraps long names at 80 columns
    # the summary lists each contract once, as "<name> KEPT" or "<name> BROKEN"
    status = re.search(re.escape(rule) + r".*?\b(KEPT|BROKEN)\b", out)
    assert status is not None, out
    assert status.group(1) == "BROKEN", out
    assert chain in out, out
