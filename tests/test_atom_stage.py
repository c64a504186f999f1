"""kiri-atom: obs in, score out, through the real executable."""

import json
import math
import os
import select
import signal
import subprocess
import time

import msgspec
from conftest import FIXTURES, fixture_bytes, log_events, run, stage_cmd

from kiri.atoms.detector import Detector
from kiri.atoms.lifecycle import describe, read_state
from kiri.score.stage import as_sent as as_sent_score
from kiri.wire.records import Obs, Score

NORMAL = fixture_bytes("pulse-normal.ndjson").splitlines()
STRESS = fixture_bytes("pulse-stress.ndjson").splitlines()
KINDS = fixture_bytes("kinds.ndjson").splitlines()
decode_score = msgspec.json.Decoder(Score).decode


def bad_events(stderr):
    return [e for e in log_events(stderr) if e["event"] == "bad_record"]


def test_each_observation_becomes_a_score_in_order(installed_pulse):
    out = run("kiri.score.stage", "pulse", input=b"\n".join(NORMAL[:50] + STRESS[-5:]) + b"\n")
    assert out.returncode == 0, out.stderr
    scores = [decode_score(line) for line in out.stdout.splitlines()]
    assert len(scores) == 55
    obs = [json.loads(line) for line in NORMAL[:50] + STRESS[-5:]]
    assert [s.ts for s in scores] == [o["ts"] for o in obs]
    library = Detector.load(installed_pulse).score(
        [msgspec.json.decode(line, type=Obs) for line in NORMAL[:50] + STRESS[-5:]]
    )
    for s, o, expected in zip(scores, obs, library, strict=True):
        assert s.atom == "pulse" and s.host == o["host"] and s.values == o["values"]
        assert len(s.tokens) == len(s.nll) == len(s.z) == 6
        assert isinstance(expected, Score) and s.surprise == expected.surprise  # one code path
        assert s.threshold > 0 and len(s.model) == 12
    assert min(s.surprise for s in scores[-5:]) > max(s.surprise for s in scores[:50])


def told(line: bytes) -> bool:
    score = msgspec.json.decode(line, type=Score)
    return score.surprise >= score.threshold


def as_sent(line: bytes) -> bytes:
    """A recorded score as kiri-atom sends it down the pipe."""
    return msgspec.json.encode(as_sent_score(msgspec.json.decode(line, type=Score)))


def test_record_appends_each_score_to_the_day_file_of_its_date(installed_pulse, kiri_home):
    lines = [*NORMAL[:30], b'{"kind":"obs","atom":"rhythm","values":{"idle":3.0}}', *STRESS[:5]]
    out = run("kiri.score.stage", "pulse", "--record", input=b"\n".join(lines) + b"\n")
    assert out.returncode == 0, out.stderr
    emitted = [line for line in out.stdout.splitlines() if b'"kind":"score"' in line]
    days = sorted((kiri_home / "data" / "pulse" / "scores").glob("*.ndjson"))
    recorded = b"".join(p.read_bytes() for p in days).splitlines()
    assert [as_sent(line) for line in recorded] == emitted and len(recorded) == 35
    # the recording explains every moment; the pipe, only scores that may make an alert
    quiet = [(r, e) for r, e in zip(recorded, emitted, strict=True) if not told(e)]
    assert quiet and all(b'"usual_low"' in r and b'"usual_low"' not in e for r, e in quiet)
    assert all(b'"usual_low"' in e for e in emitted if told(e))
    for path in days:
        stamps = {time.strftime("%Y-%m-%d", time.localtime(decode_score(x).ts)) for x in
                  path.read_bytes().splitlines()}  # fmt: skip
        assert stamps == {path.stem}
    assert not list((kiri_home / "data" / "pulse").glob("*.ndjson"))  # no observation kept


