"""KIRI's import graph: the rooms (packages) and the arrows between them, from the code's own
imports, and every arrow the layout forbids.

    bin/bench layout [--rev REV]

The layout (README, "Layout"): floors that never import a stage, lowest first, then one package
per stage in pipe order, then the fronts (`kiri dashboard`), then the `kiri` dispatcher. A floor
imports only lower floors; a stage imports floors only, never another stage; a front reads the
floors and calls the stages' commands (as `kiri feedback` does), and only the dispatcher imports
a front. tests/test_layout.py holds the code to these rules;
--rev draws an older commit's graph (as rooms by top-level module) beside today's.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOORS = ["kiri", "wire", "home", "clients", "model", "atoms"]  # lowest first
STAGES = ["collect", "score", "decide", "act", "feedback", "supervise"]  # in pipe order
FRONTS = ["dashboard"]  # for people, beside the dispatcher: they may call any stage's commands
TOP = ["cli"]


def modules(root: Path) -> dict[str, Path]:
    """Every module under root/kiri, by dotted name."""
    found = {}
    for path in sorted((root / "kiri").rglob("*.py")):
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(root: Path) -> dict[str, set[str]]:
    """Each module's imports of other KIRI modules (a package when no module of it is named)."""
    mods = modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.split(".")[0] == "kiri"}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "kiri":
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    deps.add(full if full in mods else str(node.module))
        graph[name] = deps - {name}
    return graph


def room(module: str) -> str:
    """The package a module lives in: `kiri` for the package itself, `cli` for the dispatcher."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "kiri"


def arrows(graph: dict[str, set[str]]) -> Counter[tuple[str, str]]:
    """Room -> room, counted by module-to-module import."""
    return Counter(
        (room(a), room(b)) for a, deps in graph.items() for b in deps if room(a) != room(b)
    )


def forbidden(graph: dict[str, set[str]]) -> list[str]:
    """Every import the layout does not allow, as `a -> b: why`."""
    rank = {name: i for i, name in enumerate(FLOORS)}
    problems = []
    for a, deps in sorted(graph.items()):
        for b in sorted(deps):
            ra, rb = room(a), room(b)
            if ra == rb or ra in TOP:
                continue
            if rb in TOP:
                why = "imports the dispatcher"
            elif rb in FRONTS:
                why = f"imports the front {rb}"
            elif ra in FRONTS:
                continue
            elif ra in FLOORS and rb not in FLOORS:
                why = f"the floor {ra} imports the stage {rb}"
            elif ra in FLOORS and rank[rb] > rank[ra]:
                why = f"the floor {ra} imports the higher floor {rb}"
            elif ra in STAGES and rb in STAGES:
                why = f"the stage {ra} imports the stage {rb}"
            elif ra not in FLOORS + STAGES:
                why = f"{ra} is no room of the layout"
            else:
                continue
            problems.append(f"{a} -> {b}: {why}")
    return problems


def _checkout(rev: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "kiri"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def describe(root: Path, label: str) -> None:
    graph = imports(root)
    counted = arrows(graph)
    rooms = sorted({room(m) for m in graph})
    print(f"{label}: {len(graph)} modules in {len(rooms)} rooms, {len(counted)} room-to-room "
          f"arrows ({sum(counted.values())} imports)")  # fmt: skip
    for (a, b), n in sorted(counted.items()):
        print(f"  {a:>10} -> {b:<10} {n:>3}")
    if not set(rooms) <= set(FLOORS + STAGES + FRONTS + TOP):
        print("  forbidden arrows: not counted (its rooms are not this layout's)")
        return
    problems = forbidden(graph)
    print(f"  forbidden arrows: {len(problems)}")
    for p in problems:
        print(f"    {p}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rev", help="also draw this commit's graph, before today's")
    args = p.parse_args(argv)
    if args.rev:
        with tempfile.TemporaryDirectory() as tmp:
            describe(_checkout(args.rev, Path(tmp)), args.rev)
    describe(ROOT, "this checkout")
    return 1 if forbidden(imports(ROOT)) else 0


if __name__ == "__main__":
    sys.exit(main())
