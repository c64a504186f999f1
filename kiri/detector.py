"""An atom's detector: its schema, its model and its calibration, trained from observations.

Training holds out the most recent share of the observations and scores them with the trained
model: that is what "normal" looks like on data the model has not seen. Each field's -log p is
calibrated against its own held-out distribution: z = (nll - mean) / std, how unusual this
token is for this field, in held-out standard deviations. An observation's surprise is its
largest z: a field whose tokens are always hard to predict no longer drowns a rare excursion in
another, and one very surprising field is not averaged away by many ordinary ones. The alert
threshold is set from the held-out and trained-on surprise. Scoring is batched: one forward
pass for many observations, the same code for `kiri-atom`, `kiri score` and the benchmarks.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec
import numpy as np

from kiri.atoms import AtomSpec
from kiri.model import weights
from kiri.model.config import init_matrices
from kiri.model.fast import FastGPT, FloatArray, IntArray
from kiri.model.training import train
from kiri.records import Obs, Score
from kiri.schema import Schema, SchemaError

HOLDOUT = 0.10  # the most recent share of observations, kept for calibration
EXAMPLES_SHARE = 0.10  # "new normal" examples are repeated to make up this share of training
THRESHOLD_FLOOR = 5.0  # held-out standard deviations: below this nothing is unusual enough to say
STD_FLOOR = 0.5  # nats: a field whose -log p hardly varies held out still needs this for 1 std
QUANTILES = (0.5, 0.9, 0.99, 1.0)
TRAINED_QUANTILE = 0.999  # the threshold is at least this quantile of trained-on surprise
CALIBRATION_TRAINED = 20_000  # most recent trained-on observations scored for the fields' spread


class Calibration(msgspec.Struct):
    threshold: float
    method: str  # one sentence: how the threshold was chosen
    quantiles: dict[str, float] = {}  # held-out surprise: p50, p90, p99, max
    held_out: int = 0
    field_mean: list[float] = []  # each scored field's mean -log p, held out
    field_std: list[float] = []  # and its standard deviation (at least STD_FLOOR)
    value_median: list[float] = []  # each scored field's median value in training
    value_spread: list[float] = []  # and its robust spread (see value_figures)

    def spread(self, values: FloatArray) -> FloatArray | None:
        """Each value against its field's training median, in robust spreads, (N, fields);
        None for a model calibrated before KIRI kept these figures."""
        if not self.value_spread:
            return None
        spread: FloatArray = (values - np.asarray(self.value_median)) / np.asarray(
            self.value_spread
        )
        return spread

    def z(self, nll: FloatArray) -> FloatArray:
        """Each token's -log p against its field's held-out distribution, (N, fields)."""
        z: FloatArray = (nll - np.asarray(self.field_mean)) / np.asarray(self.field_std)
        return z


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

    def score(self, observations: Sequence[Obs]) -> list[Score | SchemaError]:
        """A score for each observation, or the SchemaError that says why it has none."""
        ids, errors, values = self.schema.encode_values(
            [o.values for o in observations], [o.meta for o in observations]
        )
        valid = [i for i in range(len(observations)) if i not in errors]
        if not valid:
            return [errors[i] for i in range(len(observations))]
        docs = ids[valid]
        nll = self.token_nll(docs)
        z = self.calibration.z(nll)
        tokens = self._tokens[docs[:, self.schema.scored]].tolist()
        spread = self.calibration.spread(values[valid][:, self.schema.n_context :])
        rows = zip(
            valid,
            tokens,
            nll.round(4).tolist(),
            z.round(3).tolist(),
            z.max(1).round(4).tolist(),
            [[]] * len(valid) if spread is None else spread.round(3).tolist(),
            strict=True,
        )
        scores: dict[int, Score] = {}
        for i, toks, row, zs, s, spreads in rows:
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
                surprise=s,
                threshold=self.threshold,
                model=self.id,
            )
        return [scores[i] if i in scores else errors[i] for i in range(len(observations))]


def calibrate(nll: FloatArray, trained: FloatArray) -> Calibration:
    """Per-field figures and the alert threshold from held-out -log p, (N, fields), and the
    -log p of recent trained-on observations.

    A field's spread is the larger of its held-out and its trained-on spread: a short held-out
    window where a field happened to sit still must not make its every move look unusual. For
    the same reason the threshold is the higher of the held-out p99 and the trained-on p99.9:
    what the model saw in training, short of its rarest 0.1%, is not unusual.
    """
    spread = np.maximum(nll.std(0), trained.std(0)) if len(trained) else nll.std(0)
    fields = Calibration(
        0.0,
        "",
        field_mean=nll.mean(0).round(4).tolist(),
        field_std=np.maximum(spread, STD_FLOOR).round(4).tolist(),
    )
    surprise = fields.z(nll).max(1)
    qs = {
        f"p{int(q * 100)}" if q < 1 else "max": float(np.quantile(surprise, q)) for q in QUANTILES
    }
    seen = float(np.quantile(fields.z(trained).max(1), TRAINED_QUANTILE)) if len(trained) else 0.0
    threshold = max(qs["p99"], seen, THRESHOLD_FLOOR)
    method = (
        f"the highest of the p99 of held-out surprise ({qs['p99']:.3f}), the "
        f"p{TRAINED_QUANTILE * 100:g} of trained-on surprise ({seen:.3f}) "
        f"and the floor {THRESHOLD_FLOOR:g}"
    )
    return msgspec.structs.replace(
        fields, threshold=round(threshold, 4), method=method, quantiles=qs, held_out=len(surprise)
    )


SPREAD_FLOOR = 0.01  # a field's spread is at least this share of its training range


def value_figures(schema: Schema, observations: Sequence[Obs]) -> tuple[list[float], list[float]]:
    """Each scored field's median training value and its robust spread: the median absolute
    deviation scaled to a standard deviation (x 1.4826), but at least SPREAD_FLOOR of the
    field's training range, so that a field that hardly moved in training does not make every
    small move look far; and for a constant field, 1% of its size (or 0.01).

    Culprits are ranked by how far a value lies from its field's median in these spreads: on
    the development data this names more of the metrics operators named than the model's z does
    or than plain z-scores against the training mean and standard deviation
    (bench/results/detect-experiments.md, section 12)."""
    _, _, table = schema.encode_values(
        [o.values for o in observations], [o.meta for o in observations]
    )
    x = table[:, schema.n_context :]
    median = np.median(x, axis=0)
    mad = np.median(np.abs(x - median), axis=0) * 1.4826
    floor = SPREAD_FLOOR * (x.max(axis=0) - x.min(axis=0))
    spread = np.maximum(mad, floor)
    spread = np.where(spread > 0, spread, 0.01 * np.maximum(np.abs(median), 1.0))
    return median.round(6).tolist(), spread.round(6).tolist()


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
    schema = spec.schema.fit([o.values for o in observations], [o.meta for o in observations])
    docs = [schema.encode(o.values, o.meta) for o in observations]
    n_hold = max(1, int(len(docs) * HOLDOUT))
    train_docs, held = docs[:-n_hold] or docs, docs[-n_hold:]
    recent = train_docs[-CALIBRATION_TRAINED:]
    if examples:
        repeat = max(1, round(EXAMPLES_SHARE * len(train_docs) / len(examples)))
        train_docs = train_docs + [schema.ids(e) for e in examples] * repeat
    rng = random.Random(seed)
    config = spec.config(schema)
    detector = Detector(
        spec.name, schema, FastGPT(config, init_matrices(config, rng)), Calibration(0.0, "")
    )
    shuffled = list(train_docs)
    rng.shuffle(shuffled)
    started = time.monotonic()
    loss = train(detector.engine, shuffled, steps, batch=batch, lr=lr, on_step=on_step)
    calibration = calibrate(detector.token_nll(held), detector.token_nll(recent))
    median, spread = value_figures(schema, observations)
    detector.calibration = msgspec.structs.replace(
        calibration, value_median=median, value_spread=spread
    )
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
