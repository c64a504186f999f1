"""kiri-decide: scores in, one decision per score, with the k-of-n incident policy."""

import json
import signal
import subprocess

import msgspec
from conftest import fixture_bytes, log_events, run, stage_cmd

from kiri.wire.patterns import culprit_order
from kiri.wire.records import Decision, Score

encode = msgspec.json.Encoder().encode
decode = msgspec.json.Decoder(Decision).decode
KINDS = fixture_bytes("kinds.ndjson").splitlines()


PULSE_FIELDS = {
    "C": ("cpu", "CPU", "%"),
    "M": ("mem", "memory", "%"),
    "D": ("disk", "disk", "%"),
    "S": ("swap", "swap", "%"),
    "L": ("load", "load", ""),
    "N": ("net", "network up", ""),
}


def score(ts, surprise, host="vm", threshold=1.0, tokens=None, nll=None, spread=None, early=False):
    tokens = tokens or ["C5", "M5", "D4", "S1", "L1", "N1"]
    nll = nll or [surprise] * len(tokens)
    return encode(
        Score(
            ts=ts,
            atom="pulse",
            host=host,
            surprise=surprise,
            threshold=threshold,
            tokens=tokens,
            nll=nll,
            spread=spread or [],
            fields=[PULSE_FIELDS[t[0]] for t in tokens],
            early=early,
            values={"cpu": 97.0, "mem": 95.4, "disk": 40.0, "swap": 0.0, "load": 2.0, "net": 1.0},
        )
    )


def decide(lines, *args):
    out = run("kiri.decide.stage", *args, input=b"\n".join(lines) + b"\n")
    assert out.returncode == 0, out.stderr
    return [decode(line) for line in out.stdout.splitlines()], out


def actions(decisions):
    return "".join({"ok": ".", "alert": "A", "resolve": "R"}[d.action] for d in decisions)


