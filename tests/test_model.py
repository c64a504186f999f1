"""The atom engine: microgpt reproduced exactly, and the fast engine held to the reference."""

import random

import numpy as np
import pytest
from conftest import FIXTURES, run

from kiri.model.engine import Value
from kiri.model.fast import FastGPT
from kiri.model.gpt import GPT, softmax
from kiri.model.size import ModelSize, init_matrices, num_params
from kiri.model.training import TextDocs

NAMES = FIXTURES / "names.txt"  # the makemore names, as in ../shared/data
MICROGPT_SAMPLES = [
    "kamon",
    "ann",
    "karai",
    "jaire",
    "vialan",
    "karia",
    "yeran",
    "anna",
    "areli",
    "kaina",
    "konna",
    "keylen",
    "liole",
    "alerin",
    "earan",
    "lenne",
    "kana",
    "lara",
    "alela",
    "anton",
]


def names_setup(steps_rng_seed=42):
    rng = random.Random(steps_rng_seed)
    docs = TextDocs(NAMES, rng)
    config = ModelSize(vocab_size=docs.vocab_size)
    return rng, docs, config, init_matrices(config, rng)


def test_kiri_train_reproduces_the_published_microgpt_run(tmp_path):
    out = run("kiri.cli", "train", "--text", str(NAMES), "--out", str(tmp_path / "w.json"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert lines[:4] == [
        "num docs: 32033",
        "vocab size: 27",
        "num params: 4192",
        "step    1 / 1000 | loss 3.3660",
    ]
    assert "step 1000 / 1000 | loss 2.6497" in lines
    samples = [line for line in lines if line.startswith("sample ")]
    assert samples == [f"sample {i + 1:2d}: {name}" for i, name in enumerate(MICROGPT_SAMPLES)]
    assert (tmp_path / "w.json").exists()


def test_progress_lines_at_step_one_every_n_and_the_last(tmp_path):
    out = run(
        "kiri.cli",
        "train",
        "--text",
        str(NAMES),
        "--steps",
        "10",
        "--log-every",
        "4",
        "--samples",
        "0",
        "--out",
        str(tmp_path / "w.json"),
    )
    steps = [
        line.split("|")[0].strip()
        for line in out.stdout.decode().splitlines()
        if line.startswith("step")
    ]
    assert steps == ["step    1 /   10", "step    4 /   10", "step    8 /   10", "step   10 /   10"]


def test_pure_engine_first_steps_match_the_published_loss_and_the_fast_engine():
    rng, docs, config, mats = names_setup()
    tokens = docs.token_docs()
    pure_rng, fast_rng = random.Random(), random.Random()
    pure_rng.setstate(rng.getstate())
    fast_rng.setstate(rng.getstate())
    pure, fast = GPT(config, mats), FastGPT(config, mats)
    pure_losses, fast_losses = [], []
    for step in range(3):
        lr = 0.01 * (1 - step / 1000)
        pure_losses.append(pure.train_step([tokens[step]], lr))
        fast_losses.append(fast.train_step([tokens[step]], lr))
    assert f"{pure_losses[0]:.4f}" == "3.3660"
    np.testing.assert_allclose(fast_losses, pure_losses, rtol=1e-12)
    for name, m in pure.matrices().items():
        np.testing.assert_allclose(fast.w[name], m, rtol=1e-9, atol=1e-15)
    assert [pure.sample(pure_rng, 0.5) for _ in range(3)] == [
        fast.sample(fast_rng, 0.5) for _ in range(3)
    ]


def random_case(seed):
    r = random.Random(seed)
    n_head = r.randint(1, 4)
    config = ModelSize(
        vocab_size=r.randint(3, 9),
        n_layer=r.randint(1, 3),
        n_embd=n_head * r.randint(1, 3),
        n_head=n_head,
        block_size=r.randint(3, 7),
    )
    bos = config.vocab_size - 1
    docs = [
        [bos] + [r.randrange(bos) for _ in range(r.randint(0, 9))] + [bos]
        for _ in range(r.randint(2, 4))
    ]  # uneven lengths, some past the block size
    return config, init_matrices(config, random.Random(seed + 1000)), docs


Cache = list[list[list[Value]]]  # per layer, a key (or value) vector for each position so far


def empty_cache(config: ModelSize) -> tuple[Cache, Cache]:
    """GPT.forward's keys and values at the start of a document."""
    return [[] for _ in range(config.n_layer)], [[] for _ in range(config.n_layer)]


@pytest.mark.parametrize("seed", range(8))
def test_fast_gradients_equal_the_value_engine_gradients(seed):
    config, mats, docs = random_case(seed)
    pure, fast = GPT(config, mats), FastGPT(config, mats)
    loss = pure.loss(docs)
    loss.backward()
    fast_loss = fast.loss_and_grad(docs)
    assert fast_loss == pytest.approx(loss.data, rel=1e-12)
    pure_grad = np.array([p.grad for p in pure.params])
    np.testing.assert_allclose(
        fast.grad, pure_grad, rtol=1e-9, atol=1e-13 * np.abs(pure_grad).max()
    )
    assert np.abs(pure_grad).max() > 0


def test_batched_adam_steps_track_the_reference():
    config, mats, docs = random_case(3)
    pure, fast = GPT(config, mats), FastGPT(config, mats)
    for _ in range(4):
        assert fast.train_step(docs, 0.01) == pytest.approx(pure.train_step(docs, 0.01), rel=1e-9)
    for name, m in pure.matrices().items():
        np.testing.assert_allclose(fast.w[name], m, rtol=1e-8, atol=1e-12)


def test_token_nll_is_the_reference_minus_log_p_and_skips_context():
    config, mats, _ = random_case(5)
    bos = config.vocab_size - 1
    r = random.Random(7)
    length = min(config.block_size, 6) + 1
    ids = np.array(
        [[bos] + [r.randrange(bos) for _ in range(length - 2)] + [bos] for _ in range(5)]
    )
    fast, pure = FastGPT(config, mats), GPT(config, mats)
    nll = fast.token_nll(ids)
    assert nll.shape == (5, length - 1)
    for b in range(5):
        keys, values = empty_cache(config)
        for pos in range(length - 1):
            probs = softmax(pure.forward(int(ids[b, pos]), pos, keys, values))
            assert nll[b, pos] == pytest.approx(-np.log(probs[ids[b, pos + 1]].data), rel=1e-9)
    np.testing.assert_allclose(fast.token_nll(ids, first=3), nll[:, 2:], rtol=1e-12)
    np.testing.assert_allclose(
        fast.token_nll(ids, first=2, stop=length - 1), nll[:, 1:-1], rtol=1e-12
    )
    one_by_one = np.vstack([fast.token_nll(ids[b : b + 1]) for b in range(5)])
    np.testing.assert_allclose(one_by_one, nll, rtol=1e-12)


def test_attention_scores_too_large_for_exp_still_match_the_reference():
    config, mats, _ = random_case(5)
    for name in mats:  # scores in the thousands: exp() overflows unless each row's max is taken
        if name.endswith(("attn_wq", "attn_wk")):
            mats[name] = [[x * 300 for x in row] for row in mats[name]]
    bos = config.vocab_size - 1
    ids = np.array([[bos, 0, 1, 2, 1, bos][: config.block_size + 1]])
    fast, pure = FastGPT(config, mats), GPT(config, mats)
    nll = fast.token_nll(ids)
    keys, values = empty_cache(config)
    for pos in range(ids.shape[1] - 1):
        probs = softmax(pure.forward(int(ids[0, pos]), pos, keys, values))
        assert nll[0, pos] == pytest.approx(-np.log(probs[ids[0, pos + 1]].data), rel=1e-6)


def test_logits_too_large_for_exp_still_give_the_reference_minus_log_p():
    config, mats, _ = random_case(5)
    mats["lm_head"] = [[x * 3000 for x in row] for row in mats["lm_head"]]  # exp() overflows
    bos = config.vocab_size - 1
    ids = np.array([[bos, 0, 1, 2, 1, bos][: config.block_size + 1]])
    fast, pure = FastGPT(config, mats), GPT(config, mats)
    nll = fast.token_nll(ids)
    assert np.isfinite(nll).all()
    keys, values = empty_cache(config)
    for pos in range(ids.shape[1] - 1):
        logits = np.array([v.data for v in pure.forward(int(ids[0, pos]), pos, keys, values)])
        expected = (
            np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[ids[0, pos + 1]]
        )
        assert nll[0, pos] == pytest.approx(expected, rel=1e-6, abs=1e-9)


GROUPS = [range(3), range(3, 5), range(5, 8), range(8, 9)]  # three fields, then BOS


def restricted_case():
    config = ModelSize(vocab_size=9, n_layer=1, n_embd=8, n_head=2, block_size=4)
    fast = FastGPT(config, init_matrices(config, random.Random(1)))
    fast.restrict_outputs(GROUPS)
    return fast, [[8, 1, 4, 6, 8], [8, 2, 3, 7, 8], [8, 0, 4, 5, 8]]


def test_restricted_outputs_are_the_softmax_over_each_positions_own_tokens():
    fast, docs = restricted_case()
    full = FastGPT(fast.config, fast.matrices())  # the same weights, softmax over all tokens
    ids = np.array(docs)
    nll = fast.token_nll(ids)
    for b, doc in enumerate(docs):
        for pos, group in enumerate(GROUPS[:3]):
            z = full.next_logits(doc[: pos + 1])[list(group)]
            p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            assert nll[b, pos] == pytest.approx(-np.log(p[doc[pos + 1] - group.start]), rel=1e-9)
        assert nll[b, 3] == pytest.approx(0.0, abs=1e-12)  # BOS is the only token after the last
    assert np.isneginf(fast.next_logits(docs[0][:2])[[0, 1, 2, 5, 6, 7, 8]]).all()


def test_scoring_many_documents_through_the_first_layer_table_equals_one_at_a_time():
    fast, _ = restricted_case()
    r = random.Random(3)
    docs = np.array([[8] + [r.choice(g) for g in GROUPS[:3]] + [8] for _ in range(40)])
    batched = fast.token_nll(docs)  # 40 documents > 3 slots: layer 0 is looked up
    one_by_one = np.vstack([fast.token_nll(docs[b : b + 1]) for b in range(len(docs))])
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-12, atol=1e-15)
    stray = docs.copy()
    stray[5, 2] = 0  # a token of the first field where the second belongs: computed, not looked up
    expected = np.vstack([fast.token_nll(stray[b : b + 1]) for b in range(len(stray))])
    np.testing.assert_allclose(fast.token_nll(stray), expected, rtol=1e-12, atol=1e-15)


def test_distance_is_the_expected_gap_between_the_value_and_the_models_prediction():
    fast, docs = restricted_case()
    full = FastGPT(fast.config, fast.matrices())
    ids = np.array(docs)
    slot_values = np.array([[0.0, 10.0, 20.0], [1.0, 2.0, 0.0], [5.0, 7.0, 9.0]])  # (fields, S)
    observed = np.array([[4.0, 1.5, 9.0], [30.0, 2.0, 5.0], [0.0, 0.0, 7.0]])
    nll, far = fast.token_scores(ids, 1, 4, slot_values, observed)
    np.testing.assert_allclose(nll, fast.token_nll(ids, 1, 4), rtol=1e-12)
    assert far is not None
    for b, doc in enumerate(docs):
        for pos, group in enumerate(GROUPS[:3]):
            z = full.next_logits(doc[: pos + 1])[list(group)]
            p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            gap = np.abs(observed[b, pos] - slot_values[pos, : len(group)])
            assert far[b, pos] == pytest.approx(float(p @ gap), rel=1e-9)  # padding slots: p = 0
    assert fast.token_scores(ids, 1, 4)[1] is None  # no values: -log p alone


def test_restricted_gradients_match_finite_differences():
    fast, docs = restricted_case()
    fast.loss_and_grad(docs)
    grad, eps, r = fast.grad.copy(), 1e-6, random.Random(0)
    for i in r.sample(range(len(fast.theta)), 100):
        old = fast.theta[i]
        fast.theta[i] = old + eps
        up = fast.loss_and_grad(docs)
        fast.theta[i] = old - eps
        down = fast.loss_and_grad(docs)
        fast.theta[i] = old
        assert (up - down) / (2 * eps) == pytest.approx(grad[i], abs=1e-7)


def test_the_pulse_atom_size_has_27840_parameters():
    assert (
        num_params(ModelSize(vocab_size=43, n_layer=2, n_embd=32, n_head=4, block_size=16)) == 27840
    )
    assert num_params(ModelSize(vocab_size=27)) == 4192
