"""The `kiri` commands through which a person sees alerts, judges them, and sees and deletes the
rules their judgements made: `kiri alerts`, `kiri feedback`, `kiri rules`. `kiri dashboard`
calls judge() and delete_rule() too, so that its buttons do exactly what these commands do and
say the same.

An alert is named by any unique prefix of its id (at least 4 characters; people see the first 6),
or `last`, the newest alert. A second verdict on an alert replaces the first and what it did:
`kiri feedback` says what now happens to alerts like it (suppression.review()).

`kiri feedback dismiss ID --for 2h` also silences the alert in Alertmanager for that long, when
[alertmanager] is configured: its atoms on its host, in this incident and any other until the
silence ends (the matchers are in kiri/clients/alertmanager.py). The silence's id is kept, so a
repeated --for updates that silence rather than making another. Without Alertmanager, --for is an
error and no verdict is recorded.

Every listing takes `--json`: one JSON document (the keys are in the README).
"""

from __future__ import annotations

import argparse
import getpass
import time
from collections.abc import Callable

from kiri.clients import alertmanager
from kiri.clients.http import HttpError
from kiri.feedback import suppression
from kiri.home import durations
from kiri.home.config import config_path
from kiri.home.store import (
    MIN_PREFIX,
    AlertRow,
    Store,
    StoredRule,
    UnknownRuleError,
    db_path,
    reading,
)
from kiri.wire.errors import KiriError
from kiri.wire.output import add_json_option, print_json
from kiri.wire.records import Decision
from kiri.wire.render import local_time, short_id

ID_HELP = (
    f"the alert: `last` (the newest), or its id or any part of it from the start, at least "
    f"{MIN_PREFIX} characters (`kiri alerts` shows the first 6)"
)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    a = sub.add_parser("alerts", help="list recent alerts with their ids and verdicts")
    a.add_argument("--limit", type=int, default=20, help="how many, newest first")
    a.add_argument(
        "--all",
        dest="everything",
        action="store_true",
        help="also list what is no alert: resolves and suppressed alerts",
    )
    add_json_option(a)

    f = sub.add_parser("feedback", help="judge an alert: confirm or dismiss it")
    verbs = f.add_subparsers(dest="verdict", required=True, metavar="VERDICT")
    for verb, text in (("confirm", "the alert was right"), ("dismiss", "the alert was noise")):
        v = verbs.add_parser(verb, help=text)
        v.add_argument("alert", metavar="ID", help=ID_HELP)
        v.add_argument("--note", default="", help="why, in a few words")
        if verb == "dismiss":
            v.add_argument(
                "--normal",
                action="store_true",
                help="this is the new normal: retrain the atom with this observation",
            )
            v.add_argument(
                "--for",
                dest="silence",
                type=silence_for,
                metavar="DURATION",
                help="also silence it in Alertmanager for this long, e.g. 30m, 2h, "
                "1d (needs [alertmanager] in config.toml); again, it updates that silence",
            )
        v.add_argument("--by", default=getpass.getuser(), help="who judged it")

    r = sub.add_parser("rules", help="list the standing suppression rules, or delete one")
    add_json_option(r)
    actions = r.add_subparsers(dest="action", metavar="ACTION")
    d = actions.add_parser("delete", help="delete a rule: its alerts are told again")
    d.add_argument("rule", metavar="ID", help="the rule's id, from `kiri rules`, or its start")


def silence_for(text: str) -> float:
    """Seconds in a duration such as 90s, 30m, 2h, 1d, 1w or 1h30m, for --for."""
    try:
        seconds = durations.duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a duration such as 30m, 2h or 1d: {text!r}"
        ) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be longer than 0: {text!r}")
    return seconds


# -- kiri alerts ----------------------------------------------------------------------------------


