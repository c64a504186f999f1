"""The one backoff: doubling waits, a requested wait taken once, and a failure said once."""

from kiri.wire.backoff import Backoff


def test_waits_double_up_to_the_most_and_a_success_starts_over():
    b = Backoff(1.0, most=5.0)
    assert [b.failed("down") for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert b.succeeded() is True and b.succeeded() is False
    assert b.failed("down") == 1.0


def test_a_wait_the_other_side_asked_for_is_taken_once_but_never_beyond_the_most():
    b = Backoff(1.0, most=30.0)
    assert [b.failed("busy", asked=10.0), b.failed("busy"), b.failed("busy", asked=99.0)] == [
        10.0,
        2.0,
        30.0,
    ]


def test_a_failure_is_new_only_when_its_reason_changes():
    b = Backoff(0.5)
    changes = [(b.failed(r), b.changed)[1] for r in ("refused", "refused", "timeout", "timeout")]
    assert changes == [True, False, True, False]
    b.succeeded()
    b.failed("refused")
    assert b.changed
