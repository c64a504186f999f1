"""Shared helpers: run the real stage executables on fixture streams, read their logs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import msgspec
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


# The servers some tests run for real, and Debian's package of each (.ci/debian-packages, which
# bin/test installs): a missing one fails those tests, it does not skip them.
SERVER_PACKAGES = {
    "/usr/bin/prometheus": "prometheus",
    "/usr/bin/prometheus-node-exporter": "prometheus-node-exporter",
    "/usr/bin/prometheus-alertmanager": "prometheus-alertmanager",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "servers(*paths): the test runs these server binaries")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail a test marked `servers(...)` at once when one of its servers is not installed."""
    for mark in item.iter_markers("servers"):
        missing = [path for path in mark.args if not os.access(path, os.X_OK)]
        if missing:
            packages = " ".join(SERVER_PACKAGES[path] for path in missing)
            pytest.fail(
                f"{', '.join(missing)} not installed: apt-get install {packages} "
                "(listed in .ci/debian-packages; bin/test installs them)",
                pytrace=False,
            )


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def stage_cmd(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def log_events(stderr: bytes | str) -> list[dict]:
    """The structured log lines a stage wrote on stderr (JSON, since stderr is not a terminal)."""
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def measured(values: Mapping[str, float | None]) -> dict[str, float]:
    """An observation's values, checked to be all there: a missing one (None) fails the test
    here, not later in a comparison with a number."""
    known = {name: value for name, value in values.items() if value is not None}
    assert known.keys() == values.keys(), f"no value for {sorted(set(values) - set(known))}"
    return known


@pytest.fixture(autouse=True)
def kiri_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own KIRI_HOME, also inherited by the stages it starts."""
    home = tmp_path / "kiri-home"
    monkeypatch.setenv("KIRI_HOME", str(home))
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    return home


def run(
    module: str, *args: str, input: bytes = b"", timeout: float = 30
) -> subprocess.CompletedProcess:
    return subprocess.run(
        stage_cmd(module, *args),
        input=input,
        capture_output=True,
        timeout=timeout,
        env=os.environ,
        check=False,
    )


def observations(name: str) -> list:
    from kiri.wire.records import Obs

    decode = msgspec.json.Decoder(Obs).decode
    return [decode(line) for line in fixture_bytes(name).splitlines()]


@pytest.fixture(scope="session")
def pulse_weights(tmp_path_factory) -> Path:
    """A pulse atom trained once, on the normal recording of this machine."""
    from kiri.atoms.detector import train_detector
    from kiri.atoms.registry import atom_spec

    detector, provenance = train_detector(
        atom_spec("pulse"), observations("pulse-normal.ndjson"), steps=600, batch=32
    )
    path = tmp_path_factory.mktemp("pulse") / "weights.json"
    detector.save(path, provenance)
    return path


@pytest.fixture
def installed_pulse(pulse_weights: Path, kiri_home: Path) -> Path:
    """Those weights, where the pulse atom looks for them in this test's KIRI_HOME."""
    path = kiri_home / "atoms" / "pulse" / "weights.json"
    path.parent.mkdir(parents=True)
    shutil.copy(pulse_weights, path)
    return path


def loop_pipeline(
    source_argv: str,
    restart: str = "",
    extra_stages: str = "",
    atom_argv: str = '["kiri-atom", "pulse"]',
) -> str:
    """A supervised pipeline file with the feedback loop closed: SOURCE | kiri-atom pulse |
    kiri-decide | kiri-act --sink log | kiri-feedback -> FIFO -> kiri-decide.

    source_argv and atom_argv are TOML arrays; restart adds lines to [restart]; extra_stages
    adds stages.
    """
    return f"""
name = "loop"
alerts = "act"
stop_timeout = 10

[restart]
delay = 0.2
{restart}

[[stage]]
name = "collect"
argv = {source_argv}

[[stage]]
name = "atom"
argv = {atom_argv}
inputs = ["collect"]

[[stage]]
name = "decide"
argv = ["kiri-decide", "--feedback", "{{fifo}}"]
inputs = ["atom"]

[[stage]]
name = "act"
argv = ["kiri-act", "--sink", "log"]
inputs = ["decide"]

[[stage]]
name = "feedback"
argv = ["kiri-feedback", "--poll", "0.2"]
inputs = ["act"]
output = "fifo"
{extra_stages}
"""
