"""The Pulse pipeline's throughput and footprint, and what collecting costs.

    .venv/bin/python bench/pipeline.py [--observations 100000] [--collect-seconds 60]

1. Replays recorded observations (this machine's pulse fixtures, cycled, with fresh times)
   through kiri-collect replay | kiri-atom pulse | kiri-decide | kiri-act --sink log, --repeat
   times, and prints observations per second end to end (the fastest run, and every run) and
   each stage's peak RSS (the most of any run).
2. Runs kiri-collect pulse at a 1 s interval and prints the CPU it uses in steady state, as a
   percentage of one core.
Everything runs in a temporary KIRI_HOME.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from recorded import FIXTURES, write_cycled

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("pulse-normal.ndjson", "pulse-stress.ndjson", "pulse-recovery.ndjson")


def stage(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def run_chain(stream: Path, env: dict) -> tuple[float, list[tuple[str, float]], int]:
    """Seconds end to end, each stage's peak RSS in MB, and the outcome lines."""
    stages = [
        ("collect replay", stage("kiri.collect.stage", "replay", str(stream))),
        ("atom pulse", stage("kiri.score.stage", "pulse")),
        ("decide", stage("kiri.decide.stage")),
        ("act --sink log", stage("kiri.act.stage", "--sink", "log")),
    ]
    procs, upstream = [], None
    t = time.perf_counter()
    for _, cmd in stages:
        p = subprocess.Popen(
            cmd,
            stdin=upstream,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
        )
        if upstream is not None:
            upstream.close()
        upstream = p.stdout
        procs.append(p)
    last = procs[-1].stdout
    assert last is not None
    outcomes = len(last.read().splitlines())
    rss = []
    for (name, _), p in zip(stages, procs, strict=True):
        _, status, usage = os.wait4(p.pid, 0)
        if status != 0:
            raise SystemExit(f"{name} exited with status {status}")
        rss.append((name, usage.ru_maxrss / 1024))  # KiB on Linux
    return time.perf_counter() - t, rss, outcomes


def collect_cpu(seconds: float, env: dict) -> tuple[float, float]:
    """Steady-state CPU % of one core over `seconds`, and the CPU seconds of starting up."""
    p = subprocess.Popen(
        stage("kiri.collect.stage", "pulse", "--interval", "1"),
        stdout=subprocess.DEVNULL,
        env=env,
        cwd=ROOT,
    )
    proc = psutil.Process(p.pid)
    time.sleep(3)  # past the imports and the first observation
    start = proc.cpu_times()
    startup = start.user + start.system
    time.sleep(seconds)
    end = proc.cpu_times()
    p.terminate()
    p.wait()
    used = (end.user + end.system) - startup
    return 100 * used / seconds, startup


def main() -> None:
    parser = argparse.ArgumentParser(description="Pulse pipeline throughput, memory and cost.")
    parser.add_argument("--observations", type=int, default=100_000, help="observations to replay")
    parser.add_argument("--collect-seconds", type=float, default=60, help="collector run length")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="pipeline runs; the fastest counts (the machine is noisy)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, KIRI_HOME=home, KIRI_LOG_LEVEL="warning")
        subprocess.run(
            stage("kiri.cli", "train", "pulse", "--from", str(FIXTURES / PARTS[0])),
            env=env,
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        stream = Path(home) / "obs.ndjson"
        write_cycled(stream, args.observations, PARTS)
        runs = [run_chain(stream, env) for _ in range(args.repeat)]
        seconds, rss, outcomes = min(runs, key=lambda r: r[0])
        rss = [(name, max(r[1][i][1] for r in runs)) for i, (name, _) in enumerate(rss)]
        cpu, startup = collect_cpu(args.collect_seconds, env)

    print(
        f"collect replay | atom pulse | decide | act --sink log, {args.observations:,} observations"
    )
    print(
        f"  end to end, fastest of {args.repeat}: {seconds:.2f} s, "
        f"{args.observations / seconds:,.0f} observations/s (goal >= 20,000); all runs: "
        + ", ".join(f"{args.observations / r[0]:,.0f}" for r in runs)
        + f"; {outcomes} lines out"
    )
    for name, mb in rss:
        print(f"  peak RSS {name:<16} {mb:6.1f} MB, the most of any run (goal <= 60 MB)")
    print(
        f"kiri-collect pulse --interval 1, {args.collect_seconds:.0f} s: {cpu:.3f}% of one core "
        f"(goal < 0.5%); start-up cost {startup:.2f} CPU s, once"
    )


if __name__ == "__main__":
    main()
