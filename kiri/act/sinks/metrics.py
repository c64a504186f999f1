"""The metrics sink: kiri-act serves /metrics in Prometheus's text format, for Prometheus to
scrape and Grafana to chart (pipelines/grafana/ holds a dashboard for them).

    kiri-act --sink log --sink metrics [--metrics-port 9847] [--metrics-listen 127.0.0.1]

It delivers nothing, so it makes no outcomes of its own: it watches every decision, `ok` ones
included, and hears every other sink's outcome. prometheus_client serves the metrics from its
own HTTP server, in a daemon thread, on 127.0.0.1 unless --metrics-listen names another
address (with a warning: whoever reaches it reads the hosts, atoms and alert counts).

    kiri_surprise{atom,host}                the latest decision's surprise
    kiri_threshold{atom,host}               the threshold it was held against
    kiri_surprise_ratio{atom,host}          surprise / threshold: past 1 is past the threshold
    kiri_alerts_total{atom,host,severity}   alerts opened (a group alert once, for its top atom)
    kiri_deliveries_total{sink,outcome}     deliveries by sink: outcome ok or failed
    kiri_verdicts{atom,host,verdict}        people's verdicts in the store: confirm, dismiss,
                                            new_normal (counts of what the store holds now)
    kiri_stage_restarts_total{stage}        each stage's restarts, from kiri-supervise's
                                            status.json (counted again from 0 when it restarts)
    kiri_model_age_seconds{atom}            seconds since the atom's weights file was written

The ratio of the other atoms a decision's `state` names (a group alert's members) is updated
too. The store, the status file and the weights files are read on kiri-act's tick, about once a
second, and never created: a KIRI_HOME without them simply has no such metrics yet.
"""

from __future__ import annotations

import argparse
import ipaddress
import sqlite3
import time
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

import msgspec
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kiri.act.sinks import Sink, SinkError
from kiri.home.paths import weights_path
from kiri.home.status import Status, status_path
from kiri.home.store import Store, StoreError, db_path
from kiri.wire.log import Log
from kiri.wire.records import UNDECODABLE, Decision, Outcome

PORT = 9847  # --metrics-port's default
LISTEN = "127.0.0.1"  # --metrics-listen's default: this machine only


class Snapshot(msgspec.Struct, frozen=True):
    """What the sink read from files on its last tick, swapped whole for the scrape thread."""

    verdicts: list[tuple[str, str, str, int]] = []  # (atom, host, kind, count)
    restarts: dict[str, int] = {}  # stage: restarts
    trained: dict[str, float] = {}  # atom: its weights file's mtime


