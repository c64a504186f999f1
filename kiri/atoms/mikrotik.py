"""MikroTik: a RouterOS v7 router, read over its REST API.

One reading is two documents: /rest/system/resource (CPU load, memory, disk, uptime) and
/rest/interface (each interface's byte, error, drop and link-down counters). RouterOS sends
every value as a string; system/resource comes as an object or as a one-element list.

Rates and deltas need two readings, so a run's first reading makes no observation (the
collector takes the second one soon after). Between two readings:

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

import math

import msgspec

from kiri.atoms.registry import AUTO_LEVELS, AUTO_STEPS, AUTO_TAILS, AtomSpec
from kiri.atoms.schema import Field, Schema
from kiri.home import durations
from kiri.wire.records import Obs

RESOURCE = "/rest/system/resource"
INTERFACES = "/rest/interface"


def _auto(name: str, label: str, unit: str = "") -> Field:
    """A field whose buckets are fitted to the router's own traffic, as auto atoms' are."""
    return Field(name, f"{name}:", AUTO_LEVELS, auto=True, tails=AUTO_TAILS, label=label, unit=unit)


SCHEMA = Schema(
    [
        Field("cpu", "C", 10, 0, 100, label="CPU", unit="%"),
        Field("mem", "M", 10, 0, 100, label="memory", unit="%"),
        Field("disk", "D", 10, 0, 100, label="disk", unit="%"),
        _auto("rx", "received", " B/s"),
        _auto("tx", "sent", " B/s"),
        _auto("errors", "interface errors"),
        _auto("drops", "dropped packets"),
        _auto("link_downs", "link downs"),
        Field("reboot", "R", 2, 0, 1, label="reboot"),
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

COUNTERS = {  # RouterOS counter: (its per-interface key, the schema field it adds to)
    "rx-byte": ("rx", "rx"),
    "tx-byte": ("tx", "tx"),
    "rx-error": ("rx_errors", "errors"),
    "tx-error": ("tx_errors", "errors"),
    "rx-drop": ("rx_drops", "drops"),
    "tx-drop": ("tx_drops", "drops"),
    "link-downs": ("link_downs", "link_downs"),
}
RATES = ("rx-byte", "tx-byte")  # per second; the other counters are counts per interval


class RouterError(Exception):
    """A request or a reading that cannot be used: which URL path, and why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path, self.reason = path, reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class Interface(msgspec.Struct):
    id: str  # RouterOS's `.id`: another one under the same name is a re-created interface
    running: float | None  # 1.0 or 0.0; None when not reported
    counters: dict[str, int]  # the COUNTERS the router reported for it


class Reading(msgspec.Struct):
    at: float  # time.monotonic() when the counters were read
    ts: float  # time.time() then, for the record
    cpu: float
    mem: float
    disk: float
    uptime: float  # seconds
    interfaces: dict[str, Interface]
    meta: dict[str, str]


def parse_uptime(text: str) -> float:
    """Seconds in a RouterOS duration: `2d20h12m20s`, `1w2d3h4m5s`, `45s`, or bare `45`.
    RouterOS writes whole numbers of each unit."""
    if "." not in text:
        try:
            return durations.seconds(text)
        except ValueError:
            pass
    raise ValueError(f"uptime {text!r} is not a RouterOS duration like 2d20h12m20s")


def reading(resource: object, interfaces: object, at: float, ts: float) -> Reading:
    """One reading from the two decoded documents; RouterError names what is missing or wrong."""
    res = _resource(resource)
    try:
        uptime = parse_uptime(_text(res, "uptime"))
    except ValueError as e:
        raise RouterError(RESOURCE, str(e)) from None
    meta: dict[str, str] = {}
    for k, key in (("version", "version"), ("board", "board-name")):
        value = res.get(key)
        if isinstance(value, str):
            meta[k] = value
    return Reading(
        at=at,
        ts=ts,
        cpu=_number(res, "cpu-load", RESOURCE),
        mem=_used_percent(res, "free-memory", "total-memory"),
        disk=_used_percent(res, "free-hdd-space", "total-hdd-space"),
        uptime=uptime,
        interfaces=_interfaces(interfaces),
        meta=meta,
    )


