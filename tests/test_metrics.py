"""kiri-act --sink metrics: /metrics scraped over HTTP from the real executable fed a fixture
stream, then by a real Prometheus (Debian's package); the Grafana dashboard's queries checked
against what the sink exports, and the stage's usual faults with the sink in the chain."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import msgspec
import pytest
from conftest import ROOT, log_events, stage_cmd
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from servers import PROMETHEUS, prometheus_server, wait_for
from test_act import (
    ACT,
    ALERT,
    OBS,
    OK0,
    OK2,
    RESOLVE,
    RULE,
    SCORE,
    STREAM,
    SUPPRESS,
    VERDICT,
    events,
    exec_args,
    logged_stream,
    ndjson,
    outcome,
    records,
)

from kiri.act.sinks.metrics import MetricsSink
from kiri.home.status import StageStatus, Status
from kiri.home.store import Store
from kiri.wire.log import get_logger
from kiri.wire.records import Decision

GRAFANA = ROOT / "pipelines" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "kiri.json"
# A group alert on another host: its top atom's figures, and the ratio of each atom it names
GROUP = (
    b'{"kind":"decision","ts":1795285820.0,"id":"g-1","atom":"disk","host":"db1",'
    b'"action":"alert","severity":"critical","surprise":8.0,"threshold":2.0,'
    b'"atoms":["disk","pulse"],"state":{"disk":4.0,"pulse":1.5},"incident":"i-2",'
    b'"summary":"disk and pulse are unusual on db1"}'
)
# Without the retrain decision: a training run is no part of what is measured here
DECISIONS = ndjson(OBS, OK0, SCORE, ALERT, OK2, SUPPRESS, VERDICT, RESOLVE, GROUP, RULE)
TRAINED_AGO = 3600.0  # seconds since the pulse atom's weights were written
FAILING = exec_args("import sys; sys.exit(3)")  # the exec sink, failing every delivery

T = TypeVar("T")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def kiri_state(kiri_home: Path) -> Path:
    """A KIRI_HOME as a running pipeline leaves it: two verdicts in the store, a supervisor's
    status file with a restarted stage, and the pulse atom's weights written an hour ago."""
    alert = msgspec.json.decode(ALERT, type=Decision)
    with Store() as store:
        store.record_alert(alert, "C9 M9")
        store.record_alert(msgspec.structs.replace(alert, id="d-9"), "C9 M9")
        store.add_verdict("d-1", "dismiss", normal=True)
        store.add_verdict("d-9", "confirm")
    stages = [StageStatus("atom", "running", restarts=3), StageStatus("act", "running")]
    status = Status(pid=1, pipeline="pulse", file="pulse.toml", started=0, updated=0, stages=stages)
    (kiri_home / "status.json").write_bytes(msgspec.json.encode(status))
    weights = kiri_home / "atoms" / "pulse" / "weights.json"
    weights.parent.mkdir(parents=True)
    weights.write_text("{}")
    then = time.time() - TRAINED_AGO
    os.utime(weights, (then, then))
    return kiri_home


