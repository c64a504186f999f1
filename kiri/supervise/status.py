"""The supervisor's status file, $KIRI_HOME/status.json, and `kiri status`, which shows it.

kiri-supervise rewrites the file atomically every second and whenever a stage changes state.
`kiri status` reads it, adds CPU and memory of the live processes, and says plainly when the
supervisor that wrote it is gone.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import psutil

from kiri.atoms.lifecycle import State, describe, read_state
from kiri.home.paths import kiri_home
from kiri.wire.errors import KiriError

CPU_SAMPLE = 0.25  # seconds over which `kiri status` measures CPU %


class StageStatus(msgspec.Struct):
    name: str
    state: str  # starting, running, backoff, stopping, stopped, failed
    pid: int | None = None
    restarts: int = 0
    started: float | None = None  # when its current (or last) process started
    exit_status: int | None = None  # of its last process; -N: killed by signal N
    dropped: int = 0  # lines of its output dropped: unfinished at its exit, or over 16 MiB


class AtomStatus(msgspec.Struct):
    """The latest score of an atom seen going through the pipeline."""

    surprise: float
    threshold: float
    ts: float
    host: str = ""


class Status(msgspec.Struct):
    pid: int
    pipeline: str
    file: str
    started: float  # when the supervisor process started
    updated: float
    stages: list[StageStatus]
    atoms: dict[str, AtomStatus] = {}


def status_path() -> Path:
    return kiri_home() / "status.json"


def read(path: Path) -> Status:
    try:
        return msgspec.json.decode(path.read_bytes(), type=Status)
    except FileNotFoundError:
        raise KiriError(
            f"no status file at {path}: kiri-supervise has not run with this "
            "KIRI_HOME (start it with bin/kiri-supervise PIPELINE)"
        ) from None
    except (OSError, msgspec.MsgspecError) as e:
        raise KiriError(f"cannot read {path}: {e}") from e


def supervisor_alive(status: Status) -> bool:
    """Whether the process that wrote the status is still running (and is not a reused pid)."""
    try:
        created: float = psutil.Process(status.pid).create_time()
        return abs(created - status.started) < 1.0
    except psutil.Error:
        return False


def show() -> int:
    """`kiri status`: 0 while the supervisor runs, 1 when its status file is stale."""
    path = status_path()
    status = read(path)
    now = time.time()
    alive = supervisor_alive(status)
    if alive:
        print(
            f"kiri-supervise {status.pid}: pipeline {status.pipeline} ({status.file}), "
            f"up {spoken(now - status.started)}"
        )
    else:
        print(
            f"kiri-supervise is not running: pid {status.pid} has ended. Its last status, "
            f"written {spoken(now - status.updated)} ago ({path}):"
        )
    print()
    for line in table(stage_rows(status, now, alive)):
        print(line)
    learning = {name: state for name in _learning_atoms() if (state := read_state(name))}
    learning = {n: st for n, st in learning.items() if st.updated >= status.started}
    if status.atoms or learning:
        print()
        for line in table(atom_rows(status, now, learning)):
            print(line)
    return 0 if alive else 1


def _learning_atoms() -> list[str]:
    """Atoms whose kiri-atom has written a life-cycle state."""
    return sorted(p.parent.name for p in (kiri_home() / "atoms").glob("*/lifecycle.json"))


def stage_rows(status: Status, now: float, alive: bool) -> list[list[str]]:
    usage = measure([s.pid for s in status.stages if s.pid]) if alive else {}
    rows = [["STAGE", "STATE", "PID", "RESTARTS", "UPTIME", "CPU%", "RSS", "LAST EXIT"]]
    for s in status.stages:
        pid = s.pid if alive else None  # shown while the supervisor runs
        live = pid is not None
        cpu, rss = ("-", "-") if pid is None else usage.get(pid, ("-", "-"))
        rows.append(
            [
                s.name,
                s.state,
                str(s.pid) if live else "-",
                str(s.restarts),
                spoken(now - s.started) if live and s.started else "-",
                cpu,
                rss,
                "-" if s.exit_status is None else str(s.exit_status),
            ]
        )
    return rows


def atom_rows(status: Status, now: float, learning: dict[str, State]) -> list[list[str]]:
    """Each atom's latest score, and what its model is doing when it keeps learning."""
    rows = [["ATOM", "HOST", "SURPRISE", "THRESHOLD", "SEEN", "MODEL"]]
    for name in sorted(set(status.atoms) | set(learning)):
        model = describe(learning[name]) if name in learning else "-"
        a = status.atoms.get(name)
        if a is None:  # still warming up: nothing scored yet
            rows.append([name, "-", "-", "-", "-", model])
            continue
        rows.append(
            [
                name,
                a.host or "-",
                f"{a.surprise:.3f}",
                f"{a.threshold:.3f}",
                f"{spoken(now - a.ts)} ago",
                model,
            ]
        )
    return rows


def measure(pids: list[int]) -> dict[int, tuple[str, str]]:
    """CPU % over a short sample and resident memory of each live pid, formatted."""
    procs = {}
    for pid in pids:
        try:
            procs[pid] = psutil.Process(pid)
            procs[pid].cpu_percent(None)  # starts the sample
        except psutil.Error:
            continue
    time.sleep(CPU_SAMPLE)
    usage = {}
    for pid, proc in procs.items():
        try:
            usage[pid] = (
                f"{proc.cpu_percent(None):.1f}",
                f"{proc.memory_info().rss / (1 << 20):.1f} MiB",
            )
        except psutil.Error:
            continue
    return usage


def spoken(seconds: float) -> str:
    """A short human duration: 42s, 3m05s, 2h07m, 3d04h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
