"""The supervisor's status file, $KIRI_HOME/status.json: what kiri-supervise writes about its
stages and the atoms it sees, for `kiri status` and for whatever else reports on KIRI (kiri-act's
metrics sink reads each stage's restarts from it)."""

from __future__ import annotations

from pathlib import Path

import msgspec

from kiri.home.paths import kiri_home


class StageStatus(msgspec.Struct):
    name: str
    state: str  # starting, running, backoff, stopping, stopped, failed
    pid: int | None = None
    restarts: int = 0
    started: float | None = None  # when its current (or last) process started
    exit_status: int | None = None  # of its last process; -N: killed by signal N
    dropped: int = 0  # lines of its output dropped: unfinished at its exit, or over 16 MiB
    cpu: float | None = None  # % of one CPU over the last measurement, its child processes too
    rss: int | None = None  # bytes of resident memory, its child processes too


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
