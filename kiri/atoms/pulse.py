"""Pulse: the health of this host (sampled by kiri/collect/pulse.py), as six tokens."""

from __future__ import annotations

from kiri.atoms.registry import AtomSpec
from kiri.atoms.schema import Field, Schema

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
