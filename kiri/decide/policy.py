"""kiri-decide's policy: what to do about each score, per atom and host.

The default: alert when the surprise exceeds the atom's threshold on k of the last n
observations, or on fewer that together cover `sustain` seconds (each observation stands for the
time since the one before it, so an hourly atom alerts on one unusual hour and a five-second one
on three samples); keep the incident open while it lasts, re-notifying only after `repeat`
seconds; resolve once the last n observations are all below the threshold. Each alert carries
its score's rarity: how seldom this atom on this host has been as surprising before, against its
own long-run record (the calibration NAB's best stream detectors use), so that alerts from atoms
and hosts of every kind can be ranked on one scale. One incident per host: when
several atoms on a host alert within `group_wait` seconds, one alert names them all, so people
are told once. Suppression rules turn a matching alert into `suppress`, and a trained Nerve
may choose the action instead of the default when it is sure. Time is the records' own, so a
replayed day decides exactly as the live day did.
"""

from __future__ import annotations

import bisect
import heapq
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from kiri.wire.patterns import culprit_order, explained, named_culprits, pattern_key
from kiri.wire.records import Culprit, Decision, Rule, Score
from kiri.wire.render import culprits_said, joined

Culprits = list[tuple[str, float]]
# given a host's state (atom -> surprise / threshold) and a time: the action, or None if unsure
Advisor = Callable[[Mapping[str, float], float], str | None]


class Record:
    """An atom's long-run record of surprise / threshold on one host, as a histogram of the
    ratio's logarithm whose older entries fade (half of their weight after about a week of
    five-minute observations): how rarely has it been this high?"""

    # 1e-3 to 1e3, 12% apart; the ends take everything beyond
    BINS: ClassVar[list[float]] = [10 ** (-3 + i / 20) for i in range(121)]
    HALF_LIFE = 2016.0  # observations
    GROWTH = 2 ** (1 / HALF_LIFE)

    def __init__(self) -> None:
        self.counts = [0.0] * (len(self.BINS) + 1)
        self.total = 0.0
        self.weight = 1.0  # a new entry's weight: growing, rather than every count fading
        self.last = (0, 0.0)  # the latest entry's bin and weight

    def add(self, ratio: float) -> None:
        at = bisect.bisect_right(self.BINS, ratio)
        self.counts[at] += self.weight
        self.total += self.weight
        self.last = (at, self.weight)
        self.weight *= self.GROWTH
        if self.weight > 1e100:  # rescale long before floats would overflow
            self.counts = [c / self.weight for c in self.counts]
            self.total /= self.weight
            self.last = (at, self.last[1] / self.weight)
            self.weight = 1.0

    def rarity(self) -> float:
        """The latest entry's rarity against those before it: 1 - the share of them at least
        as high (1 with none). Asked of alerts only, so that an ordinary score costs one bisect."""
        at, w = self.last
        if not self.total:
            return 1.0
        # the entries before it, over them plus its own weight: as when it was the next to come
        return round(1.0 - (sum(self.counts[at:]) - w) / self.total, 6)


class Track:
    """One atom on one host: its recent verdicts (each with the seconds it stands for), its
    latest score, its long-run record and its incident, if any."""

    def __init__(self, n: int) -> None:
        self.recent: deque[tuple[bool, float]] = deque(maxlen=n)
        self.record = Record()
        self.incident = ""
        self.notified = 0.0
        self.suppressed = False  # the open incident matched a rule: nobody was told
        self.ratio = 0.0  # the latest surprise / threshold
        self.seen: float | None = None  # and when

    def observe(self, unusual: bool, ratio: float, ts: float) -> None:
        covers = 0.0 if self.seen is None else min(max(ts - self.seen, 0.0), MAX_COVER)
        self.recent.append((unusual, covers))
        self.record.add(ratio)
        self.ratio, self.seen = round(ratio, 4), ts

    def unusual(self) -> tuple[int, float]:
        """How many of the recent observations were unusual, and the seconds they cover."""
        count, covered = 0, 0.0
        for unusual, covers in self.recent:
            if unusual:
                count, covered = count + 1, covered + covers
        return count, covered


@dataclass
class Group:
    """A host's alert held for `group_wait` seconds, gathering the atoms that alert with it."""

    incident: str
    until: float
    members: dict[str, tuple[Score, Culprits, float]] = field(default_factory=dict)


