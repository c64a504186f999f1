"""Hostile input against every stage, through the real executables, and the counts.

    bin/bench fuzz [--cases 40000] [--batch 250] [--seed 0]

Each run of a stage gets a batch of generated lines (hypothesis strategies: JSON of any depth,
size and type, numbers at every float edge, random bytes, invalid UTF-8, CR/LF/NUL, lines over
1 MiB, records of every kind with every field at its edges or of the wrong type) mixed with
known-valid records, and is checked for:

* no crash: exit status 0, no traceback, a `stream_end` that counted every line;
* no loss: every known-valid record comes out, in order (a pass-through kind as it came in, an
  `obs` into kiri-atom as its `score`, a `score` into kiri-decide as its `decision`);
* one `bad_record` per bad line: every line that cannot be a record is reported once, by its
  line number, and no known-valid line is.

A generated line that may or may not be valid (an edge value in a well-typed record) must only
not crash the stage or cost a valid record. tests/test_fuzz.py runs the same check with few
examples; this script runs the large corpus and prints the counts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as with_seed
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kiri.wire.records import KINDS, MAX_TS  # noqa: E402
from kiri.wire.stream import MAX_LINE  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"
TEMPLATES: dict[str, dict[str, Any]] = {
    json.loads(line)["kind"]: json.loads(line)
    for line in (FIXTURES / "kinds.ndjson").read_bytes().splitlines()
}
BASE_TS = 2.0e9  # known-valid records' times; generated records' times stay below it
DEEP_OK = 900  # msgspec's decoder recurses about 1,000 levels: deeper is a bad line
DEEP_BAD = 1200


@dataclass(frozen=True)
class Stage:
    """One stage as the fuzz runs it: its argv, the kinds it is fed as known-valid records,
    and what each consumed kind comes out as (by its ts), if anything."""

    name: str
    argv: tuple[str, ...]
    valid: tuple[str, ...]
    produces: dict[str, str] = field(default_factory=dict)
    consumed: tuple[str, ...] = ()

    def command(self) -> list[str]:
        return [sys.executable, "-m", *self.argv]


ALL = ("obs", "score", "decision", "outcome", "verdict", "rule")
STAGES = [
    Stage("collect", ("kiri.collect.stage", "replay", "-"), ALL),
    Stage("atom", ("kiri.score.stage", "pulse"), ALL, {"obs": "score"}, ("obs",)),
    # decisions on kiri-decide's input and rules and verdicts on kiri-feedback's are refused
    Stage(
        "decide",
        ("kiri.decide.stage",),
        ("obs", "score", "outcome", "verdict", "rule"),
        {"score": "decision"},
        ("score",),
    ),
    Stage("act", ("kiri.act.stage", "--sink", "log"), ALL),
    Stage(
        "feedback",
        ("kiri.feedback.stage",),
        ("obs", "score", "decision", "outcome"),
        {"decision": "", "outcome": ""},
        ("decision", "outcome"),
    ),
]
BY_NAME = {s.name: s for s in STAGES}


# -- generated lines --------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    line: bytes
    bad: bool  # certainly not a record: it must be reported; otherwise it may be either
    how: str


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


FLOAT_EDGES = [
    0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1e-320, 1e-300, 1.0, -1.0, 1e20,
    1e300, -1e300, 1.7976931348623157e308, -1.7976931348623157e308, 2**53 + 1.0, 1e-7,
]  # fmt: skip
floats = st.one_of(st.sampled_from(FLOAT_EDGES), st.floats(allow_nan=False, allow_infinity=False))
numbers = st.one_of(floats, st.integers(-(2**70), 2**70))
texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", "pulse", "vm", "alert", "nan", "inf", "-1", "0", "1e-320", "5e-324"]),
    st.sampled_from(["C9", "M9", "L3", "\r", "\n", "\x00", "\u2028", "\ud800", "a" * 5000]),
)
times = st.one_of(st.sampled_from([0.0, 5e-324, 1.0, 1.9e9]), st.floats(0.0, 1.9e9))
json_values = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=30,
)


def _typed(info: msgspec.inspect.Type) -> st.SearchStrategy[Any]:
    """Values of a record field's own type, edges included: well-typed, maybe valid."""
    t = msgspec.inspect
    simple = {
        t.FloatType: numbers,
        t.StrType: texts,
        t.BoolType: st.booleans(),
        t.NoneType: st.none(),
    }
    if type(info) in simple:
        return simple[type(info)]
    if isinstance(info, t.UnionType):
        return st.one_of(*[_typed(x) for x in info.types])
    if isinstance(info, t.DictType):
        return st.dictionaries(texts, _typed(info.value_type), max_size=8)
    if isinstance(info, t.ListType):
        return st.lists(_typed(info.item_type), max_size=10)
    if isinstance(info, t.TupleType):
        return st.tuples(*[_typed(x) for x in info.item_types]).map(list)
    if isinstance(info, t.StructType):  # a record's part (a decision's explained culprits)
        return st.fixed_dictionaries({}, optional={f.name: _typed(f.type) for f in info.fields})
    raise TypeError(f"no strategy for {info}")


