"""When people's dismissals make a suppression rule, and when such a rule no longer stands.

One function, review(), keeps the rule of a host, atom and culprit pattern in step with the
verdicts in the store: it makes the rule once enough alerts of that pattern are dismissed, and
deletes it once they no longer are (a dismissal replaced by a confirmation, say). `kiri feedback`
calls it right after recording a verdict, so it can say what now happens; kiri-feedback calls it
for every verdict it follows (Telegram's too) and passes each rule change on to kiri-decide. It is
idempotent, so both calling it for the same verdict changes nothing the second time.

A pattern of one token (say `L3`) would suppress every alert that names that value alone, so it
asks for one dismissal more than a longer pattern. Dismissals from before a rule of the pattern
ended (expired, or deleted with `kiri rules delete`) no longer count: it takes new ones.
"""

from __future__ import annotations

import dataclasses
import time

import msgspec

from kiri.home.store import Store, StoredRule
from kiri.wire.records import Rule

AFTER = 2  # dismissals that make a rule (kiri-feedback --after)
EXPIRES = 7 * 86400.0  # how long a rule holds (kiri-feedback --expires)
BY_VERDICTS = "verdicts"  # who deleted a rule whose dismissals were replaced
SETTINGS = "feedback.settings"  # where kiri-feedback leaves its --after and --expires


class Settings(msgspec.Struct):
    after: int = AFTER
    expires: float = EXPIRES


@dataclasses.dataclass
class Review:
    """What review() found and did for one host, atom and pattern."""

    host: str
    atom: str
    pattern: str
    dismissed: list[str]  # the alerts whose dismissals count
    needed: int  # how many dismissals make the rule
    rule: StoredRule | None  # the rule standing now, if any
    made: bool = False
    deleted: StoredRule | None = None  # the rule this review deleted

    @property
    def left(self) -> int:
        return max(0, self.needed - len(self.dismissed))


def settings(store: Store) -> Settings:
    """The --after and --expires kiri-feedback last ran with (the defaults before it ran)."""
    try:
        return msgspec.json.decode(store.get_state(SETTINGS, "{}"), type=Settings)
    except msgspec.MsgspecError:
        return Settings()


def save_settings(store: Store, chosen: Settings) -> None:
    store.set_state(SETTINGS, msgspec.json.encode(chosen).decode())


def needed(pattern: str, after: int) -> int:
    """Dismissals that make a rule of this pattern: one more for a single token (or none)."""
    return after + 1 if len(pattern.split()) <= 1 else after


def rule_id(host: str, atom: str, pattern: str) -> str:
    # hashlib loads OpenSSL's libcrypto, 4 MB that kiri-feedback would hold all day for the
    # few moments a person gives a verdict
    import hashlib

    return "r-" + hashlib.sha256(f"{host} {atom} {pattern}".encode()).hexdigest()[:8]


def review(
    store: Store, host: str, atom: str, pattern: str, chosen: Settings, now: float | None = None
) -> Review:
    """Make or delete the rule of this host, atom and pattern, so that it stands exactly while
    enough of its alerts are dismissed."""
    now = time.time() if now is None else now
    rid = rule_id(host, atom, pattern)
    old = store.rule(rid)
    standing = old if old and old.deleted is None and old.expires > now else None
    since = _ended(old) if old and not standing else 0.0
    dismissed = store.dismissed(host, atom, pattern, since=since)
    found = Review(host, atom, pattern, dismissed, needed(pattern, chosen.after), standing)
    if standing and found.left:
        found.deleted, found.rule = store.delete_rule(rid, now, by=BY_VERDICTS), None
    elif not standing and not found.left:
        rule = Rule(
            ts=now,
            id=rid,
            atom=atom,
            host=host,
            match=pattern.split(),
            action="suppress",
            expires=now + chosen.expires,
            reason=f"{pattern or 'no culprit'} dismissed {len(dismissed)} times on {host}",
        )
        store.add_rule(rule, dismissed)
        found.rule, found.made = store.rule(rid), True
    return found


def _ended(rule: StoredRule) -> float:
    """Since when dismissals count again after this rule: since it expired or a person deleted
    it; all of them when verdicts took it away (a dismissal given back brings it back)."""
    if rule.deleted is None:
        return rule.expires
    return 0.0 if rule.deleted_by == BY_VERDICTS else rule.deleted


def named(pattern: str) -> str:
    """A pattern as a sentence says it."""
    return f"names {pattern}" if pattern else "names no culprit"
