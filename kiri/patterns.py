"""What an alert is about: the culprit tokens it names.

A decision's culprits are all its tokens ordered by how surprising each is for its field (its
-log p in held-out standard deviations, the score's z). The ones worth naming are the top few
that are unusual in their own right: above the threshold and at least half as surprising as the
top one. kiri-decide names them in its summary and matches suppression rules against them;
kiri-feedback counts dismissals of the same pattern.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_NAMED = 3


def named_culprits(culprits: Sequence[tuple[str, float]], threshold: float) -> list[str]:
    """The culprit tokens an alert is about, most surprising first (never empty if any)."""
    if not culprits:
        return []
    top = culprits[0][1]
    named = [t for t, z in culprits[:MAX_NAMED] if z >= max(threshold, top / 2)]
    return named or [culprits[0][0]]


def pattern_key(tokens: Sequence[str]) -> str:
    """One canonical string for a set of tokens: sorted, space-joined."""
    return " ".join(sorted(tokens))
