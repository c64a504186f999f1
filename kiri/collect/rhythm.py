"""kiri-collect rhythm: the person's activity, once a minute by default.

The repositories whose commits count are the --repo options, or else `repos` of the [rhythm]
section of $KIRI_HOME/config.toml:

    [rhythm]
    repos = ["~/src/kiri", "~/notes"]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kiri.collect.sources import add_poll_options, poll
from kiri.home.config import RhythmSection, load_config, setting
from kiri.wire.stream import Stream


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
    from kiri.atoms.rhythm import Rhythm  # here: the other sources need not load the schema

    rhythm = Rhythm(stream.log, repositories(args.repo), args.host)
    poll(args, stream, "rhythm", lambda: [rhythm.sample()])


def repositories(given: list[str] | None) -> list[Path]:
    """The --repo paths, or else the configured ones; `~` is the user's home."""
    section = load_config().rhythm or RhythmSection()
    return [Path(p).expanduser() for p in setting(given, section.repos, [])]
