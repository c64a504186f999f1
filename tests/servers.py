"""The real servers tests start on loopback, and what they share: a free port, waiting for a
positive signal, and a Prometheus scraping given targets every second."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

PROMETHEUS = "/usr/bin/prometheus"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 20.0) -> T:
    """What check() gives once it gives something true (an OSError counts as not yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except OSError:
            found = None
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def prometheus_server(tmp: Path, job: str, targets: list[str]) -> Iterator[str]:
    """A real Prometheus on a free loopback port scraping `targets` every second, as `job`;
    its URL once it is ready. Its log is tmp/prometheus.log."""
    listed = ", ".join(f"'{t}'" for t in targets)
    (tmp / "prom.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: {job}\n"
        f"    static_configs: [{{targets: [{listed}]}}]\n"
    )
    url = f"http://127.0.0.1:{free_port()}"
    server = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp / 'prom.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address={url.removeprefix('http://')}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "prometheus.log").open("wb"),
    )
    try:
        wait_for("Prometheus", lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=1))
        yield url
    finally:
        server.terminate()
        server.wait(10)
