"""The Pulse pipeline's throughput and footprint, and what collecting costs.

    .venv/bin/python bench/pipeline.py [--observations 100000] [--collect-seconds 60]

1. Replays recorded observations (this machine's pulse fixtures, cycled, with fresh times)
   through kiri-collect replay | kiri-atom pulse | kiri-decide | kiri-act --sink log, --repeat
   times, and prints observations per second end to end (the fastest run, and every run) and
   each stage's peak RSS (the most of any run).
2. Runs kiri-collect pulse at a 1 s interval and prints the CPU it uses in steady state, as a
   percentage of one core, and how long `kiri-collect pulse --count 1` takes from start to exit
   beside `python -c pass`, the fastest of --repeat runs each, alternated.
3. Runs the default pipeline file (pipelines/pulse.toml) under kiri-supervise for a while and
   prints each stage's RSS, their total and the supervisor's.
Everything runs in a temporary KIRI_HOME.
"""

from __future__ import annotations

import argparse
import json
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


def startup(env: dict, repeat: int) -> tuple[float, float]:
    """The fastest wall time of `kiri-collect pulse --count 1` and of `python -c pass`."""
    collect = stage("kiri.collect.stage", "pulse", "--count", "1", "--interval", "0.01")
    bare = [sys.executable, "-c", "pass"]
    times: dict[str, list[float]] = {"collect": [], "python": []}
    for _ in range(repeat):
        for name, cmd in (("collect", collect), ("python", bare)):
            t = time.perf_counter()
            subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - t)
    return min(times["collect"]), min(times["python"])


def supervised_rss(env: dict, seconds: float) -> tuple[list[tuple[str, float]], float]:
    """Each stage's RSS in MB (with whatever it started) after `seconds` under kiri-supervise
    running pipelines/pulse.toml, and the supervisor's own."""
    sup = subprocess.Popen(
        stage("kiri.supervise.supervisor", str(ROOT / "pipelines" / "pulse.toml")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=ROOT,
    )
    status = Path(env["KIRI_HOME"]) / "status.json"
    try:
        time.sleep(seconds)
        stages = json.loads(status.read_text())["stages"]
        rss = []
        for s in stages:
            proc = psutil.Process(s["pid"])
            group = [proc, *proc.children(recursive=True)]
            rss.append((s["name"], sum(p.memory_info().rss for p in group) / 2**20))
        return rss, psutil.Process(sup.pid).memory_info().rss / 2**20
    finally:
        sup.terminate()
        sup.wait(timeout=60)


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
    parser.add_argument(
        "--supervised-seconds", type=float, default=20, help="how long the pipeline runs first"
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
        cpu, startup_cpu = collect_cpu(args.collect_seconds, env)
        collect_start, python_start = startup(env, 10)
        stage_rss, supervisor_rss = supervised_rss(env, args.supervised_seconds)

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
        f"(goal < 0.5%); start-up cost {startup_cpu:.2f} CPU s, once"
    )
    print(
        f"kiri-collect pulse --count 1, start to exit, fastest of 10: {collect_start * 1000:.0f} ms"
        f" (goal <= 150 ms), beside python -c pass: {python_start * 1000:.0f} ms"
    )
    print(f"pipelines/pulse.toml under kiri-supervise, after {args.supervised_seconds:.0f} s:")
    for name, mb in stage_rss:
        print(f"  RSS {name:<10} {mb:6.1f} MB")
    total = sum(mb for _, mb in stage_rss)
    print(f"  RSS of the {len(stage_rss)} stages {total:.1f} MB (goal <= 120 MB); "
          f"kiri-supervise itself {supervisor_rss:.1f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
