"""The Pulse atom on real recordings of this machine: training, calibration, surprise, culprits."""

import json

import msgspec
import numpy as np
import pytest
from conftest import FIXTURES, observations, run

from kiri.atoms.detector import Detector
from kiri.home.store import Store
from kiri.model.weights import WeightsError
from kiri.wire.records import Decision, Obs, Score

decode = msgspec.json.Decoder(Obs).decode


def scores(detector: Detector, name: str) -> list[Score]:
    """Detector.score on a recording whose every observation it must accept."""
    scored = detector.score(observations(name))
    assert not [s for s in scored if isinstance(s, Exception)]
    return [s for s in scored if isinstance(s, Score)]


def test_stress_is_far_more_surprising_than_normal_and_names_cpu_and_memory(pulse_weights):
    detector = Detector.load(pulse_weights)
    normal = [s.surprise for s in scores(detector, "pulse-normal.ndjson")]
    stress = scores(detector, "pulse-stress.ndjson")
    median = float(np.median(normal))
    assert np.median([s.surprise for s in stress]) >= 5 * median
    for s in stress[-20:]:  # once the load average has caught up with the burners too
        ranked = [t for t, _ in sorted(zip(s.tokens, s.nll, strict=True), key=lambda c: -c[1])]
        assert ranked[0][0] in "CM" and {"C", "M"} <= {t[0] for t in ranked[:3]}
        assert s.surprise > detector.threshold


def test_calibration_keeps_normal_below_the_threshold(pulse_weights):
    detector = Detector.load(pulse_weights)
    normal = [s.surprise for s in scores(detector, "pulse-normal.ndjson")]
    assert np.mean(np.array(normal) > detector.threshold) < 0.02
    cal = detector.calibration
    assert cal.held_out == 24 and cal.quantiles["p50"] <= cal.quantiles["max"]
    assert cal.method


