"""kiri-decide's policy in-process: Score records in, Decision records out, no subprocess.

tests/test_decide.py drives the same policy through the real executable; these check each rule
of it on its own, fast enough to run after every change to kiri/decide/policy.py.
"""

import time

from kiri.decide.policy import MAX_STATE, Policy
from kiri.wire.records import Decision, Rule, Score

TOKENS = ["C5", "M5", "D4", "S1", "L1", "N1"]
C9 = ["C9", "M1", "D2", "S0", "L1", "N1"]  # only C9 is far from usual: the pattern "C9"
C9_NLL = [9.0, 0.5, 0.1, 0.1, 0.3, 0.0]
NEVER = float("inf")


def policy(k=3, n=5, repeat=3600.0, group_wait=0.0, sustain=NEVER):
    return Policy(k=k, n=n, sensitivity=1.0, repeat=repeat, group_wait=group_wait, sustain=sustain)


def score(ts, surprise, atom="pulse", host="vm", tokens=TOKENS, nll=None):
    return Score(
        ts=ts,
        atom=atom,
        host=host,
        surprise=surprise,
        threshold=1.0,
        tokens=tokens,
        nll=nll or [surprise] * len(tokens),
    )


def decide(p, scores):
    return [d for s in scores for d in p.decide(s)]


def actions(decisions: list[Decision]) -> str:
    marks = {"ok": ".", "alert": "A", "resolve": "R", "suppress": "S"}
    return "".join(marks[d.action] for d in decisions)


def burst(p, start, host="vm"):
    """Three unusual C9 scores five seconds apart: k of n alerts on the third."""
    return decide(
        p, [score(start + 5 * i, 3.0, host=host, tokens=C9, nll=C9_NLL) for i in range(3)]
    )


def rule(host="vm", expires=None, match=("C9",)):
    return Rule(
        ts=time.time(),
        id=f"r-{host}",
        atom="pulse",
        host=host,
        match=list(match),
        reason="dismissed 2 times",
        expires=time.time() + 3600 if expires is None else expires,
    )


