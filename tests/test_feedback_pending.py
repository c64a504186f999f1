"""kiri-feedback forgets the decisions whose deliveries all failed: what it keeps stays bounded."""

import msgspec
from conftest import log_events, run

from kiri.feedback.stage import PENDING_WINDOW
from kiri.home.store import Store
from kiri.wire.records import Decision, Outcome

encode = msgspec.json.Encoder().encode


def decision(i: int) -> bytes:
    return encode(
        Decision(
            ts=1000.0 + i,
            id=f"a{i}",
            atom="pulse",
            host="vm",
            action="alert",
            surprise=2.6,
            threshold=1.0,
            culprits=[("C9", 9.5)],
        )
    )


def outcome(i: int, ok: bool, sink: str = "webhook") -> bytes:
    return encode(Outcome(id=f"a{i}", action="alert", sink=sink, ok=ok))


def test_a_decision_every_delivery_failed_is_forgotten_once_its_outcomes_are_all_in(kiri_home):
    n = PENDING_WINDOW + 5
    lines = [line for i in range(n) for line in (decision(i), outcome(i, ok=False))]
    # too late for a0, forgotten; the newest fails on one sink, succeeds on the next
    lines += [outcome(0, ok=True), outcome(n - 1, ok=True, sink="log")]
    out = run("kiri.feedback.stage", input=b"".join(line + b"\n" for line in lines))
    assert out.returncode == 0, out.stderr.decode()
    with Store() as store:
        assert [a.id for a in store.alerts()] == [f"a{n - 1}"]
    forgotten = [e for e in log_events(out.stderr) if e["event"] == "alert_undelivered"]
    assert [(e["id"], e["failures"]) for e in forgotten] == [(f"a{i}", 1) for i in range(5)]
    assert forgotten[-1]["undelivered"] == 5
