"""The set-up: what bin/kiri installs is exactly what the lock says, and the lock is current."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def locked(name: str) -> dict[str, str]:
    """The versions requirements/NAME.txt pins for this interpreter and platform."""
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements" / f"{name}.txt").read_text().splitlines():
        if m := PIN.match(line):
            package, version, marker = m.groups()
            if marker is None or Marker(marker).evaluate():
                pins[str(canonicalize_name(package))] = str(version)
    return pins


def test_every_locked_package_is_installed_at_its_locked_version() -> None:
    pins = locked("dev")
    assert {"msgspec", "numpy", "psutil", "pytest", "ruff", "mypy"} <= pins.keys()
    wrong = {
        package: (version, metadata.version(package))
        for package, version in pins.items()
        if metadata.version(package) != version
    }
    assert wrong == {}, "installed versions that differ from the lock (locked, installed)"


def test_the_runtime_and_bench_sets_pin_the_same_versions_as_the_dev_set() -> None:
    dev = locked("dev")
    for name in ("base", "bench"):
        pins = locked(name)
        assert pins, f"requirements/{name}.txt pins nothing"
        assert {p: dev.get(p) for p in pins} == pins


def test_the_lock_is_current_with_pyproject_and_its_exports() -> None:
    done = subprocess.run(
        [sys.executable, "requirements/lock.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "command",
    ["kiri", "kiri-collect", "kiri-atom", "kiri-decide", "kiri-act", "kiri-feedback",
     "kiri-supervise"],
)  # fmt: skip
def test_every_command_answers_version_from_the_package_metadata(command: str) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / command), "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{command} {metadata.version('kiri')}\n"