def cmd_alerts(args: argparse.Namespace) -> None:
    rows: list[AlertRow] = reading(lambda s: s.alerts(args.limit, args.everything), [])
    if args.json:
        print_json({"alerts": [_alert_json(r) for r in rows]})
        return
    if not rows:
        print("no alerts yet")
        return
    print(f"{'id':<8} {'time':<19} {'atom':<8} {'action':<9} {'verdict':<14} summary")
    for r in rows:
        when = local_time(r.ts)
        verdict = (r.verdict + (" (normal)" if r.normal else "")) or "-"
        print(f"{short_id(r.id):<8} {when:<19} {r.atom:<8} {r.action:<9} {verdict:<14} {r.summary}")


def _alert_json(r: AlertRow) -> dict[str, object]:
    return {
        "id": r.id,
        "short_id": short_id(r.id),
        "ts": r.ts,
        "atom": r.atom,
        "host": r.host,
        "action": r.action,
        "incident": r.incident,
        "pattern": r.pattern.split(),
        "verdict": r.verdict or None,
        "normal": r.normal,
        "summary": r.summary,
    }


# -- kiri feedback --------------------------------------------------------------------------------


def cmd_feedback(args: argparse.Namespace) -> None:
    judge(
        args.alert,
        args.verdict,
        print,
        normal=getattr(args, "normal", False),
        by=args.by,
        note=args.note,
        silence=getattr(args, "silence", None),  # only dismiss has --for
    )


def judge(
    ref: str,
    verdict: str,
    say: Callable[[str], object],
    *,
    normal: bool = False,
    by: str = "",
    note: str = "",
    silence: float | None = None,
    source: str = "cli",
) -> None:
    """Record a person's verdict on an alert and do what follows from it (a suppression rule
    made or deleted, an Alertmanager silence set or ended), saying each step in a line for
    people as it is done: `kiri feedback` prints them and `kiri dashboard` shows them."""
    # Checked before the verdict is recorded, so a --for that cannot work changes nothing.
    am = _alertmanager() if silence else None
    with Store() as store:
        row = store.find_alert(ref)
        changed = store.add_verdict(row.id, verdict, normal=normal, source=source, by=by, note=note)
        review = suppression.review(
            store, row.host, row.atom, row.pattern, suppression.settings(store)
        )
        kept = store.silence(row.id)
        decision = store.decision(row.id) if am or kept else None
        what = "confirmed" if verdict == "confirm" else "dismissed"
        extra = ", as the new normal" if normal else ""
        before = f" (it was {row.verdict}ed)" if changed and row.verdict else ""
        say(
            f"alert {short_id(row.id)} {what}{extra}{before}"
            + ("" if changed else " (already recorded)")
        )
        for line in _consequences(review, verdict == "dismiss" and not normal):
            say(line)
        if am and decision and silence:  # am is there only with --for
            comment = note or f"dismissed by {by} with kiri feedback"
            say(_silence(store, am, decision, silence, comment, kept[0] if kept else ""))
        elif kept and decision and verdict == "confirm":
            for line in _unsilence(store, decision, kept[0]):
                say(line)


def _consequences(review: suppression.Review, noise: bool) -> list[str]:
    """What the verdict means for alerts like this one, in words."""
    scope = f"{review.atom} on {review.host} when it {suppression.named(review.pattern)}"
    if review.deleted:
        return [f"no longer suppressing {scope}: rule {review.deleted.id} is deleted"]
    if review.rule:
        until = local_time(review.rule.expires, "%Y-%m-%d %H:%M")
        head = "now suppressing" if review.made else "suppressing"
        return [
            f"{head} {scope} (logged, not shown) until {until}: rule {review.rule.id}; "
            f"`kiri rules delete {review.rule.id}` ends it"
        ]
    if not noise:
        return []
    left = review.left
    single = (
        " (a rule of one token asks for one dismissal more)"
        if len(review.pattern.split()) <= 1
        else ""
    )
    return [
        f"{left} more dismissal{'s' if left != 1 else ''} like this will suppress {scope}" + single
    ]


