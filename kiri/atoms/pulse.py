"""Pulse: the health of this host (sampled by kiri/collect/pulse.py), as six tokens."""

from __future__ import annotations

from kiri.atoms.registry import AtomSpec
from kiri.atoms.schema import Field, Schema

# C0–C9 M0–M9 D0–D9 S0–S4 L0–L4 N0–N1: 42 tokens + BOS; n_embd 32, 2 layers: 27,840 parameters.
SCHEMA = Schema(
    [
        # a busy host is bad news, an idle one is not (worse: which way of moving is)
        Field("cpu", "C", 10, 0, 100, label="CPU", unit="%", worse="high"),
        Field("mem", "M", 10, 0, 100, label="memory", unit="%", worse="high"),
        Field("disk", "D", 10, 0, 100, label="disk", unit="%", worse="high"),
        Field("swap", "S", 5, 0, 100, label="swap", unit="%", worse="high"),
        # load per CPU, so one model shape fits any host: L4 is a saturated machine
        Field("load", "L", 5, 0, 1.25, per="cpus", label="load", worse="high"),
        Field("net", "N", 2, 0, 1, label="network up", worse="low"),
    ]
)
SPEC = AtomSpec("pulse", SCHEMA, n_layer=2, n_embd=32, n_head=4, block_size=16)
FIELDS = tuple(f.name for f in SCHEMA.fields)
