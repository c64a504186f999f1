"""Benchmark input: recorded pulse observations from tests/fixtures, cycled to any length."""

from __future__ import annotations

from pathlib import Path

import msgspec

from kiri.wire.records import Obs

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def write_cycled(path: Path, n: int, parts: tuple[str, ...]) -> None:
    """n observations from the recorded files, in order and cycled, one second apart."""
    decoder, encoder = msgspec.json.Decoder(Obs), msgspec.json.Encoder()
    recorded = [
        decoder.decode(line) for p in parts for line in (FIXTURES / p).read_bytes().splitlines()
    ]
    t0 = recorded[0].ts
    with path.open("wb") as f:
        for i in range(n):
            obs = recorded[i % len(recorded)]
            obs.ts = t0 + i
            f.write(encoder.encode(obs) + b"\n")
