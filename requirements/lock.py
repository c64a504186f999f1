"""Re-solves uv.lock from pyproject.toml and writes the hashed requirement files bin/kiri installs.

    bin/lock             after a change to pyproject.toml's dependencies
    bin/lock --upgrade   every package to the newest version pyproject.toml allows
    bin/lock --check     exit 1 when uv.lock or a requirements file is out of date (no change)

uv.lock is the lock, for Python 3.11 to 3.13; requirements/*.txt are its exports, one per set,
so that setting up needs nothing but the pip that comes with Python.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UV = str(Path(sys.executable).parent / "uv")
# Each set: the extras it holds. Every set also holds the build group (setuptools).
SETS = {"base": [], "bench": ["bench"], "dev": ["dev", "bench"]}


def export(name: str, out: Path) -> None:
    extras = [arg for extra in SETS[name] for arg in ("--extra", extra)]
    subprocess.run(
        [
            UV,
            "export",
            "--quiet",
            "--frozen",
            "--no-emit-project",
            "--group",
            "build",
            *extras,
            "--format",
            "requirements-txt",
            "--no-header",
            "-o",
            str(out),
        ],
        cwd=ROOT,
        check=True,
    )


def check() -> int:
    """0 when uv.lock matches pyproject.toml and every export matches uv.lock."""
    stale = (
        subprocess.run([UV, "lock", "--quiet", "--check"], cwd=ROOT, check=False).returncode != 0
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in SETS:
            fresh = Path(tmp) / f"{name}.txt"
            export(name, fresh)
            committed = ROOT / "requirements" / f"{name}.txt"
            if not committed.exists() or committed.read_bytes() != fresh.read_bytes():
                print(f"requirements/{name}.txt is not uv.lock's export", file=sys.stderr)
                stale = True
    if stale:
        print("the lock is out of date: run bin/lock", file=sys.stderr)
    return int(stale)


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        return check()
    if argv not in ([], ["--upgrade"]):
        print("usage: bin/lock [--upgrade | --check]", file=sys.stderr)
        return 2
    subprocess.run([UV, "lock", *argv], cwd=ROOT, check=True)
    for name in SETS:
        export(name, ROOT / "requirements" / f"{name}.txt")
    print("uv.lock and requirements/*.txt written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
