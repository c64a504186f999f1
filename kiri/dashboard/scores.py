"""An atom's recorded scores (data/ATOM/scores/YYYY-MM-DD.ndjson, kiri-atom --learn or --record),
read for the dashboard: downsampled series for the charts, and the scores around one moment.

A day of 1-second scores is ~60 MB, so nothing reads more than it must: a day file is appended
in time order, so the first line at or after a time is found by bisecting the file's bytes; a
series decodes only the four fields it draws (a msgspec Struct that skips the rest); and it keeps
the most surprising score of each of ~1000 buckets, so a week never goes to the page whole.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec

from kiri.home.paths import kiri_home, valid_name
from kiri.wire.records import UNDECODABLE, Score

BUCKETS = 1000  # points per chart, at most, per host
CHUNK = 1 << 20  # bytes decoded at a time, so memory stays flat however long the span


class Point(msgspec.Struct):
    """What a chart needs of a score."""

    ts: float = 0.0
    host: str = ""
    surprise: float = 0.0
    threshold: float = 0.0


class Series(msgspec.Struct):
    """One host's downsampled scores: the most surprising of each bucket, and its threshold."""

    ts: list[float] = []
    surprise: list[float] = []
    threshold: list[float] = []


_point = msgspec.json.Decoder(Point)
_score = msgspec.json.Decoder(Score)


def scores_dir(atom: str) -> Path:
    """Where kiri-atom records the atom's scores (not created: the dashboard only reads)."""
    return kiri_home() / "data" / valid_name(atom) / "scores"


def recorded_atoms() -> list[str]:
    """The atoms with recorded scores."""
    return sorted(p.parent.name for p in (kiri_home() / "data").glob("*/scores") if p.is_dir())


def day_files(atom: str, start: float, end: float) -> list[Path]:
    """The atom's day files that may hold scores from start to end (local days, as recorded)."""
    first = time.strftime("%Y-%m-%d", time.localtime(start))
    last = time.strftime("%Y-%m-%d", time.localtime(end))
    return [p for p in sorted(scores_dir(atom).glob("*.ndjson")) if first <= p.stem <= last]


def seek_time(f: BinaryIO, ts: float) -> None:
    """Move f to the start of its first line whose time is at or after ts, or near before it
    (a line that does not decode is stepped over); the file is in time order."""
    lo, hi = 0, os.fstat(f.fileno()).st_size
    while hi - lo > 4096:
        mid = (lo + hi) // 2
        f.seek(mid)
        f.readline()  # the rest of the line mid fell into
        start = f.tell()
        line = f.readline()
        found = _time_of(line)
        if found is None or found < ts:
            lo = start if found is not None else mid + 1
        else:
            hi = mid
    f.seek(lo)
    if lo:
        f.readline()


def _time_of(line: bytes) -> float | None:
    try:
        return _point.decode(line).ts
    except UNDECODABLE:
        return None


def _lines(path: Path, start: float) -> Iterator[bytes]:
    """Chunks of whole lines of a day file, from about `start` on."""
    with path.open("rb") as f:
        seek_time(f, start)
        rest = b""
        while chunk := f.read(CHUNK):
            chunk = rest + chunk
            cut = chunk.rfind(b"\n") + 1
            rest = chunk[cut:]
            yield chunk[:cut]
        if rest:
            yield rest


def points(atom: str, start: float, end: float) -> Iterator[Point]:
    """The atom's scores from start to end, oldest first; lines that do not decode are left out."""
    for path in day_files(atom, start, end):
        for chunk in _lines(path, start):
            try:
                batch = _point.decode_lines(chunk)
            except UNDECODABLE:  # one bad line: decode this chunk line by line
                batch = [p for line in chunk.splitlines() if (p := _decoded(line))]
            for p in batch:
                if p.ts > end:
                    return
                if p.ts >= start:
                    yield p


def _decoded(line: bytes) -> Point | None:
    try:
        return _point.decode(line)
    except UNDECODABLE:
        return None


def series(atom: str, start: float, end: float, buckets: int = BUCKETS) -> dict[str, Series]:
    """Each host's scores from start to end, at most `buckets` points: the most surprising
    score of each bucket of time, so that a short peak is never averaged away."""
    width = max((end - start) / buckets, 1e-9)
    out: dict[str, Series] = {}
    last: dict[str, int] = {}  # host -> its last point's bucket
    for p in points(atom, start, end):
        s = out.get(p.host) or out.setdefault(p.host, Series())
        bucket = int((p.ts - start) / width)
        if last.get(p.host) == bucket:
            if p.surprise > s.surprise[-1]:
                s.ts[-1], s.surprise[-1], s.threshold[-1] = p.ts, p.surprise, p.threshold
            continue
        last[p.host] = bucket
        s.ts.append(p.ts)
        s.surprise.append(p.surprise)
        s.threshold.append(p.threshold)
    return out


def around(atom: str, host: str, ts: float, seconds: float, most: int = 61) -> list[Score]:
    """The host's whole scores within `seconds` of ts, at most `most` of them spread evenly, the
    score nearest ts always among them."""
    found = [s for s in _scores(atom, ts - seconds, ts + seconds) if s.host == host]
    if len(found) <= most:
        return found
    nearest = min(range(len(found)), key=lambda i: abs(found[i].ts - ts))
    step = len(found) / most
    keep = {int(i * step) for i in range(most)} | {nearest}
    return [s for i, s in enumerate(found) if i in keep]


def _scores(atom: str, start: float, end: float) -> Iterator[Score]:
    for path in day_files(atom, start, end):
        for chunk in _lines(path, start):
            for line in chunk.splitlines():
                try:
                    s = _score.decode(line)
                except UNDECODABLE:
                    continue
                if s.ts > end:
                    return
                if s.ts >= start:
                    yield s