class Rules:
    """Suppression rules in force, by host, atom and culprit pattern."""

    def __init__(self) -> None:
        self._rules: dict[tuple[str, str, str], Rule] = {}

    def __len__(self) -> int:
        return len(self._rules)

    def add(self, rule: Rule) -> str | None:
        """Take a rule on; why not, if it is refused: a rule holds for one host, for a while."""
        if rule.action != "suppress":
            return f"a rule suppresses; {rule.action!r} is no action of one"
        if not rule.host or not rule.atom:
            return "a rule needs an atom and a host"
        if rule.expires <= time.time():
            return "a rule needs an expiry in the future"
        self._rules[(rule.host, rule.atom, pattern_key(rule.match))] = rule
        return None

    def drop(self, rule_id: str) -> bool:
        """Take away the rule with this id (a person deleted it, or its alerts were judged
        again); False when none is held."""
        keys = [key for key, rule in self._rules.items() if rule.id == rule_id]
        for key in keys:
            del self._rules[key]
        return bool(keys)

    def match(self, host: str, atom: str, named: list[str]) -> Rule | None:
        rule = self._rules.get((host, atom, pattern_key(named)))
        if rule and rule.expires <= time.time():
            return None
        return rule


STALE = 300.0  # an atom not scored for this long no longer counts as part of its host's state
# A decision's state names at most this many atoms, the most surprising: Nerve reads its known
# atoms and the largest of the rest, and a host with thousands of atoms must not make every
# decision thousands of entries long.
MAX_STATE = 16
QUIET_STATE_EVERY = 300.0  # an `ok` carries its host's state this often: Nerve's quiet example
MAX_COVER = 86400.0  # an observation after a longer gap stands for a day, not the whole gap
ID_LENGTH = 12  # hex digits in an alert's id


