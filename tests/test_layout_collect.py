"""kiri-collect loads no numpy: its samplers need the standard library, psutil and msgspec, and
an atom's schema (kiri/atoms/, which brings numpy) is only read from kiri-atom on (issue 18).

Each check runs Python with -X importtime, which lists every module the run imported and which
module imported it, so a failure names the chain of imports that brought numpy in."""

import json
import pkgutil
import subprocess
import sys

from conftest import stage_cmd

import kiri.collect

MODULES = [f"kiri.collect.{m.name}" for m in pkgutil.iter_modules(kiri.collect.__path__)]


def imports(argv: list[str]) -> tuple[bytes, list[tuple[int, str]]]:
    """A Python run of argv: its stdout, and (depth, module) of every module it imported, in
    -X importtime's order: each module after the ones it imported, at one depth less."""
    assert argv[0] == sys.executable
    out = subprocess.run(
        [sys.executable, "-X", "importtime", *argv[1:]],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    entries = []
    for line in out.stderr.decode().splitlines():
        if line.startswith("import time:") and not line.endswith("imported package"):
            name = line.rsplit("|", 1)[1]
            entries.append(((len(name) - len(name.lstrip())) // 2, name.strip()))
    return out.stdout, entries


def importers(entries: list[tuple[int, str]], module: str) -> list[str]:
    """The module, and each module that imported the one before it; [] when it was not loaded."""
    for i, (inner, name) in enumerate(entries):
        if name == module:
            chain, depth = [name], inner
            for outer, importer in entries[i + 1 :]:
                if outer < depth:
                    chain.append(importer)
                    depth = outer
            return chain
    return []


def test_kiri_collect_pulse_loads_no_numpy():
    argv = stage_cmd("kiri.collect.stage", "pulse", "--count", "1", "--interval", "0.1")
    stdout, entries = imports(argv)
    assert json.loads(stdout)["atom"] == "pulse"
    assert importers(entries, "numpy") == []


def test_no_module_of_kiri_collect_imports_numpy():
    assert {"kiri.collect.drift", "kiri.collect.rhythm", "kiri.collect.mikrotik"} <= set(MODULES)
    _, entries = imports([sys.executable, "-c", "\n".join(f"import {m}" for m in MODULES)])
    assert {name for _, name in entries} >= set(MODULES)
    assert importers(entries, "numpy") == []


def test_an_exec_source_run_loads_no_numpy():
    command = [sys.executable, "-c", "print('{\"temp\": 41.5}')"]
    argv = stage_cmd("kiri.collect.stage", "exec", "--count", "1", "--interval", "0.1")
    stdout, entries = imports([*argv, "--", *command])
    assert json.loads(stdout)["values"] == {"temp": 41.5}
    assert importers(entries, "numpy") == []
