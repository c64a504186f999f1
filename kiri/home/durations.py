"""Durations and times as people write them on a command line or a device reports them:
`90s`, `5m`, `1h30m`, `1.5h`, `500ms`, `7d`, `2w`, RouterOS uptimes like `2d20h12m20s`, and
moments such as `2025-03-01T09:00:00Z`, a Unix time, or `7d` (seven days ago)."""

from __future__ import annotations

import datetime as dt
import math
import re

DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
NUMBER = re.compile(r"\d+(?:\.\d+)?")
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def duration(text: str) -> float:
    """Seconds in a duration of numbers with units, Prometheus's way: `1h30m`, `500ms`."""
    parts = DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r} (try 30s, 5m, 1h30m, 7d)")
    return sum(float(n) * UNITS[u] for n, u in parts)


def seconds(text: str) -> float:
    """A duration, or a bare number of seconds (`90`, `1.5`)."""
    if NUMBER.fullmatch(text):
        return float(text)
    return duration(text)


def moment(text: str, now: float) -> float:
    """A Unix time from RFC 3339 or ISO 8601 (local time without an offset), a Unix time, or a
    duration ago."""
    for parse in (
        float,
        lambda t: dt.datetime.fromisoformat(t).timestamp(),
        lambda t: now - duration(t),
    ):
        try:
            t = parse(text)
        except ValueError:
            continue
        if math.isfinite(t):
            return t
    raise ValueError(
        f"not a time: {text!r} (RFC 3339 such as 2025-03-01T09:00:00Z, a Unix "
        f"time, or a duration ago such as 7d)"
    )
