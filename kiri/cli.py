"""The umbrella `kiri` command: `kiri STAGE …` runs a stage, other subcommands act on state."""

from __future__ import annotations

import argparse
import importlib
import sys

from kiri import __version__

STAGES = {
    "collect": "kiri.stages.collect",
    "atom": "kiri.stages.atom",
    "decide": "kiri.stages.decide",
    "act": "kiri.stages.act",
    "feedback": "kiri.stages.feedback",
    "supervise": "kiri.supervisor",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiri",
        description="KIRI, a personal anomaly detector. "
        f"`kiri STAGE ARGS…` runs a stage ({', '.join(STAGES)}), like kiri-STAGE.",
    )
    parser.add_argument("--version", action="version", version=f"kiri {__version__}")
    parser.add_argument("command", metavar="COMMAND", choices=list(STAGES), help="what to run")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in STAGES:
        return importlib.import_module(STAGES[argv[0]]).main(argv[1:])
    build_parser().parse_args(argv)
    return 2


if __name__ == "__main__":
    sys.exit(main())
