"""kiri-collect prometheus: a fleet's metrics from a Prometheus server, one observation per
instance and time (the queries and how their answers are joined: kiri/clients/prometheus.py).

With --start it backfills: /api/v1/query_range from --start to --end (default now), one point
every --step, the times aligned to multiples of the step; a long range is asked for in pieces
of at most 11,000 points per series (Prometheus's limit). Observations come out in time order,
then it exits. A transient failure is retried twice, then ends the run with a one-line error.

Without --start it follows: /api/v1/query every --interval seconds (default: the step), every
query evaluated at the poll's time. A failed poll is logged, once per distinct reason while it
lasts, and polling goes on, each failed poll in a row delaying the next one twice as long as
the one before (from the interval, at most MAX_BACKOFF seconds more). After --give-up-polls
failed polls in a row (10), or --give-up-time seconds of them (300), it exits with an error
naming the last failure. --count and --duration bound the polls. In either mode, PromQL that
Prometheus calls bad (HTTP 400) ends the run at once: asking again cannot help.

rate() in a query set looks back over the step, so consecutive points cover every second once,
but over at least 4 scrape intervals (--scrape-interval), so a missed scrape does no harm.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from collections.abc import Callable

import msgspec

from kiri.clients.prometheus import (
    QUERY_SETS,
    PromError,
    Prometheus,
    QuerySet,
    Series,
    Table,
    range_chunks,
    rate_window,
    step,
)
from kiri.collect.sources import Failures, Fit, add_poll_options, poll
from kiri.home.config import FIELD_NAME
from kiri.home.durations import moment
from kiri.home.paths import valid_name
from kiri.home.recordings import Recorder
from kiri.wire.errors import KiriError
from kiri.wire.records import Obs
from kiri.wire.stream import Stream

CUSTOM_ATOM = "prometheus"  # the atom of --query observations, unless --atom names another
BACKFILL_ATTEMPTS = 3


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "prometheus",
        conflict_handler="resolve",
        help="a fleet's metrics from a Prometheus server, one observation per instance",
    )
    p.add_argument("--url", required=True, help="the Prometheus server, http[s]://HOST:PORT[/PATH]")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--queries",
        choices=sorted(QUERY_SETS),
        help="a built-in query set: pulse maps node_exporter's metrics onto the "
        "pulse atom's fields",
    )
    what.add_argument(
        "--query",
        action="append",
        type=named_query,
        metavar="NAME=PROMQL",
        help="the field NAME and the PromQL that gives it, one series per "
        "instance (repeatable; $window stands for the rate window)",
    )
    p.add_argument(
        "--atom",
        default=None,
        help=f"the atom of the observations (default: the query set's, or "
        f"{CUSTOM_ATOM} for --query)",
    )
    p.add_argument(
        "--step",
        type=_step,
        default=60.0,
        metavar="DURATION",
        help="time between the points of a backfill, and the rate window (default 60s)",
    )
    p.add_argument(
        "--scrape-interval",
        type=_step,
        default=15.0,
        metavar="DURATION",
        help="how often Prometheus scrapes the targets: the rate window spans at "
        "least 4 of these (default 15s)",
    )
    p.add_argument(
        "--start",
        type=_moment,
        default=None,
        metavar="WHEN",
        help="backfill from WHEN, then exit: RFC 3339, a Unix time, or a duration ago such as 7d",
    )
    p.add_argument(
        "--end",
        type=_moment,
        default=None,
        metavar="WHEN",
        help="backfill up to WHEN (default: now)",
    )
    p.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for each answer (default 10)"
    )
    add_poll_options(p, "ATOM", 60.0, failing=True)
    p.add_argument(
        "--interval",
        type=float,
        default=None,  # replaces the shared default
        help="seconds between polls when following (default: the step)",
    )
    p.add_argument(
        "--host",
        default=None,  # a filter here: every instance has its own name
        help="only this host's observations: its name as reported, or its whole "
        "instance label (default: every instance)",
    )
    p.set_defaults(collect=collect)
    return p


def named_query(text: str) -> tuple[str, str]:
    name, sep, promql = text.partition("=")
    name, promql = name.strip(), promql.strip()
    if not sep or not promql:
        raise argparse.ArgumentTypeError(f"expected NAME=PROMQL, got {text!r}")
    if not FIELD_NAME.match(name):
        raise argparse.ArgumentTypeError(
            f"{name!r}: a field name is letters, digits, '_', '.' and '-', starting with a "
            f"letter or '_'"
        )
    return name, promql


def _step(text: str) -> float:
    try:
        return step(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _moment(text: str) -> float:
    try:
        return moment(text, time.time())
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def collect(args: argparse.Namespace, stream: Stream) -> None:
    queries = _query_set(args)
    if args.timeout <= 0:
        raise KiriError("--timeout must be greater than 0")
    attempts = BACKFILL_ATTEMPTS if args.start is not None else 1
    try:
        prom = Prometheus(args.url, args.timeout, stream.log, stream.sleep, attempts)
    except ValueError as e:
        raise KiriError(str(e)) from None
    fleet = Fleet(prom, queries, rate_window(args.step, args.scrape_interval), args.host)
    if args.start is not None:
        backfill(args, stream, fleet)
    elif args.end is not None:
        raise KiriError("--end needs --start: a backfill is from --start to --end")
    else:
        follow(args, stream, fleet)


def _query_set(args: argparse.Namespace) -> QuerySet:
    if args.queries:
        queries = QUERY_SETS[args.queries]
    else:
        names = [name for name, _ in args.query]
        if twice := sorted({n for n in names if names.count(n) > 1}):
            raise KiriError(f"--query {', '.join(twice)}: one query per field name")
        queries = QuerySet(CUSTOM_ATOM, dict(args.query))
    try:
        return msgspec.structs.replace(queries, atom=valid_name(args.atom or queries.atom))
    except ValueError as e:
        raise KiriError(str(e)) from None


class Fleet:
    """One query set's observations of the instances a Prometheus server scrapes."""

    def __init__(self, prom: Prometheus, queries: QuerySet, window: str, host: str | None) -> None:
        self.prom, self.queries, self.host = prom, queries, host
        self.promql = queries.queries(window)

    def at(self, t: float) -> tuple[list[Obs], Counter[str]]:
        """The observations at time t, and why others were left out (with counts)."""
        return self._observations(lambda name, q: self.prom.instant(name, q, t))

    def between(
        self, start: float, end: float, step_seconds: float
    ) -> tuple[list[Obs], Counter[str]]:
        """The observations every step from start to end, in time order, and the left-out."""
        return self._observations(
            lambda name, q: self.prom.range(name, q, start, end, step_seconds)
        )

    def _observations(
        self, ask: Callable[[str, str], list[Series]]
    ) -> tuple[list[Obs], Counter[str]]:
        table = Table(self.queries)
        for name, promql in self.promql:
            table.add(name, ask(name, promql))
        observations, skipped = table.observations()
        return [o for o in observations if self._wanted(o)], skipped

    def _wanted(self, obs: Obs) -> bool:
        return not self.host or self.host in (obs.host, obs.meta.get("instance"))


