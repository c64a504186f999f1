"""Schemas: values to tokens to ids, and back; nothing missing is ever read as zero."""

import math
import time

import msgspec
import pytest

from kiri.atoms.pulse import SCHEMA
from kiri.atoms.registry import atom_spec
from kiri.atoms.schema import Field, Schema, SchemaError, clock_field
from kiri.model.size import num_params

META = {"cpus": "2"}


def values(**kw):
    base = {"cpu": 5.0, "mem": 50.0, "disk": 40.0, "swap": 0.0, "load": 0.4, "net": 1.0}
    base.update(kw)
    return base


def test_pulse_schema_is_the_designs():
    assert SCHEMA.vocab == (
        [f"C{i}" for i in range(10)]
        + [f"M{i}" for i in range(10)]
        + [f"D{i}" for i in range(10)]
        + [f"S{i}" for i in range(5)]
        + [f"L{i}" for i in range(5)]
        + ["N0", "N1"]
    )
    assert SCHEMA.vocab_size == 43
    assert num_params(atom_spec("pulse").config()) == 27840


def test_uniform_buckets_clamp_at_the_edges():
    assert SCHEMA.tokenize(values(cpu=0, mem=100, disk=49.9, swap=20, load=0.6, net=0), META) == [
        "C0",
        "M9",
        "D4",
        "S1",
        "L1",
        "N0",
    ]
    assert SCHEMA.tokenize(values(cpu=-5, mem=250, disk=10, swap=99, load=99, net=1), META) == [
        "C0",
        "M9",
        "D1",
        "S4",
        "L4",
        "N1",
    ]


def test_load_is_per_cpu():
    assert SCHEMA.tokenize(values(load=2.0), {"cpus": "2"})[4] == "L4"
    assert SCHEMA.tokenize(values(load=2.0), {"cpus": "8"})[4] == "L1"
    with pytest.raises(SchemaError, match=r"meta\.cpus is missing"):
        SCHEMA.tokenize(values(), {})


@pytest.mark.parametrize(
    "bad, reason",
    [
        ({"cpu": None}, "values.cpu is missing"),
        ({"mem": float("nan")}, "values.mem is not a finite number"),
        ({"disk": math.inf}, "values.disk is not a finite number"),
    ],
)
def test_missing_or_non_finite_values_are_rejected_not_zeroed(bad, reason):
    with pytest.raises(SchemaError, match=reason):
        SCHEMA.tokenize(values(**bad), META)


def test_an_absent_field_is_missing():
    v = values()
    del v["swap"]
    with pytest.raises(SchemaError, match=r"values\.swap is missing"):
        SCHEMA.tokenize(v, META)


def test_ids_wrap_the_tokens_in_bos():
    ids = SCHEMA.ids(["C5", "M5", "D4", "S1", "L1", "N1"])
    assert ids == [42, 5, 15, 24, 31, 36, 41, 42]
    assert [SCHEMA.vocab[i] for i in ids[1:-1]] == ["C5", "M5", "D4", "S1", "L1", "N1"]


def test_parse_checks_each_token_against_its_field():
    assert SCHEMA.parse("C9 M9 D4 S4 L4 N1") == ["C9", "M9", "D4", "S4", "L4", "N1"]
    with pytest.raises(SchemaError, match="expected 6 tokens"):
        SCHEMA.parse("C9 M9")
    with pytest.raises(SchemaError, match="'M9' is not a CPU token"):
        SCHEMA.parse("M9 C9 D4 S4 L4 N1")
    with pytest.raises(SchemaError, match="'S7' is not a swap token"):
        SCHEMA.parse("C1 M1 D1 S7 L1 N1")


def test_auto_fields_fit_quantile_edges():
    schema = Schema([Field("x", "X", 4, auto=True)])
    fitted = schema.fit([{"x": float(i)} for i in range(100)], [{}] * 100)
    # quartiles of the bulk (the middle 99.8%): 99 x (0.001 + 0.998 x k / 4)
    assert fitted.fields[0].edges == pytest.approx([24.7995, 49.5, 74.2005])
    assert [fitted.tokenize({"x": x}, {})[0] for x in (-10, 30, 60, 1e9)] == [
        "X0",
        "X1",
        "X2",
        "X3",
    ]


def test_context_fields_lead_the_document_and_are_not_scored():
    schema = Schema([Field("load", "L", 3, 0, 3), Field("hour", "H", 24, 0, 24, context=True)])
    assert schema.tokenize({"load": 1.5, "hour": 3}, {}) == ["H3", "L1"]
    assert schema.n_context == 1 and schema.scored == slice(2, 3)
    assert schema.vocab[:2] == ["H0", "H1"]


def test_colliding_prefixes_are_refused():
    with pytest.raises(ValueError, match="same token twice"):
        Schema([Field("a", "C", 20), Field("b", "C1", 3)])


def test_a_schema_survives_json():
    again = msgspec.json.decode(msgspec.json.encode(SCHEMA), type=Schema)
    assert again == SCHEMA


def test_encoding_many_at_once_matches_one_at_a_time():
    cpus, loads = (0, 9.99, 10, 55.5, 100, 140, -3), (0, 0.3, 9)
    rows = [values(cpu=cpu, load=load) for cpu in cpus for load in loads]
    metas = [META] * len(rows)
    rows += [values(cpu=None), values(mem=float("nan")), values()]
    metas += [META, META, {"cpus": "zero"}]
    ids, errors = SCHEMA.encode_many(rows, metas)
    for i, (v, m) in enumerate(zip(rows, metas, strict=True)):
        try:
            assert ids[i].tolist() == SCHEMA.encode(v, m)
        except SchemaError as e:
            assert str(errors[i]) == str(e)
    assert sorted(errors) == [len(rows) - 3, len(rows) - 2, len(rows) - 1]
    fitted = Schema([Field("x", "X", 4, auto=True)]).fit(
        [{"x": float(i)} for i in range(100)], [{}] * 100
    )
    many, _ = fitted.encode_many([{"x": x} for x in (-1.0, 24.75, 50.0, 1e9)], [{}] * 4)
    assert many[:, 1].tolist() == [fitted.encode({"x": x}, {})[1] for x in (-1.0, 24.75, 50.0, 1e9)]


