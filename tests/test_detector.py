"""The detector's surprise: how improbable an observation's tokens are, and how far its values
lie from what the model predicted."""

import random

import numpy as np
import pytest

from kiri.atoms.detector import train_detector, value_figures
from kiri.atoms.registry import auto_spec
from kiri.wire.records import Obs, Score


def busy_day(n=400):
    """Latency that follows load, as a web server's does."""
    r = random.Random(5)
    out = []
    for i in range(n):
        rate = r.uniform(50, 150)
        out.append(
            Obs(ts=float(i), atom="web", values={"rate": rate, "p99": 0.4 * rate + r.gauss(0, 1)})
        )
    return out


@pytest.fixture(scope="module")
def trained():
    detector, _ = train_detector(auto_spec("web", ["rate", "p99"]), busy_day(), steps=150, batch=16)
    return detector


def one(detector, **values):
    (score,) = detector.score([Obs(ts=0.0, atom="web", values=values)])
    assert isinstance(score, Score)
    return score


def test_a_value_far_beyond_the_last_token_is_more_surprising_than_one_just_beyond(trained):
    top = trained.schema.ordered[1].edges[-1]  # p99: its farthest tail token starts here
    near, far = one(trained, rate=100.0, p99=top + 1), one(trained, rate=100.0, p99=top + 500)
    assert near.tokens == far.tokens and near.z == far.z  # the same tokens: the same -log p
    assert far.surprise > near.surprise > 0


def test_a_token_stands_for_the_mean_of_its_training_values(trained):
    x = np.array([[o.values["rate"], o.values["p99"]] for o in busy_day()])
    rate = trained.schema.ordered[0]
    tokens = value_figures(trained.schema, x).tokens[0]
    buckets = rate.buckets(x[:, 0])
    for k in set(buckets.tolist()):
        assert tokens[k] == pytest.approx(x[buckets == k, 0].mean(), abs=1e-6)
    beyond = rate.edges[-1]  # training never reached the last tail token: its inner edge
    assert tokens[rate.size - 1] == pytest.approx(beyond)


def test_values_people_called_normal_count_in_a_fields_spread(trained):
    x = np.array([[o.values["rate"], o.values["p99"]] for o in busy_day()])
    schema = trained.schema
    plain = value_figures(schema, x)
    tail = [
        f"{schema.ordered[0].prefix}{schema.ordered[0].size - 1}",
        f"{schema.ordered[1].prefix}8",
    ]
    normal = np.array([schema.ids(tail)] * 40)
    taught = value_figures(schema, x, normal)
    assert taught.std[0] > plain.std[0] and taught.tokens == plain.tokens
