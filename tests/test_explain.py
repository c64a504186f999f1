"""Alerts that explain: each culprit's value, which way it moved and its usual range, a severity
that follows which way matters, and one text on every sink. Trained with the real `kiri train`
on a recording of a busy host, scored and decided by the real stages."""

import json
import random
import re
from pathlib import Path

import msgspec
import pytest
from conftest import run

from kiri.atoms.registry import atom_spec
from kiri.decide.policy import Policy
from kiri.wire.records import Culprit, Decision, Score
from kiri.wire.render import alert_lines, alert_text, amount, culprit_text, short_id

START = 1795286829.0
BUSY = {"cpu": (50, 70), "mem": (40, 50), "load": (1.8, 2.6)}  # load of 2 CPUs: 0.9-1.3 each
IDLE = {"cpu": 1.0, "mem": 45.0, "disk": 22.0, "swap": 0.0, "load": 0.1, "net": 1.0}
HOT = {**IDLE, "cpu": 99.0, "load": 2.2}
encode = msgspec.json.Encoder().encode


def obs(ts: float, values: dict) -> bytes:
    record = {"kind": "obs", "ts": ts, "atom": "pulse", "host": "vm", "values": values}
    return encode({**record, "meta": {"cpus": "2"}})


def busy_day() -> bytes:
    rng = random.Random(1)
    steady = {"disk": 22.0, "swap": 0.0, "net": 1.0}
    moving = [{k: rng.uniform(lo, hi) for k, (lo, hi) in BUSY.items()} for _ in range(300)]
    lines = [obs(START + 5 * i, {**m, **steady}) for i, m in enumerate(moving)]
    return b"\n".join(lines) + b"\n"


@pytest.fixture(scope="module")
def busy_weights(tmp_path_factory) -> Path:
    """A pulse model of a busy host (CPU 50-70%, load 0.9-1.3 per CPU), by `kiri train`."""
    where = tmp_path_factory.mktemp("busy")
    day, weights = where / "busy.ndjson", where / "weights.json"
    day.write_bytes(busy_day())
    out = run(
        "kiri.cli", "train", "pulse", "--from", str(day), "--steps", "300", "--out", str(weights)
    )
    assert out.returncode == 0, out.stderr
    return weights


def alerts(weights: Path, values: dict, n: int = 3) -> list[Decision]:
    """kiri-atom pulse | kiri-decide on n observations of these values: the alert decisions."""
    lines = b"".join(obs(START + 2000 + 5 * i, values) + b"\n" for i in range(n))
    scored = run("kiri.score.stage", "pulse", "--weights", str(weights), input=lines)
    assert scored.returncode == 0, scored.stderr
    decided = run("kiri.decide.stage", input=scored.stdout)
    assert decided.returncode == 0, decided.stderr
    decisions = [msgspec.json.decode(line, type=Decision) for line in decided.stdout.splitlines()]
    return [d for d in decisions if d.action == "alert"]


def test_a_load_drop_on_a_busy_host_says_low_with_the_usual_range_and_is_only_info(busy_weights):
    [alert] = alerts(busy_weights, IDLE)
    by_field = {c.field: c for c in alert.explained}
    assert sorted(by_field) == ["cpu", "load"]  # only the culprits that crossed the threshold
    load, cpu = by_field["load"], by_field["cpu"]
    assert (load.label, load.unit, load.token, load.direction) == ("load", " per CPU", "L0", "low")
    assert load.value == pytest.approx(0.05)  # per CPU, as tokenized, not the host's 0.1
    assert load.low is not None and load.high is not None and cpu.low and cpu.high
    assert 0.85 < load.low < 1.0 and 1.2 < load.high < 1.35  # its training p5 and p95
    assert cpu.direction == "low" and 50 < cpu.low < cpu.high < 70
    assert all(c.z >= alert.threshold for c in alert.explained)
    # both moved the way the pulse atom calls harmless: worth a word, not an emergency
    assert alert.severity == "info" and load.worse == cpu.worse == "high"
    sid = short_id(alert.id)
    lines = alert_lines(alert)
    assert lines[0].startswith(f"{sid} INFO pulse@vm: ")
    assert "CPU 1% (C0) and load 0.05 per CPU (L0) are low for vm" in lines[0]
    assert re.fullmatch(
        rf"{sid}   load 0\.05 per CPU is low for vm \(usually 0\.\d+–1\.\d+ per CPU\)",
        next(line for line in lines if "load" in line and line != lines[0]),
    )
    assert len(lines) == 3 and all(line.startswith(sid + " ") for line in lines)
    assert "(0.0)" not in alert_text(alert) and "M4" not in alert_text(alert)