EDGE_VALUES = [
    (1e20, "C9", "L4"),
    (1e300, "C9", "L4"),
    (1.7976931348623157e308, "C9", "L4"),  # the largest float: divided by cpus, still finite
    (-1e300, "C0", "L0"),
    (-1.7976931348623157e308, "C0", "L0"),
    (5e-324, "C0", "L0"),
    (-5e-324, "C0", "L0"),
]


@pytest.mark.parametrize("x, cpu, load", EDGE_VALUES)
def test_values_at_the_float_edges_land_in_the_end_buckets_one_at_a_time_and_many(x, cpu, load):
    row = values(cpu=x, load=x)
    assert [SCHEMA.tokenize(row, META)[i] for i in (0, 4)] == [cpu, load]
    ids, errors = SCHEMA.encode_many([row, values()], [META, META])
    assert not errors
    assert ids[0].tolist() == SCHEMA.encode(row, META)


@pytest.mark.parametrize(
    "cpus, reason",
    [
        ("nan", "meta.cpus is missing or not a number"),
        ("9_9x", "meta.cpus is missing or not a number"),
        ("inf", "meta.cpus must be a positive finite number, not 'inf'"),
        ("1e-320", "meta.cpus must be a positive finite number, not '1e-320'"),
        ("5e-324", "meta.cpus must be a positive finite number, not '5e-324'"),
        ("0", "meta.cpus must be a positive finite number, not '0'"),
        ("-2", "meta.cpus must be a positive finite number, not '-2'"),
        ("1e-300", "values.load / meta.cpus is beyond float range"),  # 1e10 / 1e-300
    ],
)
def test_a_divisor_that_is_no_number_of_cpus_rejects_the_row_alone(cpus, reason):
    bad = values(load=1e10)
    assert SCHEMA.meta_problem({"cpus": cpus}) == (None if "values." in reason else reason)
    with pytest.raises(SchemaError) as e:
        SCHEMA.tokenize(bad, {"cpus": cpus})
    assert str(e.value) == reason
    ids, errors = SCHEMA.encode_many([values(), bad, values()], [META, {"cpus": cpus}, META])
    assert {i: str(e) for i, e in errors.items()} == {1: reason}
    assert ids[2].tolist() == SCHEMA.encode(values(), META)


def test_tail_tokens_grade_how_far_beyond_the_bulk_of_training_a_value_is():
    schema = Schema([Field("x", "X", 4, auto=True, tails=4)])
    train = [{"x": float(i)} for i in range(10001)]  # bulk 10..9990 (0.1% left out each end)
    fitted = schema.fit(train, [{}] * len(train))
    f = fitted.fields[0]
    assert f.size == 4 + 2 * 4 and len(fitted.vocab) == 12
    assert fitted.fit(train, [{}] * len(train)) == fitted  # refits the same
    assert f.edges == pytest.approx(
        [-39910, -9970, -2485, 10, 2505, 5000, 7495, 9990, 12485, 19970, 49910]
    )
    tokens = [fitted.tokenize({"x": x}, {})[0] for x in (-5e4, -5000, 5, 5000, 9995, 15000, 1e6)]
    assert tokens == ["X0", "X2", "X3", "X6", "X8", "X9", "X11"]


def test_a_rare_spike_in_training_does_not_make_nearby_values_ordinary():
    # 99.9% of training at 0.02, a few spikes to 1.0: 0.16 is far from the bulk, not "high"
    train = [{"x": 0.02}] * 9990 + [{"x": 1.0}] * 10
    fitted = Schema([Field("x", "X", 10, auto=True, tails=4)]).fit(train, [{}] * len(train))
    usual, odd = (fitted.tokenize({"x": x}, {})[0] for x in (0.02, 0.16))
    assert usual != odd and odd == f"X{fitted.fields[0].size - 1}"


def test_a_clock_field_reads_the_observations_local_time():
    schema = Schema([clock_field("hour", "H"), Field("x", "X", 4, 0, 4)])
    ts = time.mktime((2026, 12, 2, 13, 30, 0, 0, 0, -1))  # 13:30 local
    assert schema.tokenize({"x": 1.0}, {}, ts) == ["H13", "X1"]
    ids, errors = schema.encode_many([{"x": 1.0}, {"x": 2.0}], [{}, {}], [ts, ts + 3600])
    assert not errors and ids[:, 1].tolist() == [13, 14]
    with pytest.raises(ValueError, match="fixed context field"):
        Schema([Field("hour", "H", 24, 0, 24, clock="hour")])


def test_fitting_keeps_a_clock_field_only_when_training_saw_all_its_values():
    schema = Schema([clock_field("hour", "H"), clock_field("weekday", "W"), Field("x", "X", 4)])
    start = time.mktime((2026, 12, 2, 0, 0, 0, 0, 0, -1))
    day = [start + 600 * i for i in range(6 * 24)]  # one day, every ten minutes
    fitted = schema.fit([{"x": 1.0}] * len(day), [{}] * len(day), day)
    assert [f.name for f in fitted.fields] == ["hour", "x"]  # a day has every hour, one weekday
    half = day[: len(day) // 2]
    assert [
        f.name for f in schema.fit([{"x": 1.0}] * len(half), [{}] * len(half), half).fields
    ] == ["x"]
