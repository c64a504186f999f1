"""Weights files: exact round trips, atomic writes, and one clear line for every corrupt file."""

import json
import os
import random
import subprocess

import numpy as np
import pytest
from conftest import run

from kiri.model import weights
from kiri.model.fast import FastGPT
from kiri.model.size import ModelSize, init_matrices

CONFIG = ModelSize(vocab_size=5, n_layer=1, n_embd=8, n_head=2, block_size=6)
VOCAB = ["a", "b", "c", "d"]


def save_sample(path):
    mats = init_matrices(CONFIG, random.Random(1))
    prov = weights.Provenance(source="test", steps=3, seed=1, engine="fast")
    return weights.save(path, CONFIG, VOCAB, mats, prov), mats


def test_round_trip_is_bit_exact(tmp_path):
    path = tmp_path / "m" / "w.json"
    model_id, mats = save_sample(path)
    w = weights.load(path)
    assert w.id == model_id and len(model_id) == 12
    assert w.config == CONFIG and w.vocab == VOCAB and w.provenance.source == "test"
    for name, m in mats.items():
        assert np.array_equal(w.matrices[name], np.array(m))
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    a, b = FastGPT(CONFIG, mats), FastGPT(w.config, w.matrices)
    assert a.sample(random.Random(3), 0.7) == b.sample(random.Random(3), 0.7)


def corrupt(path, edit):
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


CASES = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:500]), "not a readable weights file"),
    "empty": (lambda p: p.write_bytes(b""), "not a readable weights file"),
    "wrong tag": (
        lambda p: corrupt(p, lambda d: d.update(format="pytorch")),
        "not a KIRI weights file (format 'pytorch'",
    ),
    "newer version": (
        lambda p: corrupt(p, lambda d: d.update(version=99)),
        "weights format version 99 is newer",
    ),
    "wrong shape": (
        lambda p: corrupt(p, lambda d: d["params"]["wpe"].pop()),
        "parameter wpe has shape 5x8, expected 6x8",
    ),
    "ragged row": (
        lambda p: corrupt(p, lambda d: d["params"]["lm_head"][2].append(0.5)),
        "parameter lm_head has shape",
    ),
    "missing matrix": (
        lambda p: corrupt(p, lambda d: d["params"].pop("layer0.mlp_fc1")),
        "missing ['layer0.mlp_fc1']",
    ),
    "NaN": (
        lambda p: p.write_text(p.read_text().replace("[[", "[[NaN,", 1)),
        "not a readable weights file",
    ),
    "out of range": (
        lambda p: corrupt(p, lambda d: d["params"]["wte"][0].__setitem__(0, 1e999)),
        "not a readable weights file",
    ),
    "vocab mismatch": (
        lambda p: corrupt(p, lambda d: d["vocab"].pop()),
        "vocabulary has 3 tokens but the config says vocab_size 5",
    ),
    "bad config": (
        lambda p: corrupt(p, lambda d: d["config"].update(n_head=3)),
        "n_embd 8 is not divisible by n_head 3",
    ),
    "string number": (
        lambda p: corrupt(p, lambda d: d["params"]["wte"][0].__setitem__(0, "1")),
        "not a readable weights file: ",  # then msgspec's reason
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_corrupt_file_fails_with_one_line_naming_file_and_problem(tmp_path, case):
    path = tmp_path / "w.json"
    save_sample(path)
    damage, message = CASES[case]
    damage(path)
    with pytest.raises(weights.WeightsError) as err:
        weights.load(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_a_non_finite_value_is_rejected_even_if_it_parses(tmp_path):
    path = tmp_path / "w.json"
    save_sample(path)
    w = weights.load(path)
    w.matrices["wte"][0, 0] = np.inf
    weights.save(path, CONFIG, VOCAB, w.matrices, w.provenance)  # encodes inf as null
    with pytest.raises(weights.WeightsError) as err:
        weights.load(path)
    prefix = f"{path}: not a readable weights file: "  # then msgspec's reason
    assert str(err.value).startswith(prefix) and str(err.value).removeprefix(prefix).strip()


def test_a_missing_file_names_the_file(tmp_path):
    with pytest.raises(weights.WeightsError, match=f"{tmp_path}/nope.json: cannot read weights"):
        weights.load(tmp_path / "nope.json")


def test_a_failed_write_leaves_the_good_file_and_no_debris(tmp_path, monkeypatch):
    path = tmp_path / "w.json"
    save_sample(path)
    before = path.read_bytes()

    def crash(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk gone"):
        save_sample(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.json"]


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_what_a_writer_killed_mid_write_left_is_removed_by_the_next_save(tmp_path):
    path = tmp_path / "w.json"
    save_sample(path)
    stale = tmp_path / f".w.json.{dead_pid()}.k3j4h5g6.tmp"
    older = tmp_path / ".w.json.k3j4h5g6.tmp"  # named before writers named them after themselves
    under_way = tmp_path / f".w.json.{os.getpid()}.a1b2c3d4.tmp"
    for tmp in (stale, older, under_way):
        tmp.write_bytes(b'{"format":"kiri-weights","vers')
    save_sample(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [under_way.name, "w.json"]
    weights.load(path)
    assert under_way.exists()


def test_a_load_removes_them_too(tmp_path):
    path = tmp_path / "w.json"
    save_sample(path)
    stale = tmp_path / f".w.json.{dead_pid()}.k3j4h5g6.tmp"
    stale.write_bytes(b"{")
    weights.load(path)
    assert not stale.exists()


def test_cli_info_and_generate_use_the_file(tmp_path):
    path = tmp_path / "w.json"
    save_sample(path)
    info = run("kiri.cli", "info", str(path))
    assert info.returncode == 0
    text = info.stdout.decode()
    assert "vocab (4 + BOS): a b c d" in text
    assert "layer0.mlp_fc1       32 x 8         256" in text
    assert text.splitlines()[-2].split() == ["total", "896"]
    gen = run("kiri.cli", "generate", str(path), "--samples", "3", "--seed", "5")
    assert gen.returncode == 0
    w = weights.load(path)
    rng = random.Random(5)
    engine = FastGPT(w.config, w.matrices)
    expected = [
        f"sample {i + 1:2d}: " + "".join(VOCAB[t] for t in engine.sample(rng, 0.5))
        for i in range(3)
    ]
    assert gen.stdout.decode().splitlines() == expected


def test_cli_on_a_corrupt_file_is_one_error_line(tmp_path):
    path = tmp_path / "w.json"
    path.write_text("{")
    for cmd in ("info", "generate"):
        out = run("kiri.cli", cmd, str(path))
        assert out.returncode == 1
        [line] = out.stderr.decode().splitlines()  # KIRI's prefix, then msgspec's reason
        assert line.startswith(f"Error: {path}: not a readable weights file: ")
        assert line.removeprefix(f"Error: {path}: not a readable weights file: ").strip()
