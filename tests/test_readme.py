"""The README's promises: the two set-up commands, and CI running the same test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _first_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no bash code block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_first_block_is_setup_then_tests():
    """The first code block holds exactly two commands: set up + train, then the tests."""
    setup, tests = _first_block()
    assert "pip install" in setup and "salesflow train" in setup
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command():
    """.ci/run runs the README's test command verbatim."""
    tests = _first_block()[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci


def test_readme_mentions_every_config_key_section():
    """Every top-level section of configs/base.yaml is documented in the README."""
    import yaml

    text = (ROOT / "README.md").read_text()
    for section in yaml.safe_load((ROOT / "configs" / "base.yaml").read_text()):
        assert f"{section}." in text or f"`{section}`" in text, section


def test_required_top_level_is_tracked():
    """The layout the README describes is in git, so a fresh clone has it (an empty or
    ignored folder would not be cloned)."""
    import shutil
    import subprocess

    import pytest

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked layout cannot be read")
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    top = {path.split("/")[0] + ("/" if "/" in path else "") for path in tracked}
    required = ["pyproject.toml", "README.md", "salesflow/", "flows/", "tasks/", "features/"]
    required += ["configs/", "deployments/", "tests/", "data/", "benchmarks/"]
    missing = [name for name in required if name not in top]
    assert not missing, f"not tracked in git: {missing}"


def test_readme_dask_commands_are_the_e2e_harness_commands():
    """The scheduler and worker commands of "Scaling out" are those the Dask e2e test runs."""
    from tests.e2e.dask_stack import DASK_COMMANDS, WORKER_NAMES

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### A Dask cluster on one machine") :]
    section = section[: section.index("\n### ", 5)]
    assert DASK_COMMANDS["scheduler"] in section
    for name in WORKER_NAMES:
        assert DASK_COMMANDS["worker"].format(name=name) in section
