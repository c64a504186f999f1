"""kiri-collect prometheus against a real Prometheus scraping a real node_exporter.

Both come from Debian's packages (.ci/debian-packages). One node_exporter is scraped every
second under two instance labels, 127.0.0.1:PORT and localhost:PORT, so the fleet has two
hosts. The servers start once for the module, on free ports of 127.0.0.1; the tests that need
scraped data wait for it through the `scraped` fixture, the others run meanwhile.
"""

from __future__ import annotations

import functools
import json
import math
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise

import msgspec
import pytest
from conftest import log_events, measured, run, stage_cmd
from scripted_http import Answer, scripted_server
from servers import PROMETHEUS, free_port, prometheus_server, wait_for

from kiri.clients.prometheus import (
    MAX_COUNT,
    QUERY_SETS,
    PromError,
    Prometheus,
    QuerySet,
    Series,
    Table,
    host_names,
    parse_answer,
    range_chunks,
    rate_window,
    step,
)
from kiri.collect.sources import MAX_TEXT
from kiri.home.durations import duration, moment
from kiri.wire.records import Obs

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
COLLECT = "kiri.collect.stage"
SCRAPES = 8  # of each instance before the tests that read data start: a backfill of 10 s
PULSE = ("--queries", "pulse", "--step", "1s", "--scrape-interval", "1s")

decode = msgspec.json.Decoder(Obs).decode

needs_servers = pytest.mark.servers(PROMETHEUS, NODE_EXPORTER)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.load(answer)