def _fields(kind: str) -> dict[str, msgspec.inspect.Type]:
    info = msgspec.inspect.type_info(KINDS[kind])
    assert isinstance(info, msgspec.inspect.StructType)
    return {f.name: f.type for f in info.fields}


def _wrong(info: msgspec.inspect.Type) -> st.SearchStrategy[Any]:
    """A JSON value a field of this type can never hold."""
    t = msgspec.inspect
    options: list[Any] = [[1], {"a": 1}, "x", True, None]
    if isinstance(info, t.FloatType):
        options = ["1.0", [1.0], {"v": 1}, True, None]
    elif isinstance(info, t.StrType):
        options = [1, [1], {"a": "b"}, True, None]
    elif isinstance(info, t.BoolType):
        options = [1, "true", [True], None]
    elif isinstance(info, t.DictType):
        options = [[1], "x", 1, True, None]
    elif isinstance(info, t.ListType):
        options = ["x", 1, {"a": 1}, True, None]
    return st.sampled_from(options)


kinds = st.sampled_from(ALL)


@st.composite
def well_typed(draw: st.DrawFn) -> Case:
    """A record of a known kind, its fields drawn at their edges: maybe valid."""
    kind = draw(kinds)
    record = dict(TEMPLATES[kind])
    for name, info in _fields(kind).items():
        if name == "ts" or not draw(st.booleans()):
            continue
        usual = record.get(name)
        if isinstance(info, msgspec.inspect.DictType) and usual and draw(st.booleans()):
            # the usual keys (pulse's fields, meta's cpus) at the edges of their type
            record[name] = {k: draw(_typed(info.value_type)) for k in usual}
        else:
            record[name] = draw(_typed(info))
    record["ts"] = draw(times)
    if draw(st.booleans()):  # an unknown field, of any depth
        record[draw(texts)] = draw(json_values)
    record["kind"] = kind
    return Case(_dumps(record), False, f"well-typed {kind}")


@st.composite
def wrong_typed(draw: st.DrawFn) -> Case:
    kind = draw(kinds)
    name, info = draw(st.sampled_from(sorted(_fields(kind).items())))
    record = {**TEMPLATES[kind], name: draw(_wrong(info))}
    return Case(_dumps(record), True, f"wrong type {kind}.{name}")


@st.composite
def out_of_range(draw: st.DrawFn) -> Case:
    """A number no float holds, or a time past the year 3000 or before 1970."""
    kind = draw(kinds)
    ts = draw(st.sampled_from(["1e400", "-1e400", "1e17", "-1", "1.7976931348623157e308"]))
    if draw(st.booleans()):
        ts = repr(draw(st.floats(MAX_TS * 1.001, 1e308) | st.floats(-1e308, -1e-300)))
    line = _dumps({**TEMPLATES[kind], "ts": 0.0}).replace(b'"ts":0.0', b'"ts":' + ts.encode())
    return Case(line, True, "out of range")


@st.composite
def deep(draw: st.DrawFn) -> Case:
    depth = draw(st.integers(0, DEEP_OK) | st.integers(DEEP_BAD, 3000))
    open_, close = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    nested = open_ * depth + b"1" + close * depth
    line = _dumps(TEMPLATES[draw(kinds)])[:-1] + b',"x":' + nested + b"}"
    return Case(line, depth >= DEEP_BAD, f"nested {depth}")


@st.composite
def long_line(draw: st.DrawFn) -> Case:
    size = draw(st.integers(MAX_LINE - 200, MAX_LINE + 5000))
    head = b'{"kind":"obs","ts":1.0,"host":"'
    line = head + b"a" * max(0, size - len(head) - 2) + b'"}'
    return Case(line, len(line) > MAX_LINE, f"{len(line)} bytes")


@st.composite
def broken(draw: st.DrawFn) -> Case:
    """Bytes that are not a JSON object: junk, cut records, invalid UTF-8, raw NUL, non-objects."""
    template = _dumps(TEMPLATES[draw(kinds)])
    how = draw(st.sampled_from(["junk", "cut", "utf8", "nul", "not an object", "no kind"]))
    if how == "junk":
        line = draw(st.binary(min_size=1, max_size=300).filter(_not_json))
    elif how == "cut":
        line = template[: draw(st.integers(1, len(template) - 1))]
    elif how == "utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80"]))
        line = template.replace(b'":"', b'":"' + bad, 1)  # into the first string value
    elif how == "nul":
        cut = draw(st.integers(1, len(template) - 1))
        line = template[:cut] + b"\x00" + template[cut:]
    elif how == "not an object":
        line = _dumps(draw(st.lists(json_values, max_size=3) | numbers | texts))
    else:
        line = _dumps(draw(st.sampled_from([{"ts": 1.0}, {"kind": 7}, {"kind": None}, {}])))
    return Case(line, True, how)


