"""MikroTik: a RouterOS v7 router, read over its REST API (by kiri/collect/mikrotik.py).

An observation covers the interval between two readings of the router:

* `rx` and `tx` are bytes per second over the real time between them (time.monotonic),
  per interface (`ether1:rx`) and summed over every interface;
* `errors`, `drops` and `link_downs` count what happened in between, per interface
  (`ether1:rx_errors`, `ether1:tx_drops`, `ether1:link_downs`, …) and summed;
* a counter that went backwards (the interface was reset), or an interface that is new or was
  re-created (another `.id`), has no delta for that interval: its per-interface key is left out
  and it adds nothing to the sums, so a reset never shows as a negative or absurd rate;
* `reboot` is 1 when the uptime went backwards. Every counter restarted from zero then, so
  none has a delta for that interval and the sums are 0.

Per-interface keys (`NAME:rx`, …, `NAME:running`) ride along in `values`; the schema reads
only its own fields, which every router has.
"""

from __future__ import annotations

from kiri.atoms.registry import AUTO_LEVELS, AUTO_STEPS, AUTO_TAILS, AtomSpec
from kiri.atoms.schema import Field, Schema


def _auto(name: str, label: str, unit: str = "", worse: str = "either") -> Field:
    """A field whose buckets are fitted to the router's own traffic, as auto atoms' are."""
    return Field(
        name,
        f"{name}:",
        AUTO_LEVELS,
        auto=True,
        tails=AUTO_TAILS,
        label=label,
        unit=unit,
        worse=worse,
    )


SCHEMA = Schema(
    [
        Field("cpu", "C", 10, 0, 100, label="CPU", unit="%", worse="high"),
        Field("mem", "M", 10, 0, 100, label="memory", unit="%", worse="high"),
        Field("disk", "D", 10, 0, 100, label="disk", unit="%", worse="high"),
        _auto("rx", "received", " B/s"),
        _auto("tx", "sent", " B/s"),
        _auto("errors", "interface errors", worse="high"),
        _auto("drops", "dropped packets", worse="high"),
        _auto("link_downs", "link downs", worse="high"),
        Field("reboot", "R", 2, 0, 1, label="reboot", worse="high"),
    ]
)
SPEC = AtomSpec(
    "mikrotik",
    SCHEMA,
    n_layer=1,
    n_embd=32,
    n_head=4,
    block_size=len(SCHEMA.fields) + 1,
    steps=AUTO_STEPS,
)
