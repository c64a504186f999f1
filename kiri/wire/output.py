"""Output for scripts: `--json` on the commands that list things prints one JSON document (its
keys are in the README, and only ever added to)."""

from __future__ import annotations

import argparse

import msgspec


def add_json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--json", action="store_true", help="print one JSON document, for scripts (see README)"
    )


def print_json(document: object) -> None:
    print(msgspec.json.format(msgspec.json.encode(document), indent=2).decode())