@pytest.fixture(scope="module")
def prom(tmp_path_factory) -> Iterator[str]:
    """A Prometheus scraping a node_exporter every second; its URL."""
    tmp = tmp_path_factory.mktemp("prometheus")
    node = free_port()
    exporter = subprocess.Popen(
        [
            NODE_EXPORTER,
            f"--web.listen-address=127.0.0.1:{node}",
            "--collector.disable-defaults",
            "--collector.cpu",
            "--collector.meminfo",
            "--collector.loadavg",
            "--collector.netclass",
            "--collector.filesystem",
            "--collector.filesystem.mount-points-exclude=^/.+",
            "--collector.filesystem.fs-types-exclude=^$",  # keep overlay: a container's root
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with prometheus_server(tmp, "node", [f"127.0.0.1:{node}", f"localhost:{node}"]) as url:
            yield url
    finally:
        exporter.terminate()
        exporter.wait(10)


@pytest.fixture(scope="module")
def scraped(prom: str) -> str:
    """The same Prometheus, once it holds SCRAPES scrapes of both instances."""
    query = urllib.parse.quote("count_over_time(up[1m])")

    def ready() -> bool:
        result = get_json(f"{prom}/api/v1/query?query={query}")["data"]["result"]
        return len(result) == 2 and all(int(s["value"][1]) >= SCRAPES for s in result)

    wait_for(f"{SCRAPES} scrapes", ready)
    return prom


def collect(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return run(COLLECT, "prometheus", *args, timeout=timeout)


def records(out: subprocess.CompletedProcess) -> list[Obs]:
    return [decode(line) for line in out.stdout.splitlines()]


def errors(out: subprocess.CompletedProcess) -> list[str]:
    return [line for line in out.stderr.decode().splitlines() if line.startswith("Error:")]


# -- parsing, without a server --------------------------------------------------------------


def test_durations_steps_and_times_read_like_prometheus():
    assert duration("90s") == 90 and duration("1h30m") == 5400 and duration("500ms") == 0.5
    assert duration("7d") == 7 * 86400 and duration("2w") == 14 * 86400
    assert step("60") == 60 and step("1s") == 1 and step("0.5") == 0.5
    now = 1_700_000_000.0
    assert moment("1699990000", now) == 1699990000  # a bare number is a Unix time
    assert moment("10s", now) == now - 10 and moment("7d", now) == now - 7 * 86400
    assert moment("2023-11-14T22:13:20Z", now) == 1_700_000_000
    assert moment("2023-11-14T23:13:20+01:00", now) == 1_700_000_000
    for bad in ("", "10", "s", "10x", "1h 30m", "-5s", "10s-ago"):
        if bad != "10":
            with pytest.raises(ValueError):
                duration(bad)
    for bad in ("0", "-1", "nan", "inf", "soon"):
        with pytest.raises(ValueError):
            step(bad)
    with pytest.raises(ValueError, match="not a time: 'yesterday'"):
        moment("yesterday", now)


def test_rate_window_is_the_step_but_at_least_four_scrapes():
    assert rate_window(60, 15) == "60s"
    assert rate_window(1, 1) == "4s"
    assert rate_window(10, 15) == "60s"
    assert rate_window(0.5, 0.25) == "1s" and rate_window(0.1, 0.1) == "400ms"


def test_long_ranges_are_split_under_the_point_limit_on_one_grid():
    chunks = list(range_chunks(1000.0, 1000.0 + 30_000, 1.0))
    points = [(b - a) / 1.0 + 1 for a, b in chunks]
    assert chunks[0][0] == 1000.0 and chunks[-1][1] == 31_000.0
    assert max(points) <= 11_000 and sum(points) == 30_001
    for (_, end), (start, _) in pairwise(chunks):
        assert start == end + 1.0  # the next point of the grid: no overlap, no gap
    assert list(range_chunks(0.0, 10.0, 3.0, max_points=2)) == [(0.0, 3.0), (6.0, 9.0)]
    assert list(range_chunks(5.0, 5.0, 60.0)) == [(5.0, 5.0)]


def test_hosts_are_instances_without_their_port_unless_two_would_share_one():
    assert host_names(["node1:9100", "10.0.0.7:9100", "[fe80::1]:9100", "db", "::1"]) == {
        "node1:9100": "node1",
        "10.0.0.7:9100": "10.0.0.7",
        "[fe80::1]:9100": "fe80::1",
        "db": "db",
        "::1": "::1",
    }
    assert host_names(["web:9100", "web:9256", "db:9100"]) == {
        "web:9100": "web:9100",
        "web:9256": "web:9256",
        "db:9100": "db",
    }


def matrix(*series: tuple[dict, list]) -> bytes:
    result = [{"metric": labels, "values": values} for labels, values in series]
    return json.dumps(
        {"status": "success", "data": {"resultType": "matrix", "result": result}}
    ).encode()


def test_answers_join_per_instance_and_time_and_non_numbers_are_no_value():
    table = Table(QuerySet("fleet", {"a": "A", "b": "B"}, {"cpus": "C"}))
    a = lambda i: {"instance": f"n{i}:9100", "job": "node"}  # noqa: E731
    table.add(
        "a",
        parse_answer(
            matrix(
                (a(1), [[10, "1.5"], [20, "NaN"], [30, "2"]]),
                (a(2), [[10, "+Inf"], [20, "-0.25"], [30, "1e3"]]),
                ({"job": "node"}, [[10, "7"]]),  # no instance: cannot be anyone's
            )
        )[0],
    )
    table.add(
        "b",
        parse_answer(
            matrix(
                (a(1), [[10, "0"], [20, "1"]]),  # none at 30
                (a(2), [[10, "0"], [20, "1"], [30, "3"]]),
                (dict(a(2), job="other"), [[30, "4"]]),  # a second series for n2 at 30
            )
        )[0],
    )
    table.add(
        "cpus",
        parse_answer(
            matrix(
                (a(1), [[10, "4"], [20, "4"], [30, "4"]]), (a(2), [[10, "2"], [20, "2"], [30, "2"]])
            )
        )[0],
    )
    observations, skipped = table.observations()
    assert [(o.ts, o.host, o.values, o.meta) for o in observations] == [
        (10.0, "n1", {"a": 1.5, "b": 0.0}, {"cpus": "4", "instance": "n1:9100"}),
        (20.0, "n2", {"a": -0.25, "b": 1.0}, {"cpus": "2", "instance": "n2:9100"}),
    ]
    assert all(o.atom == "fleet" for o in observations)
    assert skipped == Counter(
        {
            "a is +Inf": 1,
            "a is NaN": 1,
            "no value for b": 1,
            "several series for b: aggregate it by (instance)": 1,
            "series of a without an instance label (aggregate it by (instance))": 1,
        }
    )


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("9_9", "a is not a number ('9_9')"),  # float() reads 99
        (" 1", "a is not a number (' 1')"),
        ("infinity", "a is not a number ('infinity')"),
        ("\u0661\u0662", "a is not a number ('\u0661\u0662')"),  # float() reads 12
        ("0x10", "a is not a number ('0x10')"),
        ("1e999", "a is 1e999"),
        ("-Inf", "a is -Inf"),
    ],
)
def test_sample_values_are_read_as_prometheus_writes_them_and_no_other_way(raw, reason):
    table = Table(QuerySet("fleet", {"a": "A", "b": "B"}))
    at = {"instance": "n1:9100"}
    table.add("a", [Series(at, [(10.0, raw), (20.0, "-1.5e+3")])])
    table.add("b", [Series(at, [(10.0, ".5"), (20.0, "+7.")])])
    observations, skipped = table.observations()
    assert [(o.ts, o.values) for o in observations] == [(20.0, {"a": -1500.0, "b": 7.0})]
    assert skipped == Counter({reason: 1})


@pytest.mark.parametrize("cpus", ["1e-320", "5e-324", "0", "0.5", "2.5", "1e300", "NaN", "+Inf"])
def test_a_meta_count_that_is_no_count_of_cpus_leaves_the_observation_out(cpus):
    table = Table(QuerySet("pulse", {"a": "A"}, {"cpus": "C"}))
    at = {"instance": "n1:9100"}
    table.add("a", [Series(at, [(10.0, "1"), (20.0, "2")])])
    table.add("cpus", [Series(at, [(10.0, cpus), (20.0, "4e0")])])
    observations, skipped = table.observations()
    assert [(o.ts, o.meta["cpus"]) for o in observations] == [(20.0, "4")]
    assert len(skipped) == 1 and next(iter(skipped)).startswith("cpus is ")


def test_the_collector_leaves_out_what_prometheus_cannot_have_meant(kiri_home):
    """Through kiri-collect prometheus, from a server answering each of the pulse set's
    queries in turn: a load of "9_9" and a cpus count of "1e-320" each leave one instance's
    observation out; the other instance's comes out."""
    good, load, cpus = ({"instance": f"{name}:9100"} for name in ("good", "load", "cpus"))
    answers = {name: [(good, "1"), (load, "1"), (cpus, "1")] for name in QUERY_SETS["pulse"].values}
    answers["load"] = [(good, "0.5"), (load, "9_9"), (cpus, "0.5")]
    answers["cpus"] = [(good, "2"), (load, "2"), (cpus, "1e-320")]
    with scripted_server() as (address, handler):
        for name, _ in QUERY_SETS["pulse"].queries("1m"):
            series = [(labels, [[60, raw]]) for labels, raw in answers[name]]
            handler.script.append(Answer(200, matrix(*series)))
        out = collect("--url", f"http://{address}", "--queries", "pulse", "--start", "60",
                      "--end", "60", "--step", "60")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert [(o.host, o.values["load"], o.meta["cpus"]) for o in records(out)] == [
        ("good", 0.5, "2")
    ]
    [skipped] = [e for e in log_events(out.stderr) if e["event"] == "observations_skipped"]
    assert skipped["reasons"] == {
        "load is not a number ('9_9')": 1,
        f"cpus is 1e-320, not a count from 1 to {MAX_COUNT}": 1,
    }


def test_an_instance_label_too_long_for_a_host_name_is_left_out_with_a_warning(kiri_home):
    long = "n" * 200_000
    with scripted_server() as (address, handler):
        for _ in range(2):  # a backfill, then a poll
            handler.script.append(
                Answer(
                    200,
                    matrix(({"instance": long}, [[60, "1"]]), ({"instance": "n1"}, [[60, "2"]])),
                )
            )
        backfill = collect("--url", f"http://{address}", "--query", "up=up", "--start", "60",
                           "--end", "60", "--step", "60")  # fmt: skip
        poll = collect("--url", f"http://{address}", "--query", "up=up", "--count", "1")
    for out in (backfill, poll):
        assert out.returncode == 0, out.stderr
        assert [(o.host, o.values) for o in records(out)] == [("n1", {"up": 2.0})]
        [warning] = [e for e in log_events(out.stderr) if e["event"] == "source_text_too_long"]
        assert warning["reason"] == f"a host name over {MAX_TEXT} characters"
        assert warning["left_out"] == "the observation"


def test_an_error_answer_and_a_scalar_are_refused_with_their_reason():
    body = b'{"status":"error","errorType":"bad_data","error":"1:6: parse error"}'
    with pytest.raises(PromError, match=r"^bad_data: 1:6: parse error$") as e:
        parse_answer(body)
    assert e.value.fatal
    with pytest.raises(PromError, match="a scalar, not series"):
        parse_answer(b'{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}')
    with pytest.raises(PromError, match="not a Prometheus answer") as e:
        parse_answer(b"<html>")
    assert not e.value.fatal


# -- usage --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        # argparse's own refusals (one of the two, not both): their wording is argparse's
        ((), None),
        (("--queries", "pulse", "--query", "x=up"), None),
        (("--query", "up"), "expected NAME=PROMQL, got 'up'"),
        (("--query", "a b=up"), "'a b': a field name is letters"),
        (("--queries", "pulse", "--start", "yesterday"), "not a time: 'yesterday'"),
        (("--queries", "pulse", "--step", "0"), "not a step: '0'"),
    ],
)
def test_usage_errors_exit_2(args, message):
    out = collect("--url", "http://127.0.0.1:9", *args)
    assert out.returncode == 2 and out.stdout == b"" and out.stderr.strip()
    if message is not None:
        assert message in out.stderr.decode()


