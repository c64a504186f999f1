"""kiri-collect drift: the task log (`kiri task …`) as one observation per window.

Live, it emits each window as it ends: it checks every --interval seconds (by default the
window's length, starting just after the window in progress ends) and emits every window that
has ended since it last did. With --backfill, --since or --until it emits the past windows of the
log instead, oldest first, and exits: a person's history, ready for `kiri train drift --from`.
(The atom, its fields and tokens: kiri/atoms/drift.py.)

Windows follow the local wall clock: they divide the day evenly and start at midnight, so the
window "09:00-10:00" means the same thing every day (on the days the clocks change, the window
around the change is an hour shorter or longer).
"""

from __future__ import annotations

import argparse
import datetime as dt
import socket
import time
from collections.abc import Iterator

import msgspec

from kiri.collect.sources import add_poll_options, poll
from kiri.home import durations
from kiri.home.recordings import Recorder
from kiri.home.store import Store
from kiri.home.tasks import TaskHistory
from kiri.wire.records import Obs
from kiri.wire.stream import Stream

DAY = 86400
GRACE = 0.5  # seconds after a window's end before it is read: a task logged at :59.9 counts


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "drift",
        conflict_handler="resolve",
        help="the task log kept with `kiri task`: tasks added, done, project "
        "switches and open tasks per window",
    )
    p.add_argument(
        "--window",
        type=window_length,
        default=3600.0,
        metavar="DURATION",
        help="length of a window: 30m, 1h (default), 2h, 1d…; windows start at "
        "local midnight and must divide the day evenly",
    )
    add_poll_options(p, "drift", 3600.0)
    p.add_argument(
        "--interval",
        type=float,
        default=None,  # replaces the shared default
        help="seconds between checks for ended windows (default: the window)",
    )
    p.add_argument(
        "--backfill",
        action="store_true",
        help="emit one observation per past window, from the start of the task log "
        "to the last ended window, then exit",
    )
    p.add_argument(
        "--since",
        type=moment,
        metavar="WHEN",
        help="backfill from the window holding WHEN: YYYY-MM-DD[THH:MM], or a "
        "duration ago such as 14d",
    )
    p.add_argument(
        "--until",
        type=moment,
        metavar="WHEN",
        help="backfill the windows that end by WHEN (default: now)",
    )
    p.set_defaults(collect=collect)
    return p


def window_length(text: str) -> float:
    try:
        return check_window(durations.seconds(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def moment(text: str) -> float:
    try:
        return durations.moment(text, time.time())
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def collect(args: argparse.Namespace, stream: Stream) -> None:
    host = args.host or socket.gethostname()
    if args.backfill or args.since is not None or args.until is not None:
        backfill(args, stream, host)
    else:
        follow(args, stream, host)


def _history() -> TaskHistory:
    with Store() as store:
        return TaskHistory.load(store)


def follow(args: argparse.Namespace, stream: Stream, host: str) -> None:
    """Emit each window once it has ended, starting with the one in progress."""
    args.interval = args.interval or args.window
    now = time.time()
    pending, first_end = window_of(now, args.window)  # the next window to emit

    def ended() -> list[Obs]:
        nonlocal pending
        out, history = [], _history()
        for start, end in windows(pending, time.time(), args.window):
            out.append(observation(history, start, end, host))
            pending = end
        return out

    poll(args, stream, "drift", ended, first_wait=first_end - now + GRACE)


def backfill(args: argparse.Namespace, stream: Stream, host: str) -> None:
    """Emit every past window from --since (or the log's start) to --until (or now)."""
    history = _history()
    since = history.first() if args.since is None else args.since
    if since is None:
        stream.log.warning("empty_task_log", hint="add tasks with `kiri task add`")
        return
    until = time.time() if args.until is None else args.until
    recorder = Recorder("drift") if args.record else None
    encode = msgspec.json.Encoder().encode
    try:
        for start, end in windows(since, until, args.window):
            if stream.stopping:
                return
            obs = observation(history, start, end, host)
            stream.emit(obs)
            if recorder:
                recorder.append(obs.ts, encode(obs) + b"\n")
    finally:
        if recorder:
            recorder.close()


# -- windows of the local clock, and their observations ------------------------------------


def check_window(seconds: float) -> float:
    """A window length that divides the day into whole seconds; ValueError otherwise."""
    if seconds < 1 or seconds > DAY or seconds != int(seconds) or DAY % seconds:
        raise ValueError(
            f"a window must divide the day evenly (30m, 1h, 2h, 1d…), not {seconds:g} s"
        )
    return seconds


def window_of(ts: float, seconds: float) -> tuple[float, float]:
    """The window holding time ts: its start and end, as Unix times."""
    wall = dt.datetime.fromtimestamp(ts)
    midnight = wall.replace(hour=0, minute=0, second=0, microsecond=0)
    k = int((wall - midnight).total_seconds() // seconds)
    start = midnight + dt.timedelta(seconds=k * seconds)
    return start.timestamp(), (start + dt.timedelta(seconds=seconds)).timestamp()


def windows(since: float, until: float, seconds: float) -> Iterator[tuple[float, float]]:
    """Every whole window from the one holding `since` to the last that ends by `until`."""
    start, end = window_of(since, seconds)
    while end <= until:
        yield start, end
        start, end = window_of(end, seconds)


def observation(history: TaskHistory, start: float, end: float, host: str) -> Obs:
    """The observation of one window of the task log."""
    values: dict[str, float | None] = {
        "hour": float(dt.datetime.fromtimestamp(start).hour),
        **history.window(start, end),
    }
    return Obs(ts=end, atom="drift", host=host, values=values, meta={"window": f"{end - start:g}"})
