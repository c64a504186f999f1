"""An atom's detector: its schema, its model and its calibration, trained from observations.

Training holds out the most recent share of the observations and scores them with the trained
model: that is what "normal" looks like on data the model has not seen. Each field's -log p is
calibrated against its own held-out distribution: z = (nll - mean) / std, how unusual this
token is for this field, in held-out standard deviations. Tokens alone do not say how far a
value is from what the model expected, so each field also gets its distance: the expected gap
between the observed value and the value of a token drawn from the model's prediction, in the
field's training standard deviations. An observation's surprise is the geometric mean of its
largest z (a field whose tokens are always hard to predict does not drown a rare excursion in
another) and the sum of its distances (the size of a move, in every field), each in units of
its own threshold: an observation is unusual when it is both improbable and far. The alert
threshold is set from the held-out and trained-on surprise. Each field's usual range (the p5 to
p95 of its training values) is kept too: scores carry it, and alerts say it ("usually 0.9–1.4
per CPU"); it takes no part in scoring. Scoring is batched: one forward
pass for many observations, the same code for `kiri-atom`, `kiri score` and the benchmarks.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import msgspec
import numpy as np

from kiri.atoms.registry import AtomSpec
from kiri.atoms.retraining import DEFAULT as SCHEDULE
from kiri.atoms.schema import Field, Schema, SchemaError
from kiri.model import weights
from kiri.model.fast import FastGPT, FloatArray, IntArray
from kiri.model.size import init_matrices
from kiri.model.training import train
from kiri.wire.records import Obs, Score

HOLDOUT = 0.10  # the most recent share of observations, kept for calibration
EXAMPLES_SHARE = 0.10  # "new normal" examples are repeated to make up this share of training
THRESHOLD_FLOOR = 5.0  # held-out standard deviations: below this nothing is unusual enough to say
FAR_FLOOR = 5.0  # training standard deviations, summed over fields: nor a smaller distance
STD_FLOOR = 0.5  # nats: a field whose -log p hardly varies held out still needs this for 1 std
QUANTILES = (0.5, 0.9, 0.99, 1.0)
USUAL = (0.05, 0.95)  # a field's usual range, as alerts show it: its training p5 to p95
TRAINED_QUANTILE = 0.999  # the threshold is at least this quantile of trained-on surprise
CALIBRATION_TRAINED = 20_000  # most recent trained-on observations scored for the fields' spread
EARLY_MARGIN = 1.5  # an early model's threshold, against what its calibration alone would set
EARLY_PRIOR = 10  # an early model's predictions are mixed with as many uniform observations


class Calibration(msgspec.Struct):
    threshold: float
    method: str  # one sentence: how the threshold was chosen
    quantiles: dict[str, float] = {}  # held-out surprise: p50, p90, p99, max
    held_out: int = 0
    field_mean: list[float] = []  # each scored field's mean -log p, held out
    field_std: list[float] = []  # and its standard deviation (at least STD_FLOOR)
    value_median: list[float] = []  # each scored field's median value in training
    value_spread: list[float] = []  # and its robust spread (see value_figures)
    value_std: list[float] = []  # and its standard deviation, the unit of its distance
    # and its usual range: the USUAL quantiles of its training values (what an alert calls
    # "usually"; empty for a model trained before KIRI kept them)
    value_low: list[float] = []
    value_high: list[float] = []
    token_values: list[list[float]] = []  # per scored field, the value each token stands for
    distance_weight: float = 0.0  # distance in z's units: z's threshold / distance's threshold
    observations: int = 0  # how many observations the model was trained and calibrated on
    span: float = 0.0  # the seconds between the first and the last of them
    early: bool = False  # too few of them yet (kiri.atoms.retraining): a stricter threshold
    prior: float = 0.0  # the share of a uniform guess mixed into each prediction (early models)

    def spread(self, values: FloatArray) -> FloatArray | None:
        """Each value against its field's training median, in robust spreads, (N, fields);
        None for a model calibrated before KIRI kept these figures."""
        if not self.value_spread:
            return None
        spread: FloatArray = (_bounded(values) - np.asarray(self.value_median)) / np.asarray(
            self.value_spread
        )
        return spread

    def z(self, nll: FloatArray) -> FloatArray:
        """Each token's -log p against its field's held-out distribution, (N, fields)."""
        z: FloatArray = (nll - np.asarray(self.field_mean)) / np.asarray(self.field_std)
        return z

    def distance(self, far: FloatArray) -> FloatArray:
        """Each observation's fields' distances from the model's prediction, in their training
        standard deviations, summed, (N,)."""
        total: FloatArray = (far / np.asarray(self.value_std)).sum(1)
        return total

    def surprise(self, z: FloatArray, far: FloatArray | None) -> FloatArray:
        """Each observation's surprise, (N,): the geometric mean of its largest z and its
        distance in z's units; the largest z alone for a model calibrated before KIRI kept the
        figures for distances."""
        top: FloatArray = z.max(1)
        if far is None or not self.distance_weight:
            return top
        both: FloatArray = np.sqrt(np.maximum(top, 0.0) * self.distance_weight * self.distance(far))
        return both


class Detector:
    """A trained atom: tokenizes observations, scores them, and knows its threshold."""

    def __init__(
        self,
        atom: str,
        schema: Schema,
        engine: FastGPT,
        calibration: Calibration,
        model_id: str = "",
        provenance: weights.Provenance | None = None,
    ) -> None:
        self.atom, self.schema, self.engine = atom, schema, engine
        engine.restrict_outputs(schema.groups)
        self.calibration, self.id = calibration, model_id
        self.provenance = provenance or weights.Provenance()
        self._tokens = np.array(schema.vocab, dtype=object)  # id -> token, a batch at a time
        scored = schema.ordered[schema.n_context :]
        self._fields = [(f.name, f.label or f.name, f.shown_unit) for f in scored]
        self._worse = [f.worse for f in scored]

    @classmethod
    def load(cls, path: Path) -> Detector:
        """Load an atom's weights file; WeightsError names the file and the problem."""
        w = weights.load(path)
        try:
            schema = msgspec.convert(w.extra["schema"], Schema)
            calibration = msgspec.convert(w.extra["calibration"], Calibration)
            atom = str(w.extra["atom"])
        except (KeyError, msgspec.ValidationError, ValueError) as e:
            raise weights.WeightsError(f"{path}: not an atom's weights file: {e}") from None
        if schema.vocab != w.vocab:
            raise weights.WeightsError(f"{path}: the schema's vocabulary differs from the model's")
        if len(calibration.field_mean) != len(schema.fields) - schema.n_context:
            raise weights.WeightsError(
                f"{path}: calibrated by an older KIRI, without per-field "
                f"figures; train the atom again (kiri train {atom})"
            )
        return cls(atom, schema, FastGPT(w.config, w.matrices), calibration, w.id, w.provenance)

    def save(self, path: Path, provenance: weights.Provenance) -> str:
        extra = {
            "atom": self.atom,
            "schema": msgspec.to_builtins(self.schema),
            "calibration": msgspec.to_builtins(self.calibration),
        }
        self.provenance = provenance
        self.id = weights.save(
            path, self.engine.config, self.schema.vocab, self.engine.matrices(), provenance, extra
        )
        return self.id

    @property
    def threshold(self) -> float:
        return self.calibration.threshold

    def token_nll(self, docs: Sequence[Sequence[int]] | IntArray) -> FloatArray:
        """-log p of each scored token, (N, fields), for documents of this schema."""
        s = self.schema.scored
        return self.engine.token_nll(np.asarray(docs), first=s.start, stop=s.stop)

    def token_figures(
        self, docs: Sequence[Sequence[int]] | IntArray, values: FloatArray | None = None
    ) -> tuple[FloatArray, FloatArray | None]:
        """token_nll(), and each scored field's distance from the model's prediction (N,
        fields), for these observed values of the scored fields (by default, the values their
        tokens stand for); None for a model calibrated without token values."""
        docs = np.asarray(docs, dtype=np.intp)
        s = self.schema.scored
        slots = self._slot_table()
        if slots is None:
            return self.token_nll(docs), None
        if values is None:
            values = slots[np.arange(len(slots)), self.schema.scored_slots(docs)]
        values = _bounded(values)
        nll, far = self.engine.token_scores(docs, s.start, s.stop, slots, values)
        return self._with_prior(nll), far

    def _with_prior(self, nll: FloatArray) -> FloatArray:
        """-log of each prediction mixed with a uniform guess over its field's tokens: a model
        that has seen a couple of quiet minutes knows little about the values it never saw,
        and must not call the first one it meets impossible."""
        eps = self.calibration.prior
        if not eps:
            return nll
        sizes = np.array([f.size for f in self.schema.ordered[self.schema.n_context :]])
        mixed: FloatArray = -np.log((1 - eps) * np.exp(-nll) + eps / sizes)
        return mixed

    def _slot_table(self) -> FloatArray | None:
        """calibration.token_values laid out as the engine's output slots, (fields, S)."""
        if not self.calibration.token_values:
            return None
        table = np.zeros((len(self.calibration.token_values), self.engine.slot_width))
        for i, row in enumerate(self.calibration.token_values):
            table[i, : len(row)] = row
        return table

    def score(self, observations: Sequence[Obs]) -> list[Score | SchemaError]:
        """A score for each observation, or the SchemaError that says why it has none."""
        ids, errors, values = self.schema.encode_values(
            [o.values for o in observations],
            [o.meta for o in observations],
            [o.ts for o in observations],
        )
        valid = [i for i in range(len(observations)) if i not in errors]
        if not valid:
            return [errors[i] for i in range(len(observations))]
        docs, observed = ids[valid], values[valid][:, self.schema.n_context :]
        nll, far = self.token_figures(docs, observed)
        z = self.calibration.z(nll)
        tokens = self._tokens[docs[:, self.schema.scored]].tolist()
        spread = self.calibration.spread(observed)
        rows = zip(
            valid,
            tokens,
            nll.round(4).tolist(),
            z.round(3).tolist(),
            self.calibration.surprise(z, far).round(4).tolist(),
            [[]] * len(valid) if spread is None else spread.round(3).tolist(),
            _bounded(observed).round(6).tolist(),
            strict=True,
        )
        cal = self.calibration
        scores: dict[int, Score] = {}
        for i, toks, row, zs, s, spreads, measured in rows:
            obs = observations[i]
            scores[i] = Score(
                ts=obs.ts,
                atom=obs.atom,
                host=obs.host,
                values=obs.values,
                tokens=toks,
                nll=row,
                z=zs,
                spread=spreads,
                fields=self._fields,
                measured=measured,
                usual_low=cal.value_low,
                usual_high=cal.value_high,
                worse=self._worse,
                surprise=s,
                threshold=self.threshold,
                model=self.id,
                early=self.calibration.early,
            )
        return [scores[i] if i in scores else errors[i] for i in range(len(observations))]