def test_setting_errors_are_one_line():
    out = collect("--url", "http://127.0.0.1:9", "--query", "x=up", "--query", "x=node_load1")
    assert errors(out) == ["Error: --query x: one query per field name"]
    out = collect("--url", "ftp://prom", "--queries", "pulse")
    assert errors(out) == [
        "Error: the Prometheus URL must be http[s]://HOST[:PORT][/PATH], not 'ftp://prom'"
    ]
    out = collect("--url", "http://127.0.0.1:9", "--queries", "pulse", "--end", "1h")
    assert errors(out) == ["Error: --end needs --start: a backfill is from --start to --end"]
    assert out.returncode == 1


# -- against the server -------------------------------------------------------------------


@needs_servers
def test_bad_promql_is_reported_and_ends_both_modes(prom):
    port = urllib.parse.urlsplit(prom).port
    for mode in (("--start", "10s"), ("--interval", "0.2")):
        out = collect("--url", prom, "--query", "ok=up", "--query", "x=rate(up[1m]", *mode)
        assert out.returncode == 1 and out.stdout == b""
        [error] = errors(out)
        # KIRI names the server, the query and the status; then Prometheus's errorType (part of
        # its HTTP API) and its own wording of the reason, which is only checked to be there.
        assert error.startswith(f"Error: 127.0.0.1:{port} query x: HTTP 400 bad_data: ")
        assert error.removeprefix(f"Error: 127.0.0.1:{port} query x: HTTP 400 bad_data: ").strip()
        assert b"Traceback" not in out.stderr


