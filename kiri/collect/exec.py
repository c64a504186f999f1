"""kiri-collect exec: any command that prints a JSON object of numbers is an atom's source.

Every --interval seconds it runs the command (an argv, never through a shell) and reads its
stdout, which must be one JSON object of numbers, such as {"temp": 41.5, "fans": 2}: that becomes
one observation of the atom (--atom, default "exec"), the numbers its values. A run that gives
no observation is logged (`run_failed`, with the reason, when it differs from the last run's) and
the collector goes on, until --give-up-polls such runs in a row or --give-up-time seconds of them
end it with an error (kiri.collect.sources.Failures). Such a run is one with a non-zero
exit status, no answer within --timeout seconds (then the command and its children are killed),
more than MAX_OUTPUT bytes of output, output that is not such an object, a value that is not a
number (the reason names its key), or no value for a field the atom's schema needs.

`kiri-collect exec --atom gpu` with no command runs the `command` of [atoms.gpu] in config.toml,
whose `interval` and `timeout` are then the defaults; kiri/atoms/registry.py makes an atom of
its `fields`. A command that cannot be found exits with DO_NOT_RESTART: the source is absent here.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import socket
import sys
import time
from collections.abc import Sequence

import msgspec

from kiri.collect.sources import Failures, add_poll_options, poll
from kiri.home.config import config_atom, setting
from kiri.home.paths import valid_name
from kiri.wire.children import ChildError, StoppedError, run
from kiri.wire.errors import DO_NOT_RESTART, KiriError
from kiri.wire.records import UNDECODABLE, Obs
from kiri.wire.stream import Stream

DEFAULT_ATOM = "exec"
DEFAULT_INTERVAL = 60.0
DEFAULT_TIMEOUT = 10.0
MAX_OUTPUT = 1 << 16  # bytes of stdout; a metrics object is far smaller


class RunFailedError(Exception):
    """Output of the command that gives no observation; the message says why."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "exec",
        conflict_handler="resolve",
        help="run a command that prints a JSON object of numbers, as an atom's source",
    )
    p.add_argument(
        "command",
        nargs="*",
        metavar="CMD",
        help="after --, the command and its arguments (default: the atom's "
        "`command` in config.toml)",
    )
    p.add_argument(
        "--atom",
        default=DEFAULT_ATOM,
        help=f"the atom the observations belong to (default {DEFAULT_ATOM})",
    )
    add_poll_options(p, "ATOM", DEFAULT_INTERVAL, failing=True)
    p.add_argument(
        "--interval",
        type=float,
        default=None,  # replaces the shared default
        help="seconds between runs (default: the atom's `interval` in config.toml, "
        f"else {DEFAULT_INTERVAL:g})",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds a run may take before it is killed (default: the atom's "
        f"`timeout` in config.toml, else {DEFAULT_TIMEOUT:g})",
    )
    p.set_defaults(collect=collect)
    return p


def collect(args: argparse.Namespace, stream: Stream) -> None:
    argv, timeout = _settings(args)
    if shutil.which(argv[0]) is None:
        print(f"Error: command not found: {argv[0]}", file=sys.stderr)
        raise SystemExit(DO_NOT_RESTART)
    needed = _needed_fields(args.atom)
    host = args.host or socket.gethostname()
    what = f"command {argv[0]}"
    failures = Failures(args, stream.log, what, "run_failed", atom=args.atom, command=argv[0])

    def sample() -> list[Obs]:
        try:
            done = run(argv, timeout=timeout, stopping=lambda: stream.stopping, limit=MAX_OUTPUT)
            values = parse_metrics(done.stdout, needed)
        except StoppedError:
            return []
        except (ChildError, RunFailedError) as e:
            failures.failed(str(e))
            return []
        failures.succeeded()
        return [Obs(ts=time.time(), atom=args.atom, host=host, values=values)]

    poll(args, stream, args.atom, sample)


def _settings(args: argparse.Namespace) -> tuple[list[str], float]:
    """The command and its timeout, from the command line or else the atom's config.toml
    table, or else the defaults; sets args.interval the same way."""
    try:
        valid_name(args.atom)
    except ValueError as e:
        raise KiriError(str(e)) from None
    if args.timeout is not None and args.timeout <= 0:
        raise KiriError("--timeout must be greater than 0")
    atom = config_atom(args.atom)
    args.interval = setting(args.interval, atom.interval, DEFAULT_INTERVAL)
    command = setting(args.command or None, atom.command, None)
    if command is None:
        raise KiriError(
            f"no command to run: give one after -- (kiri-collect exec --atom {args.atom} "
            f"-- CMD ARGS…), or set `command` in [atoms.{args.atom}] of config.toml"
        )
    return command, setting(args.timeout, atom.timeout, DEFAULT_TIMEOUT)


def _needed_fields(atom: str) -> list[str]:
    """The values the atom's schema needs, when the atom is defined: built in, or by the
    `fields` of [atoms.NAME] in config.toml (its clock fields are read from the time). Only a
    name kiri.atoms holds a module of can be built in, and only for such a name is the registry
    loaded (it brings numpy, which a collector otherwise never needs)."""
    if importlib.util.find_spec(f"kiri.atoms.{atom}") is None:
        return list(config_atom(atom).fields or {})
    from kiri.atoms.registry import UnknownAtom, atom_spec

    try:
        return [f.name for f in atom_spec(atom).schema.fields if not f.clock]
    except UnknownAtom:  # its schema will be fitted from whatever the command prints
        return []


def parse_metrics(out: bytes, needed: Sequence[str]) -> dict[str, float | None]:
    """The values in a command's output: one JSON object of numbers (none of them None, which
    an observation's values may hold: a value not known)."""
    if not out.strip():
        raise RunFailedError("printed nothing (expected a JSON object of numbers)")
    try:
        doc = msgspec.json.decode(out)
    except UNDECODABLE as e:
        raise RunFailedError(f"printed something that is not JSON ({e}): {_preview(out)}") from None
    if not isinstance(doc, dict) or not doc:
        raise RunFailedError(f"printed JSON that is not an object of numbers: {_preview(out)}")
    values: dict[str, float | None] = {}
    for key, x in doc.items():
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise RunFailedError(
                f"value of {key!r} is not a number: {_preview(msgspec.json.encode(x))}"
            )
        try:
            values[key] = float(x)
        except OverflowError:  # an integer literal beyond any float
            raise RunFailedError(f"value of {key!r} is out of range") from None
    if missing := [f for f in needed if f not in values]:
        raise RunFailedError(
            f"no value for {', '.join(map(repr, missing))}, which the atom's schema needs"
        )
    return values


def _preview(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    return text if len(text) <= 80 else text[:77] + "..."
