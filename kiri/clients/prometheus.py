"""Prometheus for kiri-collect prometheus: query sets, times, the HTTP API, and joining answers.

A query set names PromQL queries: each `values` query gives one field of the observations, each
`meta` query one meta entry (the pulse set's `cpus`, which divides the load). Every query must
give at most one series per instance (aggregate `by (instance)`); the answers of a query set
at one evaluation time are joined on the `instance` label into one observation per instance.
Prometheus sends numbers as strings: one that is not finite ("NaN", "+Inf") is no value, never
zero, and an instance without a value for every query at a time has no observation then. A meta
entry is a count, such as `count by (instance)` gives (`cpus` divides the load): a whole number
from 1 to MAX_COUNT, or the observation is left out.
"""

from __future__ import annotations

import enum
import math
import re
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

import msgspec

from kiri.clients.http import HttpError, request, retrying
from kiri.home import durations
from kiri.wire.log import Log
from kiri.wire.records import UNDECODABLE, Obs

MAX_POINTS = 11_000  # Prometheus refuses a range query with more points than this per series
MAX_ANSWER = 64 << 20  # bytes; a range of 11,000 points is ~400 KB per series
RATE_SCRAPES = 4  # a rate window spans at least this many scrapes, so one missed scrape is harmless
PORT = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<name>[^:\[\]]+)):\d+$")
WINDOW = "$window"  # in a query, replaced by the rate window
# A sample value as Prometheus writes one (Go's strconv): decimal digits with an optional sign,
# point and exponent, or NaN, +Inf, -Inf. Python's float() takes more, which Prometheus never
# writes and which are no numbers here: "9_9" (99), "infinity", " 1 ", digits of other scripts.
SAMPLE_VALUE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|NaN|[+-]Inf")
# The largest meta count: no host has more CPUs (a count of 1e300, or below 1 such as 1e-320,
# would make its load per CPU nonsense)
MAX_COUNT = 1 << 20


class QuerySet(msgspec.Struct, frozen=True):
    atom: str
    values: dict[str, str]  # field -> PromQL
    meta: dict[str, str] = {}  # meta entry -> PromQL

    def queries(self, window: str) -> list[tuple[str, str]]:
        """(name, PromQL) of every query, with the rate window filled in."""
        return [(n, q.replace(WINDOW, window)) for n, q in {**self.values, **self.meta}.items()]


# node_exporter's metrics as the pulse atom's fields, so a fleet's hosts are scored by pulse.
PULSE = QuerySet(
    "pulse",
    values={
        "cpu": '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[$window])))',
        "mem": "100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)",
        "disk": '100 * (1 - max by (instance) (node_filesystem_avail_bytes{mountpoint="/"}'
        ' / node_filesystem_size_bytes{mountpoint="/"}))',
        # used / total, and 0 on a host without swap (clamp_min keeps 0 / 0 from being NaN)
        "swap": "100 * (node_memory_SwapTotal_bytes - node_memory_SwapFree_bytes)"
        " / clamp_min(node_memory_SwapTotal_bytes, 1)",
        "load": "node_load1",
        "net": 'max by (instance) (node_network_up{device!="lo"})',
    },
    meta={"cpus": 'count by (instance) (node_cpu_seconds_total{mode="idle"})'},
)
QUERY_SETS = {"pulse": PULSE}


class PromError(Exception):
    """A query that gave no answer to use; `fatal` when asking again cannot help (bad PromQL)."""

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


# -- times ----------------------------------------------------------------------------------


def step(text: str) -> float:
    """A query step: a duration, or a number of seconds, greater than 0."""
    seconds = durations.seconds(text)
    if not 0 < seconds < math.inf:
        raise ValueError(f"not a step: {text!r} (a duration such as 60s, greater than 0)")
    return seconds