# Values beyond this are clipped to it for their distances and spreads: such a value is
# astronomically far either way, and its distances, their sums and the rounding of them stay
# finite (JSON writes inf as null, which no stage takes for a number).
VALUE_LIMIT = 1e150


def _bounded(values: FloatArray) -> FloatArray:
    clipped: FloatArray = np.clip(values, -VALUE_LIMIT, VALUE_LIMIT)
    return clipped


class Figures(NamedTuple):
    """What the model made of some observations: each scored token's -log p, and each field's
    distance from the model's prediction (in the field's own units), (N, fields) both."""

    nll: FloatArray
    far: FloatArray


def calibrate(held: Figures, trained: Figures, values: ValueFigures) -> Calibration:
    """Per-field figures and the alert threshold from what the model made of held-out
    observations and of recent trained-on ones.

    A field's spread is the larger of its held-out and its trained-on spread: a short held-out
    window where a field happened to sit still must not make its every move look unusual. For
    the same reason each threshold (z's, distance's, and the surprise's that combines them) is
    the higher of the held-out p99 and the trained-on p99.9: what the model saw in training,
    short of its rarest 0.1%, is not unusual.
    """
    nll, seen = held.nll, trained.nll
    spread = np.maximum(nll.std(0), seen.std(0)) if len(seen) else nll.std(0)
    fields = Calibration(
        0.0,
        "",
        field_mean=nll.mean(0).round(4).tolist(),
        field_std=np.maximum(spread, STD_FLOOR).round(4).tolist(),
        value_median=values.median,
        value_spread=values.spread,
        value_std=values.std,
        value_low=values.low,
        value_high=values.high,
        token_values=values.tokens,
    )
    z_held, z_seen = fields.z(nll), fields.z(seen)
    # each at least its floor: a model of a host that sat still must not make every move huge
    top = max(_rarely_exceeded(z_held.max(1), z_seen.max(1)), THRESHOLD_FLOOR)
    far = max(_rarely_exceeded(fields.distance(held.far), fields.distance(trained.far)), FAR_FLOOR)
    fields = msgspec.structs.replace(fields, distance_weight=round(top / far, 6))
    surprise = fields.surprise(z_held, held.far)
    qs = {
        f"p{int(q * 100)}" if q < 1 else "max": float(np.quantile(surprise, q)) for q in QUANTILES
    }
    seen_q = (
        float(np.quantile(fields.surprise(z_seen, trained.far), TRAINED_QUANTILE))
        if len(seen)
        else 0.0
    )
    threshold = max(qs["p99"], seen_q, THRESHOLD_FLOOR)
    method = (
        f"the highest of the p99 of held-out surprise ({qs['p99']:.3f}), the "
        f"p{TRAINED_QUANTILE * 100:g} of trained-on surprise ({seen_q:.3f}) "
        f"and the floor {THRESHOLD_FLOOR:g}"
    )
    return msgspec.structs.replace(
        fields, threshold=round(threshold, 4), method=method, quantiles=qs, held_out=len(surprise)
    )


