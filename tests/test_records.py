import msgspec
import pytest
from conftest import fixture_bytes

from kiri.wire.records import KINDS, Decision, Obs, Outcome, Record, Rule, Score, Verdict

decoder = msgspec.json.Decoder(Record)
encoder = msgspec.json.Encoder()


def test_the_union_has_the_six_kinds_of_the_design():
    assert set(KINDS) == {"obs", "score", "decision", "outcome", "verdict", "rule"}


@pytest.mark.parametrize("line", fixture_bytes("kinds.ndjson").splitlines())
def test_every_kind_round_trips_byte_for_byte(line):
    record = decoder.decode(line)
    assert encoder.encode(record) == line
    assert decoder.decode(encoder.encode(record)) == record


def test_each_fixture_line_is_a_different_kind():
    kinds = [type(decoder.decode(line)) for line in fixture_bytes("kinds.ndjson").splitlines()]
    assert kinds == [Obs, Score, Decision, Outcome, Verdict, Rule]


def test_an_unknown_field_is_ignored():
    rec = decoder.decode(b'{"kind":"outcome","id":"d-1","sink":"log","added_later":{"x":[1,2]}}')
    assert rec == Outcome(id="d-1", sink="log")


def test_an_old_record_with_fields_missing_gets_the_defaults():
    rec = decoder.decode(b'{"kind":"score","atom":"pulse","surprise":1.5}')
    assert rec == Score(atom="pulse", surprise=1.5)
    assert rec.tokens == [] and rec.nll == [] and rec.threshold == 0.0 and rec.ts == 0.0


def test_a_kind_alone_decodes_every_kind():
    for kind, cls in KINDS.items():
        assert decoder.decode(b'{"kind":"%s"}' % kind.encode()) == cls()


# Well-formed JSON that does not fit a record is a ValidationError, whose wording is msgspec's.


def test_a_wrong_type_is_rejected():
    with pytest.raises(msgspec.ValidationError):
        decoder.decode(b'{"kind":"obs","values":{"cpu":"high"}}')
    with pytest.raises(msgspec.ValidationError):
        decoder.decode(b'{"kind":"outcome","ok":1}')


def test_an_unknown_kind_and_a_missing_kind_are_rejected():
    with pytest.raises(msgspec.ValidationError):
        decoder.decode(b'{"kind":"alarm"}')
    with pytest.raises(msgspec.ValidationError):
        decoder.decode(b'{"atom":"pulse"}')


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"1e999", b"-1e999"])
def test_non_finite_numbers_never_decode(number):
    with pytest.raises(msgspec.MsgspecError):
        decoder.decode(b'{"kind":"obs","values":{"cpu":%s}}' % number)


def test_a_missing_value_stays_missing_not_zero():
    rec = decoder.decode(b'{"kind":"obs","values":{"cpu":null,"mem":0}}')
    assert isinstance(rec, Obs) and rec.values == {"cpu": None, "mem": 0.0}
    assert encoder.encode(Obs(values={"cpu": float("nan")})).count(b'"cpu":null') == 1
