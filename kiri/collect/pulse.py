"""The pulse source: this host's health, read with psutil (the atom is kiri/atoms/pulse.py)."""

from __future__ import annotations

import os
import socket
import time

import psutil

from kiri.wire.records import Obs


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