class Policy:
    def __init__(
        self,
        k: int,
        n: int,
        sensitivity: float,
        repeat: float,
        group_wait: float = 0.0,
        advisor: Advisor | None = None,
        sustain: float = float("inf"),
    ) -> None:
        self.k, self.n, self.sensitivity, self.repeat = k, n, sensitivity, repeat
        self.sustain = sustain
        self.group_wait, self.advisor = group_wait, advisor
        self.hosts: dict[str, dict[str, Track]] = {}  # host -> atom -> its track
        self.groups: dict[str, Group] = {}  # by host
        self.rules = Rules()
        self._quiet_state: dict[str, float] = {}  # by host: when an ok last carried the state

    def new_id(self) -> str:
        """A random id of ID_LENGTH hex digits: unique across restarts, and its first
        SHORT_ID digits tell it from the others (kiri.wire.render.short_id)."""
        return os.urandom(ID_LENGTH // 2).hex()

    def decide(self, score: Score) -> list[Decision]:
        """The decision on this score, after any held group alerts whose wait is over."""
        return [*self.due(score.ts), self._decide(score)]

    def due(self, now: float) -> list[Decision]:
        """The group alerts whose wait ended by `now` (record time)."""
        if not self.groups:  # the common case, on every score
            return []
        return [self._release(host) for host, g in list(self.groups.items()) if g.until <= now]

    def flush(self) -> list[Decision]:
        """Every held group alert, at the end of the input."""
        return [self._release(host) for host in list(self.groups)]

    def state(self, host: str, now: float) -> dict[str, float]:
        """Each atom's latest surprise / threshold on this host, if scored recently: the
        MAX_STATE highest."""
        recent = [
            (t.ratio, atom)
            for atom, t in self.hosts.get(host, {}).items()
            if t.seen is not None and now - t.seen < STALE
        ]
        if len(recent) > MAX_STATE:
            recent = heapq.nlargest(MAX_STATE, recent)
        return {atom: ratio for ratio, atom in recent}

    def _state_for(self, action: str, host: str, now: float, incident: str) -> dict[str, float]:
        """The state a decision carries: every notable one's, and a quiet host's now and then
        (computing it for every ok would cost each score a pass over its host's atoms)."""
        if action == "ok":
            if (
                incident
                or now - self._quiet_state.get(host, -QUIET_STATE_EVERY) < QUIET_STATE_EVERY
            ):
                return {}
            self._quiet_state[host] = now
        return self.state(host, now)

    # -- one score ----------------------------------------------------------------------------

    def _decide(self, score: Score) -> Decision:
        tracks = self.hosts.setdefault(score.host, {})
        track = tracks.get(score.atom) or tracks.setdefault(score.atom, Track(self.n))
        threshold = score.threshold / self.sensitivity
        track.observe(score.surprise > threshold, score.surprise / threshold, score.ts)
        # the likeliest culprit first; the stable sort keeps the schema's order among equals
        figures = score.z or score.nll
        culprits = [(score.tokens[i], figures[i]) for i in culprit_order(figures, score.spread)]
        action = self._action(track, score.ts)
        if action == "alert" and not track.incident and self._joins_group(score, track):
            return self._held(score, track, culprits, threshold)
        if action == "alert":
            return self._alert(score, track, culprits, threshold)
        incident = track.incident
        if action == "resolve":
            action = self._resolve(score.host, track)
        return self._decision(score, action, culprits, threshold, incident)

    def _action(self, track: Track, ts: float) -> str:
        unusual, covered = track.unusual()
        if not track.incident:
            return "alert" if unusual >= self.k or covered >= self.sustain else "ok"
        if unusual == 0 and len(track.recent) == self.n:
            return "resolve"
        if track.recent[-1][0] and ts - track.notified >= self.repeat:
            return "alert"
        return "ok"

    def _alert(self, score: Score, track: Track, culprits: Culprits, threshold: float) -> Decision:
        rule = self.rules.match(score.host, score.atom, named_culprits(culprits, threshold))
        track.incident = track.incident or self._host_incident(score.host)
        track.notified, track.suppressed = score.ts, rule is not None
        decision = self._decision(
            score, "suppress" if rule else "alert", culprits, threshold, track.incident
        )
        if rule:
            decision.summary = f"{decision.summary}; suppressed by rule {rule.id} ({rule.reason})"
        return self._advised(decision)

    def _resolve(self, host: str, track: Track) -> str:
        """Close this atom's part of its host's incident: `resolve` once nobody is left in it
        and somebody was told of it, `ok` otherwise."""
        incident, track.incident = track.incident, ""
        others = [t for t in self.hosts[host].values() if t.incident == incident]
        told = not track.suppressed or any(not t.suppressed for t in others)
        return "resolve" if told and not others else "ok"

    def _host_incident(self, host: str) -> str:
        """The incident open on this host, or a new one."""
        open_ = [t.incident for t in self.hosts.get(host, {}).values() if t.incident]
        return open_[0] if open_ else self.new_id()

    # -- grouping -----------------------------------------------------------------------------

    def _joins_group(self, score: Score, track: Track) -> bool:
        """Hold this alert? Only while other atoms on the host might still join it."""
        if self.group_wait <= 0:
            return False
        if score.host in self.groups:
            return True
        return any(
            a != score.atom and t.seen is not None and score.ts - t.seen < STALE and not t.incident
            for a, t in self.hosts[score.host].items()
        )

    def _held(self, score: Score, track: Track, culprits: Culprits, threshold: float) -> Decision:
        group = self.groups.get(score.host)
        if group is None:
            group = self.groups[score.host] = Group(
                self._host_incident(score.host), score.ts + self.group_wait
            )
        group.members[score.atom] = (score, culprits, threshold)
        track.incident, track.notified = group.incident, score.ts
        decision = self._decision(score, "ok", culprits, threshold, group.incident)
        decision.summary = (
            f"{score.atom} is unusual on {score.host}; waiting up to "
            f"{self.group_wait:g} s for other atoms before notifying"
        )
        return decision

    def _release(self, host: str) -> Decision:
        """One alert for a held group, naming every atom in it."""
        group = self.groups.pop(host)
        scores = [(s, c, t) for s, c, t in group.members.values()]
        top, _, top_threshold = max(scores, key=lambda m: m[0].surprise / m[2])
        suppressed = {}
        for s, c, t in scores:
            rule = self.rules.match(host, s.atom, named_culprits(c, t))
            self.hosts[host][s.atom].suppressed = rule is not None
            if rule:
                suppressed[s.atom] = rule
        told = [m for m in scores if m[0].atom not in suppressed] or scores
        culprits = sorted((c for _, cs, _ in told for c in cs), key=_by_surprise, reverse=True)
        action = "suppress" if len(suppressed) == len(scores) else "alert"
        members = [(s, explained(s, c, t), t) for s, c, t in told]
        decision = Decision(
            ts=group.until,
            id=self.new_id(),
            atom=top.atom,
            host=host,
            action=action,
            severity=max(
                (_severity(action, cs, s.surprise, t) for s, cs, t in members), key=SEVERITY.index
            ),
            surprise=top.surprise,
            threshold=round(top_threshold, 4),
            culprits=culprits,
            explained=[c for _, cs, _ in members for c in cs],
            tokens=top.tokens,
            rarity=self.hosts[host][top.atom].record.rarity(),
            incident=group.incident,
            atoms=[s.atom for s, _, _ in scores],
            summary=_group_summary(members, host),
            state=self.state(host, group.until),
            by="policy",
        )
        if suppressed:
            reasons = "; ".join(f"{a} by rule {r.id} ({r.reason})" for a, r in suppressed.items())
            decision.summary = f"{decision.summary}; suppressed {reasons}"
        return self._advised(decision)

    # -- records ------------------------------------------------------------------------------

    def _decision(
        self, score: Score, action: str, culprits: Culprits, threshold: float, incident: str
    ) -> Decision:
        notable = action in ("alert", "suppress")  # what a person may give a verdict on
        named = explained(score, culprits, threshold) if notable else []
        return Decision(
            ts=score.ts,
            id=self.new_id(),
            atom=score.atom,
            host=score.host,
            action=action,
            severity=_severity(action, named, score.surprise, threshold),
            surprise=score.surprise,
            threshold=round(threshold, 4),
            culprits=culprits,
            explained=named,
            tokens=score.tokens if notable else [],
            rarity=self.hosts[score.host][score.atom].record.rarity() if notable else 0.0,
            incident=incident,
            atoms=[score.atom],
            summary=_summary(action, score, named, threshold),
            by="policy",
            state=self._state_for(action, score.host, score.ts, incident),
        )

    def _advised(self, decision: Decision) -> Decision:
        """Let Nerve choose between notifying and not, when it is trained and sure."""
        choice = self.advisor(decision.state, decision.ts) if self.advisor else None
        if choice is None or choice == decision.action:
            return decision
        action = "alert" if choice == "alert" else "retrain" if choice == "retrain" else "suppress"
        if action != decision.action:
            decision.summary = (
                f"{decision.summary}; Nerve chose {action} over "
                f"{decision.action}, from people's earlier verdicts"
            )
            decision.action, decision.by = action, "nerve"
            decision.severity = _severity(
                action, decision.explained, decision.surprise, decision.threshold
            )
        return decision


def _by_surprise(culprit: tuple[str, float]) -> float:
    return culprit[1]


SEVERITY = ("", "info", "warning", "critical")  # least to most serious
FAR = 2.0  # a surprise this many times the threshold is far past it


def _severity(action: str, told: list[Culprit], surprise: float, threshold: float) -> str:
    """An alert's severity, from how far and which way its culprits moved: `critical` when its
    surprise is far past the threshold (FAR times it) and a culprit moved the way its atom calls
    bad news, `info` when each moved a way its atom calls harmless (an idle CPU, a drop in
    load), `warning` otherwise. An alert whose score named no fields (an older atom's) is
    critical when its surprise is far past."""
    if action != "alert":
        return ""
    bad = [c for c in told if _bad_news(c)]
    if told and not bad:
        return "info"
    return "critical" if surprise >= FAR * threshold else "warning"


def _bad_news(c: Culprit) -> bool:
    """Whether the culprit moved the way its atom says is bad (either way when unknown)."""
    if c.worse == "neither":
        return False
    if c.worse in ("high", "low") and c.direction:
        return c.worse == c.direction
    return True


def _summary(action: str, score: Score, named: list[Culprit], threshold: float) -> str:
    figures = f"(surprise {score.surprise:.1f}, threshold {threshold:.1f})"
    if action == "resolve":
        return f"{score.atom} on {score.host} is back to normal {figures}"
    if action not in ("alert", "suppress"):
        return ""
    early = " (early model: still learning this host)" if score.early else ""
    return f"{_unusual(named)} for {score.host} {figures}{early}"


def _unusual(named: list[Culprit]) -> str:
    """`CPU 97% (C9) is high and load 0.2 per CPU (L0) is low`."""
    return culprits_said(named) if named else "the observation is unusual"


def _group_summary(members: list[tuple[Score, list[Culprit], float]], host: str) -> str:
    """`pulse and rhythm are unusual together on vm: pulse: CPU 97% (C9) is high (surprise
    …); rhythm: …`."""
    atoms = [s.atom for s, _, _ in members]
    details = "; ".join(
        f"{s.atom}: {_unusual(c)} (surprise {s.surprise:.1f}, threshold {t:.1f})"
        for s, c, t in members
    )
    together = " together" if len(atoms) > 1 else ""
    verb = "are" if len(atoms) > 1 else "is"
    return f"{joined(atoms)} {verb} unusual{together} on {host}: {details}"