@needs_servers
def test_prometheus_down_ends_a_backfill_with_one_line():
    port = free_port()  # nobody listens there
    started = time.monotonic()
    out = collect("--url", f"http://127.0.0.1:{port}", "--queries", "pulse", "--start", "1h")
    assert out.returncode == 1 and out.stdout == b""
    [error] = errors(out)  # KIRI's prefix, then the system's reason (strerror)
    assert error.startswith(f"Error: 127.0.0.1:{port} query cpu: ")
    assert error.removeprefix(f"Error: 127.0.0.1:{port} query cpu: ").strip()
    assert time.monotonic() - started >= 1.5  # retried twice, after 0.5 s and 1 s


@needs_servers
def test_prometheus_down_is_logged_once_while_live_polling_backs_off():
    port = free_port()
    started = time.monotonic()
    out = collect(
        "--url",
        f"http://127.0.0.1:{port}",
        "--queries",
        "pulse",
        "--interval",
        "0.2",
        "--count",
        "3",
    )
    assert out.returncode == 0 and out.stdout == b""
    [failed] = [e for e in log_events(out.stderr) if e["event"] == "query_failed"]
    assert failed["reason"].startswith(f"127.0.0.1:{port} query cpu: ")
    assert failed["reason"].removeprefix(f"127.0.0.1:{port} query cpu: ").strip()
    # polls after 0.2 s, then 0.2 + 0.2 and 0.2 + 0.4 s: each failure waits twice as long
    assert time.monotonic() - started >= 1.4


