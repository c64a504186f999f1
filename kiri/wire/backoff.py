"""The one backoff: how long to wait after each failure in a row, and whether to say so."""

from __future__ import annotations

MAX_BACKOFF = 60.0  # seconds: the longest anything waits between two tries


class Backoff:
    """Waits from `first`, doubling after each failure in a row, at most `most`; a wait the
    other side asked for (Retry-After) is taken instead, once. A success starts over. It also
    remembers the failure's reason, so a caller logs a failure when its reason changes and the
    recovery once, however long a failure lasts."""

    def __init__(self, first: float, most: float = MAX_BACKOFF) -> None:
        self.first = self.next = min(first, most)
        self.most = most
        self.reason = ""  # the failure in a row, if failing
        self.changed = False  # did the last failure give a new reason?

    def failed(self, reason: str = "failed", asked: float | None = None) -> float:
        """The wait before the next try."""
        self.changed, self.reason = reason != self.reason, reason
        wait = self.next if asked is None else asked
        self.next = min(2 * self.next, self.most)
        return min(wait, self.most)

    def succeeded(self) -> bool:
        """Start over; True when this ends a failure (the moment to say it recovered)."""
        recovered = bool(self.reason)
        self.next, self.reason, self.changed = self.first, "", False
        return recovered
