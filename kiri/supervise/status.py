"""`kiri status`: the supervisor's status file, $KIRI_HOME/status.json (kiri/home/status.py), shown.

kiri-supervise rewrites the file atomically every second and whenever a stage changes state,
with each stage's CPU % and memory as the supervisor measures them (Usage: every few seconds,
the stage's process and every process it started). `kiri status` reads it, and says plainly when
the supervisor that wrote it is gone; `kiri status --json` prints it as one JSON document.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import psutil

from kiri.atoms.lifecycle import State, describe, read_state
from kiri.home.paths import kiri_home
from kiri.home.status import Status, status_path
from kiri.wire.errors import KiriError
from kiri.wire.output import print_json

CPU_EVERY = 5.0  # seconds between the supervisor's measurements of each stage's CPU %


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


def show(as_json: bool = False) -> int:
    """`kiri status`: 0 while the supervisor runs, 1 when its status file is stale."""
    path = status_path()
    status = read(path)
    now = time.time()
    alive = supervisor_alive(status)
    learning = {name: state for name in _learning_atoms() if (state := read_state(name))}
    learning = {n: st for n, st in learning.items() if st.updated >= status.started}
    if as_json:
        print_json(document(status, alive, learning))
        return 0 if alive else 1
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
    if status.atoms or learning:
        print()
        for line in table(atom_rows(status, now, learning)):
            print(line)
    return 0 if alive else 1


def document(status: Status, alive: bool, learning: dict[str, State]) -> dict[str, object]:
    """`kiri status --json`: the status file, whether its supervisor runs, and each learning
    atom's model; a stage's pid, cpu and rss are null once the supervisor is gone."""
    stages = []
    for s in status.stages:
        entry = msgspec.structs.asdict(s)
        if not alive:
            entry.update(pid=None, cpu=None, rss=None)
        stages.append(entry)
    return {
        "supervisor": {
            "pid": status.pid,
            "alive": alive,
            "pipeline": status.pipeline,
            "file": status.file,
            "started": status.started,
            "updated": status.updated,
        },
        "stages": stages,
        "atoms": {
            name: {
                **(msgspec.structs.asdict(status.atoms[name]) if name in status.atoms else {}),
                "model": describe(learning[name]) if name in learning else None,
            }
            for name in sorted(set(status.atoms) | set(learning))
        },
    }


def _learning_atoms() -> list[str]:
    """Atoms whose kiri-atom has written a life-cycle state."""
    return sorted(p.parent.name for p in (kiri_home() / "atoms").glob("*/lifecycle.json"))


def stage_rows(status: Status, now: float, alive: bool) -> list[list[str]]:
    rows = [["STAGE", "STATE", "PID", "RESTARTS", "UPTIME", "CPU%", "RSS", "LAST EXIT"]]
    for s in status.stages:
        pid = s.pid if alive else None  # shown while the supervisor runs
        live = pid is not None
        cpu = "-" if pid is None or s.cpu is None else f"{s.cpu:.1f}"
        rss = "-" if pid is None or s.rss is None else f"{s.rss / (1 << 20):.1f} MiB"
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


class Usage:
    """CPU % and resident memory of each stage, its process and every process it started (the
    program behind a wrapper, a training run), measured by the supervisor every CPU_EVERY
    seconds: CPU % is over the time since the measurement before (100: one whole CPU)."""

    def __init__(self) -> None:
        self.procs: dict[int, psutil.Process] = {}  # kept: cpu_percent counts from the last call
        self.last: dict[int, tuple[float, int]] = {}
        self.due = 0.0

    def of(self, pids: list[int], now: float) -> dict[int, tuple[float, int]]:
        """(cpu %, rss bytes) of each of these stages' pids, measured again when due."""
        if now >= self.due:
            self.due = now + CPU_EVERY
            self.last = self._measure(pids)
        return self.last

    def _measure(self, pids: list[int]) -> dict[int, tuple[float, int]]:
        children: dict[int, list[int]] = {}
        for proc in psutil.process_iter(["ppid"]):
            children.setdefault(proc.info["ppid"], []).append(proc.pid)
        usage, alive = {}, {}
        for pid in pids:
            cpu, rss, tree = 0.0, 0, [pid]
            for member in tree:
                tree.extend(children.get(member, []))
                try:
                    proc = alive[member] = self.procs.get(member) or psutil.Process(member)
                    with proc.oneshot():
                        cpu += proc.cpu_percent(None)  # 0 the first time: counted from now
                        rss += proc.memory_info().rss
                except psutil.Error:
                    continue
            usage[pid] = (round(cpu, 1), rss)
        self.procs = alive
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
