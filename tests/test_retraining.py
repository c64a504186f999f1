"""The retraining schedule kiri-atom and the online benchmarks share."""

import fcntl

import pytest
from conftest import run

from kiri.atoms.retraining import DEFAULT, Schedule
from kiri.atoms.training_jobs import BUSY


def test_the_default_retrains_daily_on_the_last_week_of_minutes() -> None:
    assert (DEFAULT.every, DEFAULT.window) == (1440, 10_080)


def test_a_retrain_is_due_every_n_observations_after_the_last() -> None:
    s = Schedule(every=10, window=25)
    assert not s.due(seen=109, trained_at=100)
    assert s.due(seen=110, trained_at=100)


def test_a_young_model_retrains_each_time_the_data_has_doubled_then_every_n() -> None:
    s = Schedule(every=100, window=250)
    assert s.plan(first=12, total=500) == [12, 24, 48, 96, 192, 292, 392, 492]
    assert DEFAULT.early(11 * 3600) and not DEFAULT.early(12 * 3600)  # half a day seen


def test_the_window_is_the_most_recent_observations_seen_never_later_ones() -> None:
    s = Schedule(every=10, window=25)
    assert s.window_of(100) == range(75, 100)
    assert s.window_of(7) == range(7)


def test_the_plan_starts_with_the_first_model_and_stops_before_the_stream_ends() -> None:
    s = Schedule(every=10, window=25)
    assert s.plan(first=30, total=60) == [30, 40, 50]
    assert s.plan(first=30, total=61) == [30, 40, 50, 60]
    assert s.plan(first=30, total=31) == [30]


@pytest.mark.parametrize(("every", "window"), [(0, 10), (10, 0)])
def test_a_schedule_must_move_forward(every: int, window: int) -> None:
    with pytest.raises(ValueError, match="every >= 1 and window >= 1"):
        Schedule(every=every, window=window)


def test_one_training_run_at_a_time_per_atom(kiri_home) -> None:
    lock = kiri_home / "atoms" / "pulse" / "training.lock"
    lock.parent.mkdir(parents=True)
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a run under way, as kiri-atom or kiri-act started it
        out = run("kiri.atoms.training_jobs", "pulse")
    assert out.returncode == BUSY
    assert out.stdout.decode().strip() == "already training pulse: this run is not needed"
