"""What an alert is about: the culprit tokens it names.

A decision's culprits are all its tokens, each with its z (its -log p in held-out standard
deviations), ordered by culprit_order: the value farthest from its field's usual training
spread first, the most surprising z first among equals. The ones worth naming are the first,
and those of the next few that are unusual in their own right: their z above the threshold and
at least half the first one's. kiri-decide matches suppression rules against them;
kiri-feedback counts dismissals of the same pattern. The detection benchmark ranks culprits
with the same culprit_order. What an alert tells people of them (`explained`) is the named ones
whose z crossed the threshold, each with its field, value, direction and usual range.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from kiri.wire.records import Culprit, Score

MAX_NAMED = 3
T = TypeVar("T")


def culprit_order(z: Sequence[float], spread: Sequence[float]) -> list[int]:
    """A score's field positions, likeliest culprit first: by how far the value lies from its
    field's training median (|spread|), then by z; by z alone for a score without spreads."""
    if len(spread) != len(z):
        return sorted(range(len(z)), key=lambda i: -z[i])
    return sorted(range(len(z)), key=lambda i: (-abs(spread[i]), -z[i]))


def named_culprits(culprits: Sequence[tuple[str, float]], threshold: float) -> list[str]:
    """The culprit tokens an alert is about: the likeliest, then those of the next few that
    are unusual in their own right (never empty if any)."""
    if not culprits:
        return []
    (first, top), rest = culprits[0], culprits[1:MAX_NAMED]
    return [first] + [t for t, z in rest if z >= max(threshold, top / 2)]


def pattern_key(tokens: Sequence[str]) -> str:
    """One canonical string for a set of tokens: sorted, space-joined."""
    return " ".join(sorted(tokens))


def explained(
    score: Score, culprits: Sequence[tuple[str, float]], threshold: float
) -> list[Culprit]:
    """The culprits an alert tells people of, each with its field, value, direction and usual
    range, as far as the score says (one from an older model says less): the named ones whose
    z crossed the threshold, or the first named when none did (an alert names something)."""
    named = named_culprits(culprits, threshold)
    crossed = [t for t, z in culprits if t in named and z >= threshold] or named[:1]
    return [_culprit(score, score.tokens.index(t)) for t in crossed if t in score.tokens]


def _culprit(score: Score, i: int) -> Culprit:
    n, token = len(score.tokens), score.tokens[i]
    name, label, unit = _at(score.fields, n, i, (token, "", ""))
    usual = len(score.usual_low) == len(score.usual_high) == n
    value = _at(score.measured, n, i, score.values.get(name))
    return Culprit(
        token=token,
        atom=score.atom,
        field=name,
        label=label,
        unit=unit,
        value=value,
        direction=_direction(score, i, value, usual),
        low=score.usual_low[i] if usual else None,
        high=score.usual_high[i] if usual else None,
        z=_at(score.z or score.nll, n, i, 0.0),
        worse=_at(score.worse, n, i, "either"),
    )


def _direction(score: Score, i: int, value: float | None, usual: bool) -> str:
    """`high` or `low`: which side of its training median the value lies, by its spread; ""
    when the score does not say, or the value lies within its usual range (no move to speak of,
    whatever made its token unlikely)."""
    n = len(score.tokens)
    if usual and value is not None and score.usual_low[i] <= value <= score.usual_high[i]:
        return ""
    spread = _at(score.spread, n, i, 0.0)
    return "high" if spread > 0 else "low" if spread < 0 else ""


def _at(items: Sequence[T], n: int, i: int, default: T) -> T:
    """items[i] when the score has one for each of its n tokens, else the default."""
    return items[i] if len(items) == n else default
