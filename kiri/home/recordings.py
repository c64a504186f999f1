"""An atom's recorded observations: $KIRI_HOME/data/ATOM/YYYY-MM-DD.ndjson, one file a day (and
its scores, the same way, in data/ATOM/scores/)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import msgspec

from kiri.home.paths import data_dir
from kiri.wire.records import UNDECODABLE, Obs, Record


class Schema(Protocol):
    """What loading needs of an atom's schema (kiri.atoms.schema.Schema): a ValueError (its
    SchemaError) for an observation it cannot tokenize."""

    def tokenize(
        self, values: Mapping[str, float | None], meta: Mapping[str, str], ts: float = 0.0
    ) -> list[str]: ...


class Recorder:
    """Appends encoded records to the atom's file for the local date of each record (in `into`,
    when given, instead of the atom's data directory)."""

    def __init__(self, atom: str, into: Path | None = None) -> None:
        self.dir: Path = into or data_dir(atom)
        self._day = ""
        self._fd = -1

    def append(self, ts: float, line: bytes) -> None:
        day = time.strftime("%Y-%m-%d", time.localtime(ts))
        if day != self._day:
            self.close()
            path = self.dir / f"{day}.ndjson"
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._day = day
        os.write(self._fd, line)  # one O_APPEND write per record: whole lines only

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Loaded(msgspec.Struct):
    observations: list[Obs]  # valid for the schema, deduplicated, oldest first
    files: int
    skipped: dict[str, int]  # reason -> how many observations were left out for it
    examples: dict[str, str]  # reason -> where it first happened (file:line)


def recording_files(atom: str) -> list[Path]:
    return sorted(data_dir(atom).glob("*.ndjson"))


def load_observations(atom: str, files: list[Path], schema: Schema, limit: int = 0) -> Loaded:
    """The atom's observations in these files that the schema can tokenize, oldest first.

    Other kinds and other atoms' observations are ignored; an observation recorded twice (same
    host and time, as when a collector and a learning atom both record) counts once. With
    `limit`, only the most recent `limit` are kept.
    """
    decode = msgspec.json.Decoder(Record).decode
    seen: dict[tuple[str, float], Obs] = {}
    loaded = Loaded([], len(files), {}, {})
    for path in files:
        with path.open("rb") as f:
            for lineno, line in enumerate(f, 1):
                problem = _problem(decode, line, atom, schema, seen)
                if problem:
                    loaded.skipped[problem] = loaded.skipped.get(problem, 0) + 1
                    loaded.examples.setdefault(problem, f"{path}:{lineno}")
    observations = sorted(seen.values(), key=lambda o: o.ts)
    loaded.observations = observations[-limit:] if limit else observations
    return loaded


def _problem(
    decode: Callable[[bytes], Record],
    line: bytes,
    atom: str,
    schema: Schema,
    seen: dict[tuple[str, float], Obs],
) -> str | None:
    if not line.strip():
        return None
    try:
        rec = decode(line)
    except UNDECODABLE:
        return "not a valid record"
    if not isinstance(rec, Obs) or rec.atom != atom:
        return None
    try:
        schema.tokenize(rec.values, rec.meta)
    except ValueError as e:
        return str(e)
    seen[(rec.host, rec.ts)] = rec
    return None
