"""pipelines/full.toml on a fresh KIRI_HOME: every chain runs, an absent source is reported once
and left stopped, nothing crash-loops, and Ctrl-C (SIGTERM) stops it all cleanly."""

import json
import signal
import subprocess
import time

from conftest import log_events, stage_cmd

from kiri.supervise.pipeline import CHECKOUT

FULL = CHECKOUT / "pipelines" / "full.toml"


STEADY = 3.0  # seconds every chain must stay up, restarts still 0, for no crash loop to show


def status(home):
    try:
        return json.loads((home / "status.json").read_bytes())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def steady(status):
    """Every stage but the router's running, in the status the supervisor wrote STEADY seconds
    or more after the last of them started: a stage that crashed on starting would have been
    restarted by then."""
    stages = {s["name"]: s for s in status.get("stages", [])}
    running = [s for n, s in stages.items() if n != "collect-mikrotik"]
    return (
        stages.get("collect-mikrotik", {}).get("state") == "stopped"
        and all(s["state"] == "running" for s in running)
        and status["updated"] - max(s["started"] for s in running) >= STEADY
    )


def test_the_full_pipeline_runs_with_no_router_configured(kiri_home, tmp_path):
    err = tmp_path / "supervise.err"
    with open(err, "wb") as f:
        proc = subprocess.Popen(
            stage_cmd("kiri.supervise.supervisor", str(FULL)), stdout=subprocess.DEVNULL, stderr=f
        )
    try:
        deadline = time.monotonic() + 30
        while not steady(now := status(kiri_home)) and time.monotonic() < deadline:
            time.sleep(0.2)
        stages = {s["name"]: s for s in now.get("stages", [])}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, err.read_text()[-2000:]
    assert len(stages) == 11
    assert stages["collect-mikrotik"]["state"] == "stopped"
    assert stages["collect-mikrotik"]["exit_status"] == 125
    running = {n for n, s in stages.items() if s["state"] == "running"}
    assert running == set(stages) - {"collect-mikrotik"}
    assert all(s["restarts"] == 0 for s in stages.values())
    said = log_events((kiri_home / "logs" / "collect-mikrotik.log").read_bytes())
    assert len(said) == 1 and "config.toml" in json.dumps(said[0])