def test_kiri_train_pulse_from_files_says_what_it_did(kiri_home):
    out = run(
        "kiri.cli",
        "train",
        "pulse",
        "--from",
        str(FIXTURES / "pulse-normal.ndjson"),
        str(FIXTURES / "kinds.ndjson"),
        "--steps",
        "200",
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert lines[0] == "loaded 241 observations from 2 files"
    assert lines[1] == "step    1 /  200 | loss " + lines[1].split("loss ")[1]
    assert any(
        line.startswith("calibrated on the most recent 24 observations: surprise p50")
        for line in lines
    )
    assert any(line.startswith("threshold ") and ": " in line for line in lines)
    assert (kiri_home / "atoms" / "pulse" / "weights.json").stat().st_mode & 0o777 == 0o600


def test_kiri_train_pulse_reads_the_recordings(kiri_home):
    day = kiri_home / "data" / "pulse"
    day.mkdir(parents=True)
    normal = (FIXTURES / "pulse-normal.ndjson").read_bytes().splitlines()
    (day / "2026-11-20.ndjson").write_bytes(b"\n".join(normal[:100]) + b"\n")
    # the same observations recorded twice (collector and atom) count once; junk is skipped
    (day / "2026-11-21.ndjson").write_bytes(b"\n".join([*normal[50:150], b"junk"]) + b"\n")
    out = run("kiri.cli", "train", "pulse", "--steps", "50", timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert lines[0] == "loaded 150 observations from 2 files"
    assert lines[1].startswith("skipped 1 observations: not a valid record (first at ")


def test_kiri_train_pulse_with_too_little_data_is_a_clear_error(kiri_home):
    out = run("kiri.cli", "train", "pulse")
    assert out.returncode == 1
    assert "needs at least 10 observations to train, found 0" in out.stderr.decode()


def test_kiri_train_skips_observations_with_missing_values(tmp_path, kiri_home):
    lines = (FIXTURES / "pulse-normal.ndjson").read_bytes().splitlines()[:30]
    lines.insert(
        3, b'{"kind":"obs","atom":"pulse","ts":5,"values":{"cpu":null},"meta":{"cpus":"2"}}'
    )
    f = tmp_path / "day.ndjson"
    f.write_bytes(b"\n".join(lines) + b"\n")
    out = run("kiri.cli", "train", "pulse", "--from", str(f), "--steps", "20")
    assert out.returncode == 0
    assert f"skipped 1 observations: values.cpu is missing (first at {f}:4)" in out.stdout.decode()


def test_kiri_score_explains_which_token_is_unusual(installed_pulse):
    out = run("kiri.cli", "score", "pulse", "C9 M9 D2 S0 L4 N1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert lines[0].startswith("surprise ") and lines[0].endswith(": unusual")
    assert lines[1].split() == ["token", "-log", "p", "z", "most", "likely", "instead"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert sorted(rows) == sorted(["C9", "M9", "D2", "S0", "L4", "N1"])
    z = [float(r[2]) for r in rows.values()]
    assert z == sorted(z, reverse=True)  # most surprising first
    detector = Detector.load(installed_pulse)
    ids = [detector.schema.ids(["C9", "M9", "D2", "S0", "L4", "N1"])]
    nll, far = detector.token_figures(ids)
    surprise = detector.calibration.surprise(detector.calibration.z(nll), far)[0]
    assert lines[0].split()[1] == f"{surprise:.2f}"  # what kiri-atom would score
    assert float(rows["C9"][1]) > 3 and rows["C9"][3].startswith("C") and rows["C9"][3] != "C9"
    assert float(rows["N1"][1]) < 0.5


def test_kiri_score_takes_raw_values(installed_pulse):
    usual = decode((FIXTURES / "pulse-normal.ndjson").read_bytes().splitlines()[-1]).values
    text = ",".join(f"{k}={v}" for k, v in usual.items())
    out = run("kiri.cli", "score", "pulse", "--values", text, "--meta", "cpus=2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines()[0].endswith(": normal")


def test_kiri_score_rejects_bad_tokens_and_missing_values(installed_pulse):
    out = run("kiri.cli", "score", "pulse", "C9 M9 D4")
    assert out.returncode == 1 and "expected 6 tokens" in out.stderr.decode()
    out = run("kiri.cli", "score", "pulse", "--values", "cpu=97,mem=95")
    assert out.returncode == 1 and "values.disk is missing" in out.stderr.decode()


def test_kiri_info_pulse_with_and_without_weights(installed_pulse):
    for present in (True, False):
        if not present:
            installed_pulse.unlink()
        out = run("kiri.cli", "info", "pulse")
        assert out.returncode == 0, out.stderr
        text = out.stdout.decode()
        assert "vocab size: 43" in text and "num params: 27840" in text
        assert ("threshold " in text) == present
        assert ("not trained yet" in text) == (not present)


def test_weights_calibrated_without_per_field_figures_ask_for_a_retrain(pulse_weights, tmp_path):
    w = json.loads(pulse_weights.read_text())
    del w["extra"]["calibration"]["field_mean"]
    old = tmp_path / "weights.json"
    old.write_text(json.dumps(w))
    with pytest.raises(WeightsError, match=r"older KIRI.*kiri train pulse"):
        Detector.load(old)


def test_training_leaves_out_an_incident_until_a_person_calls_it_normal(kiri_home):
    lines = (FIXTURES / "pulse-normal.ndjson").read_bytes().splitlines()
    recordings = kiri_home / "data" / "pulse"
    recordings.mkdir(parents=True)
    (recordings / "day.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    ts = [json.loads(line)["ts"] for line in lines]
    with Store() as store:  # an incident from observation 100 to 149, as kiri-feedback keeps it
        for id_, action, t in (("a1", "alert", ts[100]), ("r1", "resolve", ts[149])):
            store.record_alert(
                Decision(id=id_, ts=t, atom="pulse", host="vm", action=action, incident="i1"), ""
            )
    out = run("kiri.cli", "train", "pulse", "--steps", "20")
    assert out.returncode == 0, out.stderr
    said = out.stdout.decode()
    assert "left out 50 observations inside 1 incidents nobody called normal" in said
    assert Detector.load(kiri_home / "atoms/pulse/weights.json").calibration.observations == 190
    with Store() as store:
        store.add_verdict("a1", "dismiss", normal=True)
    out = run("kiri.cli", "train", "pulse", "--steps", "20")
    assert "left out" not in out.stdout.decode()
    assert Detector.load(kiri_home / "atoms/pulse/weights.json").calibration.observations == 240
