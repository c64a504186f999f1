"""Hostile input: a line no stage may crash on, among good ones, through the real executables."""

import pytest
from conftest import fixture_bytes, log_events, run

# 1 KB of brackets: deeper than msgspec's decoder recurses
NESTED = b'{"kind":"obs","x":' + b"[" * 1000 + b"]" * 1000 + b"}"
KINDS = fixture_bytes("kinds.ndjson").splitlines()


@pytest.mark.parametrize(
    ("stage", "args"),
    [
        ("kiri.score.stage", ("pulse",)),
        ("kiri.decide.stage", ()),
        ("kiri.act.stage", ("--sink", "log")),
        ("kiri.feedback.stage", ()),
    ],
)
def test_a_deeply_nested_line_is_one_bad_record_and_the_rest_flows(installed_pulse, stage, args):
    good = [line for line in KINDS if b'"kind":"obs"' in line] or KINDS[:1]
    out = run(stage, *args, input=b"\n".join([good[0], NESTED, good[0]]) + b"\n", timeout=60)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    bad = [e for e in log_events(out.stderr) if e["event"] == "bad_record"]
    assert [(e["line"], "recursion" in e["reason"]) for e in bad] == [(2, True)]
    end = next(e for e in log_events(out.stderr) if e["event"] == "stream_end")
    assert end["lines"] == 3 and end["bad"] == 1


def test_a_config_toml_nested_too_deeply_is_a_clear_error(kiri_home):
    kiri_home.mkdir(parents=True, exist_ok=True)
    (kiri_home / "config.toml").write_text("a = " + "[" * 2000 + "1" + "]" * 2000 + "\n")
    out = run("kiri.decide.stage", input=b"")
    assert out.returncode == 2
    assert out.stderr.decode().strip().endswith("config.toml: arrays or tables nested too deeply")


def _obs_at(ts: float | str) -> bytes:
    return (
        b'{"kind":"obs","ts":%s,"atom":"pulse","host":"vm","values":{"cpu":5.0,"mem":40.0,'
        b'"disk":20.0,"swap":0.0,"load":0.2,"net":1.0},"meta":{"cpus":"2"}}' % str(ts).encode()
    )


@pytest.mark.parametrize(
    ("stage", "args"),
    [
        ("kiri.score.stage", ("pulse", "--learn")),
        ("kiri.decide.stage", ()),
        ("kiri.collect.stage", ("replay", "--speed", "1000", "-")),
    ],
)
@pytest.mark.parametrize("ts", ["1e17", "-5", "1.7976931348623157e308"])
def test_a_time_no_calendar_holds_is_one_bad_record(stage, args, ts):
    lines = [_obs_at(1795285736.5), _obs_at(ts), _obs_at(1795285737.5)]
    if stage == "kiri.decide.stage":  # scores, as decide reads
        score = KINDS[1]
        lines = [score, score.replace(b"1795285736.5", ts.encode(), 1), score]
    out = run(stage, *args, input=b"\n".join(lines) + b"\n", timeout=60)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    bad = [e for e in log_events(out.stderr) if e["event"] == "bad_record"]
    assert [(e["line"], "$.ts" in e["reason"]) for e in bad] == [(2, True)]


def test_kiri_alerts_lists_a_stored_alert_whose_time_no_calendar_holds(kiri_home):
    from kiri.home.store import Store
    from kiri.wire.records import Decision

    with Store() as store:
        store.record_alert(Decision(id="a1", atom="pulse", host="vm", action="alert"), "C9")
        store.db.execute("UPDATE alerts SET ts = 1e300")
        store.db.commit()
    out = run("kiri.cli", "alerts")
    assert out.returncode == 0, out.stderr.decode()
    assert "a1" in out.stdout.decode() and b"Traceback" not in out.stderr


STAGES = [
    ("kiri.score.stage", ("pulse",)),
    ("kiri.decide.stage", ()),
    ("kiri.act.stage", ("--sink", "log")),
    ("kiri.feedback.stage", ()),
    ("kiri.collect.stage", ("replay", "-")),
]
NEWER = b'{"kind":"forecast","ts":1795285736.5,"atom":"pulse","horizon":[1,2,3]}'


@pytest.mark.parametrize(("stage", "args"), STAGES)
def test_a_kind_from_a_newer_stage_passes_through_unchanged_and_in_order(
    installed_pulse, stage, args
):
    obs = KINDS[0]
    out = run(stage, *args, input=b"\n".join([NEWER, obs, NEWER]) + b"\n", timeout=60)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    lines = out.stdout.splitlines()
    assert [lines[0], lines[-1]] == [NEWER, NEWER]
    assert not [e for e in log_events(out.stderr) if e["event"] == "bad_record"]


@pytest.mark.parametrize(("stage", "args"), STAGES)
def test_a_cr_before_the_newline_is_not_kept(installed_pulse, stage, args):
    out = run(stage, *args, input=b"\r\n".join([NEWER, *KINDS]) + b"\r\n", timeout=60)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert b"\r" not in out.stdout
    assert out.stdout.splitlines()[0] == NEWER


def test_a_crlf_decision_is_logged_without_its_cr(kiri_home):
    decision = next(line for line in KINDS if b'"kind":"decision"' in line)
    out = run("kiri.act.stage", "--sink", "log", input=decision + b"\r\n")
    assert out.returncode == 0, out.stderr.decode()
    assert (kiri_home / "logs" / "alerts.ndjson").read_bytes() == decision + b"\n"
