"""Shared helpers: run the real stage executables on fixture streams, read their logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def stage_cmd(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def log_events(stderr: bytes | str) -> list[dict]:
    """The structured log lines a stage wrote on stderr (JSON, since stderr is not a terminal)."""
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture(autouse=True)
def kiri_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own KIRI_HOME, also inherited by the stages it starts."""
    home = tmp_path / "kiri-home"
    monkeypatch.setenv("KIRI_HOME", str(home))
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    return home


def run(module: str, *args: str, input: bytes = b"", timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        stage_cmd(module, *args), input=input, capture_output=True, timeout=timeout, env=os.environ
    )
