"""kiri-collect rhythm: the person's activity, once a minute by default (the atom, its fields
and tokens: kiri/atoms/rhythm.py).

Idle time comes from the first source that answers. macOS: `ioreg -c IOHIDSystem` (HIDIdleTime).
Linux: X11 (`xprintidle`), then systemd-logind (the session's IdleHint and IdleSinceHint), then
GNOME Mutter's IdleMonitor over D-Bus. Where none answers, idle is unknown (`idle_known` 0).

The repositories whose commits count are the --repo options, or else `repos` of the [rhythm]
section of $KIRI_HOME/config.toml:

    [rhythm]
    repos = ["~/src/kiri", "~/notes"]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from kiri.collect.sources import add_poll_options, poll
from kiri.home.config import RhythmSection, load_config, setting
from kiri.wire.children import ChildError, NotFoundError, run
from kiri.wire.log import Log
from kiri.wire.records import Obs
from kiri.wire.stream import Stream

COMMAND_TIMEOUT = 2.0  # seconds: an idle source slower than this is not answering
GIT_TIMEOUT = 5.0
BREAK = 300.0  # seconds idle that end a focus streak
WINDOW = 3600.0  # commits are counted over the last hour


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "rhythm",
        help="the person's activity: idle time, git commits, focus streak",
        description="Observe the person's work rhythm: seconds since the last keyboard or mouse "
        "input (unknown where no source can tell), commits in the last hour, minutes since the "
        "last break, with the hour and weekday as context.",
    )
    add_poll_options(p, "rhythm", 60.0)
    p.add_argument(
        "--repo",
        action="append",
        metavar="PATH",
        help="count commits in this git repository (repeatable; "
        "default: [rhythm] repos in config.toml)",
    )
    p.set_defaults(collect=collect)
    return p


def collect(args: argparse.Namespace, stream: Stream) -> None:
    rhythm = Rhythm(stream.log, repositories(args.repo), args.host)
    poll(args, stream, "rhythm", lambda: [rhythm.sample()])


def repositories(given: list[str] | None) -> list[Path]:
    """The --repo paths, or else the configured ones; `~` is the user's home."""
    section = load_config().rhythm or RhythmSection()
    return [Path(p).expanduser() for p in setting(given, section.repos, [])]


class NoAnswerError(Exception):
    """A source cannot tell here: its command is missing, failed or timed out, or it has no
    session or display to ask."""


class UnparsableError(ValueError):
    """A source answered, but not in a form that says how long the person has been idle."""


