"""kiri-collect's sources: each module here adds one subcommand.

A source module provides `add_parser(sub)`, which adds its subparser, sets the function that
runs it as the `collect` default (`collect(args, stream)`) and returns it; kiri-collect adds
the stream options (--format, --dead-letter) to it. Most sources take a sample every
--interval seconds; `add_poll_options` and `poll` give them the same options and loop. A source
whose polls can fail (a router, a server, a command) reports each failure to its `Failures`,
the one way every source logs them, backs off and, when nothing has worked for a while, gives up.

`poll` and a Prometheus backfill send every observation through `Fit`, which keeps the
strings a source gave it short, so that the next stage (which reads lines of at most 1 MiB)
can take it.
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections.abc import Callable, Iterable, Iterator

import msgspec

from kiri.home.recordings import Recorder
from kiri.wire.backoff import Backoff
from kiri.wire.errors import KiriError
from kiri.wire.log import Log
from kiri.wire.records import Obs
from kiri.wire.stream import MAX_LINE, Stream

SOURCES = ("drift", "exec", "mikrotik", "prometheus", "rhythm", "telegram")  # kiri/collect/NAME.py
BUILT_IN = ("pulse", "replay")  # kiri-collect's own subcommands (kiri/collect/stage.py)
# characters of a host name, a value's or a meta entry's name, or a meta value: far more than any
# real one (an interface name, an instance label), and short enough that an observation fits
MAX_TEXT = 256
GIVE_UP_POLLS = 10  # failed polls in a row after which a source gives up (--give-up-polls)
GIVE_UP_TIME = 300.0  # seconds of failed polls, none working, after which it does (--give-up-time)


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], wanted: str | None = None
) -> list[argparse.ArgumentParser]:
    """The source modules' subcommands, in name order: only the wanted one's when the command
    line names a source (importing every source would cost each start its clients), all of
    them for --help or a mistyped name."""
    names = [wanted] if wanted in SOURCES else [] if wanted in BUILT_IN else SOURCES
    return [importlib.import_module(f"kiri.collect.{name}").add_parser(sub) for name in names]


def add_poll_options(
    p: argparse.ArgumentParser,
    atom: str,
    interval: float,
    host: str = "this host's",
    *,
    failing: bool = False,
) -> None:
    """--interval, --count, --duration, --record and --host (`host` says whose name is the
    default); for a source whose polls can fail, --give-up-polls and --give-up-time."""
    if failing:
        p.add_argument(
            "--give-up-polls",
            type=int,
            default=GIVE_UP_POLLS,
            metavar="N",
            help=f"exit with an error after N failed polls in a row (default {GIVE_UP_POLLS}; "
            "0: never)",
        )
        p.add_argument(
            "--give-up-time",
            type=float,
            default=GIVE_UP_TIME,
            metavar="S",
            help=f"exit with an error once polls have failed for S seconds without one working "
            f"(default {GIVE_UP_TIME:g}; 0: never)",
        )
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
        raise KiriError("--interval must be greater than 0")
    recorder = Recorder(atom) if args.record else None
    fit = Fit(stream.log)
    started = time.monotonic()
    if not stream.sleep(min(args.interval, first_wait)):
        return
    n = 0
    try:
        while True:
            for obs, line in fit.all(sample()):
                stream.emit(obs)
                if recorder:
                    recorder.append(obs.ts, line)
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


class Failures:
    """A source's failed polls, all told the same way: a failure is logged as `event` when its
    reason changes (not at every poll), the recovery once as `recovered`; each failure in a row
    makes the wait `failed` returns twice as long (Backoff, from `first`), for a source that
    backs off. After --give-up-polls failures in a row, or --give-up-time seconds from the
    first of them, the run ends with an error naming the last one (exit status 1): a supervisor
    restarts the source and hears of it (the `notify` event, kiri/supervise/supervisor.py)."""

    def __init__(
        self,
        args: argparse.Namespace,
        log: Log,
        what: str,
        event: str,
        recovered: str = "",
        first: float = 1.0,
        **context: object,
    ) -> None:
        self.log, self.what, self.event, self.recovered = log, what, event, recovered
        self.polls, self.seconds = args.give_up_polls, args.give_up_time
        self.context = context
        self.backoff = Backoff(first)
        self.count = 0  # failed polls in a row
        self.since = 0.0  # when the first of them was (monotonic)

    def failed(self, reason: str, **context: object) -> float:
        """Count a failed poll (and end the run when it is time to give up); the wait to add
        before the next poll."""
        wait = self.backoff.failed(reason)
        if self.backoff.changed:
            self.log.warning(self.event, **self.context, **context, reason=reason)
        self.count += 1
        if self.count == 1:
            self.since = time.monotonic()
        lasted = time.monotonic() - self.since
        if (self.polls and self.count >= self.polls) or (self.seconds and lasted >= self.seconds):
            summary = f"{self.what}: {self.count} polls in a row failed, over {lasted:.0f} s"
            self.log.notify("source_gave_up", summary, reason)
            raise KiriError(f"{summary}; the last: {reason}")
        return wait

    def succeeded(self) -> None:
        self.count = 0
        if self.backoff.succeeded() and self.recovered:
            self.log.info(self.recovered, **self.context)


class Fit:
    """Observations as a source gave them, with no string longer than MAX_TEXT: a value or a
    meta entry whose name (or meta value) is longer is left out of its observation, and an
    observation whose host is longer, or which is still longer than a stage reads, is left out
    whole. Each with a warning, once per reason in a run."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.encode = msgspec.json.Encoder().encode
        self.warned: set[str] = set()

    def all(self, observations: Iterable[Obs]) -> Iterator[tuple[Obs, bytes]]:
        """Each observation that fits, with its line (for a recording)."""
        for obs in observations:
            fitted = self.fit(obs)
            if fitted is not None:
                yield fitted

    def fit(self, obs: Obs) -> tuple[Obs, bytes] | None:
        if len(obs.host) > MAX_TEXT:
            self._warn(f"a host name over {MAX_TEXT} characters", "the observation", obs.host)
            return None
        values = {k: v for k, v in obs.values.items() if len(k) <= MAX_TEXT}
        meta = {k: v for k, v in obs.meta.items() if len(k) <= MAX_TEXT and len(v) <= MAX_TEXT}
        for name in obs.values.keys() - values.keys():
            self._warn(f"a value name over {MAX_TEXT} characters", "that value", name)
        for name in obs.meta.keys() - meta.keys():
            self._warn(f"a meta entry over {MAX_TEXT} characters", "that entry", name)
        if len(values) < len(obs.values) or len(meta) < len(obs.meta):
            obs = msgspec.structs.replace(obs, values=values, meta=meta)
        line = self.encode(obs) + b"\n"
        if len(line) > MAX_LINE:
            self._warn(f"an observation over {MAX_LINE} bytes", "the observation", obs.atom)
            return None
        return obs, line

    def _warn(self, reason: str, left_out: str, example: str) -> None:
        if reason not in self.warned:
            self.warned.add(reason)
            self.log.warning(
                "source_text_too_long", reason=reason, left_out=left_out, example=example[:40]
            )
