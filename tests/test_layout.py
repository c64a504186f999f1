"""The layout holds: no floor imports a stage or a higher floor, no stage imports another, only
the dispatcher imports a front (the dashboard), and the stages after kiri-atom and the dashboard
start without numpy (bench/layout.py draws the graph)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import layout  # type: ignore[import-not-found, unused-ignore]  # noqa: E402


def test_no_import_goes_up_a_floor_or_across_stages():
    graph = layout.imports(ROOT)
    rooms = {*layout.FLOORS, *layout.STAGES, *layout.FRONTS, *layout.TOP}
    assert {layout.room(m) for m in graph} <= rooms
    assert layout.forbidden(graph) == []


def test_the_rules_catch_what_they_forbid():
    graph = {
        "kiri.wire.records": {"kiri.home.store"},
        "kiri.decide.policy": {"kiri.act.stage"},
        "kiri.atoms.registry": {"kiri.cli"},
        "kiri.act.stage": {"kiri.wire.records"},
        "kiri.feedback.stage": {"kiri.dashboard.app"},
        "kiri.dashboard.app": {"kiri.feedback.verdicts", "kiri.home.store", "kiri.cli"},
        "kiri.cli": {"kiri.dashboard.app"},
    }
    assert layout.forbidden(graph) == [
        "kiri.atoms.registry -> kiri.cli: imports the dispatcher",
        "kiri.dashboard.app -> kiri.cli: imports the dispatcher",
        "kiri.decide.policy -> kiri.act.stage: the stage decide imports the stage act",
        "kiri.feedback.stage -> kiri.dashboard.app: imports the front dashboard",
        "kiri.wire.records -> kiri.home.store: the floor wire imports the higher floor home",
    ]


@pytest.mark.parametrize(
    "module",
    [
        "kiri.decide.stage",
        "kiri.act.stage",
        "kiri.feedback.stage",
        "kiri.supervise.supervisor",
        "kiri.dashboard.app",
    ],
)
def test_a_stage_after_the_atom_starts_without_numpy(module):
    code = f"import sys, {module}; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
