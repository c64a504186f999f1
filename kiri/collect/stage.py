"""kiri-collect: emit `obs` records from an atom's source, or replay recorded streams."""

from __future__ import annotations

import argparse
import os
import sys
import time

from kiri import add_version_option, complete
from kiri.collect.sources import add_parsers, add_poll_options, poll
from kiri.home.runner import run_main
from kiri.wire.errors import KiriError
from kiri.wire.records import KINDS
from kiri.wire.stream import Stream, add_stream_options, setup_logging

ALL_KINDS = tuple(KINDS.values())


def build_parser(source: str | None = None) -> argparse.ArgumentParser:
    """kiri-collect's parser; with `source`, the one source the command line names."""
    parser = argparse.ArgumentParser(
        prog="kiri-collect", description="Emit observations as NDJSON records on stdout."
    )
    add_version_option(parser)
    sub = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")

    p = sub.add_parser("pulse", help="this host's CPU, memory, disk, swap, load and network")
    add_poll_options(p, "pulse", 5.0)
    p.add_argument(
        "--warmup",
        type=int,
        default=0,
        metavar="N",
        help="while the pulse atom has no weights, take the first N observations "
        "every --warmup-interval seconds, so it can learn sooner",
    )
    p.add_argument(
        "--warmup-interval",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between warm-up observations",
    )
    add_stream_options(p)
    p.set_defaults(collect=collect_pulse)

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
    r.set_defaults(collect=replay)
    for parsers in add_parsers(sub, source):
        add_stream_options(parsers)
    return parser


def collect_pulse(args: argparse.Namespace, stream: Stream) -> None:
    from kiri.collect import pulse  # here: replay needs no psutil
    from kiri.home.paths import weights_path

    fast = args.warmup if args.warmup and not weights_path("pulse").exists() else 0
    pulse.prime()
    poll(
        args,
        stream,
        "pulse",
        lambda: [pulse.sample(args.host)],
        fast=fast,
        fast_interval=args.warmup_interval,
    )


def replay(args: argparse.Namespace, stream: Stream) -> None:
    paced = args.speed > 0
    first: tuple[float, float] | None = None  # (record time, wall time) of the first record
    for name in args.files:
        fd = _open(name)
        try:
            # Unpaced, every record passes straight through the loop untouched.
            for record, raw in stream.records(fd, source=name, consumes=ALL_KINDS if paced else ()):
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
        raise KiriError(f"cannot read {name}: {e.strerror}") from e


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    named = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(named)
    complete(parser)
    args = parser.parse_args(argv)
    log = setup_logging(f"collect-{args.source}")

    def body() -> None:
        with Stream(log, fmt=args.format, dead_letter=args.dead_letter) as stream:
            args.collect(args, stream)

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