def _rarely_exceeded(held: FloatArray, seen: FloatArray) -> float:
    """The higher of the held-out p99 and the trained-on p99.9 of a score."""
    q = float(np.quantile(held, 0.99))
    return max(q, float(np.quantile(seen, TRAINED_QUANTILE))) if len(seen) else q


SPREAD_FLOOR = 0.01  # a field's spread is at least this share of its training range


class ValueFigures(NamedTuple):
    """The scored fields' training values, as value_figures() sums them up."""

    median: list[float]
    spread: list[float]
    std: list[float]
    tokens: list[list[float]]
    low: list[float]  # the USUAL range: its low end
    high: list[float]  # and its high end


def value_figures(schema: Schema, x: FloatArray, normal: IntArray | None = None) -> ValueFigures:
    """Each scored field's median training value, its robust spread, its standard deviation
    and the value each of its tokens stands for, from the scored fields' training values x
    (N, fields) and the token documents people called normal (their ids, with each document
    repeated as often as training repeats it), which count as the values their tokens stand
    for: a value a person called normal is not far.

    The robust spread is the median absolute deviation scaled to a standard deviation
    (x 1.4826), but at least SPREAD_FLOOR of the field's training range and, for a field with a
    fixed range, half a bucket (a move the tokens cannot tell apart is not far), so that a field
    that hardly moved in training does not make every small move look far; and for a constant
    field, 1% of its size (or 0.01). The standard deviation has the same floor.

    Culprits are ranked by how far a value lies from its field's median in these spreads: on
    the development data this names more of the metrics operators named than the model's z does
    or than plain z-scores against the training mean and standard deviation
    (bench/results/detect-experiments.md, section 12)."""
    fields = schema.ordered[schema.n_context :]
    tokens = [_token_values(f, x[:, j]) for j, f in enumerate(fields)]
    if normal is not None and len(normal):
        slots = schema.scored_slots(normal)
        x = np.vstack([x, np.array([[tokens[j][k] for j, k in enumerate(row)] for row in slots])])
    median = np.median(x, axis=0)
    mad = np.median(np.abs(x - median), axis=0) * 1.4826
    floor = np.maximum(SPREAD_FLOOR * (x.max(axis=0) - x.min(axis=0)), _resolutions(fields))
    spread = np.maximum(mad, floor)
    spread = np.where(spread > 0, spread, 0.01 * np.maximum(np.abs(median), 1.0))
    std = np.maximum(x.std(axis=0), floor)
    std = np.where(std > 0, std, spread)
    low, high = np.quantile(x, USUAL, axis=0)
    return ValueFigures(
        median.round(6).tolist(),
        spread.round(6).tolist(),
        std.round(6).tolist(),
        tokens,
        low.round(6).tolist(),
        high.round(6).tolist(),
    )


