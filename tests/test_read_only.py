"""Commands that only read leave no trace: with KIRI_HOME pointing where nothing is, they run
and KIRI_HOME still does not exist afterwards."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT

STAGES = [
    "kiri.collect.stage",
    "kiri.score.stage",
    "kiri.decide.stage",
    "kiri.act.stage",
    "kiri.feedback.stage",
    "kiri.supervise.supervisor",
]
COMMANDS = [
    *([module, "--version"] for module in STAGES),
    ["kiri.cli", "--version"],
    ["kiri.cli", "status"],
    ["kiri.cli", "status", "--json"],
    ["kiri.cli", "alerts"],
    ["kiri.cli", "alerts", "--all", "--json"],
    ["kiri.cli", "rules"],
    ["kiri.cli", "rules", "--json"],
    ["kiri.cli", "task", "list"],
    ["kiri.cli", "task", "list", "--all", "--json"],
    ["kiri.cli", "info", "pulse"],
    ["kiri.cli", "prune", "--dry-run"],
    ["kiri.cli", "prune"],
    ["kiri.cli", "service", "install", "--dry-run"],
    ["kiri.supervise.supervisor", "--check", str(ROOT / "pipelines" / "pulse.toml")],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_a_command_that_only_reads_makes_no_kiri_home(argv, tmp_path):
    home = tmp_path / "nowhere"
    env = {**os.environ, "KIRI_HOME": str(home)}
    out = subprocess.run(
        [sys.executable, "-m", *argv], env=env, capture_output=True, timeout=60, check=False
    )
    assert b"Traceback" not in out.stderr
    assert out.returncode in (0, 1), out.stderr  # status without a supervisor says so: 1
    assert not home.exists(), f"{' '.join(argv)} made {sorted(home.rglob('*'))}"
