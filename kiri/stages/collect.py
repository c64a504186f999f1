"""kiri-collect: emit `obs` records from an atom's source, or replay recorded streams."""

from __future__ import annotations

import argparse
import os
import sys
import time

import msgspec

from kiri.records import KINDS
from kiri.recordings import Recorder
from kiri.stream import Stream, UserError, add_stream_options, run_main, setup_logging

ALL_KINDS = tuple(KINDS.values())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiri-collect", description="Emit observations as NDJSON records on stdout."
    )
    sub = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")

    p = sub.add_parser("pulse", help="this host's CPU, memory, disk, swap, load and network")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between observations")
    p.add_argument("--count", type=int, default=0, help="stop after N observations (0: never)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0: never)")
    p.add_argument(
        "--record",
        action="store_true",
        help="also append each observation to $KIRI_HOME/data/pulse/YYYY-MM-DD.ndjson",
    )
    p.add_argument("--host", default=None, help="host name to report (default: this host's)")
    p.add_argument("--warmup", type=int, default=0, metavar="N",
                   help="while the pulse atom has no weights, take the first N observations "
                   "every --warmup-interval seconds, so it can learn sooner")
    p.add_argument("--warmup-interval", type=float, default=1.0, metavar="S",
                   help="seconds between warm-up observations")
    add_stream_options(p)

    r = sub.add_parser("replay", help="replay recorded NDJSON streams")
    r.add_argument("files", nargs="+", metavar="FILE", help="recorded streams; - for stdin")
    r.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="replay in real time scaled by X using the records' timestamps "
        "(default: as fast as possible)",
    )
    add_stream_options(r)
    return parser


def collect_pulse(args: argparse.Namespace, stream: Stream) -> None:
    from kiri.atoms import pulse, weights_path  # here: replay needs neither psutil nor numpy

    if args.interval <= 0 or args.warmup_interval <= 0:
        raise UserError("--interval must be greater than 0")
    recorder = Recorder("pulse") if args.record else None
    fast = args.warmup if args.warmup and not weights_path("pulse").exists() else 0
    encode = msgspec.json.Encoder().encode
    started = time.monotonic()
    pulse.prime()
    # The first observation comes after a short interval, so a user sees data at once.
    if not stream.sleep(min(args.interval, 1.0)):
        return
    n = 0
    while True:
        obs = pulse.sample(args.host)
        stream.emit(obs)
        stream.flush()
        if recorder:
            recorder.append(obs.ts, encode(obs) + b"\n")
        n += 1
        if args.count and n >= args.count:
            return
        interval = args.warmup_interval if n < fast else args.interval
        if args.duration and time.monotonic() - started + interval > args.duration:
            return
        if not stream.sleep(interval):
            return


def replay(args: argparse.Namespace, stream: Stream) -> None:
    paced = args.speed > 0
    first: tuple[float, float] | None = None  # (record time, wall time) of the first record
    for name in args.files:
        fd = _open(name)
        try:
            # Unpaced, every record passes straight through the loop untouched.
            for record, raw in stream.records(
                fd, source=name, consumes=ALL_KINDS if paced else ()
            ):
                first = first or (record.ts, time.monotonic())
                wait = first[1] + (record.ts - first[0]) / args.speed - time.monotonic()
                if wait > 0:
                    stream.flush()
                    if not stream.sleep(wait):
                        break
                stream.emit_raw(record, raw)
        finally:
            if name != "-":
                os.close(fd)
        if stream.stopping:
            return


def _open(name: str) -> int:
    if name == "-":
        return sys.stdin.fileno()
    try:
        return os.open(name, os.O_RDONLY)
    except OSError as e:
        raise UserError(f"cannot read {name}: {e.strerror}") from e


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = setup_logging(f"collect-{args.source}")

    def body() -> None:
        with Stream(log, fmt=args.format, dead_letter=args.dead_letter) as stream:
            (collect_pulse if args.source == "pulse" else replay)(args, stream)

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
