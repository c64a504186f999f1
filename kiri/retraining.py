"""When an atom that learns continuously trains again, and on which observations.

An atom retrains on a schedule counted in observations, not in hours, so that a replayed day
learns as the live day did and a benchmark replays exactly what kiri-atom would do: every
`every` observations it trains afresh on the most recent `window` observations it has seen
(already scored ones, never anything it has not seen yet, and never labels).

kiri-atom and the online benchmark protocol (bench/detect.py --protocol online, bench/nab.py) call
these functions; neither keeps a copy of the rule.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    every: int = 1440  # observations between retrains: a day of 1-minute observations
    window: int = 10_080  # the most recent observations each retrain learns from: a week

    def __post_init__(self) -> None:
        if self.every < 1 or self.window < 1:
            raise ValueError("a retraining schedule needs every >= 1 and window >= 1")

    def due(self, seen: int, trained_at: int) -> bool:
        """Whether to retrain, having seen `seen` observations and last trained after
        `trained_at` of them."""
        return seen - trained_at >= self.every

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
