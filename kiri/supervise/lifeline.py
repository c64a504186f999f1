"""kiri-supervise's lifeline: a small process that ends the stages when the supervisor dies.

    python -m kiri.supervise.lifeline GRACE   # kiri-supervise starts it; stdin: the lifeline pipe

Each stage runs in its own process group. The supervisor writes `+PGID` into the pipe when it
starts a stage and `-PGID` once that group has ended. However the supervisor ends, kill -9
included, the kernel closes its end of the pipe, and the lifeline reads the end of its input:
it sends SIGTERM to every group still listed and, after GRACE seconds, SIGKILL to what is left.
So no source outlives its supervisor (nor the program behind an `sh -c '…; exit 125'`), and a
supervisor started again never runs one twice. It works wherever pipes and process groups do,
macOS included; after a clean stop it finds no group left and exits at once.
"""

from __future__ import annotations

import os
import signal
import sys
import time

POLL = 0.05  # seconds between looks at the groups that were asked to end


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    grace = float(args[0]) if args else 10.0
    groups: set[int] = set()
    for line in sys.stdin.buffer:  # until the supervisor's end of the pipe closes
        pgid = int(line[1:])
        if line.startswith(b"+"):
            groups.add(pgid)
        else:
            groups.discard(pgid)
    end(groups, grace)
    return 0


def end(groups: set[int], grace: float) -> None:
    """SIGTERM to each group, then SIGKILL to those still there after `grace` seconds."""
    left = {g for g in groups if _signal(g, signal.SIGTERM)}
    deadline = time.monotonic() + grace
    while left and time.monotonic() < deadline:
        time.sleep(POLL)
        left = {g for g in left if _signal(g, 0)}
    for group in left:
        _signal(group, signal.SIGKILL)


def _signal(pgid: int, signum: int) -> bool:
    """Signal a process group (0: only look); False when it is gone."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:  # not ours: a group that ended and whose number was taken again
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