class FileMetrics(Collector):
    """The metrics read from KIRI_HOME, served from the latest snapshot; the model's age is
    counted at the scrape."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        verdicts = GaugeMetricFamily(
            "kiri_verdicts",
            "People's verdicts on alerts, as the store holds them: confirm, dismiss, new_normal",
            labels=["atom", "host", "verdict"],
        )
        for atom, host, kind, n in snap.verdicts:
            verdicts.add_metric([atom, host, kind], n)
        restarts = CounterMetricFamily(
            "kiri_stage_restarts",
            "Restarts of each pipeline stage since kiri-supervise started (its status.json)",
            labels=["stage"],
        )
        for stage, n in snap.restarts.items():
            restarts.add_metric([stage], n)
        age = GaugeMetricFamily(
            "kiri_model_age_seconds",
            "Seconds since the atom's weights file was written (trained)",
            labels=["atom"],
        )
        now = time.time()
        for atom, mtime in snap.trained.items():
            age.add_metric([atom], max(0.0, now - mtime))
        yield from (verdicts, restarts, age)


class MetricsSink(Sink):
    name = "metrics"

    def __init__(self, log: Log, registry: CollectorRegistry) -> None:
        self.log = log
        labels = ["atom", "host"]
        self.surprise = Gauge(
            "kiri_surprise", "The latest decision's surprise", labels, registry=registry
        )
        self.threshold = Gauge(
            "kiri_threshold",
            "The threshold the latest surprise was held against",
            labels,
            registry=registry,
        )
        self.ratio = Gauge(
            "kiri_surprise_ratio",
            "The latest surprise / threshold: past 1 is past the threshold",
            labels,
            registry=registry,
        )
        self.alerts = Counter(
            "kiri_alerts",
            "Alerts opened, by severity (a group alert once, for its top atom)",
            [*labels, "severity"],
            registry=registry,
        )
        self.deliveries = Counter(
            "kiri_deliveries",
            "Deliveries of decisions by kiri-act, by sink and outcome (ok or failed)",
            ["sink", "outcome"],
            registry=registry,
        )
        self.files = FileMetrics()
        registry.register(self.files)
        self.atoms: set[str] = set()
        self.store: Store | None = None
        self.store_failed = False
        self.store_error = ""  # the last query's, while it fails
        self.server: WSGIServer | None = None  # once serving

    def accepts(self, decision: Decision) -> bool:
        return False  # it only watches

    def deliver(self, decision: Decision, line: bytes) -> str:
        raise AssertionError("the metrics sink accepts no decision")  # never called

    def observe(self, decision: Decision) -> None:
        host = decision.host
        for atom, ratio in decision.state.items():  # other atoms of the host, as decided
            self.ratio.labels(atom, host).set(ratio)
            self.atoms.add(atom)
        if decision.atom:
            self.surprise.labels(decision.atom, host).set(decision.surprise)
            self.threshold.labels(decision.atom, host).set(decision.threshold)
            if decision.threshold > 0:
                self.ratio.labels(decision.atom, host).set(decision.surprise / decision.threshold)
            self.atoms.add(decision.atom)
        self.atoms.update(decision.atoms)
        if decision.action == "alert":
            self.alerts.labels(decision.atom, host, decision.severity).inc()

    def on_outcome(self, outcome: Outcome) -> None:
        self.deliveries.labels(outcome.sink, "ok" if outcome.ok else "failed").inc()

    def tick(self) -> None:
        self.files.snapshot = Snapshot(self._verdicts(), _restarts(), _trained(self.atoms))

    def _verdicts(self) -> list[tuple[str, str, str, int]]:
        """The store's verdict counts; none while there is no store (it is not made here)."""
        if self.store is None and not self.store_failed and db_path().exists():
            try:
                self.store = Store()
            except (StoreError, sqlite3.Error) as e:
                self.store_failed = True  # said once: a damaged store does not mend itself
                self.log.warning("metrics_no_store", error=str(e), reason="no kiri_verdicts")
        if self.store is None:
            return []
        try:
            counts = self.store.verdict_counts()
        except sqlite3.Error as e:  # busy past its timeout, say: the counts read last serve
            if str(e) != self.store_error:  # said once, not every second
                self.log.warning("metrics_store_failed", error=str(e))
            self.store_error = str(e)
            return self.files.snapshot.verdicts
        self.store_error = ""
        return counts

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()  # its thread's loop ends within half a second
            self.server.server_close()
        if self.store is not None:
            self.store.close()


def _restarts() -> dict[str, int]:
    """Each stage's restarts from the supervisor's status file; none without one."""
    try:
        status = msgspec.json.decode(status_path().read_bytes(), type=Status)
    except (OSError, *UNDECODABLE):
        return {}
    return {stage.name: stage.restarts for stage in status.stages}


def _trained(atoms: set[str]) -> dict[str, float]:
    """When each atom's weights file was written, for those that have one."""
    trained = {}
    for atom in sorted(atoms):
        try:
            trained[atom] = weights_path(atom).stat().st_mtime
        except (OSError, ValueError):  # not trained yet, or no name an atom can have
            continue
    return trained


HELP = "serves /metrics for Prometheus on --metrics-listen:--metrics-port; delivers nothing"


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=PORT,
        metavar="PORT",
        help=f"the port the metrics sink serves /metrics on (default: {PORT})",
    )
    parser.add_argument(
        "--metrics-listen",
        default=LISTEN,
        metavar="ADDRESS",
        help=f"the address it listens on (default: {LISTEN}, this machine only; another is "
        "reachable by whoever reaches it)",
    )


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, not {text}")
    return port


def open_sink(args: argparse.Namespace, log: Log) -> MetricsSink:
    # no *_created series: when a counter started is of no use here (the library's function
    # has no annotations)
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()  # KIRI's metrics only, not this Python process's
    sink = MetricsSink(log, registry)
    listen, port = args.metrics_listen, args.metrics_port
    try:
        sink.server, _thread = start_http_server(port, addr=listen, registry=registry)
    except OSError as e:
        raise SinkError(
            f"--sink metrics cannot listen on {listen}:{port}: {e.strerror or e}"
        ) from None
    port = sink.server.server_port  # the one chosen, when asked for 0
    if not _loopback(listen):
        log.warning(
            "metrics_exposed",
            listen=listen,
            reason="anyone who reaches this address reads the hosts, atoms and alert counts",
        )
    log.info("metrics_serving", url=f"http://{listen}:{port}/metrics")
    return sink


def _loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False