def _alertmanager() -> alertmanager.Settings:
    am = alertmanager.settings()
    if am is None:
        raise KiriError(
            f"--for silences the alert in Alertmanager, and there is no "
            f"[alertmanager] url in {config_path()}"
        )
    return am


def _silence(
    store: Store,
    am: alertmanager.Settings,
    decision: Decision,
    seconds: float,
    comment: str,
    kept: str,
) -> str:
    now = time.time()
    try:
        try:
            silence_id = alertmanager.silence(am, decision, now, now + seconds, comment, kept)
        except HttpError as e:
            if not (kept and e.status == 404):
                raise
            silence_id = alertmanager.silence(am, decision, now, now + seconds, comment)
    except HttpError as e:
        raise KiriError(f"alert {short_id(decision.id)} dismissed, but not silenced: {e}") from None
    store.set_silence(decision.id, silence_id, now + seconds)
    until = time.strftime("%Y-%m-%d %H:%M", time.localtime(now + seconds))
    atoms = ", ".join(decision.atoms or [decision.atom])
    verb = "silence updated:" if kept == silence_id else "silenced"
    return f"{verb} {atoms} on {decision.host} in Alertmanager until {until}: silence {silence_id}"


def _unsilence(store: Store, decision: Decision, silence_id: str) -> list[str]:
    """A confirmed alert is not to be silenced: end the silence its dismissal made."""
    am = alertmanager.settings()
    if am is None:
        return []
    try:
        alertmanager.expire(am, silence_id)
    except HttpError as e:
        return [f"the Alertmanager silence {silence_id} of its dismissal stays: {e}"]
    store.forget_silence(decision.id)
    return [f"ended the Alertmanager silence {silence_id} of its dismissal"]


# -- kiri rules -----------------------------------------------------------------------------------


def cmd_rules(args: argparse.Namespace) -> None:
    if args.action == "delete":
        print(delete_rule(args.rule))
        return
    rules: list[StoredRule] = reading(lambda s: s.rules(), [])
    if args.json:
        print_json({"rules": [_rule_json(r) for r in rules]})
        return
    if not rules:
        print("no standing rules")
        return
    print(f"{'id':<11} {'host':<12} {'atom':<8} {'match':<14} {'until':<16} made by")
    for r in rules:
        until = local_time(r.expires, "%Y-%m-%d %H:%M")
        match = " ".join(r.match) or "(no culprit)"
        made = _made_by(r)
        print(f"{r.id:<11} {r.host:<12} {r.atom:<8} {match:<14} {until:<16} {made}")


def _made_by(rule: StoredRule) -> str:
    if not rule.alerts:
        return rule.reason
    return f"dismissals of {', '.join(short_id(a) for a in rule.alerts)}"


def _rule_json(r: StoredRule) -> dict[str, object]:
    return {
        "id": r.id,
        "ts": r.ts,
        "host": r.host,
        "atom": r.atom,
        "match": r.match,
        "action": r.action,
        "expires": r.expires,
        "reason": r.reason,
        "alerts": r.alerts,
    }


def delete_rule(ref: str) -> str:
    """Delete a standing rule (`kiri rules delete`, the dashboard's Delete); what was done."""
    if not db_path().exists():
        raise UnknownRuleError(f"no standing rule with id {ref!r} (see `kiri rules`)")
    with Store() as store:
        matches = [r for r in store.rules() if r.id.startswith(ref)]
        if len(matches) > 1:
            ids = ", ".join(r.id for r in matches)
            raise UnknownRuleError(f"{ref!r} is the start of several rules' ids: {ids}")
        rule = store.delete_rule(matches[0].id if matches else ref)
    scope = f"{rule.atom} on {rule.host} when it {suppression.named(' '.join(rule.match))}"
    return f"rule {rule.id} deleted: {scope} alerts again (kiri-feedback tells kiri-decide)"