def _resolutions(fields: Sequence[Field]) -> FloatArray:
    """The smallest move each fixed-range field's tokens can tell apart: half a bucket (0 for
    a field fitted from its data, whose floor is a share of its training range)."""
    return np.array([0.0 if f.auto else (f.hi - f.lo) / f.levels / 2 for f in fields])


def _token_values(field: Field, xs: FloatArray) -> list[float]:
    """The value each of a field's tokens stands for: the mean of its training values, or for
    a token training never produced, the middle of its bucket (its inner edge at the ends)."""
    bucket = field.buckets(xs)
    sums = np.bincount(bucket, weights=xs, minlength=field.size)[: field.size]
    counts = np.bincount(bucket, minlength=field.size)[: field.size]
    if field.auto:
        edges = np.asarray(field.edges, dtype=float)
        lower = np.concatenate([edges[:1], edges])  # bucket k lies between edges k-1 and k
        upper = np.concatenate([edges, edges[-1:]])
        middle = (lower + upper) / 2
    else:
        width = (field.hi - field.lo) / field.levels
        middle = field.lo + width * (np.arange(field.size) + 0.5)
    values = np.where(counts > 0, sums / np.maximum(counts, 1), middle)
    return [round(float(v), 6) for v in values]


def train_detector(
    spec: AtomSpec,
    observations: Sequence[Obs],
    *,
    steps: int,
    batch: int,
    lr: float = 0.01,
    seed: int = 42,
    examples: Sequence[Sequence[str]] = (),
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[Detector, weights.Provenance]:
    """Fit the schema, train on the older 90% (shuffled), calibrate on the most recent 10%.

    observations must be valid for the schema and in time order. examples are token documents
    people called normal: they are always trained on, repeated to about a tenth of the data so
    the model learns them even when they are rare among the observations.
    """
    values, metas = [o.values for o in observations], [o.meta for o in observations]
    times = [o.ts for o in observations]
    schema = spec.schema.fit(values, metas, times)
    ids, _, table = schema.encode_values(values, metas, times)
    x = table[:, schema.n_context :]
    docs = ids.tolist()
    n_hold = max(1, int(len(docs) * HOLDOUT))
    n_train = len(docs) - n_hold or len(docs)
    train_docs = docs[:n_train]
    held, recent = (
        slice(len(docs) - n_hold, None),
        slice(max(0, n_train - CALIBRATION_TRAINED), n_train),
    )
    normal = np.empty((0, schema.doc_len), dtype=np.intp)
    if examples:
        repeat = max(1, round(EXAMPLES_SHARE * len(train_docs) / len(examples)))
        normal = np.array([schema.ids(e) for e in examples] * repeat, dtype=np.intp)
        train_docs = train_docs + normal.tolist()
    rng = random.Random(seed)
    config = spec.config(schema)
    detector = Detector(
        spec.name, schema, FastGPT(config, init_matrices(config, rng)), Calibration(0.0, "")
    )
    shuffled = list(train_docs)
    rng.shuffle(shuffled)
    started = time.monotonic()
    loss = train(detector.engine, shuffled, steps, batch=batch, lr=lr, on_step=on_step)
    summary = value_figures(schema, x, normal)
    early = SCHEDULE.early(observations[-1].ts - observations[0].ts)
    prior = EARLY_PRIOR / (len(train_docs) + EARLY_PRIOR) if early else 0.0
    detector.calibration = Calibration(0.0, "", token_values=summary.tokens, prior=prior)
    calibration = calibrate(
        _figures(detector, ids[held], x[held]), _figures(detector, ids[recent], x[recent]), summary
    )
    detector.calibration = _with_history(calibration, observations, prior)
    provenance = weights.Provenance(
        steps=steps,
        batch=batch,
        seed=seed,
        lr=lr,
        engine="fast",
        final_loss=loss,
        seconds=time.monotonic() - started,
    )
    return detector, provenance


def _with_history(
    calibration: Calibration, observations: Sequence[Obs], prior: float
) -> Calibration:
    """The calibration, with what the model learnt from and the prior its figures were made
    with; an early model's threshold raised by EARLY_MARGIN, so that a model of a few minutes
    does not alert on the next ordinary hour."""
    span = observations[-1].ts - observations[0].ts
    early = SCHEDULE.early(span)
    threshold, method = calibration.threshold, calibration.method
    if early:
        threshold = round(threshold * EARLY_MARGIN, 4)
        method += (
            f", x {EARLY_MARGIN:g} while the model is early (its observations span less "
            f"than {SCHEDULE.mature / 3600:g} h)"
        )
    return msgspec.structs.replace(
        calibration,
        prior=prior,
        threshold=threshold,
        method=method,
        observations=len(observations),
        span=round(span, 3),
        early=early,
    )


def _figures(detector: Detector, docs: IntArray, x: FloatArray) -> Figures:
    nll, far = detector.token_figures(docs, x)
    assert far is not None, "the calibration has its token values"
    return Figures(nll, far)