def test_other_kinds_and_other_atoms_pass_through_in_order(installed_pulse):
    other = b'{"kind":"obs","atom":"rhythm","values":{"idle":3.0}}'
    lines = [NORMAL[0], KINDS[2], other, NORMAL[1], KINDS[4]]
    out = run("kiri.score.stage", "pulse", input=b"\n".join(lines) + b"\n")
    got = out.stdout.splitlines()
    kinds = [json.loads(line)["kind"] for line in got]
    assert kinds == ["score", "decision", "obs", "score", "verdict"]
    assert got[1] == KINDS[2] and got[2] == other and got[4] == KINDS[4]


def test_bad_lines_and_incomplete_observations_are_reported_and_skipped(installed_pulse):
    missing = (
        b'{"kind":"obs","atom":"pulse","ts":1,"values":{"cpu":50,"mem":null},"meta":{"cpus":"2"}}'
    )
    lines = [NORMAL[0], b"{not json", NORMAL[1], missing, NORMAL[2]]
    out = run("kiri.score.stage", "pulse", input=b"\n".join(lines) + b"\n")
    assert out.returncode == 0
    assert len(out.stdout.splitlines()) == 3
    bad = bad_events(out.stderr)
    assert [(e["line"], e["reason"]) for e in bad[1:]] == [(4, "values.mem is missing")]
    assert bad[0]["line"] == 2


def test_an_unknown_atom_is_a_usage_error():
    out = run("kiri.score.stage", "toaster")
    assert out.returncode == 2
    assert (
        "unknown atom 'toaster' (known: drift, mikrotik, nerve, pulse, rhythm)"
        in out.stderr.decode()
    )


def test_missing_weights_is_a_one_line_error(kiri_home):
    out = run("kiri.score.stage", "pulse", input=NORMAL[0] + b"\n")
    assert out.returncode == 1
    assert out.stderr.decode().strip().splitlines()[-1] == (
        f"Error: atom pulse has no weights at {kiri_home}/atoms/pulse/weights.json: "
        "run `kiri train pulse`, or start kiri-atom with --learn"
    )


def test_corrupt_weights_is_a_one_line_error_naming_the_file(installed_pulse):
    installed_pulse.write_bytes(installed_pulse.read_bytes()[:1000])
    out = run("kiri.score.stage", "pulse", input=NORMAL[0] + b"\n")
    assert out.returncode == 1
    last = out.stderr.decode().strip().splitlines()[-1]
    assert last.startswith(f"Error: {installed_pulse}: not a readable weights file")


