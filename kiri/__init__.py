"""KIRI: a personal anomaly detector built from tiny GPTs composed as Unix pipes."""

import os

# Stages are single-threaded processes that run side by side in a pipeline, and the model's
# matrices are small: BLAS worker threads only burn CPU and memory here. Set before numpy loads.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402  (after the thread limits, which must come first)
from importlib import metadata  # noqa: E402

try:
    __version__ = metadata.version("kiri")
except metadata.PackageNotFoundError:  # a checkout on sys.path without being installed
    __version__ = "0+unknown"


def add_version_option(parser: argparse.ArgumentParser) -> None:
    """`--version` on a command: its name and KIRI's version, from the package metadata."""
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {__version__}",
        help="print the program's name and KIRI's version, then exit",
    )