def test_k_of_n_alerts_once_and_resolves_after_n_calm_scores():
    surprises = [0.1, 2, 0.1, 2, 2, 2, 2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    got = decide(policy(), [score(5 * i, s) for i, s in enumerate(surprises)])
    assert actions(got) == "....A......R."  # 3 of 5 at the 5th; 5 calm ones at the 12th
    incident = got[4].incident
    assert incident and {d.incident for d in got[4:12]} == {incident}
    assert got[12].incident == ""
    assert got[11].summary == "pulse on vm is back to normal (surprise 0.1, threshold 1.0)"


def test_two_unusual_of_five_are_not_enough():
    got = decide(policy(), [score(5 * i, 2.0 if i % 3 == 0 else 0.1) for i in range(30)])
    assert actions(got) == "." * 30


def test_one_unusual_hour_of_a_slow_atom_stands_for_long_enough():
    hourly = [score(3600 * i, 3.0 if i == 4 else 0.1) for i in range(8)]
    assert actions(decide(policy(sustain=15.0), hourly)) == "....A..."
    assert actions(decide(policy(), hourly)) == "." * 8  # k of n alone: one of five
    # the first score of a stream stands for no time: a gap is no evidence
    assert actions(decide(policy(sustain=15.0), [score(0, 3.0), score(1, 0.1)])) == ".."
    # nor are two minutes of evidence when --for asks more
    minutes = [score(60 * i, 3.0 if i == 4 else 0.1) for i in range(8)]
    assert actions(decide(policy(sustain=120.0), minutes)) == "." * 8


def test_an_open_incident_renotifies_only_after_repeat():
    got = decide(policy(repeat=600.0), [score(60 * i, 3.0) for i in range(25)])
    assert [i for i, d in enumerate(got) if d.action == "alert"] == [2, 12, 22]
    assert len({d.incident for d in got[2:]}) == 1


def test_two_atoms_alerting_on_one_host_within_group_wait_make_one_alert():
    p = policy(group_wait=30.0)
    calm = decide(p, [score(0, 0.1, atom=a) for a in ("pulse", "disk")])
    pulse = decide(p, [score(5 * i, 3.0) for i in range(1, 4)])  # alerts at 15: held
    disk = decide(p, [score(5 * i, 4.0, atom="disk") for i in range(4, 7)])  # alerts at 30
    later = decide(p, [score(50, 3.0), score(50, 4.0, atom="disk")])  # 15 + 30 s have passed
    assert actions(calm + pulse + disk) == "." * 8
    assert "waiting up to 30 s for other atoms" in pulse[-1].summary
    [alert] = [d for d in later if d.action == "alert"]
    assert alert.atoms == ["pulse", "disk"] and alert.ts == 45.0
    assert alert.atom == "disk"  # the most surprising names the alert
    assert alert.summary.startswith("pulse and disk are unusual together on vm: ")
    assert alert.incident == pulse[-1].incident == disk[-1].incident
    assert p.flush() == []  # nothing else was held


def test_without_group_wait_each_atom_alerts_at_once():
    p = policy()
    decide(p, [score(0, 0.1, atom=a) for a in ("pulse", "disk")])
    got = decide(p, [score(5 * i, 3.0, atom=a) for i in range(1, 4) for a in ("pulse", "disk")])
    assert [(d.atom, d.action) for d in got if d.action == "alert"] == [
        ("pulse", "alert"),
        ("disk", "alert"),
    ]


def test_a_rule_suppresses_its_pattern_on_its_host_only():
    p = policy()
    assert p.rules.add(rule()) is None and p.rules.add(rule(host="web")) is None
    vm = burst(p, 0)
    assert actions(vm) == "..S"
    assert vm[2].summary.endswith("suppressed by rule r-vm (dismissed 2 times)")
    assert actions(burst(p, 0, host="db")) == "..A"  # another host: no rule holds there
    other = decide(p, [score(5 * i, 3.0, host="web") for i in range(3)])
    assert actions(other) == "..A"  # web's rule is for C9 alone, not for every field at once


def test_a_rule_needs_a_host_and_a_future_expiry_and_counts_no_longer_once_expired():
    p = policy()
    assert p.rules.add(rule(host="")) == "a rule needs an atom and a host"
    assert p.rules.add(rule(expires=time.time() - 1)) == "a rule needs an expiry in the future"
    assert len(p.rules) == 0
    held = rule()
    assert p.rules.add(held) is None
    held.expires = time.time() - 1  # it was taken on, and its time has passed since
    assert actions(burst(p, 0)) == "..A"


def test_rarity_ranks_a_hosts_alert_against_its_own_record():
    p = policy()
    quiet = decide(p, [score(5 * i, 0.1 + 0.01 * (i % 7)) for i in range(200)])
    quiet += decide(p, [score(5 * (200 + i), 3.0) for i in range(3)])
    busy = decide(p, [score(5 * i, 3.0 if i % 10 < 3 else 0.1, host="busy") for i in range(200)])
    vm = [d.rarity for d in quiet if d.action == "alert"]
    often = [d.rarity for d in busy if d.action == "alert"]
    assert vm == [vm[0]] and vm[0] > 0.98  # never this high before
    assert often[0] < vm[0]
    assert often[-1] < 0.9  # its record now holds many scores as high
    assert all(d.rarity == 0.0 for d in quiet + busy if d.action == "ok")


def test_a_host_with_100_atoms_carries_only_the_most_surprising_in_each_state():
    p = policy()
    atoms = [f"a{i}" for i in range(100)]
    calm = decide(p, [score(0, 0.01 * (i + 1), atom=a) for i, a in enumerate(atoms)])
    got = decide(p, [score(5 * i, 9.0, atom="a7") for i in range(1, 4)])
    assert max(len(d.state) for d in calm + got) <= MAX_STATE
    [alert] = [d for d in got if d.action == "alert"]
    assert len(alert.state) == MAX_STATE  # every one of the 100 is recent: the cap cut it
    # a7, and the fifteen most surprising of the calm ones: a99 down to a85
    assert alert.state["a7"] == 9.0
    assert set(alert.state) == {"a7", *(f"a{i}" for i in range(85, 100))}
