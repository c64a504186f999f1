"""kiri-collect mikrotik against a RouterOS v7 REST API served over HTTPS on 127.0.0.1.

The fake router serves the documents in fixtures/mikrotik/ (RouterOS's field names, every value
a string) with counters that grow at fixed rates in real time, so the rates the collector
computes over its own elapsed time can be checked against the rates the router was set to.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec
import pytest
from conftest import FIXTURES, log_events, measured, run, stage_cmd

from kiri.collect.mikrotik import parse_uptime
from kiri.collect.sources import MAX_TEXT
from kiri.wire.records import Obs, Score

ROUTER = FIXTURES / "mikrotik"
CERT, KEY = ROUTER / "router-cert.pem", ROUTER / "router-key.pem"
USER, PASSWORD = "kiri", "Tr0ub4dor&3-router"
UPTIME = 245540.0  # 2d20h12m20s, the fixture's uptime
RATES = {"ether1": (2_000_000, 100_000), "ether2": (50_000, 1_500_000)}  # rx, tx bytes/s
BYTES = ("rx-byte", "tx-byte")
COUNTERS = (*BYTES, "rx-error", "tx-error", "rx-drop", "tx-drop", "link-downs")
ENDLESS = object()  # a body that never ends
TRICKLE = object()  # a body that comes a byte at a time, each well within the timeout

decode = msgspec.json.Decoder(Obs).decode


class FakeRouter:
    """RouterOS's REST API: byte counters grow at RATES and the uptime with the clock.

    A reading starts with its /rest/system/resource request, which counts a poll; `at(poll,
    change)` changes the router as that poll starts, and `fail(poll, path, body)` answers that
    request of that poll with `body` (bytes, ENDLESS, TRICKLE, or "stall": no answer) instead."""

    def __init__(self) -> None:
        self.polls = 0
        self.requests: list[tuple[str, str | None]] = []  # (path, Authorization)
        self.changes: dict[int, Callable[[FakeRouter], None]] = {}
        self.faults: dict[tuple[int, str], object] = {}
        self.bare = False  # system/resource as a bare object instead of a one-element list
        self.resource = json.loads((ROUTER / "resource.json").read_text())[0]
        self.interfaces = json.loads((ROUTER / "interface.json").read_text())
        self.booted = time.monotonic() - UPTIME
        # when each byte counter last held the value in self.interfaces: it grows from there
        self.since = {(i["name"], c): time.monotonic() for i in self.interfaces for c in BYTES}
        self.stopped = threading.Event()
        self.url = ""

    def at(self, poll: int, change: Callable[[FakeRouter], None]) -> None:
        self.changes[poll] = change

    def fail(self, poll: int, path: str, body: object) -> None:
        self.faults[poll, path] = body

    def reset(self, name: str, *counters: str, new_id: str | None = None) -> None:
        """These counters of the interface (all, by default) start again from zero; with a new
        id, the interface was deleted and made again."""
        iface = self.interface(name)
        for counter in counters or COUNTERS:
            iface[counter] = "0"
            self.since[name, counter] = time.monotonic()
        iface[".id"] = new_id or iface[".id"]

    def reboot(self) -> None:
        self.booted = time.monotonic()
        for iface in self.interfaces:
            self.reset(iface["name"])

    def interface(self, name: str) -> dict:
        return next(i for i in self.interfaces if i["name"] == name)

    def document(self, path: str) -> object:
        now = time.monotonic()
        if path == "/rest/system/resource":
            resource = dict(self.resource, uptime=_duration(int(now - self.booted)))
            return resource if self.bare else [resource]
        served = []
        for iface in self.interfaces:
            name, grown = iface["name"], {}
            for counter, rate in zip(BYTES, RATES.get(iface["name"], (0, 0)), strict=True):
                seconds = now - self.since[name, counter]
                grown[counter] = str(int(iface[counter]) + int(rate * seconds))
            served.append(dict(iface, **grown))
        return served


class RouterHandler(BaseHTTPRequestHandler):
    server: RouterServer

    def do_GET(self) -> None:
        router = self.server.router
        auth = self.headers.get("Authorization")
        router.requests.append((self.path, auth))
        if auth != "Basic " + _b64(f"{USER}:{PASSWORD}"):
            self._answer(401, b'{"error":401,"message":"Unauthorized"}')
            return
        if self.path == "/rest/system/resource":
            router.polls += 1
            if router.polls in router.changes:
                router.changes[router.polls](router)
        fault = router.faults.get((router.polls, self.path))
        if fault == "stall":
            router.stopped.wait(10)
        elif fault is ENDLESS:
            self._endless()
        elif fault is TRICKLE:
            self._trickle()
        elif isinstance(fault, bytes):
            self._answer(200, fault)
        elif self.path in ("/rest/system/resource", "/rest/interface"):
            self._answer(200, json.dumps(router.document(self.path)).encode())
        else:
            self._answer(404, b'{"error":404,"message":"Not Found"}')

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _endless(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()  # no Content-Length: the body runs until the connection closes
        chunk = b'[{"name":"ether1","comment":"' + b"x" * 65536
        try:
            while not self.server.router.stopped.is_set():
                self.wfile.write(chunk)
        except OSError:
            pass  # the client hung up, as it should

    def _trickle(self) -> None:
        self.send_response(200)
        self.end_headers()
        try:
            while not self.server.router.stopped.wait(0.02):
                self.wfile.write(b" ")
                self.wfile.flush()
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


class RouterServer(ThreadingHTTPServer):
    daemon_threads = True
    router: FakeRouter

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # refused handshakes and hung-up clients are what some tests are about


def _duration(seconds: int) -> str:
    """As RouterOS writes an uptime: 2d20h12m20s, 1w2d3h4m5s, 7s."""
    parts = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) + (f"{seconds}s" if seconds or not parts else "")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def router(monkeypatch):
    monkeypatch.setenv("ROUTER_PASSWORD", PASSWORD)
    server = RouterServer(("127.0.0.1", 0), RouterHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERT, KEY)
    # the handshake happens in the request's thread, so a stalled client blocks nobody
    server.socket = context.wrap_socket(
        server.socket, server_side=True, do_handshake_on_connect=False
    )
    server.router = FakeRouter()
    server.router.url = f"https://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.router
    server.router.stopped.set()
    server.shutdown()
    server.server_close()


def collector(
    router: FakeRouter,
    *args: str,
    tls: tuple[str, ...] = ("--ca", str(CERT)),
    password: tuple[str, ...] = ("--password-env", "ROUTER_PASSWORD"),
) -> list[str]:
    return stage_cmd(
        "kiri.collect.stage",
        "mikrotik",
        "--url",
        router.url,
        "--user",
        USER,
        *password,
        *tls,
        "--interval",
        "0.1",
        *args,
    )


def collect(router: FakeRouter, *args: str, **options) -> subprocess.CompletedProcess:
    out = subprocess.run(
        collector(router, *args, **options),
        capture_output=True,
        timeout=30,
        env=os.environ,
        check=False,
    )
    assert b"Traceback" not in out.stderr, out.stderr.decode()
    assert PASSWORD.encode() not in out.stdout + out.stderr
    return out


def observations(out: subprocess.CompletedProcess) -> list[Obs]:
    assert out.returncode == 0, out.stderr.decode()
    return [decode(line) for line in out.stdout.splitlines()]


def failures(out: subprocess.CompletedProcess) -> list[tuple[str, str]]:
    return [
        (e["path"], e["reason"])
        for e in log_events(out.stderr)
        if e["event"] == "router_poll_failed"
    ]


def assert_rates(obs: Obs, names=("ether1", "ether2")) -> None:
    for name in names:
        rx, tx = RATES[name]
        assert obs.values[f"{name}:rx"] == pytest.approx(rx, rel=0.05)
        assert obs.values[f"{name}:tx"] == pytest.approx(tx, rel=0.05)


# -- reading a router -------------------------------------------------------------------------


def test_rates_are_counter_deltas_over_the_real_time_between_readings(router):
    def trouble(r):  # between the second and third reading
        ether2 = r.interface("ether2")
        ether2.update({"rx-error": "9", "tx-error": "5", "tx-drop": "2", "link-downs": "1"})

    router.at(3, trouble)
    out = collect(router, "--count", "3", "--interval", "0.2")
    records = observations(out)
    assert len(records) == 3
    # the first reading only primes the counters: three observations take four readings
    assert router.polls == 4 and len(router.requests) == 8
    assert [p for p, _ in router.requests[:2]] == ["/rest/system/resource", "/rest/interface"]
    assert {auth for _, auth in router.requests} == {"Basic " + _b64(f"{USER}:{PASSWORD}")}
    for obs in records:
        assert obs.atom == "mikrotik" and obs.host == "127.0.0.1"
        assert obs.meta == {"version": "7.14 (stable)", "board": "RB5009UG+S+"}
        values = measured(obs.values)
        assert (values["cpu"], values["mem"], values["disk"]) == (7.0, 25.0, 25.0)
        assert values["reboot"] == 0.0
        assert_rates(obs)
        assert values["ether3:rx"] == values["ether3:tx"] == 0.0
        assert values["rx"] == pytest.approx(sum(values[f"ether{i}:rx"] for i in (1, 2, 3)))
        assert values["tx"] == pytest.approx(sum(values[f"ether{i}:tx"] for i in (1, 2, 3)))
        assert (values["ether1:running"], values["ether3:running"]) == (1.0, 0.0)
    quiet, troubled = records[0].values, records[1].values
    assert (quiet["errors"], quiet["drops"], quiet["link_downs"]) == (0.0, 0.0, 0.0)
    assert (troubled["errors"], troubled["drops"], troubled["link_downs"]) == (12.0, 2.0, 1.0)
    assert (troubled["ether2:rx_errors"], troubled["ether2:tx_errors"]) == (7.0, 5.0)
    assert troubled["ether2:tx_drops"] == 2.0 and troubled["ether1:link_downs"] == 0.0
    assert records[2].values["errors"] == 0.0
    assert records[0].ts < records[1].ts < records[2].ts


def test_system_resource_may_be_a_bare_object(router):
    router.bare = True  # the other tests get RouterOS's usual one-element list
    [obs] = observations(collect(router, "--count", "1"))
    assert obs.values["cpu"] == 7.0 and obs.values["mem"] == 25.0


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("2d20h12m20s", 245540),
        ("1w2d3h4m5s", 788645),
        ("45s", 45),
        ("45", 45),
        ("3m", 180),
        ("1h0m1s", 3601),
        ("1s500ms", 1.5),
    ],
)
def test_uptime_is_parsed_to_seconds(text, seconds):
    assert parse_uptime(text) == seconds


@pytest.mark.parametrize("text", ["", "2x", "1d 2h", "h", "-5s", "1.5s"])
def test_an_uptime_that_is_not_a_duration_is_refused(text):
    with pytest.raises(ValueError, match="not a RouterOS duration"):
        parse_uptime(text)


def test_a_counter_that_goes_backwards_gives_no_rate_for_that_interval(router):
    def resets(r):
        r.reset("ether1", "rx-byte")  # one counter of ether1 starts again from zero
        r.reset("ether2", new_id="*9")  # ether2 deleted and made again: all from zero

    router.at(3, resets)
    before, during, after = observations(collect(router, "--count", "3"))
    assert_rates(before)
    assert_rates(after)
    assert "ether1:rx" not in during.values  # went backwards: unknown, not negative
    assert during.values["ether1:tx"] == pytest.approx(RATES["ether1"][1], rel=0.05)
    assert not [k for k in during.values if k.startswith("ether2:") and k != "ether2:running"]
    assert during.values["rx"] == 0.0  # ether1's and ether2's left out, ether3 idle
    assert during.values["tx"] == during.values["ether1:tx"]
    for obs in (before, during, after):
        assert min(measured(obs.values).values()) >= 0.0
    assert after.values["reboot"] == during.values["reboot"] == 0.0


def test_a_reboot_raises_the_flag_and_no_counter_gives_a_rate_across_it(router):
    router.at(3, FakeRouter.reboot)
    before, rebooted, after = observations(collect(router, "--count", "3"))
    assert [o.values["reboot"] for o in (before, rebooted, after)] == [0.0, 1.0, 0.0]
    assert rebooted.values["rx"] == rebooted.values["tx"] == 0.0
    assert rebooted.values["errors"] == rebooted.values["link_downs"] == 0.0
    assert sorted(k for k in rebooted.values if k.startswith("ether")) == [
        "ether1:running",
        "ether2:running",
        "ether3:running",
    ]
    assert_rates(after)


# -- transport and faults --------------------------------------------------------------------


def test_tls_is_verified_refused_without_ca_and_skipped_with_insecure(router):
    out = collect(router, "--count", "1", tls=())
    assert out.returncode == 0 and out.stdout == b""
    [(path, reason)] = failures(out)
    assert path == "/rest/system/resource"
    assert "certificate is not trusted" in reason and "--ca FILE" in reason
    assert router.requests == []  # the password never left

    out = collect(router, "--count", "2", tls=("--insecure",))
    assert [o.values["cpu"] for o in observations(out)] == [7.0, 7.0]
    [warning] = log_events(out.stderr)
    assert warning["event"] == "tls_unverified" and warning["level"] == "warning"


def test_a_wrong_password_is_reported_once_and_polling_goes_on(router, monkeypatch):
    monkeypatch.setenv("ROUTER_PASSWORD", "not-the-password")
    out = collect(router, "--count", "3")
    assert out.returncode == 0 and out.stdout == b""
    assert failures(out) == [
        ("/rest/system/resource", "the router refused user 'kiri' and its password (HTTP 401)")
    ]
    assert len(router.requests) == 3  # three polls, one log line
    assert b"not-the-password" not in out.stderr


def test_a_router_that_stalls_times_out_and_polling_goes_on(router):
    for poll in (1, 2):
        router.fail(poll, "/rest/system/resource", "stall")
    started = time.monotonic()
    out = collect(router, "--count", "3", "--timeout", "0.2")
    assert time.monotonic() - started < 5
    assert failures(out) == [("/rest/system/resource", "no answer within 0.2 s")]
    # the third poll primes, and the reading after it makes the one observation
    [obs] = observations(out)
    assert obs.values["cpu"] == 7.0 and router.polls == 4
    assert [e["event"] for e in log_events(out.stderr)] == ["router_poll_failed", "router_answers"]


def test_an_answer_that_trickles_in_is_cut_off_at_the_timeout(router):
    router.fail(1, "/rest/interface", TRICKLE)
    started = time.monotonic()
    out = collect(router, "--count", "2", "--timeout", "0.3")
    assert time.monotonic() - started < 5
    assert failures(out) == [("/rest/interface", "no answer within 0.3 s")]
    assert len(observations(out)) == 1  # the second poll primes, the reading after it observes


def test_a_router_that_refuses_connections_is_named_and_polling_goes_on(router):
    with socket.socket() as closed:  # a port with nothing listening on it once closed
        closed.bind(("127.0.0.1", 0))
        router.url = f"https://127.0.0.1:{closed.getsockname()[1]}"
    out = collect(router, "--duration", "0.5")
    assert failures(out) == [("/rest/system/resource", "Connection refused")]


def test_a_router_that_never_answers_ends_the_run_with_an_error_naming_the_failure(router):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        router.url = f"https://127.0.0.1:{closed.getsockname()[1]}"
    out = collect(router, "--give-up-polls", "3")
    assert out.returncode == 1 and out.stdout == b""
    where = router.url.removeprefix("https://")
    [error] = [line for line in out.stderr.decode().splitlines() if line.startswith("Error:")]
    assert error.startswith(f"Error: router {where}: 3 polls in a row failed, over ")
    assert error.endswith("; the last: Connection refused")
    [gave_up] = [e for e in log_events(out.stderr) if e["event"] == "source_gave_up"]
    assert gave_up["notify"].startswith(f"router {where}: 3 polls in a row failed")
    assert gave_up["detail"] == "Connection refused"


def test_a_router_that_answers_now_and_then_is_not_given_up(router):
    for reading in (2, 3, 5, 6):  # two failures in a row, twice: never the three that end it
        router.fail(reading, "/rest/interface", b"<html>busy</html>")
    out = collect(router, "--give-up-polls", "3", "--count", "5")
    assert observations(out)  # exit status 0
    assert len(failures(out)) == 2  # each run of failures logged once
    assert "source_gave_up" not in [e["event"] for e in log_events(out.stderr)]


def test_garbage_json_and_missing_fields_are_named_and_polling_goes_on(router):
    router.fail(1, "/rest/interface", b"<html>busy</html>")
    router.fail(2, "/rest/interface", b'[{"name":"ether1","rx-byte":"lots"}]')
    router.at(3, lambda r: r.resource.pop("cpu-load"))
    router.at(4, lambda r: r.resource.update({"cpu-load": "7"}))
    out = collect(router, "--count", "4")
    [(p1, not_json), (p2, not_a_count), (p3, missing)] = failures(out)
    assert p1 == p2 == "/rest/interface" and not_json.startswith("not JSON (")
    assert not_a_count == "rx-byte of ether1 is 'lots', not a count"
    assert (p3, missing) == ("/rest/system/resource", "missing cpu-load")
    assert len(observations(out)) == 1  # polls 4 and 5


def test_a_counter_beyond_a_64_bit_counter_is_named_and_polling_goes_on(router):
    huge = "1" + "0" * 400  # 10**400: beyond float range
    router.at(2, lambda r: r.interface("ether1").update({"rx-error": huge}))
    router.fail(3, "/rest/interface", f'[{{"name":"ether1","tx-drop":{huge}}}]'.encode())
    router.fail(4, "/rest/interface", b'[{"name":"ether1","tx-drop":-1}]')
    router.at(5, lambda r: r.interface("ether1").update({"rx-error": "0"}))
    out = collect(router, "--count", "4")
    assert failures(out) == [
        ("/rest/interface", f"rx-error of ether1 is {huge!r}, not a count"),
        ("/rest/interface", f"tx-drop of ether1 is {int(huge)!r}, not a count"),
        ("/rest/interface", "tx-drop of ether1 is -1, not a count"),
    ]
    [obs] = observations(out)  # polls 1 and 5: the failed readings are not in between
    assert_rates(obs)


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"total-memory": "1e-300"}, "total-memory is '1e-300', not a size in bytes"),
        ({"total-memory": "0"}, "total-memory is '0', not a size in bytes"),
        ({"free-memory": "1e300"}, "free-memory is '1e300', of total-memory '1073741824'"),
        ({"free-memory": "-5"}, "free-memory is '-5', of total-memory '1073741824'"),
        ({"total-hdd-space": 10**400}, f"total-hdd-space is {10**400!r}, not a number"),
    ],
)
def test_an_absurd_size_fails_that_reading_alone(router, change, reason):
    sane = dict(router.resource)
    router.at(2, lambda r: r.resource.update(change))
    router.at(3, lambda r: r.resource.update(sane))
    out = collect(router, "--count", "2")
    assert failures(out) == [("/rest/system/resource", reason)]
    [obs] = observations(out)  # polls 1 and 3: memory and disk as the router says
    values = measured(obs.values)
    assert 0 <= values["mem"] <= 100 and 0 <= values["disk"] <= 100


def test_an_interface_name_too_long_for_an_observation_is_left_out_with_a_warning(router):
    long = "x" * 200_000  # eight keys of it would make a line over the 1 MiB a stage reads
    router.interfaces.append(dict(router.interface("ether2"), name=long, **{".id": "*9"}))
    router.since.update({(long, counter): time.monotonic() for counter in BYTES})
    out = collect(router, "--count", "2")
    assert all(len(line) < 4096 for line in out.stdout.splitlines())
    assert len(observations(out)) == 2, out.stderr
    for obs in observations(out):
        assert_rates(obs)
        assert max(map(len, obs.values)) < 100
    [warning] = [e for e in log_events(out.stderr) if e["event"] == "source_text_too_long"]
    assert warning["reason"] == f"a value name over {MAX_TEXT} characters"
    assert warning["example"] == "x" * 40


@pytest.mark.parametrize("sized", [True, False], ids=["Content-Length", "no length"])
def test_an_oversized_answer_is_refused_without_reading_it_whole(router, sized):
    huge = b"[" + b" " * (2 << 20) + b"]" if sized else ENDLESS
    router.fail(1, "/rest/interface", huge)
    out = collect(router, "--count", "1", "--timeout", "5")
    [(path, reason)] = failures(out)
    assert path == "/rest/interface"
    assert reason == (
        "answer of 2097154 bytes, larger than 1048576"
        if sized
        else "answer larger than 1048576 bytes"
    )


# -- configuration and secrets ---------------------------------------------------------------


def test_the_password_comes_from_a_private_file(router, tmp_path):
    secret = tmp_path / "router-password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    [obs] = observations(collect(router, "--count", "1", password=("--password-file", str(secret))))
    assert obs.values["cpu"] == 7.0
    asked = len(router.requests)

    secret.chmod(0o644)
    out = collect(router, "--count", "1", password=("--password-file", str(secret)))
    assert out.returncode == 1 and out.stdout == b""
    assert out.stderr.decode() == (
        f"Error: --password-file {secret} is readable by others (mode 644); chmod 600 it\n"
    )
    assert len(router.requests) == asked  # refused before asking the router anything


def test_a_password_is_never_taken_on_the_command_line(router):
    out = run(
        "kiri.collect.stage",
        "mikrotik",
        "--url",
        router.url,
        "--user",
        USER,
        "--password",
        PASSWORD,
    )
    # argparse refuses it, in argparse's words; KIRI's part is the exit status and no request.
    assert out.returncode == 2 and out.stdout == b"" and out.stderr.strip()
    assert PASSWORD.encode() not in out.stderr and router.requests == []


def test_without_url_the_router_comes_from_config_toml(router, kiri_home, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD)
    secret.chmod(0o600)
    kiri_home.mkdir(parents=True, exist_ok=True)
    (kiri_home / "config.toml").write_text(
        f'[mikrotik]\nurl = "{router.url}"\nuser = "{USER}"\npassword_file = "{secret}"\n'
        f'ca = "{CERT}"\n'
    )
    out = run(
        "kiri.collect.stage", "mikrotik", "--count", "1", "--interval", "0.1", "--host", "gateway"
    )
    [obs] = observations(out)
    assert obs.host == "gateway" and obs.values["cpu"] == 7.0


@pytest.mark.parametrize("config", [None, '[mikrotik]\nuser = "kiri"\n'])
def test_no_router_configured_exits_125_with_one_line(kiri_home, config):
    if config:
        kiri_home.mkdir(parents=True, exist_ok=True)
        (kiri_home / "config.toml").write_text(config)
    out = run("kiri.collect.stage", "mikrotik")
    assert out.returncode == 125 and out.stdout == b""
    [line] = out.stderr.decode().splitlines()
    [event] = log_events(line)
    assert event["event"] == "no_router" and event["level"] == "warning"
    assert event["reason"] == (
        f"no --url, and no url in [mikrotik] of {kiri_home}/config.toml: "
        f"nothing to poll, not restarting"
    )


@pytest.mark.parametrize(
    "url, error",
    [
        (
            "http://127.0.0.1",
            "Error: the router's URL must be https://HOST[:PORT], not "
            "'http://127.0.0.1': RouterOS sends the password with every request",
        ),
        (
            f"https://kiri:{PASSWORD}@127.0.0.1",
            "Error: put the user in --user and the password in "
            "--password-env or --password-file, not in the router's URL",
        ),
    ],
)
def test_a_router_url_that_would_expose_the_password_is_refused(router, url, error):
    out = run(
        "kiri.collect.stage",
        "mikrotik",
        "--url",
        url,
        "--user",
        USER,
        "--password-env",
        "ROUTER_PASSWORD",
    )
    assert out.returncode == 1 and out.stderr.decode() == error + "\n"
    assert router.requests == []


# -- signals and readers ---------------------------------------------------------------------


def test_sigterm_while_polling_exits_cleanly_on_a_whole_line(router):
    proc = subprocess.Popen(collector(router), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    proc.stdout.readline()
    with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
        assert PASSWORD.encode() not in f.read()
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=5)
    assert proc.returncode == 0 and b"Traceback" not in err
    assert decode(first).atom == "mikrotik"
    assert rest == b"" or rest.endswith(b"\n")
    assert all(decode(line) for line in rest.splitlines())


def test_a_closed_reader_ends_the_collector_quietly(router):
    proc = subprocess.Popen(collector(router), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=5) == 0
    assert proc.stderr.read() == b""


# -- learning from it ------------------------------------------------------------------------


def test_kiri_trains_on_recorded_observations_and_the_atom_scores_them(router, kiri_home):
    out = collect(router, "--count", "12", "--interval", "0.05", "--record")
    recorded = observations(out)
    [day] = (kiri_home / "data" / "mikrotik").glob("*.ndjson")
    assert day.read_bytes() == out.stdout

    trained = run(
        "kiri.cli",
        "train",
        "mikrotik",
        "--from",
        str(day),
        "--steps",
        "50",
        "--samples",
        "0",
        timeout=120,
    )
    assert trained.returncode == 0, trained.stderr.decode()
    assert trained.stdout.decode().splitlines()[0] == "loaded 12 observations from 1 files"

    usual = recorded[-1]
    flood = msgspec.structs.replace(
        usual,
        ts=usual.ts + 1,
        values={**usual.values, "rx": measured(usual.values)["rx"] * 100, "reboot": 1.0},
    )
    stream = b"".join(msgspec.json.encode(o) + b"\n" for o in (usual, flood))
    scored = run("kiri.score.stage", "mikrotik", input=stream)
    assert scored.returncode == 0, scored.stderr.decode()
    calm, alarming = [msgspec.json.decode(s, type=Score) for s in scored.stdout.splitlines()]
    assert len(calm.tokens) == 9 and calm.tokens[-1] == "R0"
    assert alarming.tokens[-1] == "R1" and alarming.tokens[3] == "rx:17"
    assert alarming.surprise > calm.surprise + 1
