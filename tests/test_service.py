"""kiri service: the launchd plist and the systemd unit rendered from pipelines/, and
install / uninstall / status against a temporary HOME, with stand-in service managers."""

import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run

PULSE = ROOT / "pipelines" / "pulse.toml"
SUPERVISE = str(ROOT / "bin" / "kiri-supervise")
START = [
    "systemctl --user daemon-reload",
    "systemctl --user enable kiri.service",
    "systemctl --user restart kiri.service",
]
FAKE = """#!/bin/sh
echo "${0##*/} $*" >> "$FAKE_CALLS"
[ -z "$FAKE_OUT" ] || echo "$FAKE_OUT"
[ -z "$FAKE_ERR" ] || echo "$FAKE_ERR" >&2
exit "${FAKE_STATUS:-0}"
"""


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return home


@pytest.fixture
def calls(tmp_path, monkeypatch):
    """systemctl and launchctl stand-ins, alone on PATH; returns how to read their calls."""
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    for name in ("systemctl", "launchctl"):
        (fake_bin / name).write_text(FAKE)
        (fake_bin / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(fake_bin))
    log = tmp_path / "calls"
    monkeypatch.setenv("FAKE_CALLS", str(log))
    return lambda: log.read_text().splitlines() if log.exists() else []


def service(*args):
    return run("kiri.cli", "service", *args)


def unit_path(home: Path) -> Path:
    return home / ".config" / "systemd" / "user" / "kiri.service"


def plist_path(home: Path) -> Path:
    return home / "Library" / "LaunchAgents" / "dev.kiri.plist"


# -- the files -----------------------------------------------------------------------------


def test_the_plist_runs_the_checkout_supervisor_under_launchd(tmp_path, monkeypatch):
    kiri_home = tmp_path / "odd & <home>"  # must come back unchanged through the XML
    monkeypatch.setenv("KIRI_HOME", str(kiri_home))
    out = service("install", "--dry-run", "--platform", "macos")
    assert out.returncode == 0, out.stderr
    plist = plistlib.loads(out.stdout)
    assert plist["Label"] == "dev.kiri"
    assert plist["ProgramArguments"] == [SUPERVISE, str(PULSE)]
    assert plist["EnvironmentVariables"] == {"KIRI_HOME": str(kiri_home)}
    assert plist["KeepAlive"] == {"SuccessfulExit": False} and plist["RunAtLoad"] is True
    assert plist["ThrottleInterval"] == 10
    assert plist["StandardErrorPath"] == str(kiri_home / "logs" / "supervise.log")
    assert Path(plist["StandardOutPath"]).parent == kiri_home / "logs"


def test_the_unit_runs_the_checkout_supervisor_under_systemd(kiri_home):
    out = service("install", "--dry-run", "--platform", "linux")
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert text.startswith("# KIRI's supervisor as a systemd user service.")
    settings = [line for line in text.splitlines() if line and line[0] not in "#["]
    assert f'ExecStart="{SUPERVISE}" "{PULSE}"' in settings
    assert f'Environment="KIRI_HOME={kiri_home}"' in settings
    for setting in (
        "Restart=on-failure",
        "RestartSec=5",
        "StartLimitIntervalSec=600",
        "StartLimitBurst=5",
        "KillMode=mixed",
        "WantedBy=default.target",
    ):
        assert setting in settings


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here"
)
def test_the_unit_passes_systemd_analyze_verify(tmp_path, monkeypatch):
    monkeypatch.setenv("KIRI_HOME", str(tmp_path / 'a home with 100% "quotes"'))
    out = service("install", "--dry-run", "--platform", "linux")
    assert out.returncode == 0, out.stderr
    unit = tmp_path / "kiri.service"
    unit.write_bytes(out.stdout)
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0, verify.stderr
    assert [line for line in verify.stderr.splitlines() if "kiri.service" in line] == []


# -- install, uninstall, status ------------------------------------------------------------


