"""The `kiri` commands through which a person sees alerts and judges them."""

from __future__ import annotations

import argparse
import getpass
import time

from kiri.store import Store, StoreError
from kiri.stream import UserError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("alerts", help="list recent alerts with their ids and verdicts")
    a.add_argument("--limit", type=int, default=20, help="how many, newest first")

    f = sub.add_parser("feedback", help="judge an alert: confirm or dismiss it")
    verbs = f.add_subparsers(dest="verdict", required=True, metavar="VERDICT")
    for verb, text in (("confirm", "the alert was right"), ("dismiss", "the alert was noise")):
        v = verbs.add_parser(verb, help=text)
        v.add_argument("alert", metavar="ID", help="the alert's id, from `kiri alerts`")
        v.add_argument("--note", default="", help="why, in a few words")
        v.add_argument("--normal", action="store_true",
                       help="this is the new normal: retrain the atom with this observation")
        v.add_argument("--by", default=getpass.getuser(), help="who judged it")


def _store() -> Store:
    try:
        return Store()
    except StoreError as e:
        raise UserError(str(e)) from None


def cmd_alerts(args: argparse.Namespace) -> None:
    with _store() as store:
        rows = store.alerts(args.limit)
    if not rows:
        print("no alerts yet")
        return
    print(f"{'id':<12} {'time':<19} {'atom':<8} {'action':<9} {'verdict':<14} summary")
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.ts))
        verdict = (r.verdict + (" (normal)" if r.normal else "")) or "-"
        print(f"{r.id:<12} {when:<19} {r.atom:<8} {r.action:<9} {verdict:<14} {r.summary}")


def cmd_feedback(args: argparse.Namespace) -> None:
    try:
        with _store() as store:
            changed = store.add_verdict(args.alert, args.verdict, normal=args.normal,
                                        source="cli", by=args.by, note=args.note)
    except StoreError as e:
        raise UserError(str(e)) from None
    what = f"{args.verdict}ed" if args.verdict == "confirm" else "dismissed"
    extra = ", as the new normal" if args.normal else ""
    print(f"alert {args.alert} {what}{extra}" + ("" if changed else " (already recorded)"))
