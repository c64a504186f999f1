"""KIRI: a personal anomaly detector built from tiny GPTs composed as Unix pipes."""

import os

# Stages are single-threaded processes that run side by side in a pipeline, and the model's
# matrices are small: BLAS worker threads only burn CPU and memory here. Set before numpy loads.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402  (after the thread limits, which must come first)
import functools  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import NoReturn  # noqa: E402


@functools.cache
def version() -> str:
    """KIRI's version, from the package metadata (read only when asked: importing
    importlib.metadata costs every stage's start some 25 ms)."""
    from importlib import metadata

    try:
        return metadata.version("kiri")
    except metadata.PackageNotFoundError:  # a checkout on sys.path without being installed
        return "0+unknown"


class _Version(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[str] | None,
        option_string: str | None = None,
    ) -> NoReturn:
        print(f"{parser.prog} {version()}")  # on stdout, as argparse's own version action
        parser.exit()


def add_version_option(parser: argparse.ArgumentParser) -> None:
    """`--version` on a command: its name and KIRI's version."""
    parser.add_argument(
        "--version",
        action=_Version,
        nargs=0,
        help="print the program's name and KIRI's version, then exit",
    )


def complete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request, if this run is one (argcomplete sets
    _ARGCOMPLETE and COMP_LINE; the scripts bin/kiri installs ask for it), then exit."""
    if "_ARGCOMPLETE" in os.environ:
        import argcomplete  # only then: it costs every other start nothing

        argcomplete.autocomplete(parser)