def test_prometheus_down_for_long_ends_live_polling_with_an_error():
    port = free_port()
    args = ("--url", f"http://127.0.0.1:{port}", "--queries", "pulse", "--interval", "0.05")
    out = collect(*args, "--give-up-time", "0.3", "--give-up-polls", "0")
    assert out.returncode == 1 and out.stdout == b""
    [error] = errors(out)
    assert error.startswith(f"Error: Prometheus 127.0.0.1:{port}: ")
    assert f"; the last: 127.0.0.1:{port} query cpu: " in error
    [gave_up] = [e for e in log_events(out.stderr) if e["event"] == "source_gave_up"]
    assert "polls in a row failed" in gave_up["notify"]


@needs_servers
def test_backfill_gives_pulse_observations_per_instance_in_time_order(scraped):
    out = collect("--url", scraped, *PULSE, "--start", "10s")
    assert out.returncode == 0, out.stderr
    observations = records(out)
    by_host = Counter(o.host for o in observations)
    assert set(by_host) == {"127.0.0.1", "localhost"} and min(by_host.values()) >= 5
    times = [o.ts for o in observations]
    assert times == sorted(times) and all(t == int(t) for t in times)  # on the 1 s grid
    assert len({(o.ts, o.host) for o in observations}) == len(observations)
    assert time.time() - 12 <= times[0] and times[-1] <= time.time()
    for obs in observations:
        assert obs.atom == "pulse"
        values = measured(obs.values)
        assert set(values) == {"cpu", "mem", "disk", "swap", "load", "net"}
        assert obs.meta["instance"].startswith(obs.host + ":")
        assert int(obs.meta["cpus"]) >= 1
        for field in ("cpu", "mem", "disk", "swap"):
            assert 0.0 <= values[field] <= 100.0, (field, obs)
        assert 0 < values["mem"] < 100 and 0 < values["disk"] < 100
        assert values["load"] >= 0 and values["net"] in (0.0, 1.0)
    [done] = [e for e in log_events(out.stderr) if e["event"] == "backfilled"]
    assert done["observations"] == len(observations)


@needs_servers
def test_a_backfill_asked_for_in_pieces_gives_the_same_stream(scraped, monkeypatch, capfd):
    from kiri.collect import prometheus as source
    from kiri.collect.stage import main

    end = math.floor(time.time()) - 1
    window = ("--url", scraped, *PULSE, "--start", str(end - 8), "--end", str(end))
    whole = collect(*window)
    assert whole.returncode == 0 and len(whole.stdout.splitlines()) >= 10
    asked: list[tuple[float, float]] = []
    real_range = Prometheus.range

    def range_asked(self, name, q, a, b, s):
        asked.append((a, b))
        return real_range(self, name, q, a, b, s)

    monkeypatch.setattr(source, "range_chunks", functools.partial(range_chunks, max_points=3))
    monkeypatch.setattr(Prometheus, "range", range_asked)
    assert main(["prometheus", *window]) == 0
    assert capfd.readouterr().out.encode() == whole.stdout
    assert sorted(set(asked)) == [(end - 8, end - 6), (end - 5, end - 3), (end - 2, end)]


@needs_servers
def test_live_polling_emits_each_instance_at_each_poll(scraped):
    out = collect("--url", scraped, *PULSE, "--interval", "0.5", "--count", "2")
    assert out.returncode == 0, out.stderr
    observations = records(out)
    assert [o.host for o in observations] == ["127.0.0.1", "localhost"] * 2
    first, second = observations[0].ts, observations[2].ts
    assert observations[1].ts == first and observations[3].ts == second
    assert second - first >= 0.4 and abs(time.time() - second) < 5
    assert all(0 <= measured(o.values)["cpu"] <= 100 and o.meta["cpus"] for o in observations)


@needs_servers
def test_custom_queries_make_an_atom_of_prometheus_string_values(scraped):
    out = collect(
        "--url",
        scraped,
        "--query",
        "up=up",
        "--query",
        "half=up / 2",
        "--query",
        "load=node_load1 * 4",
        "--host",
        "localhost",
        "--start",
        "5s",
        "--step",
        "1s",
    )
    assert out.returncode == 0, out.stderr
    observations = records(out)
    assert len(observations) >= 5 and {o.host for o in observations} == {"localhost"}
    for obs in observations:
        assert obs.atom == "prometheus" and obs.meta == {"instance": obs.meta["instance"]}
        values = measured(obs.values)
        assert values["up"] == 1.0 and values["half"] == 0.5 and values["load"] >= 0.0
    out = collect(
        "--url",
        scraped,
        "--query",
        "up=up",
        "--atom",
        "fleet",
        "--host",
        obs.meta["instance"],
        "--interval",
        "0.2",
        "--count",
        "1",
    )
    [obs] = records(out)
    assert (obs.atom, obs.host, obs.values) == ("fleet", "localhost", {"up": 1.0})


