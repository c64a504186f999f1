"""An atom nobody wrote a module for: its schema is fitted from its observations (`auto`)."""

import random

import msgspec
from conftest import measured, run

from kiri.wire.records import Obs, Score

encode = msgspec.json.Encoder().encode


def write_observations(path, n=300, fields=("req_rate", "p99_ms", "errors")):
    r = random.Random(3)
    with path.open("wb") as f:
        for i in range(n):
            rate = r.uniform(50, 150)  # latency follows load: the atom can learn that
            values = {"req_rate": rate, "p99_ms": 0.4 * rate + r.gauss(0, 1), "errors": r.random()}
            f.write(
                encode(
                    Obs(
                        ts=float(i * 60),
                        atom="web",
                        host="api-1",
                        values={k: values[k] for k in fields},
                    )
                )
                + b"\n"
            )


def test_train_fits_an_auto_schema_and_the_atom_scores_with_it(tmp_path, kiri_home):
    data = tmp_path / "web.ndjson"
    write_observations(data)
    out = run("kiri.cli", "train", "web", "--from", str(data), "--steps", "150", timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines()[0] == "loaded 300 observations from 1 files"
    info = run("kiri.cli", "info", "web").stdout.decode()
    # 10 quantile buckets (4-13) and 4 graded tail tokens below (0-3) and above (14-17)
    assert "req_rate:0-req_rate:17" in info and "quantile edges" in info
    assert "vocab size: 55" in info and "block_size 4" in info  # follows from the schema

    normal: dict[str, float | None] = {"req_rate": 140.0, "p99_ms": 56.0, "errors": 0.5}
    # fast answers under a heavy load, then far beyond anything seen
    odd: dict[str, float | None] = {"req_rate": 140.0, "p99_ms": 20.0, "errors": 0.5}
    far: dict[str, float | None] = {"req_rate": 140.0, "p99_ms": 900.0, "errors": 0.5}
    lines = [
        encode(Obs(ts=1e6 + i, atom="web", host="api-1", values=v))
        for i, v in enumerate([normal, odd, far])
    ]
    scored = run("kiri.score.stage", "web", input=b"\n".join(lines) + b"\n")
    assert scored.returncode == 0, scored.stderr
    calm, spike, excursion = [
        msgspec.json.decode(line, type=Score) for line in scored.stdout.splitlines()
    ]
    assert calm.tokens[:2] == ["req_rate:13", "p99_ms:13"]
    assert spike.tokens == ["req_rate:13", "p99_ms:3", calm.tokens[2]]  # just below the bulk
    assert excursion.tokens[1] == "p99_ms:17"
    # each value against its field's training median, in robust spreads: the fast answer is an
    # ordinary value in an odd combination (the model's z sees it), the excursion is far out
    assert len(calm.spread) == 3 and max(map(abs, calm.spread)) < 3
    assert -3 < spike.spread[1] < 0 and excursion.spread[1] > 50 > abs(excursion.spread[0])
    for odd_one in (spike, excursion):
        assert odd_one.surprise > calm.surprise + 1
        assert max(zip(odd_one.nll, odd_one.tokens, strict=True))[1] == odd_one.tokens[1]


def test_an_unknown_atom_without_data_or_weights_is_a_clear_error(kiri_home):
    out = run("kiri.cli", "train", "nothing")
    assert out.returncode == 1
    assert "unknown atom 'nothing'" in out.stderr.decode()
    out = run("kiri.score.stage", "nothing")
    assert out.returncode == 2 and "unknown atom 'nothing'" in out.stderr.decode()


def test_retraining_refits_the_schema_to_the_new_data(tmp_path, kiri_home):
    old, new = tmp_path / "old.ndjson", tmp_path / "new.ndjson"
    write_observations(old)
    lines = []
    for line in old.read_bytes().splitlines():  # the same service, now ten times busier
        obs = msgspec.json.decode(line, type=Obs)
        obs.values = {k: v * 10 for k, v in measured(obs.values).items()}
        lines.append(encode(obs))
    new.write_bytes(b"\n".join(lines) + b"\n")
    for path in (old, new):
        assert run("kiri.cli", "train", "web", "--from", str(path), "--steps", "20").returncode == 0
    from kiri.atoms.detector import Detector

    detector = Detector.load(kiri_home / "atoms" / "web" / "weights.json")
    rate = detector.schema.fields[0]
    assert rate.size == 18 and 500 < rate.edges[4 + 4] < 1500  # the busier data's quantiles
    assert detector.engine.config.n_layer == 1


def test_an_atom_asked_for_the_clock_learns_the_hour_once_its_data_spans_every_hour(
    tmp_path, kiri_home
):
    kiri_home.mkdir(parents=True, exist_ok=True)
    (kiri_home / "config.toml").write_text('[atoms.web]\nclock = ["hour"]\n')
    hours, day = tmp_path / "hours.ndjson", tmp_path / "day.ndjson"
    write_observations(hours, n=24 * 12)  # a minute apart: 4.8 hours
    out = run("kiri.cli", "train", "web", "--from", str(hours), "--steps", "50", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "hour:" not in run("kiri.cli", "info", "web").stdout.decode()  # not every hour seen
    with day.open("wb") as f:  # every 5 minutes for a day
        for line in hours.read_bytes().splitlines():
            obs = msgspec.json.decode(line, type=Obs)
            obs.ts *= 5
            f.write(encode(obs) + b"\n")
    out = run("kiri.cli", "train", "web", "--from", str(day), "--steps", "50", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "hour:0-hour:23" in run("kiri.cli", "info", "web").stdout.decode()
    (kiri_home / "config.toml").write_text('[atoms.web]\nclock = ["minute"]\n')
    bad = run("kiri.cli", "train", "web", "--from", str(day), "--steps", "50", timeout=120)
    assert bad.returncode != 0 and b"'minute' is not a clock field" in bad.stderr