def observe(before: Reading, now: Reading, host: str) -> Obs:
    """The observation of the interval between two readings of the same router."""
    rebooted = now.uptime < before.uptime
    elapsed = now.at - before.at
    sums = dict.fromkeys(("rx", "tx", "errors", "drops", "link_downs"), 0.0)
    per_interface: dict[str, float] = {}
    for name, iface in now.interfaces.items():
        if iface.running is not None:
            per_interface[f"{name}:running"] = iface.running
        old = None if rebooted else before.interfaces.get(name)
        if old is None or old.id != iface.id:
            continue  # new, re-created, or restarted with the router: no deltas yet
        for counter, value in iface.counters.items():
            previous = old.counters.get(counter)
            if previous is None or value < previous:
                continue  # reset in between: this interval's delta is unknown
            key, total = COUNTERS[counter]
            delta = (value - previous) / (elapsed if counter in RATES else 1)
            per_interface[f"{name}:{key}"] = delta
            sums[total] += delta
    values: dict[str, float | None] = {
        "cpu": now.cpu,
        "mem": now.mem,
        "disk": now.disk,
        **sums,
        "reboot": float(rebooted),
        **per_interface,
    }
    return Obs(ts=now.ts, atom="mikrotik", host=host, values=values, meta=now.meta)


def _resource(doc: object) -> dict[str, object]:
    if isinstance(doc, list) and len(doc) == 1:
        doc = doc[0]
    if not isinstance(doc, dict):
        raise RouterError(RESOURCE, "expected an object (or a list of one)")
    return doc


def _text(doc: dict[str, object], key: str) -> str:
    value = doc.get(key)
    if value is None:
        raise RouterError(RESOURCE, f"missing {key}")
    return str(value)


def _number(doc: dict[str, object], key: str, path: str) -> float:
    value = doc.get(key)
    if value is None:
        raise RouterError(path, f"missing {key}")
    try:  # a list or an object is no number either
        x = float(value) if isinstance(value, str | int | float) else math.nan
    except (ValueError, OverflowError):  # OverflowError: an integer beyond float range
        x = math.nan
    if not math.isfinite(x) or isinstance(value, bool):
        raise RouterError(path, f"{key} is {value!r}, not a number")
    return x


def _used_percent(doc: dict[str, object], free: str, total: str) -> float:
    """The share used, of a size in bytes: at least one byte, and no more free than that (a
    total of 1e-300 would make the share -1e305 %, which is no share)."""
    size, left = _number(doc, total, RESOURCE), _number(doc, free, RESOURCE)
    if size < 1:
        raise RouterError(RESOURCE, f"{total} is {doc[total]!r}, not a size in bytes")
    if not 0 <= left <= size:
        raise RouterError(RESOURCE, f"{free} is {doc[free]!r}, of {total} {doc[total]!r}")
    return (size - left) / size * 100


def _interfaces(doc: object) -> dict[str, Interface]:
    if not isinstance(doc, list) or not all(isinstance(i, dict) for i in doc):
        raise RouterError(INTERFACES, "expected a list of interfaces")
    interfaces = {}
    for entry in doc:
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise RouterError(INTERFACES, "an interface has no name")
        running = {"true": 1.0, "false": 0.0}.get(str(entry.get("running")))
        interfaces[name] = Interface(str(entry.get(".id", "")), running, _counters(entry, name))
    return interfaces


def _counters(entry: dict[str, object], name: str) -> dict[str, int]:
    """The counters an interface reports; one it leaves out simply has no delta."""
    counters = {}
    for counter in COUNTERS:
        value = entry.get(counter)
        if value is None:
            continue
        count = _count(value)
        if count is None:
            reason = f"{counter} of {name} is {value!r}, not a count"
            raise RouterError(INTERFACES, reason)
        counters[counter] = count
    return counters


MAX_COUNT = 1 << 64  # RouterOS counters are 64-bit: a count past that is no reading


def _count(value: object) -> int | None:
    """int(value) for a number or a string of one, from 0 up to a 64-bit counter's limit;
    None for anything else (10**400 would overflow every rate computed from it)."""
    if not isinstance(value, str | int | float):
        return None  # a list or an object
    try:
        count = int(value)
    except (ValueError, OverflowError):  # OverflowError: int(inf)
        return None
    return count if 0 <= count < MAX_COUNT else None
