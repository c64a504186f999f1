"""The stage runner: a stage's body run with KIRI's exit conventions, config.toml checked first."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable

from kiri.home.config import load_config
from kiri.wire.errors import KiriError


def run_main(body: Callable[[], int | None]) -> int:
    """Run a stage's body with KIRI's exit conventions: 0 done, 1 failure, 2 usage. config.toml
    is decoded and checked first, so that no stage starts half-configured."""
    try:
        load_config()
        return body() or 0
    except BrokenPipeError:
        _discard_stdout()
        return 0
    except KiriError as e:
        print(f"Error: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        return 0


def _discard_stdout() -> None:
    # The reader is gone: point fd 1 at /dev/null so nothing at exit writes to it again.
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