def test_install_writes_the_unit_and_starts_it(home, calls):
    dry = service("install", "--dry-run", "--platform", "linux")
    out = service("install", "--platform", "linux")
    assert out.returncode == 0, out.stderr
    assert unit_path(home).read_bytes() == dry.stdout
    assert calls() == START
    lines = out.stdout.decode().splitlines()
    assert lines[0] == f"wrote {unit_path(home)}"
    assert lines[1] == f"started: kiri-supervise runs {PULSE}; `kiri status` shows its stages"


def test_install_without_a_working_user_systemd_says_how_to_start_kiri(home, calls, monkeypatch):
    monkeypatch.setenv("FAKE_STATUS", "1")
    monkeypatch.setenv("FAKE_ERR", "Failed to connect to bus: No medium found")
    out = service("install", "--platform", "linux")
    assert out.returncode == 0, out.stderr
    assert unit_path(home).exists() and calls() == START[:1]
    assert out.stdout.decode().splitlines()[1:] == [
        "`systemctl --user daemon-reload` failed: Failed to connect to bus: No medium found",
        f"start it with: {' && '.join(START)}",
        f"or run it in the foreground: {SUPERVISE} {PULSE}",
    ]


def test_install_without_systemctl_writes_the_unit_and_says_so(home, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = service("install", "--platform", "linux")
    assert out.returncode == 0, out.stderr
    assert unit_path(home).exists()
    assert out.stdout.decode().splitlines()[1] == (
        "systemctl is not available here, so nothing started or stopped KIRI"
    )


def test_dry_run_writes_nothing(home, calls):
    out = service("install", "--dry-run")
    assert out.returncode == 0 and out.stdout
    assert list(home.iterdir()) == [] and calls() == []


def test_install_checks_the_pipeline_first(home, calls, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[[stage]]\nname = "a"\nargv = ["{sys.executable}"]\ninputs = ["b"]\n')
    out = service("install", "--platform", "linux", "--pipeline", str(bad))
    assert out.returncode == 2
    assert out.stderr.decode() == f"Error: {bad}: stage 'a': input 'b' is not a stage\n"
    assert not unit_path(home).exists() and calls() == []


def test_uninstall_stops_the_service_and_removes_the_unit(home, calls):
    assert service("install", "--platform", "linux").returncode == 0
    out = service("uninstall", "--platform", "linux")
    assert out.returncode == 0, out.stderr
    assert not unit_path(home).exists()
    assert calls()[len(START) :] == [
        "systemctl --user disable --now kiri.service",
        "systemctl --user daemon-reload",
    ]
    assert out.stdout.decode().splitlines() == [f"removed {unit_path(home)}"]
    again = service("uninstall", "--platform", "linux")
    assert again.returncode == 0
    assert again.stdout.decode() == f"kiri service is not installed (no {unit_path(home)})\n"


def test_status_says_whether_the_service_is_installed_and_running(home, calls, monkeypatch):
    missing = service("status", "--platform", "linux")
    assert missing.returncode == 1
    assert missing.stderr.decode().startswith(
        f"Error: kiri service is not installed: no {unit_path(home)}"
    )
    assert service("install", "--platform", "linux").returncode == 0
    monkeypatch.setenv("FAKE_OUT", "active")
    out = service("status", "--platform", "linux")
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines() == [
        f"installed: {unit_path(home)}",
        f"runs: {SUPERVISE} {PULSE}",
        "systemd: active",
    ]
    assert calls()[-1] == "systemctl --user is-active kiri.service"


def test_macos_install_loads_the_agent_and_uninstall_unloads_it(home, calls):
    out = service("install", "--platform", "macos")
    assert out.returncode == 0, out.stderr
    path = plist_path(home)
    assert plistlib.loads(path.read_bytes())["ProgramArguments"] == [SUPERVISE, str(PULSE)]
    assert service("install", "--platform", "macos").returncode == 0  # a reinstall replaces it
    assert service("uninstall", "--platform", "macos").returncode == 0
    assert not path.exists()
    assert calls() == [
        f"launchctl load -w {path}",
        f"launchctl unload {path}",
        f"launchctl load -w {path}",
        f"launchctl unload -w {path}",
    ]
