"""A KIRI_HOME for the dashboard to show: recorded pulse scores with an alert period, the alerts
in the store (one resolved, one open, one suppressed) and a standing rule. Used by
tests/test_dashboard.py and bench/dashboard.py."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import msgspec

from kiri.home.store import Store
from kiri.wire.records import Decision, Rule, Score

CHROMIUM = Path("/usr/bin/chromium")  # Debian's, installed by bin/test (.ci/debian-packages)
# Chromium on a machine with no network: headless, and none of its own background connections
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

FIELDS = [
    ("cpu", "CPU", "%"),
    ("mem", "memory", "%"),
    ("disk", "disk", "%"),
    ("swap", "swap", "%"),
    ("load", "load", " per CPU"),
    ("net", "network up", ""),
]
THRESHOLD = 8.0
HOST = "vm"


def score(ts: float, hot: bool) -> Score:
    """A pulse score: CPU at 97% and very surprising while hot, else quiet."""
    cpu = 97.0 if hot else 10.0 + 5.0 * math.sin(ts / 300.0)
    z = [12.0 if hot else 0.4, 0.2, 0.0, 0.0, 0.8 if hot else 0.1, 0.0]
    measured = [cpu, 41.0, 22.0, 0.0, 0.9 if hot else 0.3, 1.0]
    return Score(
        ts=ts,
        atom="pulse",
        host=HOST,
        values={f[0]: v for f, v in zip(FIELDS, measured, strict=True)},
        tokens=["C9" if hot else "C1", "M4", "D2", "S0", "L2" if hot else "L1", "N1"],
        nll=[6.1 if hot else 0.3, 0.2, 0.1, 0.05, 0.9, 0.02],
        z=z,
        fields=FIELDS,
        measured=measured,
        usual_low=[2.0, 35.0, 22.0, 0.0, 0.1, 1.0],
        usual_high=[30.0, 45.0, 22.0, 0.0, 0.5, 1.0],
        surprise=max(z),
        threshold=THRESHOLD,
        model="0123456789ab",
    )


HOT = ((2400.0, 1800.0), (300.0, 0.0))  # seconds ago: the resolved alert's, the open one's


def write_scores(home: Path, end: float, seconds: float, step: float, hot=HOT) -> None:
    """Scores every `step` seconds for `seconds` up to `end`, hot within each (from, to) of
    `hot` (seconds before end), in day files as kiri-atom writes them."""
    encode = msgspec.json.Encoder().encode
    files: dict[str, bytearray] = {}
    n = int(seconds / step)
    for i in range(n):
        ts = end - seconds + i * step
        ago = end - ts
        day = time.strftime("%Y-%m-%d", time.localtime(ts))
        files.setdefault(day, bytearray()).extend(
            encode(score(ts, any(b <= ago <= a for a, b in hot))) + b"\n"
        )
    folder = home / "data" / "pulse" / "scores"
    folder.mkdir(parents=True, exist_ok=True)
    for day, data in files.items():
        (folder / f"{day}.ndjson").write_bytes(bytes(data))


def alert(aid: str, ts: float, action: str, incident: str, by: str = "policy") -> Decision:
    return Decision(
        ts=ts,
        id=aid,
        atom="pulse",
        host=HOST,
        action=action,
        severity="warning",
        surprise=12.0,
        threshold=THRESHOLD,
        culprits=[("C9", 12.0)],
        summary=f"pulse on {HOST}: CPU 97% is high (usually 2–30%)" if action != "resolve" else "",
        incident=incident,
        atoms=["pulse"],
        by=by,
    )


ALERT_RESOLVED = "a1a1a1a1a1a1"
ALERT_OPEN = "b2b2b2b2b2b2"
ALERT_SUPPRESSED = "c3c3c3c3c3c3"
RULE = "r-fixture1"


def make_home(home: Path, end: float | None = None, seconds: float = 3600.0, step: float = 5.0):
    """The whole home: scores over the last `seconds`, hot 40 to 30 minutes ago (an alert,
    resolved) and for the last 5 minutes (an open alert), a suppressed alert and a rule."""
    end = time.time() if end is None else end
    os.environ["KIRI_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    write_scores(home, end, seconds, step)
    with Store() as store:
        store.record_alert(alert(ALERT_RESOLVED, end - 2400, "alert", "i-1"), "C9")
        store.record_alert(alert("a1a1a1a1resv", end - 1800, "resolve", "i-1"), "")
        store.record_alert(alert(ALERT_OPEN, end - 300, "alert", "i-2", by="nerve"), "C9")
        store.record_alert(alert(ALERT_SUPPRESSED, end - 900, "suppress", "i-3"), "L2")
        rule = Rule(
            ts=end - 600,
            id=RULE,
            atom="pulse",
            host=HOST,
            match=["L2"],
            expires=end + 86400,
            reason="L2 dismissed 2 times on vm",
        )
        store.add_rule(rule, [])
    return end