@needs_servers
def test_nan_and_infinity_are_no_value_and_the_observation_is_left_out(scraped):
    out = collect(
        "--url",
        scraped,
        "--query",
        "up=up",
        "--query",
        "inf=up / 0",
        "--query",
        "nan=up * (0 / 0)",
        "--interval",
        "0.2",
        "--count",
        "2",
    )
    assert out.returncode == 0 and out.stdout == b""
    skipped = [e for e in log_events(out.stderr) if e["event"] == "observations_skipped"]
    assert [e["reasons"] for e in skipped] == [{"inf is +Inf": 2}]  # once while it lasts
    out = collect("--url", scraped, "--query", "nan=up * (0 / 0)", "--start", "3s", "--step", "1s")
    assert out.returncode == 0 and out.stdout == b""
    [backfill] = [e for e in log_events(out.stderr) if e["event"] == "observations_skipped"]
    assert backfill["reasons"]["nan is NaN"] >= 4


@needs_servers
def test_sigterm_while_polling_exits_0_with_whole_lines(scraped):
    proc = subprocess.Popen(
        stage_cmd(COLLECT, "prometheus", "--url", scraped, *PULSE, "--interval", "0.3"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = [proc.stdout.readline(), proc.stdout.readline()]
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err
    assert rest == b"" or rest.endswith(b"\n")
    assert len([decode(line) for line in first + rest.splitlines()]) % 2 == 0


@needs_servers
def test_a_closed_reader_ends_it_quietly(scraped):
    proc = subprocess.Popen(
        stage_cmd(COLLECT, "prometheus", "--url", scraped, *PULSE, "--interval", "0.2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    head = subprocess.run(
        ["head", "-n", "1"], stdin=proc.stdout, capture_output=True, timeout=10, check=False
    )
    proc.stdout.close()
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert b"Traceback" not in err and b"Error" not in err
    assert decode(head.stdout).atom == "pulse"


@needs_servers
def test_kiri_train_learns_the_fleet_from_a_backfill(scraped, kiri_home):
    out = collect("--url", scraped, *PULSE, "--start", "10s", "--record")
    assert out.returncode == 0, out.stderr
    recorded = b"".join(p.read_bytes() for p in sorted((kiri_home / "data" / "pulse").iterdir()))
    assert sorted(recorded.splitlines()) == sorted(out.stdout.splitlines())
    train = run("kiri.cli", "train", "pulse", "--steps", "20", "--samples", "0", timeout=60)
    assert train.returncode == 0, train.stderr
    n = len(out.stdout.splitlines())
    assert f"loaded {n} observations from" in train.stdout.decode()
    assert (kiri_home / "atoms" / "pulse" / "weights.json").exists()

    fleet = kiri_home / "fleet.ndjson"
    custom = collect(
        "--url",
        scraped,
        "--query",
        "load=node_load1",
        "--query",
        "mem=node_memory_MemAvailable_bytes",
        "--atom",
        "fleet",
        "--start",
        "10s",
        "--step",
        "1s",
    )
    fleet.write_bytes(custom.stdout)
    train = run(
        "kiri.cli",
        "train",
        "fleet",
        "--from",
        str(fleet),
        "--steps",
        "20",
        "--samples",
        "0",
        timeout=60,
    )
    assert train.returncode == 0, train.stderr
    assert (kiri_home / "atoms" / "fleet" / "weights.json").exists()
    scored = run("kiri.score.stage", "fleet", input=custom.stdout)
    assert scored.returncode == 0, scored.stderr
    assert [json.loads(line)["kind"] for line in scored.stdout.splitlines()] == ["score"] * len(
        custom.stdout.splitlines()
    )


def test_the_debian_packages_are_listed_for_ci():
    from conftest import ROOT

    listed = (ROOT / ".ci" / "debian-packages").read_text().split()
    assert {"prometheus", "prometheus-node-exporter"} <= set(listed)
