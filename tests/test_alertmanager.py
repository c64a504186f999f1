"""The Alertmanager sink and `kiri feedback dismiss --for`, against a real Alertmanager.

One prometheus-alertmanager (Debian's package) runs for the whole module, grouping by host and
incident and notifying a webhook receiver in this test, so what is checked is what Alertmanager
itself reports: its alerts, groups, silences and notifications. Each test uses a host of its own.
"""

import json
import os
import queue
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from datetime import datetime
from typing import IO

import pytest
from conftest import fixture_bytes, run, stage_cmd
from scripted_http import Answer, scripted_server

from kiri.feedback.verdicts import silence_for
from kiri.home.store import Store
from kiri.wire.records import Decision

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
ALERT = json.loads(fixture_bytes("decisions.ndjson").splitlines()[3])
SUMMARY = ALERT["summary"]
CULPRITS = "M9 (z 12.1); C9 (z 9.4)"  # the named ones: S2 and L4 are below the threshold

pytestmark = pytest.mark.servers(ALERTMANAGER)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def receiver():
    """Alertmanager's webhook receiver: its address, and the handler that keeps every
    notification."""
    with scripted_server() as server:
        yield server


@pytest.fixture(scope="module")
def am(tmp_path_factory, receiver):
    """Alertmanager's URL, once it is ready."""
    data = tmp_path_factory.mktemp("alertmanager")
    (data / "am.yml").write_text(f"""
route:
  receiver: kiri-test
  group_by: [host, incident]
  group_wait: 100ms
  group_interval: 500ms
  repeat_interval: 1h
receivers:
  - name: kiri-test
    webhook_configs:
      - url: http://{receiver[0]}/
        send_resolved: true
""")
    port = free_port()
    with open(data / "am.log", "wb") as log:  # the server keeps its own copy
        proc = subprocess.Popen(
            [
                ALERTMANAGER,
                f"--config.file={data / 'am.yml'}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--storage.path={data}",
                "--cluster.listen-address=",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), what="Alertmanager ready", timeout=15)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _ready(url: str) -> bool:
    try:
        return urllib.request.urlopen(f"{url}/-/ready", timeout=1).status == 200
    except OSError:
        return False


def wait_for(check, what: str, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)
    return result


def get(am: str, path: str):
    return json.loads(urllib.request.urlopen(am + path, timeout=5).read())


def active(am: str, host: str) -> list[dict]:
    """The alerts Alertmanager holds for `host` and does not consider resolved, by atom."""
    found = get(am, "/api/v2/alerts?filter=" + urllib.parse.quote(f'host="{host}"'))
    return sorted(found, key=lambda a: a["labels"]["atom"])


def notified(receiver, host: str, status: str) -> list[dict]:
    notifications = [json.loads(r.body) for r in receiver[1].seen]
    return [
        n for n in notifications if n["groupLabels"].get("host") == host and n["status"] == status
    ]


