"""kiri-act: deliver decisions to sinks, and report every delivery as an `outcome` record.

    kiri-decide | kiri-act --sink log --sink terminal --sink exec -- notify-me --urgent

Each decision other than `ok` goes to every sink that takes it: the log takes every action,
the terminal and exec sinks take `alert` and `resolve` (`suppress` is logged, not notified),
and `retrain` is carried out: the atom is trained again in the background. The decision itself
goes on downstream, for kiri-feedback, followed by one outcome per delivery,
`ok` or not with a one-line `error`. A failing delivery is retried with exponential backoff
(0.5 s, 1 s, 2 s, ...) and then reported; it never stops the stream, and a stop signal cuts the
backoff short. `ok` decisions are consumed without an outcome; the terminal sink shows them as
its live status line. Every other record kind passes through unchanged and in order.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
import traceback

from kiri import add_version_option, complete
from kiri.act.sinks import Sink, SinkError, sink_modules
from kiri.act.sinks.retrain import RetrainSink
from kiri.clients.http import redact
from kiri.home.runner import run_main
from kiri.wire.backoff import Backoff
from kiri.wire.errors import KiriError
from kiri.wire.log import Log
from kiri.wire.records import Decision, Outcome
from kiri.wire.stream import Stream, add_stream_options, setup_logging

SINKS = sink_modules()
FIRST_BACKOFF = 0.5  # seconds before the first retry; doubled for each one after


def build_parser() -> argparse.ArgumentParser:
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
        choices=list(SINKS),
        metavar="NAME",
        help="deliver to this sink, repeatable (default: log): "
        + "; ".join(f"{name}: {module.HELP}" for name, module in SINKS.items()),
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
    for module in SINKS.values():
        if hasattr(module, "add_options"):
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
    parser = build_parser()
    complete(parser)
    args = parser.parse_args(argv)
    args.sink = list(dict.fromkeys(args.sink or ["log"]))  # each sink once, in the given order
    if "exec" in args.sink and not command:
        parser.error("--sink exec needs a command: -- CMD [ARG ...]")
    if command and "exec" not in args.sink:
        parser.error("a command after -- is only used with --sink exec")
    args.command = command
    return args


def open_sink(name: str, args: argparse.Namespace, log: Log) -> Sink:
    """Open a sink before any input is read, so a sink that cannot work fails the start."""
    try:
        return SINKS[name].open_sink(args, log)
    except SinkError as e:
        raise KiriError(str(e)) from e


def act(stream: Stream, sinks: list[Sink], retries: int, log: Log) -> None:
    """Route each decision to the sinks; emit an outcome for each delivery."""
    for sink in sinks:
        sink.wait_with(stream.sleep)
    for decision, raw in stream.records(0, consumes=(Decision,)):
        if decision.action == "ok":
            for sink in sinks:
                _observe(sink, decision, log)
            continue
        stream.emit_raw(decision, raw)
        line = raw + b"\n"
        for sink in sinks:
            if sink.accepts(decision):
                stream.emit(deliver(stream, sink, decision, line, retries, log))
            else:
                _observe(sink, decision, log)


def deliver(
    stream: Stream, sink: Sink, decision: Decision, line: bytes, retries: int, log: Log
) -> Outcome:
    """Deliver one decision to one sink, retrying with backoff (or the wait the receiver
    asked for) unless the sink says retrying cannot help; say how it went."""
    error, tried, wait = "", 0, None
    backoff = Backoff(FIRST_BACKOFF)
    for attempt in range(retries + 1):
        if attempt:
            stream.flush()  # outcomes already made go downstream while this sink waits
            if not stream.sleep(backoff.failed(error, wait)):
                break  # asked to stop: report the failure now
        tried += 1
        try:
            detail = sink.deliver(decision, line)
        except Exception as e:  # a sink must never stop the stream, whatever it raises
            error = _error(e, sink)
            log.warning(
                "sink_failed",
                sink=sink.name,
                id=decision.id,
                attempt=tried,
                error=error,
                **_traceback(e, sink),
            )
            if isinstance(e, SinkError) and not e.retry:
                break
            wait = e.wait if isinstance(e, SinkError) else None
            continue
        return _outcome(decision, sink, ok=True, detail=detail)
    return _outcome(decision, sink, ok=False, error=error, detail=f"attempts: {tried}")


def _outcome(
    decision: Decision, sink: Sink, *, ok: bool, error: str = "", detail: str = ""
) -> Outcome:
    return Outcome(
        ts=time.time(),
        id=decision.id,
        action=decision.action,
        sink=sink.name,
        ok=ok,
        error=error,
        detail=detail,
    )


def _observe(sink: Sink, decision: Decision, log: Log) -> None:
    """Show a sink a decision it does not deliver; a failure there is logged, nothing more."""
    try:
        sink.observe(decision)
    except Exception as e:  # showing a status is never worth stopping the stream for
        log.warning("sink_failed", sink=sink.name, id=decision.id, error=_error(e, sink))


def _error(e: Exception, sink: Sink) -> str:
    """One line for an outcome: a SinkError's own words, anything else with its type; never
    the sink's secrets."""
    text = str(e) if isinstance(e, SinkError) else f"{type(e).__name__}: {e}"
    return " ".join(redact(text, sink.secrets).split())


def _traceback(e: Exception, sink: Sink) -> dict[str, str]:
    """The log's `exception` for a failure the sink did not expect (a SinkError's own words
    say all there is), without the sink's secrets."""
    if isinstance(e, SinkError):
        return {}
    return {"exception": redact("".join(traceback.format_exception(e)), sink.secrets)}


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
            with Stream(log, fmt=args.format, dead_letter=args.dead_letter) as stream:
                act(stream, sinks, args.retries, log)

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
