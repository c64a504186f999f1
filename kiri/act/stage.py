"""kiri-act: deliver decisions to sinks, and report every delivery as an `outcome` record.

    kiri-decide | kiri-act --sink log --sink terminal --sink exec -- notify-me --urgent

Each decision other than `ok` goes to every sink that takes it: the log takes every action,
the terminal and exec sinks take `alert` and `resolve` (`suppress` is logged, not notified),
and `retrain` is carried out: the atom is trained again in the background. The decision itself
goes on downstream, for kiri-feedback, followed by one outcome per delivery,
`ok` or not with a one-line `error`. A failing delivery is retried with exponential backoff
(0.5 s, 1 s, 2 s, ...) and then reported; one that failed for a reason worth waiting out is kept
in the outbox, in the store, and tried again in the background for --outbox-keep (a day), while
new decisions go on (kiri/act/delivery.py). A delivery never stops the stream, and a stop signal
cuts a backoff short. `ok` decisions are consumed without an outcome; the terminal sink shows
them as its live status line. Every other record kind passes through unchanged and in order.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sqlite3
import sys

from kiri import add_version_option, complete
from kiri.act.delivery import FIRST_RETRY, KEEP, Deliveries, observe
from kiri.act.outbox import Outbox
from kiri.act.retrain import RetrainSink
from kiri.act.sinks import Sink, SinkError, SinkModule, sink_module, sink_names
from kiri.home.durations import seconds
from kiri.home.runner import run_main
from kiri.home.store import Store, StoreError
from kiri.wire.errors import KiriError
from kiri.wire.log import Log
from kiri.wire.records import Decision
from kiri.wire.stream import Stream, add_stream_options, setup_logging

DEFAULT_SINK = "log"
TICK = 1.0  # seconds: how often, at most, the outbox and the sinks' background work are seen to


def build_parser(sinks: dict[str, SinkModule | None] | None = None) -> argparse.ArgumentParser:
    """kiri-act's options, with those of the sinks loaded in `sinks` (the others are None;
    by default every sink is loaded)."""
    sinks = sinks or {name: sink_module(name) for name in sink_names()}
    parser = argparse.ArgumentParser(
        prog="kiri-act",
        usage="%(prog)s [options] [-- CMD [ARG ...]]",
        description="Deliver decisions to sinks and emit one outcome record per delivery.",
        epilog="CMD: the exec sink's command and its arguments, after --. It runs without a "
        "shell, with the decision's JSON line on stdin.",
    )
    add_version_option(parser)
    parser.add_argument(
        "--sink",
        action="append",
        choices=list(sinks),
        metavar="NAME",
        help=f"deliver to this sink, repeatable (default: {DEFAULT_SINK}): "
        + "; ".join(f"{name}: {module.HELP}" if module else name for name, module in sinks.items()),
    )
    parser.add_argument(
        "--exec-timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="seconds the exec command may run before it is killed (default: 10)",
    )
    parser.add_argument(
        "--retries",
        type=_count,
        default=2,
        metavar="N",
        help="retries of a failed delivery, after 0.5 s, then twice as long each time (default: 2)",
    )
    parser.add_argument(
        "--outbox-keep",
        type=_duration,
        default=KEEP,
        metavar="DURATION",
        help="how long a failed delivery is kept in the outbox and tried again, such as 90m or "
        "2d (default: 1d; 0: keep none)",
    )
    parser.add_argument(
        "--outbox-retry",
        type=_duration,
        default=FIRST_RETRY,
        metavar="DURATION",
        help=f"the first wait before the outbox is tried again, doubled after each failure up "
        f"to a minute (default: {FIRST_RETRY:g}s)",
    )
    for module in sinks.values():
        if module and hasattr(module, "add_options"):
            module.add_options(parser)
    add_stream_options(parser)
    return parser


def _seconds(text: str) -> float:
    """A timeout: a finite number of seconds above 0 (argparse reports anything else)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text}")
    return value