def seconds(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def host() -> str:
    return f"host-{uuid.uuid4().hex[:8]}"


def configure(kiri_home, am: str, **settings) -> None:
    lines = [f'url = "{am}"', 'generator_url = "http://kiri.test/alerts/{id}"']
    lines += [f"{k} = {v}" for k, v in settings.items()]
    kiri_home.mkdir(exist_ok=True)
    (kiri_home / "config.toml").write_text("[alertmanager]\n" + "\n".join(lines) + "\n")


def decision(
    host: str,
    action: str = "alert",
    id: str = "d-1",
    incident: str = "i-1",
    atoms: tuple = ("pulse",),
    severity: str = "warning",
) -> bytes:
    fields = {
        **ALERT,
        "id": id,
        "host": host,
        "action": action,
        "incident": incident,
        "atom": atoms[0],
        "atoms": list(atoms),
        "severity": severity,
    }
    return json.dumps(fields).encode()


def ok(host: str) -> bytes:
    return json.dumps(
        {"kind": "decision", "id": "d-0", "atom": "pulse", "host": host, "action": "ok"}
    ).encode()


class Act:
    """kiri-act --sink alertmanager, running: decisions written in, outcomes read out."""

    def __enter__(self):
        self.proc = subprocess.Popen(
            stage_cmd("kiri.act.stage", "--sink", "alertmanager", "--retries", "0"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=os.environ,
        )
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        self.stdin, self.stderr = self.proc.stdin, self.proc.stderr
        self.lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        return self

    def _read(self, stdout: IO[bytes]) -> None:
        for line in stdout:
            self.lines.put(line)

    def send(self, *lines: bytes) -> None:
        self.stdin.write(b"".join(line + b"\n" for line in lines))
        self.stdin.flush()

    def outcome(self) -> dict:
        while (record := json.loads(self.lines.get(timeout=10)))["kind"] != "outcome":
            pass
        return record

    def __exit__(self, *exc):
        self.stdin.close()
        assert self.proc.wait(10) == 0, self.stderr.read().decode()
        self.stderr.close()


def deliver(*lines: bytes) -> list[dict]:
    """Run kiri-act on these decisions; the outcomes."""
    with Act() as act:
        act.send(*lines)
        return [act.outcome() for line in lines if json.loads(line)["action"] != "ok"]


# -- alerts --------------------------------------------------------------------------------------


def test_an_alert_is_active_in_alertmanager_as_one_alert_per_atom(am, host, kiri_home):
    configure(kiri_home, am)
    [outcome] = deliver(decision(host, atoms=("pulse", "rhythm")))
    assert outcome["ok"] and outcome["detail"] == "POST /api/v2/alerts: 2 firing, 0 resolved"
    alerts = active(am, host)
    assert [a["labels"] for a in alerts] == [
        {
            "alertname": "KiriAnomaly",
            "host": host,
            "atom": atom,
            "incident": "i-1",
            "severity": "warning",
        }
        for atom in ("pulse", "rhythm")
    ]
    head = f"d-1 WARNING pulse, rhythm@{host}: {SUMMARY}"  # as every sink tells it
    for a in alerts:
        assert a["annotations"] == {
            "summary": head,
            "description": f"{head}\nd-1   M9 (z 12.1)\nd-1   C9 (z 9.4)",
            "culprits": CULPRITS,
            "id": "d-1",
            "short_id": "d-1",
        }
        assert a["status"]["state"] == "active"
        assert a["generatorURL"] == "http://kiri.test/alerts/d-1"
        assert seconds(a["endsAt"]) - seconds(a["startsAt"]) == pytest.approx(4 * 60, abs=2)


def test_an_incidents_atoms_are_grouped_and_notified_together_then_resolved(
    am, host, kiri_home, receiver
):
    configure(kiri_home, am)
    with Act() as act:
        act.send(
            decision(host, atoms=("pulse", "rhythm")),
            decision(host, id="d-2", incident="i-2", atoms=("drift",)),
        )
        act.outcome(), act.outcome()
        groups = [g for g in get(am, "/api/v2/alerts/groups") if g["labels"].get("host") == host]
        assert sorted(
            (
                g["labels"]["incident"],
                g["receiver"]["name"],
                sorted(a["labels"]["atom"] for a in g["alerts"]),
            )
            for g in groups
        ) == [("i-1", "kiri-test", ["pulse", "rhythm"]), ("i-2", "kiri-test", ["drift"])]
        [firing] = wait_for(
            lambda: [
                n
                for n in notified(receiver, host, "firing")
                if n["groupLabels"]["incident"] == "i-1"
            ],
            "notification",
        )
        assert sorted(a["labels"]["atom"] for a in firing["alerts"]) == ["pulse", "rhythm"]

        act.send(decision(host, "resolve", id="d-3", incident="i-1", atoms=("rhythm",)))
        assert act.outcome()["detail"] == "POST /api/v2/alerts: 1 firing, 2 resolved"
        assert [a["labels"]["incident"] for a in active(am, host)] == ["i-2"]
        [resolved] = wait_for(lambda: notified(receiver, host, "resolved"), "resolved notification")
        assert resolved["groupLabels"] == {"host": host, "incident": "i-1"}
        assert [a["status"] for a in resolved["alerts"]] == ["resolved", "resolved"]


def test_re_sending_keeps_an_open_alert_active_past_its_first_ends_at(am, host, kiri_home):
    configure(kiri_home, am, resend=0.3)  # endsAt: 1.2 s ahead
    with Act() as act:
        act.send(decision(host))
        act.outcome()
        [first] = active(am, host)
        first_end = seconds(first["endsAt"])
        while time.time() < first_end + 0.5:  # kiri-act re-sends as `ok` decisions go by
            act.send(ok(host))
            time.sleep(0.1)
        [later] = active(am, host)
        assert later["startsAt"] == first["startsAt"]
        assert seconds(later["endsAt"]) > time.time() > first_end
    # kiri-act is gone: nothing re-sends it, and it expires at its last endsAt
    wait_for(lambda: active(am, host) == [], "expiry", timeout=3)


def test_another_severity_in_the_same_incident_ends_the_old_alert(am, host, kiri_home):
    configure(kiri_home, am)
    [_, outcome] = deliver(decision(host), decision(host, id="d-2", severity="critical"))
    assert outcome["detail"] == "POST /api/v2/alerts: 1 firing, 1 resolved"
    [alert] = active(am, host)
    assert alert["labels"]["severity"] == "critical" and alert["annotations"]["id"] == "d-2"


def test_a_resolve_of_an_incident_never_sent_sends_nothing(am, host, kiri_home):
    configure(kiri_home, am)
    [outcome] = deliver(decision(host, "resolve", incident="i-9"))
    assert outcome["ok"] and outcome["detail"] == "no open alert of incident i-9"


def test_an_alertmanager_that_does_not_answer_fails_the_delivery(kiri_home, host):
    configure(kiri_home, f"http://127.0.0.1:{free_port()}")
    [outcome] = deliver(decision(host))
    assert not outcome["ok"]
    assert outcome["error"].startswith("POST /api/v2/alerts: ")
    assert outcome["error"].removeprefix("POST /api/v2/alerts: ").strip()  # the system's reason


def test_a_refusal_is_not_sent_again_and_a_busy_alertmanager_is(kiri_home, host):
    with scripted_server() as (where, handler):
        configure(kiri_home, f"http://{where}")
        handler.script += [Answer(400, b"bad alert"), Answer(503, b"busy"), Answer(200)]
        acted = [
            run(
                "kiri.act.stage",
                "--sink",
                "alertmanager",
                "--retries",
                "2",
                input=decision(host, id=f"d-{i}", incident=f"i-{i}"),
            )
            for i in (1, 2)
        ]
    refused, retried = (json.loads(a.stdout.splitlines()[-1]) for a in acted)
    assert not refused["ok"] and "HTTP 400" in refused["error"]
    assert retried["ok"]
    assert len(handler.seen) == 3  # the 400 once; the 503, then its retry


def test_without_alertmanager_configured_the_sink_refuses_to_start(kiri_home):
    out = run("kiri.act.stage", "--sink", "alertmanager", input=decision("vm"))
    assert out.returncode == 1
    assert out.stderr.decode().startswith(
        'Error: --sink alertmanager needs url = "http://…:9093" in [alertmanager] of '
    )


# -- silences ------------------------------------------------------------------------------------


def stored(host: str, **fields) -> Decision:
    """An alert delivered and kept in the store, as kiri-feedback keeps it."""
    d = Decision(**{k: v for k, v in ALERT.items() if k != "kind"})
    d.host, d.atoms = host, ["pulse", "rhythm"]
    for key, value in fields.items():
        setattr(d, key, value)
    with Store() as store:
        store.record_alert(d, "C9 M9")
    return d


def test_dismiss_for_silences_the_alerts_atoms_on_its_host(am, host, kiri_home):
    configure(kiri_home, am)
    d = stored(host)
    deliver(decision(host, atoms=tuple(d.atoms)))
    out = run("kiri.cli", "feedback", "dismiss", d.id, "--for", "1h", "--note", "nightly backup")
    assert out.returncode == 0, out.stderr
    first, *_, second = out.stdout.decode().splitlines()
    assert first == f"alert {d.id} dismissed"
    assert second.startswith(f"silenced pulse, rhythm on {host} in Alertmanager until ")
    silence_id = second.rsplit("silence ", 1)[1]

    [silence] = [s for s in get(am, "/api/v2/silences") if s["id"] == silence_id]
    assert silence["matchers"] == [
        {"name": "alertname", "value": "KiriAnomaly", "isRegex": False, "isEqual": True},
        {"name": "host", "value": host, "isRegex": False, "isEqual": True},
        {"name": "atom", "value": "pulse|rhythm", "isRegex": True, "isEqual": True},
    ]
    assert (silence["createdBy"], silence["comment"]) == ("kiri", "nightly backup")
    assert silence["status"]["state"] == "active"
    assert seconds(silence["endsAt"]) - seconds(silence["startsAt"]) == pytest.approx(3600, abs=2)
    alerts = active(am, host)
    assert [
        (a["labels"]["atom"], a["status"]["state"], a["status"]["silencedBy"]) for a in alerts
    ] == [("pulse", "suppressed", [silence_id]), ("rhythm", "suppressed", [silence_id])]
    with Store() as store:
        assert store.alerts()[0].verdict == "dismiss"


def silences_of(am: str, host: str) -> list[dict]:
    return [
        s
        for s in get(am, "/api/v2/silences")
        if {"name": "host", "value": host, "isRegex": False, "isEqual": True} in s["matchers"]
    ]


def test_dismiss_for_again_updates_its_silence_and_a_confirmation_ends_it(am, host, kiri_home):
    configure(kiri_home, am)
    d = stored(host, id="5ee5ee5ee5ee")
    first = run("kiri.cli", "feedback", "dismiss", "5ee5", "--for", "1h")
    assert first.returncode == 0, first.stderr
    silence_id = first.stdout.decode().rsplit("silence ", 1)[1].strip()
    # the silence is active and its start behind us, as when a person repeats --for later:
    # an update that moved the start would make Alertmanager replace it with a new id
    [made] = silences_of(am, host)
    assert made["status"]["state"] == "active"
    while time.time() < seconds(made["startsAt"]) + 0.5:
        time.sleep(0.05)
    again = run("kiri.cli", "feedback", "dismiss", "last", "--for", "3h")
    assert again.returncode == 0, again.stderr
    lines = again.stdout.decode().splitlines()
    assert lines[0] == "alert 5ee5ee dismissed (already recorded)"
    assert lines[-1].startswith(f"silence updated: pulse, rhythm on {host} in Alertmanager until ")
    assert lines[-1].endswith(f": silence {silence_id}")
    [silence] = silences_of(am, host)  # one silence, now three hours long
    assert silence["id"] == silence_id and silence["status"]["state"] == "active"
    assert seconds(silence["endsAt"]) - time.time() == pytest.approx(3 * 3600, abs=5)

    out = run("kiri.cli", "feedback", "confirm", d.id)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines() == [
        "alert 5ee5ee confirmed (it was dismissed)",
        f"ended the Alertmanager silence {silence_id} of its dismissal",
    ]
    [silence] = silences_of(am, host)
    assert silence["status"]["state"] == "expired"
    with Store() as store:
        assert store.silence(d.id) is None


def test_dismiss_for_without_alertmanager_is_an_error_and_records_nothing(kiri_home, host):
    d = stored(host)
    out = run("kiri.cli", "feedback", "dismiss", d.id, "--for", "2h")
    assert out.returncode == 1 and out.stdout == b""
    assert out.stderr.decode().startswith(
        "Error: --for silences the alert in Alertmanager, and there is no [alertmanager] url in "
    )
    with Store() as store:
        assert store.alerts()[0].verdict == ""


def test_a_duration_is_a_number_and_a_unit_or_several(kiri_home):
    assert [silence_for(t) for t in ("90s", "30m", "2h", "1d", "1w", "1h30m")] == [
        90,
        1800,
        7200,
        86400,
        604800,
        5400,
    ]
    out = run("kiri.cli", "feedback", "dismiss", "d-1", "--for", "2 hours")
    assert out.returncode == 2
    assert "not a duration such as 30m, 2h or 1d: '2 hours'" in out.stderr.decode()