def ask(argv: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> str:
    """The command's stdout; NoAnswerError with the reason when it does not run cleanly."""
    try:
        return run(argv, timeout=timeout).stdout.decode("utf-8", "replace")
    except NotFoundError:
        raise NoAnswerError(f"{argv[0]} is not installed") from None
    except ChildError as e:
        raise NoAnswerError(f"{argv[0]}: {e}") from None


# -- parsers: a command's output → seconds idle ------------------------------------------------

IOREG_IDLE = re.compile(r'"HIDIdleTime" = (\d+)')
MUTTER_REPLY = re.compile(r"\(uint64 (\d+),\)")


def parse_ioreg(text: str) -> float:
    """`ioreg -c IOHIDSystem`: HIDIdleTime is nanoseconds since the last input. A Mac with
    several IOHIDSystem entries lists one each; the smallest is the latest input."""
    found = IOREG_IDLE.findall(text)
    if not found:
        raise UnparsableError("no HIDIdleTime in ioreg's output")
    return min(int(n) for n in found) / 1e9


def parse_xprintidle(text: str) -> float:
    """`xprintidle`: milliseconds since the X server last saw input."""
    if not text.strip().isdecimal():
        raise UnparsableError(f"xprintidle printed {text.strip()[:40]!r}, not milliseconds")
    return int(text) / 1000


def parse_mutter(text: str) -> float:
    """`gdbus call … org.gnome.Mutter.IdleMonitor.GetIdletime`: `(uint64 MS,)`."""
    match = MUTTER_REPLY.fullmatch(text.strip())
    if not match:
        raise UnparsableError(f"Mutter replied {text.strip()[:40]!r}, not (uint64 MS,)")
    return int(match[1]) / 1000


def parse_properties(text: str) -> dict[str, str]:
    """loginctl's `show-*` output: one KEY=VALUE a line."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def parse_logind(text: str, now: float) -> float:
    """`loginctl show-session ID -p IdleHint -p IdleSinceHint …`.

    logind knows only whether the session is idle (IdleHint: set by the desktop after its own
    idle delay, or, on a text session, from the terminal's last use) and since when
    (IdleSinceHint, µs since the epoch); an active session reads 0 seconds idle. A session whose
    hint has never been set (IdleSinceHint 0) belongs to a desktop that may not keep one, so
    logind cannot tell."""
    props = parse_properties(text)
    hint, since = props.get("IdleHint"), props.get("IdleSinceHint", "")
    if hint not in ("yes", "no"):
        raise UnparsableError(f"IdleHint is {hint!r}, not yes or no")
    if not since.isdecimal():
        raise UnparsableError(f"IdleSinceHint is {since!r}, not microseconds")
    if int(since) == 0:
        raise NoAnswerError("the session has never set its idle hint")
    return max(0.0, now - int(since) / 1e6) if hint == "yes" else 0.0


# -- sources: where each platform can learn the idle time -------------------------------------

SESSION_ID = re.compile(r"[A-Za-z0-9_-]+")


def ioreg_idle() -> float:
    return parse_ioreg(ask(["ioreg", "-c", "IOHIDSystem"]))


def x11_idle() -> float:
    if not os.environ.get("DISPLAY"):
        raise NoAnswerError("DISPLAY is not set")
    if os.environ.get("WAYLAND_DISPLAY"):  # XWayland sees only the input sent to X windows
        raise NoAnswerError("a Wayland session: X11 does not see all input")
    return parse_xprintidle(ask(["xprintidle"]))


def logind_idle() -> float:
    """The idle hint of this process's session, or else of the user's display session (the
    one a collector started by a service manager, outside any session, should ask about)."""
    session = os.environ.get("XDG_SESSION_ID") or _display_session()
    if not SESSION_ID.fullmatch(session):
        raise UnparsableError(f"session id {session[:40]!r} is not a logind session id")
    out = ask(
        [
            "loginctl",
            "show-session",
            session,
            "-p",
            "IdleHint",
            "-p",
            "IdleSinceHint",
            "-p",
            "IdleSinceHintMonotonic",
        ]
    )
    return parse_logind(out, time.time())


def _display_session() -> str:
    out = ask(["loginctl", "show-user", str(os.getuid()), "-p", "Display"])
    session = parse_properties(out).get("Display", "")
    if not session:
        raise NoAnswerError("the user has no display session")
    return session


def mutter_idle() -> float:
    return parse_mutter(
        ask(
            [
                "gdbus",
                "call",
                "--session",
                "--timeout",
                "2",
                "--dest",
                "org.gnome.Mutter.IdleMonitor",
                "--object-path",
                "/org/gnome/Mutter/IdleMonitor/Core",
                "--method",
                "org.gnome.Mutter.IdleMonitor.GetIdletime",
            ]
        )
    )


Source = tuple[str, Callable[[], float]]


def idle_sources() -> list[Source]:
    """This platform's idle sources, in the order they are asked."""
    if sys.platform == "darwin":
        return [("ioreg", ioreg_idle)]
    return [("x11", x11_idle), ("logind", logind_idle), ("mutter", mutter_idle)]


class IdleProbe:
    """Asks the idle sources in order each time, and says which one answers only when that
    changes (the first time, or when a display comes or goes), not at every observation."""

    def __init__(self, log: Log, sources: list[Source] | None = None) -> None:
        self.log = log
        self.sources = idle_sources() if sources is None else sources
        self.current: str | None = None  # the source that answered last; "none" when none did
        self._unparsable: set[tuple[str, str]] = set()  # warned about once each

    def seconds(self) -> tuple[float | None, str]:
        """Seconds since the last input and the source that said so; (None, "none")."""
        silent: dict[str, str] = {}
        for name, read in self.sources:
            try:
                idle = read()
            except NoAnswerError as e:
                silent[name] = str(e)
            except UnparsableError as e:
                silent[name] = str(e)
                if (name, str(e)) not in self._unparsable:
                    self._unparsable.add((name, str(e)))
                    self.log.warning("idle_unparsable", source=name, reason=str(e))
            else:
                self._settle(name, silent)
                return idle, name
        self._settle("none", silent)
        return None, "none"

    def _settle(self, name: str, silent: dict[str, str]) -> None:
        if name == self.current:
            return
        self.current = name
        if name == "none":
            self.log.warning("idle_unknown", reasons=silent)
        else:
            self.log.info("idle_source", source=name, skipped=silent)


# -- commits ----------------------------------------------------------------------------------


class Commits:
    """Commits the person made in the last hour, across their repositories. A repository's own
    user.email, when set, says whose commits count, so work fetched from others does not; a
    repository that cannot be read is reported once and skipped."""

    def __init__(self, log: Log, repos: Sequence[Path]) -> None:
        self.log = log
        self.repos = list(repos)
        self._reported: set[Path] = set()
        if not self.repos:
            log.info(
                "no_repositories",
                hint="commits stay 0: list [rhythm] repos in config.toml or pass --repo",
            )

    def count(self, now: float) -> tuple[int, int]:
        """(commits since now - WINDOW, repositories read)."""
        total = read = 0
        for repo in self.repos:
            try:
                total += self._count(repo, now - WINDOW)
            except (NoAnswerError, UnparsableError) as e:
                if repo not in self._reported:
                    self._reported.add(repo)
                    self.log.warning("repo_skipped", repo=str(repo), reason=str(e))
                continue
            read += 1
        return total, read

    def _count(self, repo: Path, since: float) -> int:
        email = _user_email(repo)
        out = ask(
            ["git", "-C", str(repo), "log", "--all", f"--since=@{int(since)}", "--format=%ct %ce"],
            timeout=GIT_TIMEOUT,
        )
        return count_commits(out, since, email)


def _user_email(repo: Path) -> str:
    try:
        return ask(["git", "-C", str(repo), "config", "user.email"], timeout=GIT_TIMEOUT).strip()
    except NoAnswerError:  # unset (status 1), or not a repository: the log says which
        return ""


def count_commits(log_text: str, since: float, email: str = "") -> int:
    """Lines of `git log --format='%ct %ce'` committed at or after `since` (git's --since stops
    near the boundary, not on it), by `email` when given."""
    n = 0
    for line in log_text.splitlines():
        stamp, _, committer = line.partition(" ")
        if not stamp.isdecimal():
            raise UnparsableError(f"git log printed {line[:60]!r}, not a commit time")
        if int(stamp) >= since and (not email or committer.lower() == email.lower()):
            n += 1
    return n


# -- focus streak -----------------------------------------------------------------------------


class Streak:
    """Minutes since the person last took a break (was idle for more than BREAK seconds).

    A streak is only vouched for between observations at most BREAK apart: after a longer
    silence (a suspended laptop, a stopped collector, an --interval over 5 minutes) a break may
    have gone unseen, so the streak starts again at the last input. The first streak a collector
    sees starts when it first sees the person."""

    def __init__(self) -> None:
        self.start: float | None = None  # when the current streak began; None during a break
        self.seen: float | None = None  # when the previous observation was taken

    def update(self, now: float, idle: float | None) -> float:
        if idle is None or idle > BREAK:
            self.start = None
        elif self.start is None or self.seen is None or now - self.seen > BREAK:
            self.start = now - idle
        self.seen = now
        return 0.0 if self.start is None else (now - self.start) / 60


# -- observations ------------------------------------------------------------------------------


def clock(ts: float) -> tuple[int, int]:
    """(hour 0–23, weekday 0–6 with Monday 0) in local time: the person's own day."""
    t = time.localtime(ts)
    return t.tm_hour, t.tm_wday


class Rhythm:
    """The rhythm collector: its idle probe, its repositories and the current streak."""

    def __init__(self, log: Log, repos: Sequence[Path], host: str | None = None) -> None:
        self.host = host or socket.gethostname()
        self.idle = IdleProbe(log)
        self.commits = Commits(log, repos)
        self.streak = Streak()

    def sample(self) -> Obs:
        now = time.time()
        idle, source = self.idle.seconds()
        streak = self.streak.update(now, idle)
        commits, repos = self.commits.count(now)
        hour, weekday = clock(now)
        return Obs(
            ts=now,
            atom="rhythm",
            host=self.host,
            values={
                "hour": float(hour),
                "weekday": float(weekday),
                "idle_known": 0.0 if idle is None else 1.0,
                "idle": 0.0 if idle is None else round(idle / 60, 2),
                "commits": float(commits),
                "streak": round(streak, 1),
            },
            meta={"idle_source": source, "repos": str(repos)},
        )