def rate_window(step_seconds: float, scrape_interval: float) -> str:
    """The window of rate(): the step, so that consecutive points cover every second once, but
    at least RATE_SCRAPES scrapes, so rate() always has samples to work with."""
    ms = round(max(step_seconds, RATE_SCRAPES * scrape_interval) * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def range_chunks(
    start: float, end: float, step_seconds: float, max_points: int = MAX_POINTS
) -> Iterator[tuple[float, float]]:
    """[start, end] split into ranges of at most max_points evaluation times each, on the one
    grid start + k * step, so the pieces neither overlap nor leave gaps."""
    last = math.floor((end - start) / step_seconds + 1e-9)
    for first in range(0, last + 1, max_points):
        yield start + first * step_seconds, start + min(first + max_points - 1, last) * step_seconds


# -- the HTTP API ---------------------------------------------------------------------------


class Series(msgspec.Struct, frozen=True):
    labels: dict[str, str]
    points: list[tuple[float, str]]  # (evaluation time, the value as Prometheus wrote it)


class _Range(msgspec.Struct):
    metric: dict[str, str]
    values: list[tuple[float, str]]


class _Instant(msgspec.Struct):
    metric: dict[str, str]
    value: tuple[float, str]


class _Matrix(msgspec.Struct, tag_field="resultType", tag="matrix"):
    result: list[_Range]


class _Vector(msgspec.Struct, tag_field="resultType", tag="vector"):
    result: list[_Instant]


class _Scalar(msgspec.Struct, tag_field="resultType", tag="scalar"):
    result: object  # not read: such an answer is refused


class _String(msgspec.Struct, tag_field="resultType", tag="string"):
    result: object


class _Answer(msgspec.Struct):
    status: str
    data: _Matrix | _Vector | _Scalar | _String | None = None
    error_type: str = msgspec.field(default="", name="errorType")
    error: str = ""
    warnings: list[str] = []


_decode_answer = msgspec.json.Decoder(_Answer).decode


def parse_answer(body: bytes) -> tuple[list[Series], list[str]]:
    """The series of an answer to /api/v1/query or /api/v1/query_range, and its warnings."""
    try:
        answer = _decode_answer(body)
    except UNDECODABLE as e:
        raise PromError(f"not a Prometheus answer ({e})") from None
    if answer.status != "success":
        raise PromError(f"{answer.error_type or answer.status}: {answer.error}", fatal=True)
    data = answer.data
    if isinstance(data, _Matrix):
        return [Series(s.metric, s.values) for s in data.result], answer.warnings
    if isinstance(data, _Vector):
        return [Series(s.metric, [s.value]) for s in data.result], answer.warnings
    kind = type(data).__name__.strip("_").lower() if data else "nothing"
    raise PromError(f"the answer is a {kind}, not series with an instance label", fatal=True)


class Prometheus:
    """Queries to one Prometheus server's HTTP API, each with a timeout and a size limit.
    Transient failures are retried `attempts` times in all, waiting with `sleep` between."""

    def __init__(
        self,
        url: str,
        timeout: float,
        log: Log,
        sleep: Callable[[float], object],
        attempts: int = 1,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"the Prometheus URL must be http[s]://HOST[:PORT][/PATH], not {url!r}"
            )
        if "@" in parts.netloc:  # said without echoing the URL: it may hold a password
            raise ValueError("a user or password in the Prometheus URL is not supported")
        self.base, self.netloc = url.rstrip("/"), parts.netloc
        self.timeout, self.log, self.sleep, self.attempts = timeout, log, sleep, attempts

    def instant(self, name: str, promql: str, at: float) -> list[Series]:
        return self._get(name, "/api/v1/query", {"query": promql, "time": f"{at:.3f}"})

    def range(
        self, name: str, promql: str, start: float, end: float, step_seconds: float
    ) -> list[Series]:
        return self._get(
            name,
            "/api/v1/query_range",
            {
                "query": promql,
                "start": f"{start:.3f}",
                "end": f"{end:.3f}",
                "step": f"{step_seconds:.3f}",
            },
        )

    def _get(self, name: str, path: str, params: dict[str, str]) -> list[Series]:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        where = f"{self.netloc} query {name}"
        try:
            answer = retrying(
                lambda: request("GET", url, timeout=self.timeout, max_body=MAX_ANSWER, name=where),
                attempts=self.attempts,
                sleep=self.sleep,
            )
            series, warnings = parse_answer(answer.body)
        except HttpError as e:  # 400 is bad_data: the query or its parameters are wrong
            raise PromError(str(e), fatal=e.status == 400) from None
        except PromError as e:
            raise PromError(f"{where}: {e}", e.fatal) from None
        for warning in warnings:
            self.log.warning("prometheus_warning", query=name, warning=warning)
        return series


# -- joining answers into observations ------------------------------------------------------


class _Several(enum.Enum):
    """A cell's value when a query gave more than one series for its instance."""

    SEVERAL = enum.auto()


_SEVERAL = _Several.SEVERAL
Cell = dict[str, str | _Several]  # query name -> the value as Prometheus wrote it


class Table:
    """The answers to a query set's queries over the same evaluation times, joined into one
    observation per instance and time."""

    def __init__(self, queries: QuerySet) -> None:
        self.queries = queries
        self.cells: dict[tuple[float, str], Cell] = {}  # (time, instance) -> answers
        self.unlabelled: Counter[str] = Counter()  # query name -> series without an instance

    def add(self, name: str, series: Iterable[Series]) -> None:
        for s in series:
            instance = s.labels.get("instance")
            if instance is None:
                self.unlabelled[name] += 1
                continue
            for ts, raw in s.points:
                cell = self.cells.setdefault((ts, instance), {})
                cell[name] = _SEVERAL if name in cell else raw

    def observations(self) -> tuple[list[Obs], Counter[str]]:
        """Observations in time order, and why others were left out: each reason with the
        number of observations (or of series without an instance label) it left out."""
        hosts = host_names({instance for _, instance in self.cells})
        out: list[Obs] = []
        skipped: Counter[str] = Counter()
        for name, n in self.unlabelled.items():
            skipped[f"series of {name} without an instance label (aggregate it by (instance))"] = n
        for ts, instance in sorted(self.cells, key=lambda key: (key[0], hosts[key[1]])):
            cell = self.cells[ts, instance]
            try:
                values: dict[str, float | None] = {n: _number(n, cell) for n in self.queries.values}
                meta = {n: _meta(n, cell) for n in self.queries.meta}
            except ValueError as e:
                skipped[str(e)] += 1
                continue
            out.append(
                Obs(
                    ts=ts,
                    atom=self.queries.atom,
                    host=hosts[instance],
                    values=values,
                    meta={**meta, "instance": instance},
                )
            )
        return out, skipped


def _raw(name: str, cell: Cell) -> str:
    raw = cell.get(name)
    if raw is None:
        raise ValueError(f"no value for {name}")
    if raw is _SEVERAL:
        raise ValueError(f"several series for {name}: aggregate it by (instance)")
    return raw


def _number(name: str, cell: Cell) -> float:
    raw = _raw(name, cell)
    if not SAMPLE_VALUE.fullmatch(raw):
        raise ValueError(f"{name} is not a number ({raw[:20]!r})")
    x = float(raw)
    if not math.isfinite(x):  # NaN, ±Inf, or beyond float range ("1e999")
        raise ValueError(f"{name} is {raw[:20]}")
    return x


def _meta(name: str, cell: Cell) -> str:
    """A meta entry is a count, written as a whole number."""
    x = _number(name, cell)
    if not (1 <= x <= MAX_COUNT and x.is_integer()):
        raise ValueError(f"{name} is {_raw(name, cell)[:20]}, not a count from 1 to {MAX_COUNT}")
    return str(int(x))


def host_names(instances: Iterable[str]) -> dict[str, str]:
    """Each instance's host: its label without the port (`node1:9100` → `node1`), unless two
    instances would share a host, when those keep their whole label."""
    bare = {}
    for instance in instances:
        m = PORT.match(instance)
        bare[instance] = (m["v6"] or m["name"]) if m else instance
    shared = Counter(bare.values())
    return {i: h if shared[h] == 1 else i for i, h in bare.items()}
