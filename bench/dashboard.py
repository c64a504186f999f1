"""kiri dashboard with a day of 1-second scores: how soon the page is ready, and its memory.

    bin/bench dashboard [--repeat 3]

In a temporary KIRI_HOME it writes a day of pulse scores, one a second (86,400, with alerts in
the store: tests/dashboard_home.py), starts `kiri dashboard`, and opens the page in headless
Chromium (/usr/bin/chromium, through Playwright): the hour view (the default) and the day view,
each timed from the navigation's start to the first chart drawn, as the page itself measures
(performance.now() when it sets data-ready), the fastest of --repeat loads. Then the week view
once, and the dashboard process's RSS, the most it reached. Also the time to read and
downsample the day's scores in this process (kiri.dashboard.scores.series), the work behind the
day view. Goals: page ready under 1 s, RSS at most 80 MB.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from dashboard_home import CHROMIUM, CHROMIUM_ARGS, make_home  # noqa: E402

from kiri.dashboard import scores  # noqa: E402


class PeakRss(threading.Thread):
    """The most resident memory a process reaches while this watches it."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc, self.peak, self.done = psutil.Process(pid), 0, False

    def run(self) -> None:
        while not self.done:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)


def ready_ms(page, url: str) -> float:
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=60000)
    return float(page.evaluate("Number(document.body.dataset.readyMs)"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3, help="page loads per view; the fastest counts")
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(ROOT / "tests"))
    from test_dashboard import Dashboard

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "kiri-home"
        end = make_home(home, seconds=86400.0, step=1.0)
        size = sum(f.stat().st_size for f in (home / "data" / "pulse" / "scores").iterdir())
        print(f"a day of 1-second scores: 86,400 in {size / 1e6:.0f} MB")
        t = time.perf_counter()
        day = scores.series("pulse", end - 86400.0, end)
        read = time.perf_counter() - t
        print(f"read and downsampled in-process: {read:.2f} s ({len(day['vm'].ts)} points)")
        os.environ["PYTHONPATH"] = str(ROOT)
        dash = Dashboard()
        watch = PeakRss(dash.proc.pid)
        watch.start()
        idle = psutil.Process(dash.proc.pid).memory_info().rss
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(dash.link)  # logs in, then the hour view
            page.wait_for_selector("body[data-ready='1']", timeout=60000)
            timings = {}
            for view in ("hour", "day"):
                timings[view] = min(
                    ready_ms(page, f"{dash.origin}/?{i}#{view}") for i in range(args.repeat)
                )
            timings["week"] = ready_ms(page, f"{dash.origin}/?w#week")
            browser.close()
        watch.done = True
        watch.join()
        dash.stop()
    for view, ms in timings.items():
        print(f"page ready, {view} view: {ms:.0f} ms (goal < 1000 ms)")
    print(f"dashboard RSS: {idle / 2**20:.0f} MB at start, {watch.peak / 2**20:.0f} MB at most "
          "(goal <= 80 MB)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
