"""Pipeline files: which stages kiri-supervise runs, and how their pipes connect.

A pipeline file is TOML (`pipelines/*.toml`); unknown keys are rejected:

    name = "pulse"          # optional, default: the file's stem
    alerts = "act"          # optional: the stage whose stdin also gets the supervisor's alerts
    stop_timeout = 10       # seconds from SIGTERM to SIGKILL for what is still running

    [restart]               # optional, these are the defaults
    delay = 1               # wait before the first restart, doubled after each death ...
    max_delay = 60          # ... up to this
    healthy = 60            # a stage up this long has its delay reset
    fail_deaths = 5         # this many deaths ...
    fail_window = 60        # ... within this many seconds: the stage is failed, not restarted

    [logs]                  # optional: each stage's stderr goes to $KIRI_HOME/logs/STAGE.log
    max_bytes = 1048576     # rotated past this size ...
    keep = 3                # ... to STAGE.log.1 ... STAGE.log.3

    [[stage]]
    name = "collect"
    argv = ["kiri-collect", "pulse"]

    [[stage]]
    name = "atom"
    argv = ["kiri-atom", "pulse", "--learn"]
    inputs = ["collect"]    # stages whose stdout feeds this stage's stdin (fan-in allowed)

A stage with `output = "fifo"` has its stdout written into $KIRI_HOME/feedback.fifo, and
`{fifo}` in any argv stands for that path: this closes the feedback loop, the one cycle allowed.
Cycles through `inputs` are not. A command whose name starts with `kiri` runs from the directory
of the running Python first (a checkout's .venv/bin), so a checkout needs no PATH changes.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from kiri.home.paths import valid_name
from kiri.wire.errors import KiriError
from kiri.wire.records import UNDECODABLE

CHECKOUT = Path(__file__).resolve().parents[2]  # pipelines/ and bin/ live here
DEFAULT_PIPELINE = CHECKOUT / "pipelines" / "pulse.toml"
Seconds = Annotated[float, msgspec.Meta(gt=0)]
FIFO_TOKEN = "{fifo}"


class PipelineError(KiriError):
    """A pipeline file that cannot run; its lines name every problem found."""

    status = 2


class StageSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    argv: list[str]
    inputs: list[str] = []
    output: Literal["pipe", "fifo"] = "pipe"


class Restart(msgspec.Struct, forbid_unknown_fields=True):
    delay: Seconds = 1.0
    max_delay: Seconds = 60.0
    healthy: Seconds = 60.0
    fail_deaths: Annotated[int, msgspec.Meta(ge=1)] = 5
    fail_window: Seconds = 60.0


class Logs(msgspec.Struct, forbid_unknown_fields=True):
    max_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 1 << 20
    keep: Annotated[int, msgspec.Meta(ge=1)] = 3


class Pipeline(msgspec.Struct, forbid_unknown_fields=True):
    stages: list[StageSpec] = msgspec.field(name="stage", default_factory=list)
    name: str = ""
    alerts: str = ""
    stop_timeout: Seconds = 10.0
    restart: Restart = msgspec.field(default_factory=Restart)
    logs: Logs = msgspec.field(default_factory=Logs)


def load(path: Path) -> Pipeline:
    """Read and check a pipeline file; PipelineError names what is wrong with it."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PipelineError(f"cannot read {path}: {e.strerror}") from e
    try:
        pipeline = msgspec.toml.decode(data, type=Pipeline)
    except UNDECODABLE as e:
        raise PipelineError(f"{path}: {e}") from e
    if not pipeline.name:
        pipeline.name = path.stem
    if found := problems(pipeline):
        raise PipelineError("\n".join(f"{path}: {p}" for p in found))
    return pipeline


def problems(pipeline: Pipeline) -> list[str]:
    """Everything that stops this pipeline from running, one sentence each."""
    found = _name_problems(pipeline)
    names = {s.name for s in pipeline.stages}
    for spec in pipeline.stages:
        if not spec.argv:
            found.append(f"stage {spec.name!r}: argv is empty")
        elif command(spec.argv[0]) is None:
            found.append(f"stage {spec.name!r}: command {spec.argv[0]!r} not found")
        found += _input_problems(spec, names)
    if pipeline.alerts and pipeline.alerts not in names:
        found.append(f"alerts: {pipeline.alerts!r} is not a stage")
    if pipeline.restart.max_delay < pipeline.restart.delay:
        found.append("restart: max_delay is shorter than delay")
    if cycle := find_cycle(pipeline.stages):
        found.append(
            f"stages form a cycle through inputs: {' -> '.join(cycle)} (the only loop "
            'allowed is the feedback FIFO, output = "fifo")'
        )
    return found


def _name_problems(pipeline: Pipeline) -> list[str]:
    found = []
    if not pipeline.stages:
        found.append("no stages: add at least one [[stage]] with a name and an argv")
    for name, what in [(pipeline.name, "pipeline"), *((s.name, "stage") for s in pipeline.stages)]:
        try:
            valid_name(name, what)
        except ValueError as e:
            found.append(str(e))
    seen: set[str] = set()
    for spec in pipeline.stages:
        if spec.name in seen:
            found.append(f"stage name {spec.name!r} is used twice")
        seen.add(spec.name)
    return found


def _input_problems(spec: StageSpec, names: set[str]) -> list[str]:
    found = []
    for name in spec.inputs:
        if name == spec.name:
            found.append(
                f"stage {spec.name!r} lists itself as an input (the only loop allowed "
                'is the feedback FIFO, output = "fifo")'
            )
        elif name not in names:
            found.append(f"stage {spec.name!r}: input {name!r} is not a stage")
    if len(set(spec.inputs)) < len(spec.inputs):
        found.append(f"stage {spec.name!r} lists an input twice")
    return found


def find_cycle(stages: list[StageSpec]) -> list[str]:
    """A loop through inputs between different stages, as names from its start back to it."""
    inputs = {s.name: [i for i in s.inputs if i != s.name] for s in stages}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str]:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done or name not in inputs:
            return []
        for upstream in inputs[name]:
            if cycle := visit(upstream, [*path, name]):
                return cycle
        done.add(name)
        return []

    for name in inputs:
        if cycle := visit(name, []):
            return cycle[::-1]  # in the direction the data flows
    return []


def command(name: str) -> str | None:
    """Where argv[0] runs from: `kiri…` from this Python's bin directory first, then PATH."""
    if name.startswith("kiri") and "/" not in name:
        own = Path(sys.executable).parent / name
        if os.access(own, os.X_OK):
            return str(own)
    return shutil.which(name) if name else None


def stage_argv(spec: StageSpec, fifo: Path) -> list[str]:
    """The argv a stage runs with: its command resolved and `{fifo}` replaced by the FIFO."""
    return [
        command(spec.argv[0]) or spec.argv[0],
        *(arg.replace(FIFO_TOKEN, str(fifo)) for arg in spec.argv[1:]),
    ]


def uses_fifo(pipeline: Pipeline) -> bool:
    """Whether any stage writes into the feedback FIFO or names it in its argv."""
    return any(s.output == "fifo" or any(FIFO_TOKEN in a for a in s.argv) for s in pipeline.stages)
