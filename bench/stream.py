"""How fast records cross one stage hop, beside `cat` and `jq -c .`, and how fast a lone record
crosses a two-stage chain.

    .venv/bin/python bench/stream.py [--records 200000] [--repeat 3]

The stream is the recorded pulse fixture, cycled to the requested size with fresh timestamps.
Every figure is the best of --repeat runs, measured side by side in this one run.
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from recorded import write_cycled  # noqa: E402

HOP = [sys.executable, "-m", "kiri.collect.stage", "replay", "-"]


def ensure_jq() -> str | None:
    if shutil.which("jq"):
        return shutil.which("jq")
    print("jq is missing: installing it with apt-get", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-q", "jq"], stdout=subprocess.DEVNULL, check=False)
    return shutil.which("jq")


def hop_seconds(cmd: list[str], path: Path, expect_lines: int) -> float:
    """One hop inside a pipe, as in a pipeline: cat FILE | CMD | (count lines)."""
    t = time.perf_counter()
    feed = subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE)
    hop = subprocess.Popen(cmd, stdin=feed.stdout, stdout=subprocess.PIPE, cwd=ROOT)
    assert feed.stdout is not None and hop.stdout is not None
    feed.stdout.close()
    lines = 0
    while chunk := hop.stdout.read(1 << 20):
        lines += chunk.count(b"\n")
    hop.wait()
    feed.wait()
    elapsed = time.perf_counter() - t
    if lines != expect_lines:
        raise SystemExit(f"{cmd[0]} passed {lines} lines, expected {expect_lines}")
    return elapsed


def trickle_latency(samples: int = 100) -> list[float]:
    """Seconds for one record, written alone, to leave a two-stage chain."""
    a = subprocess.Popen(HOP, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
    b = subprocess.Popen(HOP, stdin=a.stdout, stdout=subprocess.PIPE, cwd=ROOT)
    assert a.stdin is not None and a.stdout is not None and b.stdout is not None
    a.stdout.close()
    line = (ROOT / "tests/fixtures/pulse.ndjson").read_bytes().splitlines()[0] + b"\n"
    fd, out = b.stdout.fileno(), []
    for _ in range(samples + 5):
        t = time.perf_counter()
        a.stdin.write(line)
        a.stdin.flush()
        got = b""
        while not got.endswith(b"\n"):
            select.select([fd], [], [])
            got += os.read(fd, 1 << 16)
        out.append(time.perf_counter() - t)
        time.sleep(0.01)  # idle between records: this is the trickle case
    a.stdin.close()
    b.wait()
    return out[5:]  # the first records also pay for imports warming up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000, help="records in the stream")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool; the best counts")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "obs.ndjson"
        write_cycled(path, args.records, ("pulse.ndjson",))
        size_mb = path.stat().st_size / 1e6
        tools = {"cat": ["cat"], "kiri hop": HOP}
        jq = ensure_jq()
        if jq:
            tools["jq -c ."] = [jq, "-c", "."]
        best = {
            name: min(hop_seconds(cmd, path, args.records) for _ in range(args.repeat))
            for name, cmd in tools.items()
        }

    print(f"one hop, {args.records:,} obs records ({size_mb:.1f} MB), cat FILE | HOP | reader")
    print(f"{'hop':<10} {'seconds':>8} {'records/s':>12}")
    for name, s in best.items():
        print(f"{name:<10} {s:>8.3f} {args.records / s:>12,.0f}")
    if "jq -c ." in best:
        print(f"kiri hop / jq -c . = {best['jq -c .'] / best['kiri hop']:.1f}x  (goal: >= 5x)")
    else:
        print("jq -c . could not be installed: no ratio")

    lat = sorted(trickle_latency())
    print(
        "trickle latency, one record through two stages: "
        f"median {statistics.median(lat) * 1e3:.2f} ms, "
        f"p95 {lat[int(len(lat) * 0.95)] * 1e3:.2f} ms, max {lat[-1] * 1e3:.2f} ms  (goal: < 5 ms)"
    )


if __name__ == "__main__":
    main()
