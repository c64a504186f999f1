"""The `kiri` subcommands that act on an atom: train it, score one observation, describe it."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import msgspec
import psutil

from kiri.atoms.detector import Detector, train_detector
from kiri.atoms.registry import AtomSpec, UnknownAtom, atom_spec, auto_spec
from kiri.atoms.schema import Field, SchemaError
from kiri.home.paths import examples_path, weights_path
from kiri.home.recordings import load_observations, recording_files
from kiri.home.store import Store
from kiri.model.fast import FloatArray
from kiri.model.size import matrix_shapes, num_params
from kiri.score.progress import Progress
from kiri.wire.errors import KiriError
from kiri.wire.patterns import culprit_order, explained
from kiri.wire.records import UNDECODABLE, Obs, Score
from kiri.wire.render import culprit_text

if TYPE_CHECKING:
    from kiri.model.fast import FloatArray

MIN_OBSERVATIONS = 10
T = TypeVar("T")


def _spec(name: str, files: list[Path] | None = None) -> AtomSpec:
    """The atom's spec: a built-in atom; with `files`, an atom fitted afresh from the value
    fields of its observations there; else one trained before (its schema is in its weights)."""
    try:
        return atom_spec(name)
    except UnknownAtom as e:
        fields = _fields_in(name, files or [])
        if fields:  # (re)fit the schema to the data at hand
            return auto_spec(name, fields)
        if weights_path(name).exists():
            return AtomSpec(name, _detector(name).schema)
        raise KiriError(f"{e}, and no observations of it to fit one from") from None
    except ValueError as e:
        raise KiriError(str(e)) from None


def _fields_in(atom: str, files: list[Path]) -> list[str]:
    """The value fields of the first observation of `atom` in these files."""
    decode = msgspec.json.Decoder(Obs).decode
    for path in files:
        with open(path, "rb") as f:
            for line in f:
                try:
                    obs = decode(line)
                except UNDECODABLE:
                    continue
                if obs.atom == atom and obs.values:
                    return list(obs.values)
    return []


def _detector(atom: str, path: Path | None = None) -> Detector:
    path = path or weights_path(atom)
    if not path.exists():
        raise KiriError(f"atom {atom} has no weights yet at {path}: run `kiri train {atom}`")
    return Detector.load(path)


def train(args: argparse.Namespace) -> None:
    """kiri train ATOM: load observations, train, calibrate, save, and say what it did."""
    files = args.files or recording_files(args.atom)
    spec = _spec(args.atom, files)
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise KiriError(f"cannot read {', '.join(missing)}")
    loaded = load_observations(spec.name, [Path(f) for f in files], spec.schema, args.window)
    if spec.training_set:  # Nerve's: a verdict outranks the policy's decision on its alert
        loaded.observations = spec.training_set(loaded.observations)
    print(f"loaded {len(loaded.observations)} observations from {loaded.files} files")
    for reason, n in loaded.skipped.items():
        print(f"skipped {n} observations: {reason} (first at {loaded.examples[reason]})")
    if not args.files:  # the atom's own recordings: its alerts say which ones were incidents
        loaded.observations = _outside_incidents(spec.name, loaded.observations)
    if len(loaded.observations) < MIN_OBSERVATIONS:
        raise KiriError(
            f"atom {spec.name} needs at least {MIN_OBSERVATIONS} observations to train, "
            f"found {len(loaded.observations)}: "
            f"record some with `kiri-collect {spec.name} --record`"
        )
    batch = args.batch or 32
    steps = spec.steps if args.steps is None else args.steps
    if steps < 1 or batch < 1:
        raise KiriError("--steps and --batch must be at least 1")
    examples = _examples(spec)
    if examples:
        print(f"with {len(examples)} observations people called the new normal")
    detector, provenance = train_detector(
        spec,
        loaded.observations,
        steps=steps,
        batch=batch,
        lr=args.lr,
        seed=args.seed,
        examples=examples,
        on_step=Progress(steps, args.log_every),
    )
    cal = detector.calibration
    q = cal.quantiles
    print(
        f"calibrated on the most recent {cal.held_out} observations: surprise p50 "
        f"{q['p50']:.3f}, p90 {q['p90']:.3f}, p99 {q['p99']:.3f}, max {q['max']:.3f}"
    )
    print(f"threshold {cal.threshold:.3f}: {cal.method}")
    provenance.source = (
        ", ".join(str(f) for f in args.files)
        if args.files
        else f"recordings of {spec.name} ({loaded.files} files)"
    )
    out = args.out or weights_path(spec.name)
    model_id = detector.save(out, provenance)
    print(f"trained in {provenance.seconds:.1f} s; weights saved to {out} (id {model_id})")


INCIDENT_SHARE = 0.5  # never leave out more than this share of the observations


def _outside_incidents(atom: str, observations: list[Obs]) -> list[Obs]:
    """The observations outside the atom's incidents that nobody called the new normal.

    When those incidents would take more than INCIDENT_SHARE of the observations, they are all
    kept and the run says so: a host whose every recent hour is "an incident" has changed, and a
    model that never learns that alerts forever."""
    with Store() as store:
        spans = store.incidents_left_out(atom)
    if not spans:
        return observations
    kept = [o for o in observations if not any(h == o.host and a <= o.ts <= b for h, a, b in spans)]
    left_out = len(observations) - len(kept)
    if left_out > INCIDENT_SHARE * len(observations):
        print(
            f"kept {left_out} observations inside {len(spans)} incidents nobody called normal: "
            f"they are most of the window, so the host has changed"
        )
        return observations
    if left_out:
        print(
            f"left out {left_out} observations inside {len(spans)} incidents nobody called normal"
        )
    return kept


def _examples(spec: AtomSpec) -> list[list[str]]:
    """The atom's "new normal" examples that still fit its schema's vocabulary."""
    path = examples_path(spec.name)
    if not path.exists():
        return []
    vocab = set(spec.schema.vocab)
    docs = [
        msgspec.json.decode(line).get("tokens", [])
        for line in path.read_bytes().splitlines()
        if line.strip()
    ]
    return [d for d in docs if len(d) == len(spec.schema.fields) and set(d) <= vocab]


def score(args: argparse.Namespace) -> None:
    """kiri score ATOM: surprise, threshold, and per token (likeliest culprit first, the order
    decisions name culprits in) its -log p, its z, with --values how far the value lies from its
    field's training median in robust spreads, and the likeliest token of its field; with
    --values, then the culprits an alert would name, explained as alerts explain them."""
    spec = _spec(args.atom)
    detector = _detector(spec.name, args.weights)
    schema = detector.schema
    spread: list[float] = []
    observed = None  # with tokens only, each value is the one its token stands for
    scored: Score | None = None  # the score kiri-atom would emit, with --values
    try:
        if args.values:
            values, meta = _pairs(args.values, float), _meta(args.meta)
            now = time.time()  # the hour and weekday of a clock field are now's
            tokens = schema.tokenize(values, meta, now)
            observed = schema.encode_values([values], [meta], [now])[2][:, schema.n_context :]
            spread = _spread(detector, observed)
            result = detector.score([Obs(ts=now, atom=spec.name, values={**values}, meta=meta)])[0]
            scored = result if isinstance(result, Score) else None
        elif args.tokens:
            tokens = schema.parse(args.tokens)
        else:
            raise KiriError('give tokens ("C9 M9 D4 S4 L4 N1") or --values')
    except SchemaError as e:
        raise KiriError(str(e)) from None
    ids = schema.ids(tokens)
    nll_rows, far = detector.token_figures([ids], observed)
    nll = nll_rows[0]
    z = detector.calibration.z(nll_rows)
    surprise = float(detector.calibration.surprise(z, far)[0])
    z = z[0]
    verdict = "unusual" if surprise > detector.threshold else "normal"
    print(f"surprise {surprise:.2f} (threshold {detector.threshold:.2f}): {verdict}")
    spread_head = f"{'spread':>8}" if spread else ""
    print(f"{'token':<14}{'-log p':>8}{'z':>8}{spread_head}   most likely instead")
    first = schema.scored.start
    order = culprit_order(z.tolist(), spread)
    for k in order:
        pos, token = first + k, tokens[first + k - 1]
        best, p = _likeliest(detector, ids[:pos], schema.field_of(token))
        shown = f"{spread[k]:>8.2f}" if spread else ""
        print(f"{token:<14}{nll[k]:>8.2f}{z[k]:>8.2f}{shown}   {best} (p {p:.2f})")
    if scored is not None:
        _explain(scored, order)


def _explain(scored: Score, order: list[int]) -> None:
    """The culprits an alert on this score would name, as every sink shows them."""
    culprits = [(scored.tokens[k], scored.z[k]) for k in order]
    print("\nwhat an alert would say:")
    for c in explained(scored, culprits, scored.threshold):
        print(f"  {culprit_text(c)}")


def _spread(detector: Detector, observed: FloatArray) -> list[float]:
    """Each scored value against its field's training median, in robust spreads ([] for a
    model trained before KIRI kept these figures)."""
    spread = detector.calibration.spread(observed)
    return [] if spread is None else spread[0].tolist()


def _likeliest(detector: Detector, prefix: list[int], field: Field) -> tuple[str, float]:
    """The most probable token of this field after prefix, and its probability."""
    logits = detector.engine.next_logits(prefix)
    probs = _softmax(logits)
    vocab = detector.schema.vocab
    choices = [i for i, t in enumerate(vocab) if detector.schema.field_of(t) is field]
    best = max(choices, key=lambda i: probs[i])
    return vocab[best], float(probs[best])


def _softmax(z: FloatArray) -> FloatArray:
    import numpy as np

    e = np.exp(z - z.max())
    p: FloatArray = e / e.sum()
    return p


def _pairs(text: str, cast: Callable[[str], T]) -> dict[str, T]:
    out = {}
    for part in filter(None, text.split(",")):
        name, sep, value = part.partition("=")
        if not sep:
            raise KiriError(f"expected NAME=VALUE, got {part!r}")
        try:
            out[name.strip()] = cast(value)
        except ValueError:
            raise KiriError(f"{name.strip()}: {value!r} is not a number") from None
    return out


def _meta(text: str) -> dict[str, str]:
    meta = {"cpus": str(psutil.cpu_count() or 1)}
    meta.update(_pairs(text, str))
    return meta


def info(name: str) -> None:
    """kiri info ATOM: its schema and model size, and its training when it has weights."""
    spec = _spec(name)
    path = weights_path(spec.name)
    detector = _detector(spec.name) if path.exists() else None
    schema = detector.schema if detector else spec.schema
    config = detector.engine.config if detector else spec.config()
    print(
        f"atom {spec.name}: "
        + (f"weights {path} (id {detector.id})" if detector else f"not trained yet (no {path})")
    )
    for f in schema.ordered:
        kind = "context" if f.context else "scored"
        rng = (
            f"quantile edges {[round(e, 3) for e in f.edges]}"
            if f.auto
            else f"{f.lo:g}..{f.hi:g}" + (f" per {f.per}" if f.per else "")
        )
        print(
            f"  {f.prefix}0-{f.prefix}{f.size - 1:<3} {f.label or f.name} ({f.name}), {rng}, {kind}"
        )
    print(f"vocab size: {config.vocab_size}")
    print(
        f"config: n_layer {config.n_layer}, n_embd {config.n_embd}, n_head {config.n_head}, "
        f"block_size {config.block_size}"
    )
    print(
        f"num params: {num_params(config)} "
        f"({', '.join(f'{n} {r * c}' for n, (r, c) in matrix_shapes(config))})"
    )
    if detector:
        cal, p = detector.calibration, detector.provenance
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(p.created))
        print(f"threshold {cal.threshold:.3f}: {cal.method}")
        print(
            f"trained {when} on {p.source}: {p.steps} steps at batch {p.batch}, "
            f"final loss {p.final_loss:.4f}, {p.seconds:.1f} s"
        )