def test_a_busy_cpu_is_bad_news_and_the_terminal_tells_it_as_every_sink_does(busy_weights):
    [alert] = alerts(busy_weights, HOT)
    [cpu] = [c for c in alert.explained if c.field == "cpu"]
    assert cpu.direction == "high" and cpu.value == 99.0
    assert alert.severity in ("warning", "critical")
    acted = run("kiri.act.stage", "--sink", "terminal", input=encode(alert) + b"\n")
    assert acted.returncode == 0, acted.stderr
    shown = [line for line in acted.stderr.decode().splitlines() if not line.startswith("{")]
    assert [line[9:].strip() for line in shown] == [line.strip() for line in alert_lines(alert)]
    assert any(re.search(r"CPU 99% is high for vm \(usually \d\d–\d\d%\)$", s) for s in shown)


def test_kiri_score_shows_the_explanation_an_alert_would_give(busy_weights):
    [alert] = alerts(busy_weights, IDLE)
    values = ",".join(f"{k}={v}" for k, v in IDLE.items())
    out = run(
        "kiri.cli", "score", "pulse", "--values", values, "--meta", "cpus=2",
        "--weights", str(busy_weights),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    said = out.stdout.decode().split("what an alert would say:\n")[1].splitlines()
    assert [line.strip() for line in said] == [
        culprit_text(c) for c in alert.explained
    ]  # the same words, without the host kiri score does not know
    assert any(line.startswith("  load 0.05 per CPU is low (usually ") for line in said)


def test_weights_from_before_usual_ranges_still_load_and_explain_without_a_range(
    busy_weights, tmp_path
):
    doc = json.loads(busy_weights.read_bytes())
    for key in ("value_low", "value_high"):
        del doc["extra"]["calibration"][key]
    for field in doc["extra"]["schema"]["fields"]:
        del field["worse"]
    older = tmp_path / "weights.json"
    older.write_text(json.dumps(doc))
    [alert] = alerts(older, IDLE)
    assert [c.direction for c in alert.explained] == ["low", "low"]
    assert all(c.low is None and c.high is None for c in alert.explained)
    assert "usually" not in alert_text(alert)
    # without a say on which way matters, every move does, as it used to
    assert alert.severity == "warning"


# -- the text, on its own ---------------------------------------------------------------------


def culprit(**fields) -> Culprit:
    base = {"token": "L0", "atom": "pulse", "field": "load", "label": "load", "unit": " per CPU"}
    return Culprit(**{**base, "value": 0.31, "direction": "low", "low": 0.9, "high": 1.4, **fields})


def test_a_culprit_says_its_value_direction_and_usual_range_as_far_as_known():
    assert (
        culprit_text(culprit(), "vm") == "load 0.31 per CPU is low for vm (usually 0.9–1.4 per CPU)"
    )
    assert culprit_text(culprit(low=None, high=None)) == "load 0.31 per CPU is low"
    assert (
        culprit_text(culprit(direction=""))
        == "load 0.31 per CPU is unusual (usually 0.9–1.4 per CPU)"
    )
    cpu = culprit(label="CPU", unit="%", value=97.0, direction="high", low=3.0, high=3.001)
    assert culprit_text(cpu) == "CPU 97% is high (usually 3%)"  # a range that rounds to one value
    assert [amount(x) for x in (97.4, 2.0, 1.97, 1.5, 0.31, 0.0012)] == [
        "97", "2", "1.97", "1.5", "0.31", "0.0012",
    ]  # fmt: skip


def test_an_older_decision_lists_only_the_culprits_it_names_with_their_z():
    old = Decision(
        id="a1b2c3d4e5f6", atom="pulse", host="vm", action="alert", severity="critical",
        threshold=5.0, summary="load 1.97 (L3) is unusual for vm",
        culprits=[("L3", 37.2), ("M0", 0.0), ("D2", 0.0)],
    )  # fmt: skip
    assert alert_lines(old) == [
        "a1b2c3 CRITICAL pulse@vm: load 1.97 (L3) is unusual for vm",
        "a1b2c3   L3 (z 37.2)",
    ]


def test_a_notice_shows_the_last_lines_of_what_failed_after_its_headline():
    notice = Decision(
        id="5a5a5a5a5a5a", atom="supervisor", host="vm", action="alert", severity="critical",
        summary="stage atom failed", detail="\n".join(f"line {i}" for i in range(15)),
    )  # fmt: skip
    lines = alert_lines(notice)
    assert lines[0] == "5a5a5a CRITICAL supervisor@vm: stage atom failed"
    assert lines[1:] == [f"5a5a5a   | line {i}" for i in range(5, 15)]


def test_a_group_alert_names_each_culprits_atom_and_strips_control_characters():
    group = Decision(
        id="f00ba4123456", atom="pulse", host="vm\x1b[2J", action="alert", severity="warning",
        atoms=["pulse", "rhythm"], summary="two\natoms",
        explained=[culprit(), culprit(atom="rhythm", label="idle", unit=" min", value=40.0,
                                      direction="high", low=0.0, high=5.0)],
    )  # fmt: skip
    assert alert_lines(group) == [
        "f00ba4 WARNING pulse, rhythm@vm?[2J: two?atoms",
        "f00ba4   pulse: load 0.31 per CPU is low for vm?[2J (usually 0.9–1.4 per CPU)",
        "f00ba4   rhythm: idle 40 min is high for vm?[2J (usually 0–5 min)",
    ]


# -- severity, in-process ---------------------------------------------------------------------


def score(ts: float, surprise: float, worse: str, spread: float) -> Score:
    """A pulse score whose load moved (spread: which way) far from usual, CPU not at all."""
    return Score(
        ts=ts, atom="pulse", host="vm", surprise=surprise, threshold=1.0,
        tokens=["C5", "L0"], z=[0.1, surprise], spread=[0.0, spread],
        fields=[("cpu", "CPU", "%"), ("load", "load", " per CPU")], measured=[50.0, 0.05],
        usual_low=[40.0, 0.9], usual_high=[60.0, 1.3], worse=["high", worse],
    )  # fmt: skip


def first_alert(surprise: float, worse: str, spread: float) -> Decision:
    p = Policy(k=3, n=5, sensitivity=1.0, repeat=3600.0)
    decisions = [d for i in range(3) for d in p.decide(score(i, surprise, worse, spread))]
    [alert] = [d for d in decisions if d.action == "alert"]
    assert [d.action for d in decisions] == ["ok", "ok", "alert"]  # detection: the same always
    return alert


@pytest.mark.parametrize(
    "surprise, worse, spread, severity",
    [
        (3.0, "high", -9.0, "info"),  # load dropped, and only a rise is bad news
        (3.0, "high", 9.0, "critical"),  # it rose, three times the threshold
        (1.5, "high", 9.0, "warning"),  # it rose, but not far past the threshold
        (3.0, "low", -9.0, "critical"),  # an atom that calls a drop bad news
        (3.0, "either", -9.0, "critical"),
        (3.0, "neither", 9.0, "info"),
    ],
)
def test_severity_follows_how_far_and_which_way_a_culprit_moved(surprise, worse, spread, severity):
    alert = first_alert(surprise, worse, spread)
    assert alert.severity == severity
    assert [c.token for c in alert.explained] == ["L0"]  # CPU did not cross the threshold


def test_an_atom_of_config_toml_says_which_way_its_fields_are_bad_news(kiri_home):
    kiri_home.mkdir()
    config = kiri_home / "config.toml"
    config.write_text(
        '[atoms.gpu]\ncommand = ["x"]\n[atoms.gpu.fields]\n'
        'temp = { lo = 20, hi = 100, worse = "high" }\nutil = { lo = 0, hi = 100 }\n'
    )
    out = run("kiri.cli", "info", "gpu")
    assert out.returncode == 0, out.stderr
    assert {f.name: f.worse for f in atom_spec("gpu").schema.fields} == {
        "temp": "high",
        "util": "either",
    }
    config.write_text(config.read_text().replace('worse = "high"', 'worse = "up"'))
    out = run("kiri.cli", "info", "gpu")
    assert out.returncode != 0 and "worse" in out.stderr.decode()