def _not_json(b: bytes) -> bool:
    if b"\n" in b or not b.removesuffix(b"\r"):
        return False
    try:
        json.loads(b)
        return False
    except ValueError:
        return True


@st.composite
def line_ends(draw: st.DrawFn) -> Case:
    """A known-good record with CR and escapes of CR, LF and NUL inside: valid."""
    record = dict(TEMPLATES[draw(kinds)])
    record["note"] = draw(st.sampled_from(["a\rb", "a\nb", "a\x00b", "\r\n"]))
    line = _dumps(record)
    if draw(st.booleans()):
        line = line.replace(b",", b",\r", 1)  # a CR between tokens is JSON whitespace
    return Case(line, False, "line ends")


cases = st.one_of(well_typed(), wrong_typed(), out_of_range(), deep(), broken(), line_ends())
rare = long_line()  # megabyte lines: one in a batch at most, or the batches grow huge


def batches(size: int) -> st.SearchStrategy[list[Case]]:
    return st.tuples(
        st.lists(cases, min_size=max(1, size // 2), max_size=size), st.lists(rare, max_size=1)
    ).map(lambda t: t[0] + t[1])


# -- one run of a stage -----------------------------------------------------------------------


def valid_lines(stage: Stage, n: int) -> list[tuple[str, bytes]]:
    """n known-valid records of the kinds this stage is fed, times BASE_TS + i."""
    out = []
    for i in range(n):
        kind = stage.valid[i % len(stage.valid)]
        out.append((kind, _dumps({**TEMPLATES[kind], "ts": BASE_TS + i})))
    return out


@dataclass
class Result:
    runs: int = 0
    cases: int = 0
    bad: int = 0  # certainly bad lines among the cases
    reported: int = 0  # bad_record reports
    crashes: int = 0
    lost: int = 0  # known-valid records missing from the output, or out of order
    problems: list[str] = field(default_factory=list)

    def add(self, other: Result) -> None:
        self.runs += other.runs
        self.cases += other.cases
        self.bad += other.bad
        self.reported += other.reported
        self.crashes += other.crashes
        self.lost += other.lost
        self.problems += other.problems


def run_batch(stage: Stage, batch: list[Case], env: dict[str, str]) -> Result:
    """Mix the batch among known-valid records, run the stage on it, check what came out."""
    valid = valid_lines(stage, len(batch) + 1)
    lines: list[tuple[str, bytes] | Case] = []
    for i, case in enumerate(batch):
        lines += [valid[i], case]
    lines.append(valid[-1])
    data = b"".join((x.line if isinstance(x, Case) else x[1]) + b"\n" for x in lines)
    proc = subprocess.run(
        stage.command(), input=data, capture_output=True, env=env, timeout=120, check=False
    )
    return _check(stage, lines, proc)


def _check(
    stage: Stage, lines: list[tuple[str, bytes] | Case], proc: subprocess.CompletedProcess[bytes]
) -> Result:
    result = Result(runs=1, cases=sum(isinstance(x, Case) for x in lines))
    result.bad = sum(isinstance(x, Case) and x.bad for x in lines)
    events, stray = _events(proc.stderr)
    reported = [e["line"] for e in events if e.get("event") == "bad_record"]
    result.reported = len(reported)
    end = [e for e in events if e.get("event") == "stream_end"]
    traceback = any("Traceback" in line for line in stray)
    # a stage logs stream_end as a warning when it dropped lines (a debug line otherwise)
    counted = end[0]["lines"] == len(lines) and end[0]["bad"] == len(reported) if end else True
    if proc.returncode != 0 or traceback or len(end) > 1 or not counted or (reported and not end):
        result.crashes = 1
        tail = proc.stderr.decode(errors="replace")[-600:]
        result.problems.append(f"{stage.name}: exit {proc.returncode}: {tail}")
        return result
    if stray:
        result.problems.append(f"{stage.name}: stderr lines that are not log records: {stray[:3]}")
    if len(set(reported)) != len(reported):
        result.problems.append(f"{stage.name}: a line reported twice")
    for lineno in reported:
        x = lines[lineno - 1]
        if not isinstance(x, Case):
            result.problems.append(f"{stage.name}: valid line {lineno} ({x[0]}) reported bad")
    missed = [i + 1 for i, x in enumerate(lines) if isinstance(x, Case) and x.bad]
    for lineno in sorted(set(missed) - set(reported)):
        x = lines[lineno - 1]
        assert isinstance(x, Case)
        result.problems.append(f"{stage.name}: bad line {lineno} ({x.how}) not reported")
    result.lost = _lost(stage, lines, proc.stdout)
    if result.lost:
        result.problems.append(f"{stage.name}: {result.lost} valid records lost or reordered")
    return result


def _events(stderr: bytes) -> tuple[list[dict[str, Any]], list[str]]:
    """The stage's JSON log lines, and any other stderr line (a traceback is one)."""
    events, stray = [], []
    for raw in stderr.decode(errors="replace").splitlines():
        try:
            events.append(json.loads(raw))
        except ValueError:
            stray.append(raw)
    return events, stray


def _lost(stage: Stage, lines: list[tuple[str, bytes] | Case], stdout: bytes) -> int:
    """How many known-valid records are missing from the output, in their order."""
    expected: list[bytes | tuple[str, float]] = []
    for x in lines:
        if isinstance(x, Case):
            continue
        kind, raw = x
        if kind not in stage.consumed:
            expected.append(raw)
        elif stage.produces.get(kind):
            expected.append((stage.produces[kind], json.loads(raw)["ts"]))
    got: Iterator[bytes | tuple[str, float]] = iter(_keys(stdout))
    # a subsequence, in order: generated records may add output anywhere between
    return sum(1 for want in expected if not any(key == want for key in got))


def _keys(stdout: bytes) -> Iterator[bytes | tuple[str, float]]:
    for raw in stdout.splitlines():
        yield raw
        try:
            record = json.loads(raw)
            yield (record["kind"], record["ts"])
        except (ValueError, KeyError, TypeError):
            pass


# -- the corpus -------------------------------------------------------------------------------


def stage_home(root: Path) -> dict[str, str]:
    """An environment whose KIRI_HOME holds a pulse atom, trained on the normal fixture."""
    from kiri.atoms.detector import train_detector
    from kiri.atoms.registry import atom_spec
    from kiri.wire.records import Obs

    decode = msgspec.json.Decoder(Obs).decode
    normal = [decode(x) for x in (FIXTURES / "pulse-normal.ndjson").read_bytes().splitlines()]
    detector, provenance = train_detector(atom_spec("pulse"), normal, steps=300, batch=32)
    weights = root / "atoms" / "pulse" / "weights.json"
    weights.parent.mkdir(parents=True)
    detector.save(weights, provenance)
    return {**os.environ, "KIRI_HOME": str(root), "PYTHONUNBUFFERED": "1"}


def fuzz_stage(stage: Stage, env: dict[str, str], cases: int, size: int, seed: int) -> Result:
    """Run the stage on generated batches until they held `cases` lines. Every check's outcome
    is counted and none raises, so hypothesis only generates (it shrinks only on an exception)."""
    total = Result()
    while total.cases < cases:
        examples = math.ceil((cases - total.cases) / (size * 0.6))  # batches hold size/2 to size

        @with_seed(seed + total.runs)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(batches(size))
        def one(batch: list[Case]) -> None:
            if total.cases < cases:
                total.add(run_batch(stage, batch, env))

        one()
    return total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=40000, help="generated lines, all stages")
    p.add_argument("--batch", type=int, default=250, help="generated lines a run, at most")
    p.add_argument("--seed", type=int, default=0, help="hypothesis's seed: the same corpus")
    p.add_argument("--stages", default=",".join(BY_NAME), help="comma-separated")
    args = p.parse_args(argv)
    names = args.stages.split(",")
    root = Path(tempfile.mkdtemp(prefix="kiri-fuzz-"))
    try:
        env = stage_home(root / "home")
        print(f"{'stage':<9} {'runs':>5} {'cases':>7} {'bad':>7} {'reported':>9} "
              f"{'crashes':>8} {'lost':>5} {'problems':>9} {'seconds':>8}")  # fmt: skip
        grand = Result()
        for name in names:
            start = time.monotonic()
            r = fuzz_stage(
                BY_NAME[name], env, math.ceil(args.cases / len(names)), args.batch, args.seed
            )
            grand.add(r)
            print(f"{name:<9} {r.runs:>5} {r.cases:>7} {r.bad:>7} {r.reported:>9} "
                  f"{r.crashes:>8} {r.lost:>5} {len(r.problems):>9} "
                  f"{time.monotonic() - start:>8.1f}")  # fmt: skip
        print(f"{'all':<9} {grand.runs:>5} {grand.cases:>7} {grand.bad:>7} {grand.reported:>9} "
              f"{grand.crashes:>8} {grand.lost:>5} {len(grand.problems):>9}")  # fmt: skip
        print(
            "bad: lines that cannot be records; reported: bad_record reports, which also "
            "cover generated lines that were only maybe valid"
        )
        for problem in grand.problems[:20]:
            print("  " + problem)
        return 1 if grand.problems else 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