def _duration(text: str) -> float:
    """A duration such as 90s, 5m or 1d, or a number of seconds; 0 or more."""
    try:
        return seconds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _count(text: str) -> int:
    """A retry count: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse options; the exec command is everything after the first `--`, untouched."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1 :]
    parser = build_parser(_sinks(argv))
    complete(parser)
    args = parser.parse_args(argv)
    args.sink = list(
        dict.fromkeys(args.sink or [DEFAULT_SINK])
    )  # each sink once, in the given order
    if "exec" in args.sink and not command:
        parser.error("--sink exec needs a command: -- CMD [ARG ...]")
    if command and "exec" not in args.sink:
        parser.error("a command after -- is only used with --sink exec")
    args.command = command
    return args


def _sinks(argv: list[str]) -> dict[str, SinkModule | None]:
    """Every sink by name, the module loaded only for those argv names (each sink brings its
    own libraries, TLS and HTTP for some), or for all of them when help or completion is asked
    for, which show every sink's options."""
    everything = "_ARGCOMPLETE" in os.environ or any(a in ("-h", "--help") for a in argv)
    named = {DEFAULT_SINK}
    for i, arg in enumerate(argv):
        if arg == "--sink" and i + 1 < len(argv):
            named.add(argv[i + 1])
        elif arg.startswith("--sink="):
            named.add(arg.partition("=")[2])
    names = sink_names()
    return {n: sink_module(n) if everything or n in named else None for n in names}


def open_sink(name: str, args: argparse.Namespace, log: Log) -> Sink:
    """Open a sink before any input is read, so a sink that cannot work fails the start."""
    try:
        return sink_module(name).open_sink(args, log)
    except SinkError as e:
        raise KiriError(str(e)) from e


def act(stream: Stream, sinks: list[Sink], deliveries: Deliveries, log: Log) -> None:
    """Route each decision to the sinks; emit an outcome for each delivery."""
    for sink in sinks:
        sink.wait_with(stream.sleep)
    stream.every(min(TICK, deliveries.first_retry), deliveries.tick)
    deliveries.tick()  # what waits in the outbox from before is tried at once
    for decision, raw in stream.records(0, consumes=(Decision,)):
        if decision.action == "ok":
            for sink in sinks:
                observe(sink, decision, log)
            continue
        stream.emit_raw(decision, raw)
        line = raw + b"\n"
        for sink in sinks:
            if sink.accepts(decision):
                stream.emit(deliveries.deliver(sink, decision, line))
            else:
                observe(sink, decision, log)
    if waiting := {name: n for name, n in deliveries.waiting.items() if n}:
        log.info("outbox_left", entries=waiting, reason="tried again when kiri-act next starts")


def open_outbox(opened: contextlib.ExitStack, keep: float, log: Log) -> Outbox | None:
    """The outbox in the store; None (failed deliveries are reported, not kept) with keep 0 or
    a store that cannot be opened: alerts still go out, which matters more."""
    if keep <= 0:
        return None
    try:
        store = opened.enter_context(Store())
    except (StoreError, sqlite3.Error) as e:
        log.error("outbox_unavailable", error=str(e), reason="failed deliveries are not kept")
        return None
    return Outbox(store)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = setup_logging("act")

    def body() -> None:
        with contextlib.ExitStack() as opened:
            sinks = [
                opened.enter_context(contextlib.closing(open_sink(name, args, log)))
                for name in args.sink
            ]
            sinks.append(opened.enter_context(contextlib.closing(RetrainSink(log))))
            outbox = open_outbox(opened, args.outbox_keep, log)
            with Stream(log, fmt=args.format, dead_letter=args.dead_letter) as stream:
                deliveries = Deliveries(
                    stream,
                    sinks,
                    outbox,
                    log,
                    retries=args.retries,
                    keep=args.outbox_keep,
                    first_retry=args.outbox_retry,
                )
                act(stream, sinks, deliveries, log)

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
