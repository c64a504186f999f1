"""The `kiri` commands through which a person sees alerts and judges them.

`kiri feedback dismiss ID --for 2h` also silences the alert in Alertmanager for that long, when
[alertmanager] is configured: its atoms on its host, in this incident and any other until the
silence ends (the matchers are in kiri/clients/alertmanager.py). Without Alertmanager, --for is an
error and no verdict is recorded.
"""

from __future__ import annotations

import argparse
import getpass
import time

from kiri.clients import alertmanager
from kiri.clients.http import HttpError
from kiri.home import durations
from kiri.home.config import config_path
from kiri.home.store import Store
from kiri.wire.errors import KiriError
from kiri.wire.records import Decision
from kiri.wire.render import local_time


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    a = sub.add_parser("alerts", help="list recent alerts with their ids and verdicts")
    a.add_argument("--limit", type=int, default=20, help="how many, newest first")

    f = sub.add_parser("feedback", help="judge an alert: confirm or dismiss it")
    verbs = f.add_subparsers(dest="verdict", required=True, metavar="VERDICT")
    for verb, text in (("confirm", "the alert was right"), ("dismiss", "the alert was noise")):
        v = verbs.add_parser(verb, help=text)
        v.add_argument("alert", metavar="ID", help="the alert's id, from `kiri alerts`")
        v.add_argument("--note", default="", help="why, in a few words")
        v.add_argument(
            "--normal",
            action="store_true",
            help="this is the new normal: retrain the atom with this observation",
        )
        v.add_argument("--by", default=getpass.getuser(), help="who judged it")
        if verb == "dismiss":
            v.add_argument(
                "--for",
                dest="silence",
                type=silence_for,
                metavar="DURATION",
                help="also silence it in Alertmanager for this long, e.g. 30m, 2h, "
                "1d (needs [alertmanager] in config.toml)",
            )


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


def cmd_alerts(args: argparse.Namespace) -> None:
    with Store() as store:
        rows = store.alerts(args.limit)
    if not rows:
        print("no alerts yet")
        return
    print(f"{'id':<12} {'time':<19} {'atom':<8} {'action':<9} {'verdict':<14} summary")
    for r in rows:
        when = local_time(r.ts)
        verdict = (r.verdict + (" (normal)" if r.normal else "")) or "-"
        print(f"{r.id:<12} {when:<19} {r.atom:<8} {r.action:<9} {verdict:<14} {r.summary}")


def cmd_feedback(args: argparse.Namespace) -> None:
    silence: float | None = getattr(args, "silence", None)  # only dismiss has --for
    # Checked before the verdict is recorded, so a --for that cannot work changes nothing.
    am = _alertmanager() if silence else None
    with Store() as store:
        changed = store.add_verdict(
            args.alert,
            args.verdict,
            normal=args.normal,
            source="cli",
            by=args.by,
            note=args.note,
        )
        decision = store.decision(args.alert) if am else None
    what = f"{args.verdict}ed" if args.verdict == "confirm" else "dismissed"
    extra = ", as the new normal" if args.normal else ""
    print(f"alert {args.alert} {what}{extra}" + ("" if changed else " (already recorded)"))
    if am and decision and silence:  # am is there only with --for
        _silence(am, decision, silence, args.note or f"dismissed by {args.by} with kiri feedback")


def _alertmanager() -> alertmanager.Settings:
    am = alertmanager.settings()
    if am is None:
        raise KiriError(
            f"--for silences the alert in Alertmanager, and there is no "
            f"[alertmanager] url in {config_path()}"
        )
    return am


def _silence(am: alertmanager.Settings, decision: Decision, seconds: float, comment: str) -> None:
    now = time.time()
    try:
        silence_id = alertmanager.silence(am, decision, now, now + seconds, comment)
    except HttpError as e:
        raise KiriError(f"alert {decision.id} dismissed, but not silenced: {e}") from None
    until = time.strftime("%Y-%m-%d %H:%M", time.localtime(now + seconds))
    atoms = ", ".join(decision.atoms or [decision.atom])
    print(
        f"silenced {atoms} on {decision.host} in Alertmanager until {until}: silence {silence_id}"
    )
