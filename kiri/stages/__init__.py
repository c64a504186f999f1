"""One module per executable stage; each runs as `python -m kiri.stages.NAME`."""

import sys


def unavailable(command: str) -> int:
    """The exit of a declared command whose stage is not in this version yet."""
    print(f"Error: {command} is not available in this version of KIRI", file=sys.stderr)
    return 1
