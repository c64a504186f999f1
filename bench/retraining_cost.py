"""What continuous learning costs the default pipeline: CPU for a day of Pulse's retraining.

    bin/bench retraining_cost [--interval 5] [--repeat 2]

Pulse observes every --interval seconds after its 120-observation warm-up. kiri.atoms.retraining's
schedule says when kiri-atom --learn retrains in a day of that, and on how many observations;
each distinct run is timed here for real (`kiri train pulse` in the low-priority wrapper
kiri-atom starts, on recorded observations cycled to the window's size, its CPU time from
getrusage), and the day's total is reported as a share of one core over 24 hours. The goal is
at most 1%.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from recorded import write_cycled

from kiri.atoms.retraining import DEFAULT as SCHEDULE

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("pulse-normal.ndjson", "pulse-stress.ndjson", "pulse-recovery.ndjson")
WARMUP = 120  # pipelines/pulse.toml's
DAY = 86_400


def day_plan(interval: float) -> list[int]:
    """The window sizes of the day's retrains: the first model, then the schedule's."""
    seen_in_a_day = WARMUP + int((DAY - WARMUP) / interval)
    return [len(SCHEDULE.window_of(p)) for p in SCHEDULE.plan(WARMUP, seen_in_a_day + 1)]


def cpu_seconds(home: Path, observations: int) -> float:
    """CPU seconds (user + system) of one background training on this many observations."""
    data = home / "data" / "pulse"
    for old in data.glob("*.ndjson"):
        old.unlink()
    data.mkdir(parents=True, exist_ok=True)
    write_cycled(data / "day.ndjson", observations, PARTS)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = dict(os.environ, KIRI_HOME=str(home), KIRI_LOG_LEVEL="warning")
    subprocess.run(
        [sys.executable, "-m", "kiri.atoms.training_jobs", "pulse"],
        env=env,
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between observations")
    parser.add_argument("--repeat", type=int, default=2, help="timings of each size (the least)")
    args = parser.parse_args()
    plan = day_plan(args.interval)
    with tempfile.TemporaryDirectory() as tmp:
        cost = {
            n: min(cpu_seconds(Path(tmp), n) for _ in range(args.repeat)) for n in sorted(set(plan))
        }
    total = sum(cost[n] for n in plan)
    print(f"a day of Pulse at one observation every {args.interval:g} s: {len(plan)} trainings")
    for n in sorted(cost):
        print(f"  on {n:>6,} observations: {cost[n]:5.1f} CPU s, {plan.count(n)} in the day")
    print(f"retraining: {total:.0f} CPU s a day, {total / DAY:.3%} of one core (goal <= 1%)")


if __name__ == "__main__":
    main()
