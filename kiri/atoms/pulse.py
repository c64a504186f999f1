"""Pulse: the health of this host, read with psutil."""

from __future__ import annotations

import os
import socket
import time

import psutil

from kiri.atoms import AtomSpec
from kiri.atoms.schema import Field, Schema
from kiri.wire.records import Obs

# C0–C9 M0–M9 D0–D9 S0–S4 L0–L4 N0–N1: 42 tokens + BOS; n_embd 32, 2 layers: 27,840 parameters.
SCHEMA = Schema(
    [
        Field("cpu", "C", 10, 0, 100, label="CPU", unit="%"),
        Field("mem", "M", 10, 0, 100, label="memory", unit="%"),
        Field("disk", "D", 10, 0, 100, label="disk", unit="%"),
        Field("swap", "S", 5, 0, 100, label="swap", unit="%"),
        # load per CPU, so one model shape fits any host: L4 is a saturated machine
        Field("load", "L", 5, 0, 1.25, per="cpus", label="load"),
        Field("net", "N", 2, 0, 1, label="network up"),
    ]
)
SPEC = AtomSpec("pulse", SCHEMA, n_layer=2, n_embd=32, n_head=4, block_size=16)
FIELDS = tuple(f.name for f in SCHEMA.fields)


def prime() -> None:
    """Start psutil's CPU counter, so the first sample measures a real interval."""
    psutil.cpu_percent(interval=None)


def network_up() -> float:
    """1.0 when a non-loopback interface is up and has a routable address, else 0.0."""
    stats = psutil.net_if_stats()
    for name, addrs in psutil.net_if_addrs().items():
        st = stats.get(name)
        if not st or not st.isup or name.startswith("lo"):
            continue
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return 1.0
            if a.family == socket.AF_INET6 and not a.address.lower().startswith(("fe80", "::1")):
                return 1.0
    return 0.0


def sample(host: str | None = None) -> Obs:
    """One observation: CPU % since the previous sample, memory/disk/swap %, load, network."""
    return Obs(
        ts=time.time(),
        atom="pulse",
        host=host or socket.gethostname(),
        values={
            "cpu": psutil.cpu_percent(interval=None),
            "mem": psutil.virtual_memory().percent,
            "disk": psutil.disk_usage("/").percent,
            "swap": psutil.swap_memory().percent,
            "load": os.getloadavg()[0],
            "net": network_up(),
        },
        meta={"cpus": str(psutil.cpu_count() or 1)},
    )