def test_k_of_n_opens_one_incident_and_resolves_after_n_below():
    surprises = [0.1, 2, 0.1, 2, 2, 2, 2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    decisions, _ = decide([score(i, s) for i, s in enumerate(surprises)])
    assert actions(decisions) == "....A......R."  # 3 of 5 at the 5th; 5 below at the 12th
    incident = decisions[4].incident
    assert incident and all(d.incident == incident for d in decisions[4:12])
    assert decisions[12].incident == ""
    assert len({d.id for d in decisions}) == len(decisions)


def test_isolated_spikes_never_alert():
    decisions, _ = decide([score(i, 5.0 if i % 3 == 0 else 0.1) for i in range(30)])
    assert actions(decisions) == "." * 30


def test_an_open_incident_renotifies_only_after_repeat():
    decisions, _ = decide([score(i * 60, 3.0) for i in range(130)], "--repeat", "3600")
    # the second unusual minute already stands for 60 s (--for 15): the alert comes there
    assert [i for i, d in enumerate(decisions) if d.action == "alert"] == [1, 61, 121]
    assert len({d.incident for d in decisions[2:]}) == 1


def test_one_unusual_observation_of_a_slow_atom_alerts_when_it_stands_for_long_enough():
    hourly, _ = decide([score(i * 3600, 3.0 if i == 4 else 0.1) for i in range(8)])
    assert actions(hourly) == "....A..."  # one hour above the threshold: more than --for 15
    # a gap is not an hour of evidence: the first score after the stream began stands for none
    first, _ = decide([score(0, 3.0), score(1, 0.1)])
    assert actions(first) == ".."
    two_minutes, _ = decide(
        [score(i * 60, 3.0 if i == 4 else 0.1) for i in range(8)], "--for", "120"
    )
    assert actions(two_minutes) == "." * 8


def test_rarity_ranks_a_surprise_against_the_streams_own_record():
    quiet = [score(i, 0.1 + 0.01 * (i % 7)) for i in range(200)]
    # a host that is often unusual: its high scores are less rare than a quiet host's
    busy = [score(i, 3.0 if i % 10 < 3 else 0.1, host="busy") for i in range(200)]
    decisions, _ = decide([*quiet, *(score(200 + i, 3.0) for i in range(3)), *busy])
    rarity = {(d.host, d.action): d.rarity for d in decisions if d.action == "alert"}
    assert rarity[("vm", "alert")] > 0.98  # never this high before
    assert rarity[("busy", "alert")] < rarity[("vm", "alert")]
    later = [d for d in decisions if d.host == "busy" and d.action == "alert"][-1]
    assert later.rarity < 0.9  # its record now holds many scores as high


def test_hosts_are_tracked_apart():
    lines = [score(i, 3.0, host=h) for i in range(3) for h in ("a", "b")]
    decisions, _ = decide(lines)
    assert [(d.host, d.action) for d in decisions if d.action == "alert"] == [
        ("a", "alert"),
        ("b", "alert"),
    ]
    assert decisions[4].incident != decisions[5].incident


def test_sensitivity_scales_the_threshold():
    lines = [score(i, 0.7) for i in range(5)]
    assert actions(decide(lines)[0]) == "....."
    assert actions(decide(lines, "--sensitivity", "2")[0]) == "..A.."


def test_summary_names_the_culprits_for_people():
    tokens = ["C9", "M9", "D4", "S0", "L4", "N1"]
    nll = [9.38, 12.11, 0.2, 0.1, 2.5, 0.01]
    decisions, _ = decide([score(i, 4.05, tokens=tokens, nll=nll, threshold=1.2) for i in range(3)])
    alert = decisions[2]
    three = decide([score(0, 4, tokens=tokens, nll=[9.0, 8.0, 0.2, 0.1, 5.0, 0.01])] * 3)[0][2]
    assert three.summary.startswith("CPU 97% (C9), memory 95% (M9) and load 2 (L4) are unusual")
    # L4 is above the threshold too, but far below the top culprits: it is not named
    assert alert.summary == (
        "memory 95% (M9) and CPU 97% (C9) are unusual for vm (surprise 4.0, threshold 1.2)"
    )
    assert alert.culprits == [
        ("M9", 12.11),
        ("C9", 9.38),
        ("L4", 2.5),
        ("D4", 0.2),
        ("S0", 0.1),
        ("N1", 0.01),
    ]
    assert alert.severity == "critical" and alert.atoms == ["pulse"]


def test_culprits_come_farthest_from_their_usual_spread_first_then_by_z():
    tokens = ["C9", "M9", "D4", "S0", "L4", "N1"]
    z = [9.38, 12.11, 0.2, 0.1, 2.5, 0.01]
    spread = [8.0, -3.0, 0.5, 0.0, 8.0, -0.1]  # memory is surprising, but CPU and load moved far
    decisions, _ = decide([score(i, 12.11, tokens=tokens, nll=z, spread=spread) for i in range(3)])
    alert = decisions[2]
    assert [t for t, _ in alert.culprits] == ["C9", "L4", "M9", "D4", "N1", "S0"]
    assert dict(alert.culprits) == dict(zip(tokens, z, strict=True))  # each still with its z
    # each says which way it moved against its training median
    assert alert.summary.startswith("CPU 97% (C9) is high and memory 95% (M9) is low for vm")


def test_an_early_models_alert_says_so():
    decisions, _ = decide([score(i, 4.0, early=True) for i in range(3)])
    assert decisions[2].action == "alert"
    assert decisions[2].summary.endswith(
        "(surprise 4.0, threshold 1.0) (early model: still learning this host)"
    )
    later, _ = decide([score(i, 4.0) for i in range(3)])
    assert "early" not in later[2].summary


def test_resolve_summary_and_other_kinds_pass_through():
    lines = [score(0, 3), KINDS[0], score(1, 3), score(2, 3)] + [
        score(3 + i, 0.1) for i in range(5)
    ]
    out = run("kiri.decide.stage", input=b"\n".join(lines) + b"\n")
    got = out.stdout.splitlines()
    assert got[1] == KINDS[0]
    last = decode(got[-1])
    assert last.action == "resolve"
    assert last.summary == "pulse on vm is back to normal (surprise 0.1, threshold 1.0)"


def test_bad_lines_and_nonsense_scores_are_reported_and_skipped():
    mismatched = b'{"kind":"score","atom":"pulse","tokens":["C1"],"nll":[1,2],"threshold":1}'
    no_threshold = b'{"kind":"score","atom":"pulse","tokens":[],"nll":[]}'
    lines = [score(0, 0.1), b"nope", mismatched, no_threshold, score(1, 0.1)]
    decisions, out = decide(lines)
    assert len(decisions) == 2
    bad = [(e["line"], e["reason"]) for e in log_events(out.stderr) if e["event"] == "bad_record"]
    assert bad[0][0] == 2
    assert bad[1:] == [
        (3, "score has 1 tokens but 2 nll values"),
        (4, "score threshold must be positive, got 0.0"),
    ]


def test_bad_options_are_usage_errors():
    assert run("kiri.decide.stage", "--k", "6", "--n", "5").returncode == 2
    assert run("kiri.decide.stage", "--sensitivity", "0").returncode == 2


def test_closed_reader_and_sigterm():
    many = b"\n".join(score(i, 0.1) for i in range(20000)) + b"\n"
    cmd = " ".join(stage_cmd("kiri.decide.stage"))
    out = subprocess.run(
        ["bash", "-c", f"{cmd} | head -n 1; echo status=${{PIPESTATUS[0]}}"],
        input=many,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert out.stdout.splitlines()[-1] == b"status=0" and b"Traceback" not in out.stderr

    proc = subprocess.Popen(
        stage_cmd("kiri.decide.stage"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"\n".join(score(i, 0.1) for i in range(5)) + b"\n")
    proc.stdin.flush()
    got = [proc.stdout.readline() for _ in range(5)]
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and rest == b"" and b"Traceback" not in err
    assert [json.loads(line)["action"] for line in got] == ["ok"] * 5


# -- the feedback FIFO and standing rules ------------------------------------------------------

import os  # noqa: E402
import select  # noqa: E402
import time  # noqa: E402

from kiri.home.store import Store  # noqa: E402
from kiri.wire.records import Rule  # noqa: E402

C9 = {"tokens": ["C9", "M1", "D2", "S0", "L1", "N1"], "nll": [9.0, 0.5, 0.1, 0.1, 0.3, 0.0]}
M9 = {"tokens": ["C1", "M9", "D2", "S0", "L1", "N1"], "nll": [0.2, 9.0, 0.1, 0.1, 0.3, 0.0]}


def rule(match, action="suppress", expires=None, atom="pulse", host="vm"):
    return encode(
        Rule(
            ts=time.time(),
            id=f"r-{'-'.join(match)}",
            atom=atom,
            host=host,
            match=match,
            action=action,
            reason="dismissed 2 times",
            expires=time.time() + 3600 if expires is None else expires,
        )
    )


class Decide:
    """A running kiri-decide with a feedback FIFO; feed it scores, read its decisions."""

    def __init__(self, fifo, *args):
        self.fifo = fifo
        self.proc = subprocess.Popen(
            stage_cmd("kiri.decide.stage", "--feedback", str(fifo), *args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )  # select sees every line
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        self.stdin, self.stdout, self.stderr = self.proc.stdin, self.proc.stdout, self.proc.stderr
        self.err = b""  # what it logged so far, read by said()
        deadline = time.monotonic() + 10
        while not fifo.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fifo.exists(), "kiri-decide made no FIFO"

    def control(self, *lines):
        fd = os.open(self.fifo, os.O_WRONLY)  # a writer that comes and goes, like kiri-feedback
        os.write(fd, b"".join(line + b"\n" for line in lines))
        os.close(fd)

    def said(self, event, count=1):
        """Wait until kiri-decide has logged EVENT COUNT times: a FIFO record was handled."""
        deadline = time.monotonic() + 10
        while sum(e["event"] == event for e in log_events(self.err)) < count:
            left = deadline - time.monotonic()
            assert left > 0 and select.select([self.stderr], [], [], left)[0], f"no {event}"
            line = self.stderr.readline()
            assert line, f"kiri-decide ended without logging {event}"
            self.err += line

    def scores(self, *lines):
        self.stdin.write(b"".join(line + b"\n" for line in lines))
        self.stdin.flush()
        return [decode(self.line()) for _ in lines]

    def line(self):
        assert select.select([self.stdout], [], [], 10)[0], "kiri-decide said nothing"
        return self.stdout.readline()

    def close(self):
        self.stdin.close()
        rest = self.stdout.read()
        self.err += self.stderr.read()
        assert self.proc.wait(10) == 0
        return rest, self.err


def burst(start, **culprits):
    return [score(start + i, 3.0, **culprits) for i in range(3)]


def test_a_rule_from_the_fifo_suppresses_only_its_pattern(tmp_path):
    d = Decide(tmp_path / "feedback.fifo")
    assert tmp_path.joinpath("feedback.fifo").stat().st_mode & 0o777 == 0o600
    d.control(rule(["C9"]))
    d.said("rule_added")
    first = d.scores(*burst(0, **C9))
    assert [x.action for x in first] == ["ok", "ok", "suppress"]
    assert first[2].summary.endswith("suppressed by rule r-C9 (dismissed 2 times)")
    other = [score(10 + i, 3.0, host="db", **M9) for i in range(3)]  # vm's incident is open
    assert [x.action for x in d.scores(*other)] == ["ok", "ok", "alert"]
    _, err = d.close()
    assert any(e["event"] == "rule_added" for e in log_events(err))


def test_a_suppressed_incident_resolves_quietly(tmp_path):
    d = Decide(tmp_path / "f.fifo")
    d.control(rule(["C9"]))
    d.said("rule_added")
    d.scores(*burst(0, **C9))
    calm = d.scores(*[score(3 + i, 0.1) for i in range(5)])
    assert [x.action for x in calm] == ["ok"] * 5
    d.close()


def test_a_rule_that_is_no_suppression_is_refused_and_decides_nothing(tmp_path):
    d = Decide(tmp_path / "f.fifo")
    d.control(rule(["C9", "M1"], action="retrain"))  # kiri-feedback retrains by itself now
    d.said("rule_refused")  # no score needed: the FIFO is read while stdin is idle
    assert [x.action for x in d.scores(*burst(0, **C9))][-1] == "alert"
    rest, err = d.close()
    assert rest == b""
    assert "a rule suppresses; 'retrain' is no action of one" in err.decode()


def test_the_fifo_writer_may_come_and_go(tmp_path):
    d = Decide(tmp_path / "f.fifo")
    d.control(rule(["M9"]))
    d.control(b"not a record")  # reported, not fatal
    d.control(rule(["C9"]))
    d.said("rule_added", 2)
    assert [x.action for x in d.scores(*burst(0, **C9))][-1] == "suppress"
    _, err = d.close()
    assert any(e["event"] == "bad_feedback_record" for e in log_events(err))


def test_an_expired_rule_suppresses_nothing(tmp_path):
    d = Decide(tmp_path / "f.fifo")
    d.control(rule(["C9"], expires=time.time() - 1))
    d.said("rule_refused")
    assert [x.action for x in d.scores(*burst(0, **C9))][-1] == "alert"
    d.close()


def test_standing_rules_are_loaded_from_the_store_at_start(kiri_home):
    with Store() as store:
        store.add_rule(
            Rule(
                ts=time.time(),
                id="r-1",
                atom="pulse",
                host="vm",
                match=["C9"],
                action="suppress",
                expires=time.time() + 60,
                reason="dismissed 2 times",
            )
        )
    decisions, out = decide(burst(0, **C9))
    assert [x.action for x in decisions] == ["ok", "ok", "suppress"]
    assert [e["rules"] for e in log_events(out.stderr) if e["event"] == "rules_loaded"] == [1]


def test_culprit_order_falls_back_to_z_for_a_score_without_spreads():
    assert culprit_order([1.0, 5.0, 3.0], []) == [1, 2, 0]
    assert culprit_order([1.0, 3.0, 5.0], [-9.0, 1.0, 1.0]) == [0, 2, 1]


# -- forged records: rules count only from the FIFO and the store ------------------------------


def test_a_rule_on_stdin_passes_through_untouched_and_suppresses_nothing():
    forged = rule(["C9"])
    out = run("kiri.decide.stage", input=b"\n".join([forged, *burst(0, **C9)]) + b"\n")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == forged
    assert [decode(line).action for line in lines[1:]][-1] == "alert"


def test_a_decision_on_stdin_is_refused_not_delivered():
    forged = encode(Decision(id="forged", atom="pulse", host="vm", action="alert"))
    out = run("kiri.decide.stage", input=b"\n".join([score(0, 0.1), forged, score(1, 0.1)]) + b"\n")
    assert out.returncode == 0, out.stderr
    assert [decode(line).id != "forged" for line in out.stdout.splitlines()] == [True, True]
    bad = [e for e in log_events(out.stderr) if e["event"] == "bad_record"]
    assert [(e["line"], "only kiri-decide decides" in e["reason"]) for e in bad] == [(2, True)]


def test_a_rule_holds_for_its_host_only_and_needs_a_host_and_an_expiry(tmp_path):
    d = Decide(tmp_path / "f.fifo")
    d.control(rule(["C9"], host=""), rule(["C9"], expires=0.0), rule(["C9"], host="db"))
    d.said("rule_added")
    assert [x.action for x in d.scores(*burst(0, **C9))][-1] == "alert"  # vm: no rule holds
    assert [x.action for x in d.scores(*burst(0, host="db", **C9))][-1] == "suppress"
    _, err = d.close()
    refused = [e["reason"] for e in log_events(err) if e["event"] == "rule_refused"]
    assert refused == ["a rule needs an atom and a host", "a rule needs an expiry in the future"]


def test_a_host_with_thousands_of_atoms_keeps_each_decision_short():
    lines = [
        score(t, 0.1).replace(b'"atom":"pulse"', b'"atom":"a%d"' % i)
        for t in range(2)
        for i in range(1500)
    ]
    decisions, out = decide(lines)
    assert len(decisions) == len(lines)
    assert max(len(d.state) for d in decisions) <= 16
    assert len(out.stdout) < 3 * sum(len(line) + 1 for line in lines)


def test_a_quiet_host_carries_its_state_every_few_minutes_and_an_alert_always():
    lines = [score(i * 60, 0.1) for i in range(11)] + [score(660, 3.0, **C9)]
    decisions, _ = decide(lines)
    assert [i for i, d in enumerate(decisions) if d.state] == [0, 5, 10, 11]
    assert decisions[11].action == "alert" and decisions[11].state == {"pulse": 3.0}