def test_closed_reader_exits_zero(installed_pulse, tmp_path):
    f = tmp_path / "many.ndjson"
    f.write_bytes(b"\n".join(NORMAL * 40) + b"\n")
    cmd = " ".join(stage_cmd("kiri.score.stage", "pulse"))
    out = subprocess.run(
        ["bash", "-c", f"{cmd} < {f} | head -n 1; echo status=${{PIPESTATUS[0]}}"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    lines = out.stdout.splitlines()
    assert decode_score(lines[0]).atom == "pulse" and lines[1] == b"status=0"
    assert b"Traceback" not in out.stderr


def start(args, **kw):
    return subprocess.Popen(
        stage_cmd("kiri.score.stage", *args),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )


def read_lines(proc, n, timeout=30):
    """The next n lines of proc's stdout, read from the pipe itself (no buffering ahead)."""
    fd, data, deadline = proc.stdout.fileno(), b"", time.monotonic() + timeout
    while data.count(b"\n") < n and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.5)[0]:
            data += os.read(fd, 1)
    return data.splitlines()


def test_sigterm_mid_stream_flushes_and_exits_zero(installed_pulse):
    proc = start(["pulse"])
    proc.stdin.write(b"\n".join(NORMAL[:20]) + b"\n")
    proc.stdin.flush()
    got = read_lines(proc, 20)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and len(got) == 20 and out == b""
    assert b"Traceback" not in err


def test_a_retrain_lands_without_a_restart(installed_pulse, pulse_weights, tmp_path):
    proc = start(["pulse"])
    proc.stdin.write(NORMAL[0] + b"\n")
    proc.stdin.flush()
    first = decode_score(read_lines(proc, 1)[0])
    # a different model (another seed) replaces the file atomically
    other = tmp_path / "w.json"
    out = run(
        "kiri.cli",
        "train",
        "pulse",
        "--from",
        str(FIXTURES / "pulse-normal.ndjson"),
        "--steps",
        "30",
        "--seed",
        "7",
        "--out",
        str(other),
    )
    assert out.returncode == 0
    os.replace(other, installed_pulse)
    time.sleep(1.2)
    proc.stdin.write(NORMAL[0] + b"\n")
    proc.stdin.flush()
    second = decode_score(read_lines(proc, 1)[0])
    proc.stdin.close()
    assert proc.wait(10) == 0
    assert first.model != second.model and first.surprise != second.surprise
    assert any(e["event"] == "weights_loaded" for e in log_events(proc.stderr.read()))


def test_learn_records_a_warmup_trains_and_then_scores(kiri_home):
    proc = start(["pulse", "--learn", "--warmup", "30"])
    proc.stdin.write(b"\n".join(NORMAL[:30]) + b"\n")
    proc.stdin.flush()
    passed = read_lines(proc, 30)  # warming up: observations pass through
    assert all(json.loads(line)["kind"] == "obs" for line in passed)
    weights = kiri_home / "atoms" / "pulse" / "weights.json"
    deadline = time.monotonic() + 60
    while not weights.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert weights.exists(), (kiri_home / "logs" / "train-pulse.log").read_text()
    time.sleep(0.1)
    proc.stdin.write(b"\n".join(NORMAL[30:35]) + b"\n")
    proc.stdin.flush()
    scored = read_lines(proc, 5)
    proc.stdin.close()
    err = proc.stderr.read()
    assert proc.wait(10) == 0
    assert [json.loads(line)["kind"] for line in scored] == ["score"] * 5
    recorded = b"".join(p.read_bytes() for p in (kiri_home / "data" / "pulse").glob("*.ndjson"))
    assert recorded.splitlines() == NORMAL[:35]  # it goes on recording, to learn from later
    scores = (kiri_home / "data" / "pulse" / "scores").glob("*.ndjson")
    kept = b"".join(p.read_bytes() for p in scores).splitlines()  # for the dashboard
    assert [as_sent(line) for line in kept] == scored
    events = [e["event"] for e in log_events(err)]
    assert "warming_up" in events and "training_started" in events and "weights_loaded" in events


def feed_until(proc, sent, done, timeout=60):
    """Send observations one at a time, as a collector does, until done(life-cycle state);
    then the state, the index of the next observation and the last line out."""
    deadline, line = time.monotonic() + timeout, b""
    while time.monotonic() < deadline:
        state = read_state("pulse")
        if state and done(state):
            return state, sent, line
        proc.stdin.write(NORMAL[sent] + b"\n")
        proc.stdin.flush()
        (line,) = read_lines(proc, 1)
        sent += 1
        time.sleep(0.1)
    raise AssertionError(f"after {sent} observations: {read_state('pulse')}")


def test_learn_retrains_once_the_observations_have_doubled_and_says_so(kiri_home):
    proc = start(["pulse", "--learn", "--warmup", "30"])
    first, sent, _ = feed_until(proc, 0, lambda s: len(s.landed) == 1)
    assert first.trained_on >= 30 and first.early  # what was recorded when the run read it
    state, sent, _ = feed_until(proc, sent, lambda s: s.trained_at >= 60)
    assert state.phase == "retraining"  # the data has doubled since the first run started
    second, sent, line = feed_until(proc, sent, lambda s: len(s.landed) == 2)
    proc.stdin.close()
    assert proc.wait(10) == 0
    assert second.model != first.model and second.trained_on >= 60
    assert describe(second).startswith("model 2 of the day, trained on ")
    assert describe(second).endswith(f"threshold {second.threshold:.1f}, early")
    score = decode_score(line)  # the observation that found the new model was scored by it
    assert score.model == second.model and score.early


def pulse_obs(ts, cpu=1.0, load=0.5, cpus="2"):
    values = {"cpu": cpu, "mem": 1.0, "disk": 22.0, "swap": 0.0, "load": load, "net": 1.0}
    return msgspec.json.encode(
        Obs(ts=ts, atom="pulse", host="vm", values=values, meta={"cpus": cpus})
    )


def test_a_meta_cpus_that_is_no_number_of_cpus_rejects_that_line_alone(installed_pulse):
    cpus = ["nan", "1e-320", "5e-324", "inf", "0"]
    lines = [pulse_obs(0)]
    for i, c in enumerate(cpus, 1):
        lines += [pulse_obs(i, cpus=c), pulse_obs(i + 0.5)]
    out = run("kiri.score.stage", "pulse", input=b"\n".join(lines) + b"\n")
    assert out.returncode == 0, out.stderr
    scores = [decode_score(line) for line in out.stdout.splitlines()]
    assert [s.ts for s in scores] == [0] + [i + 0.5 for i in range(1, len(cpus) + 1)]
    bad = bad_events(out.stderr)
    assert [e["line"] for e in bad] == list(range(2, 2 * len(cpus) + 1, 2))
    assert all("meta.cpus" in e["reason"] for e in bad), bad


def test_learning_never_records_an_observation_whose_meta_cpus_is_no_number(kiri_home):
    lines = [pulse_obs(0), pulse_obs(1, cpus="1e-320"), pulse_obs(2)]
    out = run("kiri.score.stage", "pulse", "--learn", input=b"\n".join(lines) + b"\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [lines[0], lines[2]]  # warming up: passed through
    assert [e["line"] for e in bad_events(out.stderr)] == [2]


EDGES = [  # (cpu and load, the tokens they must be)
    (1e20, ("C9", "L4")),
    (1e300, ("C9", "L4")),
    (1.7976931348623157e308, ("C9", "L4")),
    (-1e300, ("C0", "L0")),
    (5e-324, ("C0", "L0")),
]


def test_huge_values_are_the_top_bucket_and_very_surprising_as_kiri_score_says(installed_pulse):
    lines = [pulse_obs(i, cpu=x, load=x) for i, (x, _) in enumerate(EDGES)]
    out = run("kiri.score.stage", "pulse", input=b"\n".join(lines) + b"\n")
    assert out.returncode == 0 and not bad_events(out.stderr), out.stderr
    assert b"Warning" not in out.stderr  # numpy's overflow warnings, say
    scores = [decode_score(line) for line in out.stdout.splitlines()]
    assert [(s.tokens[0], s.tokens[4]) for s in scores] == [tokens for _, tokens in EDGES]
    for s, (x, _) in zip(scores, EDGES, strict=True):
        assert all(map(math.isfinite, [s.surprise, *s.spread, *s.z])), s
        if x > 100:
            assert s.surprise > 1000 * s.threshold
        shown = run(
            "kiri.cli", "score", "pulse", "--values",
            ",".join(f"{k}={v!r}" for k, v in s.values.items()), "--meta", "cpus=2",
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        text, _, why = shown.stdout.decode().partition("\n\n")  # the table, then what an alert says
        assert sorted(line.split()[0] for line in text.splitlines()[2:]) == sorted(s.tokens)
        assert why.startswith("what an alert would say:\n  ")
        assert text.endswith(": unusual\n", 0, text.index("\n") + 1) == (s.surprise > s.threshold)


def test_scores_either_side_of_midnight_go_to_the_files_of_their_days(kiri_home):
    from kiri.score.stage import ScoreLog

    midnight = time.mktime((2026, 3, 14, 0, 0, 0, 0, 0, -1))
    log = ScoreLog("pulse")
    log.extend([Score(ts=midnight - 1, atom="pulse"), None, Score(ts=midnight + 1, atom="pulse")])
    log.extend([Score(ts=midnight + 2, atom="pulse")])
    log.close()
    folder = kiri_home / "data" / "pulse" / "scores"
    days = {p.stem: [decode_score(x).ts for x in p.read_bytes().splitlines()] for p in
            folder.iterdir()}  # fmt: skip
    assert days == {"2026-03-13": [midnight - 1], "2026-03-14": [midnight + 1, midnight + 2]}