def start(*args: str) -> tuple[subprocess.Popen, int, bytes]:
    """kiri-act with the metrics sink on a port the system chose: it, that port (its log says)
    and what it logged until then."""
    proc = subprocess.Popen(
        stage_cmd(ACT, "--sink", "metrics", "--metrics-port", "0", *args),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    err = b""
    deadline = time.monotonic() + 20
    while b'"metrics_serving"' not in err:
        assert time.monotonic() < deadline and proc.poll() is None, err.decode()
        if select.select([proc.stderr], [], [], 1)[0]:
            err += os.read(proc.stderr.fileno(), 1 << 16)
    serving = next(e for e in log_events(err) if e["event"] == "metrics_serving")
    return proc, urllib.parse.urlsplit(serving["url"]).port or 0, err


def read_lines(proc: subprocess.Popen, n: int) -> bytes:
    """The first n lines of its output, read while it runs."""
    assert proc.stdout is not None
    got = b""
    while got.count(b"\n") < n:
        assert select.select([proc.stdout], [], [], 10)[0], "no output while input was open"
        got += os.read(proc.stdout.fileno(), 1 << 16)
    return got


def scrape(port: int) -> Samples:
    """Every sample /metrics serves, parsed by prometheus_client's own parser."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = answer.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape_when(port: int, ready: Callable[[Samples], bool]) -> Samples:
    """/metrics, once what it serves is ready."""

    def check() -> Samples | None:
        samples = scrape(port)
        return samples if ready(samples) else None

    return wait_for("the metrics", check)


def sample(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def of(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


# -- /metrics, scraped from the real kiri-act -------------------------------------------------


def test_metrics_serves_the_latest_scores_and_counts_alerts_deliveries_and_what_kiri_keeps(
    kiri_state,
):
    proc, port, _ = start("--sink", "log", *FAILING)
    assert proc.stdin is not None
    proc.stdin.write(DECISIONS)
    proc.stdin.flush()
    read_lines(proc, 15)  # 8 records on, 4 log and 3 exec outcomes: every delivery made
    # the files are read on the stage's tick after the decisions came
    samples = scrape_when(port, lambda s: sample_age(s) is not None)
    # the latest decision of each atom and host, a group alert's member by its state's ratio
    assert of(samples, "kiri_surprise") == {
        (("atom", "pulse"), ("host", "vm")): 0.51,
        (("atom", "disk"), ("host", "db1")): 8.0,
    }
    assert of(samples, "kiri_threshold") == {
        (("atom", "pulse"), ("host", "vm")): 3.2,
        (("atom", "disk"), ("host", "db1")): 2.0,
    }
    assert of(samples, "kiri_surprise_ratio") == {
        (("atom", "pulse"), ("host", "vm")): pytest.approx(0.51 / 3.2),
        (("atom", "disk"), ("host", "db1")): 4.0,
        (("atom", "pulse"), ("host", "db1")): 1.5,
    }
    assert of(samples, "kiri_alerts_total") == {
        (("atom", "pulse"), ("host", "vm"), ("severity", "warning")): 1.0,
        (("atom", "disk"), ("host", "db1"), ("severity", "critical")): 1.0,
    }
    assert of(samples, "kiri_deliveries_total") == {
        (("outcome", "ok"), ("sink", "log")): 4.0,  # the alerts, the suppress, the resolve
        (("outcome", "failed"), ("sink", "exec")): 3.0,  # the alerts and the resolve
    }
    assert of(samples, "kiri_verdicts") == {
        (("atom", "pulse"), ("host", "vm"), ("verdict", "confirm")): 1.0,
        (("atom", "pulse"), ("host", "vm"), ("verdict", "new_normal")): 1.0,
    }
    assert of(samples, "kiri_stage_restarts_total") == {
        (("stage", "atom"),): 3.0,
        (("stage", "act"),): 0.0,
    }
    assert TRAINED_AGO <= (sample_age(samples) or 0) < TRAINED_AGO + 60
    assert of(samples, "kiri_model_age_seconds").keys() == {(("atom", "pulse"),)}  # disk: none
    assert not any(name.endswith("_created") for name, _ in samples)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and b"Traceback" not in err
    with pytest.raises(OSError):  # the server stopped with kiri-act
        scrape(port)


def sample_age(samples: Samples) -> float | None:
    return samples.get(sample("kiri_model_age_seconds", atom="pulse"))


def test_a_kiri_home_without_a_store_or_status_serves_the_rest_and_stays_as_it_was(kiri_home):
    proc, port, _ = start("--outbox-keep", "0")
    assert proc.stdin is not None
    proc.stdin.write(ndjson(OK0))
    proc.stdin.flush()
    samples = scrape_when(port, lambda s: bool(of(s, "kiri_surprise")))
    assert of(samples, "kiri_surprise") == {(("atom", "pulse"), ("host", "vm")): 0.42}
    for name in ("kiri_verdicts", "kiri_stage_restarts_total", "kiri_model_age_seconds"):
        assert of(samples, name) == {}
    proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert not kiri_home.exists()  # neither the store nor KIRI_HOME was made to find nothing


def test_a_delivery_made_late_from_the_outbox_is_counted_when_it_goes_out(kiri_home, tmp_path):
    tried = tmp_path / "tried"  # the command fails the first time only
    code = "import os, sys; seen = os.path.exists(sys.argv[1]); open(sys.argv[1], 'a').close(); "
    code += "sys.exit(0 if seen else 1)"
    proc, port, _ = start("--outbox-retry", "0.05", *exec_args(code, str(tried), keep="1d"))
    assert proc.stdin is not None
    proc.stdin.write(ndjson(ALERT))
    proc.stdin.flush()
    got = read_lines(proc, 4)  # the alert, its failed outcome, then again with an ok one
    assert [json.loads(line).get("ok") for line in got.splitlines()] == [None, False, None, True]
    deliveries = of(scrape(port), "kiri_deliveries_total")
    assert deliveries == {
        (("outcome", "failed"), ("sink", "exec")): 1.0,
        (("outcome", "ok"), ("sink", "exec")): 1.0,
    }
    proc.communicate(timeout=10)
    assert proc.returncode == 0


# -- a real Prometheus scraping it ------------------------------------------------------------


def query(prom: str, expr: str) -> list[dict]:
    url = f"{prom}/api/v1/query?query={urllib.parse.quote(expr)}"
    with urllib.request.urlopen(url, timeout=5) as answer:
        body = json.load(answer)
    assert body["status"] == "success", body
    result: list[dict] = body["data"]["result"]
    return result


@pytest.fixture
def prometheus(tmp_path: Path, kiri_state: Path) -> Iterator[tuple[str, int]]:
    """kiri-act serving /metrics, fed the fixture decisions, and a real Prometheus scraping it
    every second: Prometheus's URL and kiri-act's port."""
    proc, port, _ = start("--sink", "log", *FAILING)
    assert proc.stdin is not None
    proc.stdin.write(DECISIONS)
    proc.stdin.flush()
    read_lines(proc, 15)
    try:
        with prometheus_server(tmp_path, "kiri", [f"127.0.0.1:{port}"]) as url:
            yield url, port
    finally:
        proc.communicate(timeout=10)


@pytest.mark.servers(PROMETHEUS)
def test_prometheus_scrapes_the_sink_and_holds_its_values(prometheus):
    prom, port = prometheus
    # two scrapes after the tick that read the weights' age: enough for increase()
    scraped = "count_over_time(kiri_model_age_seconds[1m]) >= 2"
    wait_for("Prometheus's scrapes", lambda: query(prom, scraped), timeout=30)
    up = query(prom, "up")
    assert [(r["metric"]["instance"], r["value"][1]) for r in up] == [(f"127.0.0.1:{port}", "1")]
    ratio = {
        (r["metric"]["atom"], r["metric"]["host"]): float(r["value"][1])
        for r in query(prom, "kiri_surprise_ratio")
    }
    assert ratio == {
        ("pulse", "vm"): pytest.approx(0.51 / 3.2),
        ("disk", "db1"): 4.0,
        ("pulse", "db1"): 1.5,
    }
    alerts = query(prom, "sum by (severity) (kiri_alerts_total)")
    assert {r["metric"]["severity"]: r["value"][1] for r in alerts} == {
        "warning": "1",
        "critical": "1",
    }
    failed = query(prom, 'kiri_deliveries_total{outcome="failed"}')
    assert [(r["metric"]["sink"], r["value"][1]) for r in failed] == [("exec", "3")]
    verdicts = query(prom, "sum by (verdict) (kiri_verdicts)")
    assert {r["metric"]["verdict"]: r["value"][1] for r in verdicts} == {
        "confirm": "1",
        "new_normal": "1",
    }
    restarts = query(prom, 'kiri_stage_restarts_total{stage="atom"}')
    assert [r["value"][1] for r in restarts] == ["3"]
    # every panel of the dashboard is a query Prometheus runs, and finds data for
    for expr in dashboard_exprs():
        assert query(prom, expr), f"no data for {expr}"


# -- the Grafana dashboard --------------------------------------------------------------------


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def exported_names() -> set[str]:
    """The names of the samples the sink serves (a counter's end in _total)."""
    registry = CollectorRegistry()
    MetricsSink(get_logger(), registry)
    return {m.name + ("_total" if m.type == "counter" else "") for m in registry.collect()}


def test_every_panel_of_the_dashboard_queries_only_metrics_the_sink_exports():
    exported = exported_names()
    assert exported == {
        "kiri_surprise",
        "kiri_threshold",
        "kiri_surprise_ratio",
        "kiri_alerts_total",
        "kiri_deliveries_total",
        "kiri_verdicts",
        "kiri_stage_restarts_total",
        "kiri_model_age_seconds",
    }
    exprs = dashboard_exprs()
    named = [set(re.findall(r"\bkiri_\w+", expr)) for expr in exprs]
    assert all(named), "a panel queries no KIRI metric"
    assert set().union(*named) == exported  # each is charted, and nothing else is asked for
    dashboard = json.loads(DASHBOARD.read_text())
    ratio = next(p for p in dashboard["panels"] if p["targets"][0]["expr"] == "kiri_surprise_ratio")
    steps = ratio["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == 1  # the threshold line is at 1
    assert ratio["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"].startswith("line")


def test_the_provisioning_names_the_datasource_the_panels_use_and_the_dashboards_folder():
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    datasource = (GRAFANA / "provisioning" / "datasources" / "kiri.yaml").read_text()
    assert [f"uid: {uid}" for uid in uids] == re.findall(r"uid: [\w-]+", datasource)
    assert re.search(r"^\s+type: prometheus$", datasource, re.M)
    provider = (GRAFANA / "provisioning" / "dashboards" / "kiri.yaml").read_text()
    assert re.search(r"^\s+path: /\S+$", provider, re.M)


# -- the stage's faults, with the sink in the chain -------------------------------------------


def test_bad_lines_among_good_ones_are_skipped_and_not_counted(kiri_home):
    bad = b'{"kind":"decision","id":"d-9","action":"alert","surprise":"high"}'
    proc, port, _ = start("--sink", "log")
    assert proc.stdin is not None
    proc.stdin.write(ndjson(OBS, b"not json", ALERT, bad, RESOLVE))
    proc.stdin.flush()
    got = read_lines(proc, 5)
    samples = scrape(port)
    assert of(samples, "kiri_alerts_total") == {
        (("atom", "pulse"), ("host", "vm"), ("severity", "warning")): 1.0
    }
    assert samples[sample("kiri_surprise", atom="pulse", host="vm")] == 0.51
    out, err = proc.communicate(timeout=10)
    log = str(kiri_home / "logs" / "alerts.ndjson")
    assert proc.returncode == 0
    assert records(got + out, 0, time.time()) == [
        OBS,
        ALERT,
        outcome(ALERT, "log", detail=log),
        RESOLVE,
        outcome(RESOLVE, "log", detail=log),
    ]
    assert [e["line"] for e in events(err, "bad_record")] == [2, 4]


def test_sigterm_mid_stream_flushes_what_was_read_stops_serving_and_exits_zero(kiri_home):
    proc, port, _ = start("--sink", "log")
    assert proc.stdin is not None
    proc.stdin.write(STREAM + ALERT[:40])  # ends mid-record
    proc.stdin.flush()
    got = read_lines(proc, 13)
    assert scrape(port)[sample("kiri_deliveries_total", sink="log", outcome="ok")] == 4
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    log = str(kiri_home / "logs" / "alerts.ndjson")
    assert records(got + out, 0, time.time()) == logged_stream(log)
    assert b"Traceback" not in err and events(err, "bad_record") == []
    with pytest.raises(OSError):
        scrape(port)


def test_closed_reader_exits_zero_without_traceback(tmp_path):
    big = tmp_path / "big.ndjson"
    big.write_bytes(STREAM * 2000)
    cmd = " ".join(stage_cmd(ACT, "--sink", "metrics", "--metrics-port", "0"))
    out = subprocess.run(
        ["bash", "-c", f'{cmd} < {big} | head -n 1; echo "status=${{PIPESTATUS[0]}}"'],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert out.stdout.splitlines() == [OBS, b"status=0"]
    assert b"Traceback" not in out.stderr and b"BrokenPipe" not in out.stderr


# -- options ----------------------------------------------------------------------------------


def test_a_port_in_use_is_a_one_line_error_at_start(kiri_home):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            stage_cmd(ACT, "--sink", "metrics", "--metrics-port", str(port)),
            input=b"",
            capture_output=True,
            timeout=30,
            check=False,
        )
    assert out.returncode == 1
    errors = [line for line in out.stderr.decode().splitlines() if line.startswith("Error:")]
    assert errors == [
        f"Error: --sink metrics cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_another_address_is_served_only_when_asked_for_and_with_a_warning(kiri_home):
    proc, port, early = start("--metrics-listen", "0.0.0.0")
    assert proc.stdin is not None
    proc.stdin.write(ndjson(OK0))
    proc.stdin.flush()
    scrape_when(port, lambda s: bool(of(s, "kiri_surprise")))
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    [warning] = events(early + err, "metrics_exposed")
    assert warning["level"] == "warning" and warning["listen"] == "0.0.0.0"
    proc, _, early = start()  # by default, 127.0.0.1: no warning
    _, err = proc.communicate(timeout=10)
    assert events(early + err, "metrics_exposed") == []
    serving = next(e for e in log_events(early) if e["event"] == "metrics_serving")
    assert serving["url"].startswith("http://127.0.0.1:")


@pytest.mark.parametrize("port", ["65536", "-1", "http"])
def test_a_port_that_is_none_is_a_usage_error(port):
    out = subprocess.run(
        stage_cmd(ACT, "--sink", "metrics", "--metrics-port", port),
        input=b"",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2 and b"--metrics-port" in out.stderr


@pytest.mark.parametrize("sinks, loaded", [(["log"], False), (["log", "metrics"], True)])
def test_prometheus_client_is_loaded_only_with_the_metrics_sink(sinks, loaded):
    argv = [arg for name in sinks for arg in ("--sink", name)]
    code = (
        "import sys; from kiri.act.stage import parse_args; "
        f"parse_args({argv!r}); print('prometheus_client' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(loaded)
