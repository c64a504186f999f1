"""kiri-collect's sources: each module here adds one subcommand.

A source module provides `add_parser(sub)`, which adds its subparser, sets the function that
runs it as the `collect` default (`collect(args, stream)`) and returns it; kiri-collect adds
the stream options (--format, --dead-letter) to it. Most sources take a sample every
--interval seconds; `add_poll_options` and `poll` give them the same options and loop.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import time
from collections.abc import Callable, Iterable

import msgspec

from kiri.recordings import Recorder
from kiri.records import Obs
from kiri.stream import Stream, UserError

NOT_RESTARTED = 125  # exit status telling the supervisor a source is absent: do not restart


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> list[argparse.ArgumentParser]:
    """Every source module's subcommand, in name order."""
    return [
        importlib.import_module(f"{__name__}.{info.name}").add_parser(sub)
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name)
    ]


def add_poll_options(
    p: argparse.ArgumentParser, atom: str, interval: float, host: str = "this host's"
) -> None:
    """--interval, --count, --duration, --record and --host (`host` says whose name is the
    default)."""
    p.add_argument(
        "--interval",
        type=float,
        default=interval,
        help=f"seconds between samples (default {interval:g})",
    )
    p.add_argument("--count", type=int, default=0, help="stop after N samples (0: never)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0: never)")
    p.add_argument(
        "--record",
        action="store_true",
        help=f"also append each observation to $KIRI_HOME/data/{atom}/YYYY-MM-DD.ndjson",
    )
    p.add_argument("--host", default=None, help=f"host name to report (default: {host})")


def poll(
    args: argparse.Namespace,
    stream: Stream,
    atom: str,
    sample: Callable[[], Iterable[Obs]],
    *,
    first_wait: float = 1.0,
    fast: int = 0,
    fast_interval: float = 1.0,
) -> None:
    """Emit sample()'s observations every --interval seconds until --count, --duration or a
    signal. The first sample comes after at most first_wait seconds, so a user sees data at
    once; the first `fast` samples come every fast_interval seconds instead (a warm-up)."""
    if args.interval <= 0 or fast_interval <= 0:
        raise UserError("--interval must be greater than 0")
    recorder = Recorder(atom) if args.record else None
    encode = msgspec.json.Encoder().encode
    started = time.monotonic()
    if not stream.sleep(min(args.interval, first_wait)):
        return
    n = 0
    try:
        while True:
            for obs in sample():
                stream.emit(obs)
                if recorder:
                    recorder.append(obs.ts, encode(obs) + b"\n")
            stream.flush()
            n += 1
            if args.count and n >= args.count:
                return
            interval = fast_interval if n < fast else args.interval
            if args.duration and time.monotonic() - started + interval > args.duration:
                return
            if not stream.sleep(interval):
                return
    finally:
        if recorder:
            recorder.close()
