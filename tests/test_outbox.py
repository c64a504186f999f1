"""kiri-act's outbox, through the real executables: a delivery that fails is kept, tried again in
the background while the stream goes on, outlives a restart, is delivered once, and is given up
in the end; kiri-feedback records a delivery that came late."""

import json
import os
import select
import subprocess
import sys
import time

import msgspec
import pytest
from conftest import fixture_bytes, log_events, run, stage_cmd
from scripted_http import Answer, scripted_server

from kiri.act.sinks.webhook import with_text
from kiri.home.store import Store
from kiri.wire.records import Decision

LINES = fixture_bytes("decisions.ndjson").splitlines()
ALERT, RESOLVE = LINES[3], LINES[7]
FAST = ("--retries", "0", "--outbox-retry", "0.05")  # no quick retries; the outbox soon after


@pytest.fixture
def receiver(kiri_home):
    with scripted_server() as (where, handler):
        kiri_home.mkdir(exist_ok=True)
        (kiri_home / "config.toml").write_text(
            f'[webhook]\nurl = "http://{where}/hook"\ntimeout = 2\n'
        )
        yield handler


class Act:
    """kiri-act running (--sink webhook unless told), its stdin open: lines in, records out as
    they come."""

    def __init__(self, *args: str, sink: tuple[str, ...] = ("--sink", "webhook")) -> None:
        self.proc = subprocess.Popen(
            stage_cmd("kiri.act.stage", *FAST, *args, *sink),  # an exec command last
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=os.environ,
        )
        self.pending = b""
        self.raw: list[bytes] = []

    def send(self, *lines: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"".join(line + b"\n" for line in lines))
        self.proc.stdin.flush()

    def next(self, timeout: float = 10) -> dict:
        """The next record it writes (waiting for it, at most `timeout` seconds)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            assert left > 0 and select.select([fd], [], [], left)[0], "no record in time"
            chunk = os.read(fd, 65536)
            assert chunk, "kiri-act ended"
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        self.raw.append(line)
        return json.loads(line)

    def outcome(self, timeout: float = 10) -> dict:
        while (record := self.next(timeout))["kind"] != "outcome":
            pass
        return record

    def end(self) -> list[dict]:
        """Close its input; the log events it wrote."""
        _, err = self.proc.communicate(timeout=10)
        assert self.proc.returncode == 0, err
        return log_events(err)


def sent(body: bytes) -> bytes:
    """The decision line a webhook body was made from: the body without the text it adds."""
    cut = body.rindex(b',"text":')
    decision = body[:cut] + b"}"
    assert with_text(decision, msgspec.json.decode(decision, type=Decision)) == body
    return decision


def waiting(kiri_home) -> list[tuple[str, str, int]]:
    with Store(kiri_home / "kiri.db") as store:
        return store.db.execute("SELECT id, sink, attempts FROM outbox ORDER BY rowid").fetchall()


def test_a_failed_delivery_is_kept_and_delivered_later_while_new_ones_flow(receiver):
    receiver.script += [Answer(503, b"down")] * 3
    act = Act()
    act.send(ALERT)
    queued = act.outcome()
    assert (queued["id"], queued["ok"], queued["error"].split(": ", 1)[1]) == (
        "d-1",
        False,
        "HTTP 503 down",
    )
    assert queued["detail"].startswith("attempts: 1; kept in the outbox, tried until ")
    act.send(RESOLVE)  # goes behind it untried, at once, while the alert waits
    behind = act.outcome()
    assert (behind["id"], behind["ok"]) == ("d-4", False)
    assert behind["error"] == "1 earlier deliveries wait in the outbox"
    # then the background tries: two more 503s, then both go, in order, each with its decision
    late = [act.next() for _ in range(4)]
    assert [(r["kind"], r["id"]) for r in late] == [
        ("decision", "d-1"),
        ("outcome", "d-1"),
        ("decision", "d-4"),
        ("outcome", "d-4"),
    ]
    assert act.raw[-4] == ALERT and act.raw[-2] == RESOLVE  # the decisions as they came
    assert late[1]["ok"] and "from the outbox, after 4 attempts in " in late[1]["detail"]
    assert late[3]["ok"] and "after 1 attempts" in late[3]["detail"]
    events = act.end()
    assert [sent(r.body) for r in receiver.seen] == [ALERT] * 4 + [RESOLVE]
    assert {r.headers["Idempotency-Key"] for r in receiver.seen[:4]} == {"d-1"}
    assert [e["id"] for e in events if e["event"] == "outbox_delivered"] == ["d-1", "d-4"]


def test_the_outbox_outlives_a_restart_and_delivers_once(receiver, kiri_home):
    receiver.script += [Answer(503, b"down")]
    out = run("kiri.act.stage", "--sink", "webhook", *FAST, input=ALERT + b"\n")
    assert out.returncode == 0
    assert waiting(kiri_home) == [("d-1", "webhook", 1)]  # its input ended while it waited
    act = Act()  # the receiver is back: on start, what waits is tried at once
    assert [act.next()["kind"], act.outcome()["ok"]] == ["decision", True]
    act.end()
    assert waiting(kiri_home) == []
    again = run("kiri.act.stage", "--sink", "webhook", *FAST)
    assert again.returncode == 0 and again.stdout == b""
    assert [sent(r.body) for r in receiver.seen] == [ALERT, ALERT]  # the 503, then the one delivery


def test_a_late_delivery_is_recorded_by_kiri_feedback(receiver, kiri_home):
    receiver.script += [Answer(503, b"down")]
    first = run("kiri.act.stage", "--sink", "webhook", *FAST, input=ALERT + b"\n")
    fed = run("kiri.feedback.stage", input=first.stdout)  # the decision, one failed outcome
    assert fed.returncode == 0
    with Store(kiri_home / "kiri.db") as store:
        assert store.alerts() == []
    act = Act()
    act.outcome()
    act.end()
    fed = run("kiri.feedback.stage", input=b"\n".join(act.raw) + b"\n")  # after a restart too
    assert fed.returncode == 0
    with Store(kiri_home / "kiri.db") as store:
        assert [a.id for a in store.alerts()] == ["d-1"]


def test_a_delivery_that_keeps_failing_is_given_up_in_the_end(receiver, kiri_home):
    receiver.script += [Answer(503, b"down")] * 1000
    act = Act("--outbox-keep", "0.5")
    act.send(ALERT)
    assert "kept in the outbox" in act.outcome()["detail"]
    given_up = act.outcome()
    assert (given_up["id"], given_up["ok"], given_up["error"].split(": ", 1)[1]) == (
        "d-1",
        False,
        "HTTP 503 down",
    )
    assert given_up["detail"].startswith("given up after ")
    assert [e["id"] for e in act.end() if e["event"] == "outbox_given_up"] == ["d-1"]
    assert waiting(kiri_home) == []


def test_a_refusal_is_not_kept(receiver, kiri_home):
    receiver.script += [Answer(400, b"no such hook")]
    out = run("kiri.act.stage", "--sink", "webhook", *FAST, input=ALERT + b"\n")
    [outcome] = [json.loads(line) for line in out.stdout.splitlines() if b"outcome" in line]
    assert (outcome["ok"], outcome["detail"]) == (False, "attempts: 1")
    assert waiting(kiri_home) == []


def test_a_command_that_fails_for_a_while_gets_the_decision_from_the_outbox(kiri_home, tmp_path):
    got, tries = tmp_path / "got", tmp_path / "tries"
    code = (  # fails its first three runs, then keeps what it is given
        "import sys; t = open(sys.argv[1], 'a+'); t.write('x'); t.seek(0)\n"
        "if len(t.read()) <= 3: sys.exit('pager unreachable')\n"
        "open(sys.argv[2], 'ab').write(sys.stdin.buffer.read())"
    )
    act = Act(sink=("--sink", "exec", "--", sys.executable, "-c", code, str(tries), str(got)))
    act.send(ALERT)
    queued = act.outcome()
    assert (queued["ok"], queued["error"]) == (False, "exit status 1: pager unreachable")
    delivered = act.outcome()
    assert delivered["ok"] and delivered["detail"].startswith("exit status 0; from the outbox")
    act.end()
    assert got.read_bytes() == ALERT + b"\n"
