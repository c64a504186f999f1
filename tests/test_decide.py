"""kiri-decide: scores in, one decision per score, with the k-of-n incident policy."""

import json
import signal
import subprocess

import msgspec

from conftest import fixture_bytes, log_events, run, stage_cmd
from kiri.records import Decision, Score

encode = msgspec.json.Encoder().encode
decode = msgspec.json.Decoder(Decision).decode
KINDS = fixture_bytes("kinds.ndjson").splitlines()


def score(ts, surprise, host="vm", threshold=1.0, tokens=None, nll=None):
    tokens = tokens or ["C5", "M5", "D4", "S1", "L1", "N1"]
    nll = nll or [surprise] * len(tokens)
    return encode(Score(ts=ts, atom="pulse", host=host, surprise=surprise, threshold=threshold,
                        tokens=tokens, nll=nll,
                        values={"cpu": 97.0, "mem": 95.4, "disk": 40.0, "swap": 0.0,
                                "load": 2.0, "net": 1.0}))


def decide(lines, *args):
    out = run("kiri.stages.decide", *args, input=b"\n".join(lines) + b"\n")
    assert out.returncode == 0, out.stderr
    return [decode(l) for l in out.stdout.splitlines()], out


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
    assert [i for i, d in enumerate(decisions) if d.action == "alert"] == [2, 62, 122]
    assert len({d.incident for d in decisions[2:]}) == 1


def test_hosts_are_tracked_apart():
    lines = [score(i, 3.0, host=h) for i in range(3) for h in ("a", "b")]
    decisions, _ = decide(lines)
    assert [(d.host, d.action) for d in decisions if d.action == "alert"] == [("a", "alert"), ("b", "alert")]
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
    assert alert.summary == ("memory 95% (M9) and CPU 97% (C9) are unusual for vm "
                             "(surprise 4.0, threshold 1.2)")
    assert alert.culprits == [("M9", 12.11), ("C9", 9.38), ("L4", 2.5), ("D4", 0.2), ("S0", 0.1),
                              ("N1", 0.01)]
    assert alert.severity == "critical" and alert.atoms == ["pulse"]


def test_resolve_summary_and_other_kinds_pass_through():
    lines = [score(0, 3), KINDS[0], score(1, 3), score(2, 3)] + [score(3 + i, 0.1) for i in range(5)]
    out = run("kiri.stages.decide", input=b"\n".join(lines) + b"\n")
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
    assert bad[1:] == [(3, "score has 1 tokens but 2 nll values"),
                       (4, "score threshold must be positive, got 0.0")]


def test_bad_options_are_usage_errors():
    assert run("kiri.stages.decide", "--k", "6", "--n", "5").returncode == 2
    assert run("kiri.stages.decide", "--sensitivity", "0").returncode == 2


def test_closed_reader_and_sigterm():
    many = b"\n".join(score(i, 0.1) for i in range(20000)) + b"\n"
    cmd = " ".join(stage_cmd("kiri.stages.decide"))
    out = subprocess.run(["bash", "-c", f"{cmd} | head -n 1; echo status=${{PIPESTATUS[0]}}"],
                         input=many, capture_output=True, timeout=60)
    assert out.stdout.splitlines()[-1] == b"status=0" and b"Traceback" not in out.stderr

    proc = subprocess.Popen(stage_cmd("kiri.stages.decide"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(b"\n".join(score(i, 0.1) for i in range(5)) + b"\n")
    proc.stdin.flush()
    got = [proc.stdout.readline() for _ in range(5)]
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and rest == b"" and b"Traceback" not in err
    assert [json.loads(l)["action"] for l in got] == ["ok"] * 5
