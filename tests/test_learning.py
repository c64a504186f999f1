"""A host learnt from nothing: a real recording of this machine, quiet, then two cores saturated
(`yes > /dev/null` twice), then quiet again, replayed through the supervised pipeline with
kiri-atom --learn, as the first command runs it."""

import json
import signal
import subprocess
import time

from conftest import FIXTURES, loop_pipeline, stage_cmd

from kiri.atoms.lifecycle import read_state
from kiri.home.store import AlertRow, Store

PARTS = ["pulse-normal.ndjson", "pulse-stress.ndjson", "pulse-recovery.ndjson"]


def times(name):
    return [json.loads(line)["ts"] for line in (FIXTURES / name).read_bytes().splitlines()]


def test_a_learning_pipeline_is_quiet_alerts_on_the_stress_and_resolves_after(kiri_home, tmp_path):
    files = ", ".join(f'"{FIXTURES / p}"' for p in PARTS)
    pipeline = tmp_path / "learn.toml"
    pipeline.write_text(
        loop_pipeline(
            f'["kiri-collect", "replay", "--speed", "20", {files}]',
            atom_argv='["kiri-atom", "pulse", "--learn", "--warmup", "120"]',
        )
    )
    proc = subprocess.Popen(
        stage_cmd("kiri.supervise.supervisor", str(pipeline)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline, rows = time.monotonic() + 120, list[AlertRow]()
        while time.monotonic() < deadline and "resolve" not in [r.action for r in rows]:
            time.sleep(0.5)
            with Store() as store:
                rows = list(reversed(store.alerts(100, everything=True)))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    stress, recovery = times(PARTS[1]), times(PARTS[2])
    assert [r.action for r in rows] == ["alert", "resolve"], [r.summary for r in rows]
    alert, resolve = rows
    assert stress[0] <= alert.ts <= stress[0] + 30  # nothing while quiet; within 30 s of it
    assert alert.pattern.split()[0][0] in "CL"  # the CPU or the load is named first
    assert recovery[0] <= resolve.ts <= stress[-1] + 60
    state = read_state("pulse")
    assert state is not None and state.model and state.early  # a young model, retrained at 240
    assert len(state.landed) >= 2