def backfill(args: argparse.Namespace, stream: Stream, fleet: Fleet) -> None:
    """Every point from --start to --end, in time order, then the end of the stream."""
    end = time.time() if args.end is None else args.end
    start = math.floor(args.start / args.step) * args.step  # on the step's grid
    if start > end:
        raise KiriError("--start must be before --end")
    recorder = Recorder(fleet.queries.atom) if args.record else None
    fit = Fit(stream.log)
    emitted = 0
    skipped: Counter[str] = Counter()
    try:
        for first, last in range_chunks(start, end, args.step):
            if stream.stopping:
                break
            observations, left_out = fleet.between(first, last, args.step)
            skipped += left_out
            for obs, line in fit.all(observations):
                stream.emit(obs)
                emitted += 1
                if recorder:
                    recorder.append(obs.ts, line)
            stream.flush()
    except PromError as e:
        if stream.stopping:  # asked to stop while waiting to ask again
            return
        raise KiriError(str(e)) from None
    finally:
        if recorder:
            recorder.close()
        if skipped:
            stream.log.warning("observations_skipped", reasons=dict(skipped))
    stream.log.info("backfilled", observations=emitted, start=start, end=end, step=args.step)


def follow(args: argparse.Namespace, stream: Stream, fleet: Fleet) -> None:
    args.interval = args.interval or args.step
    server = fleet.prom.netloc
    failures = Failures(
        args,
        stream.log,
        f"Prometheus {server}",
        "query_failed",
        "prometheus_answers",
        first=args.interval,
        server=server,
    )
    poll(args, stream, fleet.queries.atom, Follower(fleet, stream, failures).sample)


class Follower:
    """Instant queries at every poll. Failures are told as every source's are (sources.Failures),
    and so are left-out observations, when their reasons change."""

    def __init__(self, fleet: Fleet, stream: Stream, failures: Failures) -> None:
        self.fleet, self.stream, self.failures = fleet, stream, failures
        self.skipping: set[str] = set()  # the reasons last logged for left-out observations

    def sample(self) -> list[Obs]:
        try:
            observations, skipped = self.fleet.at(time.time())
        except PromError as e:
            if e.fatal:
                raise KiriError(str(e)) from None
            self.stream.sleep(self.failures.failed(str(e)))  # the next poll comes this much later
            return []
        self.failures.succeeded()
        if set(skipped) != self.skipping:
            (self.stream.log.warning if skipped else self.stream.log.info)(
                "observations_skipped", reasons=dict(skipped)
            )
            self.skipping = set(skipped)
        return observations
