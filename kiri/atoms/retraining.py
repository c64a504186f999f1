"""When an atom that learns continuously trains again, and on which observations.

An atom retrains on a schedule counted in observations, not in hours, so that a replayed day
learns as the live day did and a benchmark replays exactly what kiri-atom would do. Its first
model comes from a short warm-up; while its data is young it retrains each time the
observations it has seen have doubled (a 2-minute model, then 4, 8, 16 minutes' worth...), so
that a model of one busy moment does not stand for long; once a model has `every` observations
behind it, it retrains every `every` observations, afresh on the most recent `window` it has
seen (already scored ones, never anything it has not seen yet, and never labels). A model whose
observations span less than half a day is early: it has seen too little of the host's day, its
alerts say so, and it is held to a stricter threshold.

kiri-atom and the online benchmark protocol (bench/detect.py --protocol online, bench/nab.py) call
these functions; neither keeps a copy of the rule.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    every: int = 1440  # observations between retrains: a day of 1-minute observations
    window: int = 10_080  # the most recent observations each retrain learns from: a week
    mature: float = 43_200.0  # seconds of observations before a model is no longer early

    def __post_init__(self) -> None:
        if self.every < 1 or self.window < 1:
            raise ValueError("a retraining schedule needs every >= 1 and window >= 1")

    def due(self, seen: int, trained_at: int) -> bool:
        """Whether to retrain, having seen `seen` observations and last trained after
        `trained_at` of them: when they have doubled since, or `every` more have come."""
        return seen - trained_at >= min(self.every, max(trained_at, 1))

    def early(self, span: float) -> bool:
        """Whether a model whose observations span this many seconds is still early."""
        return span < self.mature

    def window_of(self, seen: int) -> range:
        """The positions (0-based, in arrival order) of the observations a retrain after
        `seen` observations learns from."""
        return range(max(0, seen - self.window), seen)

    def plan(self, first: int, total: int) -> list[int]:
        """The points (observations seen) at which the atom trains, for a stream of `total`
        observations whose first model was trained after `first`: `first` itself, then each
        retrain that falls before the end of the stream."""
        points, trained_at = [first], first
        for seen in range(first + 1, total):
            if self.due(seen, trained_at):
                points.append(seen)
                trained_at = seen
        return points


DEFAULT = Schedule()
