"""Quantization: an atom's schema turns an observation's values into tokens, and tokens into ids.

Each field becomes one token, its prefix and a bucket number (`C5`). Buckets are uniform over a
fixed range, clamped at the edges, or quantile edges fitted from training data (`auto`). Context
fields (hour, weekday) come first in the document and are conditioned on but not scored; a
clock field reads its value from the observation's time (local hour or weekday), and fitting
keeps it only when the training data holds every one of its values, so a model never meets an
hour it has not seen. A missing or non-finite value is never read as zero: the observation is
rejected with a reason.

A document is `[BOS, context tokens…, scored tokens…, BOS]`; BOS is the last id.
"""

from __future__ import annotations

import bisect
import functools
import math
import sys
import time
from collections.abc import Mapping, Sequence

import msgspec
import numpy as np
from numpy.typing import NDArray

from kiri.wire.render import describe


class SchemaError(ValueError):
    """An observation (or a token list) that this schema cannot turn into a document."""


class Field(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str  # key in obs.values
    prefix: str  # token prefix: "C" gives C0, C1, …
    levels: int  # number of buckets (for auto, within the training range)
    lo: float = 0.0  # uniform buckets over [lo, hi]
    hi: float = 100.0
    auto: bool = False  # fit quantile edges from training data instead of [lo, hi]
    edges: list[float] = []  # the fitted inner edges (levels - 1 of them), once fitted
    context: bool = False  # conditioned on, not scored
    tails: int = 0  # auto: graded tokens for how far beyond the bulk of training, on each side
    per: str = ""  # divide the value by this meta field first (load per CPU)
    label: str = ""  # for people: "CPU"
    unit: str = ""  # for people: "%"
    clock: str = ""  # "hour" or "weekday": the value is the observation's local time, not a value
    # which way of moving is bad news (WORSE): an alert's severity says so; a drop in load, say,
    # is worth knowing but no emergency
    worse: str = "either"

    @property
    def size(self) -> int:
        """How many tokens the field has: its buckets, plus its tail tokens on both sides."""
        return self.levels + 2 * self.tails if self.auto else self.levels

    def bucket(self, x: float) -> int:
        """The bucket of a finite value; any value beyond the range is in the bucket at its end."""
        if self.auto:
            return bisect.bisect_right(self.edges, x)
        # clamped before the int(): a huge value's position may be inf, which no int holds
        i = (x - self.lo) / (self.hi - self.lo) * self.levels
        return int(min(max(i, 0.0), self.levels - 1.0))

    def buckets(self, x: NDArray[np.float64]) -> NDArray[np.intp]:
        """bucket() for many finite values at once."""
        if self.auto:
            return np.searchsorted(self.edges, x, side="right")
        with np.errstate(over="ignore"):  # a huge value's position is inf, clamped below
            i = (x - self.lo) / (self.hi - self.lo) * self.levels
        # clamped before the cast, as bucket() does: 1e20 cast to an int is garbage, not C9
        return np.clip(i, 0.0, self.levels - 1.0).astype(np.intp)

    def describe(self, value: float | None) -> str:
        """`CPU 97%`: the field as a person names it, with its raw value."""
        return describe(self.label or self.name, self.unit, value)

    @property
    def shown_unit(self) -> str:
        """The unit of the value as tokenized: `load` is `per CPU`."""
        per = f" per {PER_NAMES.get(self.per, self.per)}" if self.per else ""
        return f"{self.unit}{per}"


# Which way of moving makes a field's alert serious: up, down, either way, or neither (a move
# worth telling, never an emergency).
WORSE = ("high", "low", "either", "neither")
PER_NAMES = {"cpus": "CPU"}  # a `per` meta field as its unit reads


class Schema(msgspec.Struct, frozen=True, forbid_unknown_fields=True, dict=True):
    fields: list[Field]
    # dict=True lets the derived tables below be computed once per schema, not per observation

    def __post_init__(self) -> None:
        tokens = self.vocab
        if len(set(tokens)) != len(tokens):
            raise ValueError("schema fields produce the same token twice; use distinct prefixes")
        for f in self.fields:
            if f.clock and (f.clock not in CLOCKS or not f.context or f.auto):
                raise ValueError(f"field {f.name}: a clock field is a fixed context field")
            if f.worse not in WORSE:
                raise ValueError(f"field {f.name}: worse must be one of {', '.join(WORSE)}")

    @functools.cached_property
    def ordered(self) -> list[Field]:
        """Fields in document order: context first, then scored, each in listed order."""
        return [f for f in self.fields if f.context] + [f for f in self.fields if not f.context]

    @functools.cached_property
    def n_context(self) -> int:
        return sum(f.context for f in self.fields)

    @functools.cached_property
    def vocab(self) -> list[str]:
        return [f"{f.prefix}{i}" for f in self.ordered for i in range(f.size)]

    @functools.cached_property
    def vocab_size(self) -> int:
        return len(self.vocab) + 1  # + BOS

    @property
    def doc_len(self) -> int:
        return len(self.fields) + 2

    @functools.cached_property
    def scored(self) -> slice[int, int, None]:
        """Positions of the scored tokens within a document."""
        return slice(1 + self.n_context, 1 + len(self.fields))

    @functools.cached_property
    def groups(self) -> list[range]:
        """The token ids that can follow each document position: a field's own tokens, then
        BOS after the last field. The model's softmax at each position runs over just these."""
        fields = [
            range(first, first + f.size)
            for f, first in zip(self.ordered, self._first_ids, strict=True)
        ]
        bos = self.vocab_size - 1
        return [*fields, range(bos, bos + 1)]

    def scored_slots(self, ids: NDArray[np.intp]) -> NDArray[np.intp]:
        """Each scored token of documents ids (N, doc_len) as its place among its field's
        tokens (N, scored fields): the bucket it stands for."""
        s = self.scored
        first = np.array([g.start for g in self.groups[s.start - 1 : s.stop - 1]])
        slots: NDArray[np.intp] = ids[:, s] - first
        return slots

    def field_of(self, token: str) -> Field:
        for f in self.fields:
            if token.startswith(f.prefix) and token[len(f.prefix) :].isdigit():
                return f
        raise SchemaError(f"unknown token {token!r}")

    def tokenize(
        self, values: Mapping[str, float | None], meta: Mapping[str, str], ts: float = 0.0
    ) -> list[str]:
        """Tokens in document order; SchemaError names the first value that cannot be used."""
        vocab = self.vocab
        return [vocab[i] for i in self.encode(values, meta, ts)[1:-1]]

    def encode(
        self, values: Mapping[str, float | None], meta: Mapping[str, str], ts: float = 0.0
    ) -> list[int]:
        """The document's ids, [BOS] + one id per field + [BOS], straight from the values (and
        the observation's time, for clock fields)."""
        bos = self.vocab_size - 1
        return [
            bos,
            *(
                first
                + f.bucket(clock_value(f.clock, ts) if f.clock else self._value(f, values, meta))
                for f, first in zip(self.ordered, self._first_ids, strict=True)
            ),
            bos,
        ]

    def encode_many(
        self,
        values: Sequence[Mapping[str, float | None]],
        metas: Sequence[Mapping[str, str]],
        times: Sequence[float] = (),
    ) -> tuple[NDArray[np.intp], dict[int, SchemaError]]:
        """encode() for many observations at once: ids (N, doc_len), and the SchemaError of
        each row that has none (its ids row is then meaningless)."""
        ids, errors, _ = self.encode_values(values, metas, times)
        return ids, errors

    def encode_values(
        self,
        values: Sequence[Mapping[str, float | None]],
        metas: Sequence[Mapping[str, str]],
        times: Sequence[float] = (),
    ) -> tuple[NDArray[np.intp], dict[int, SchemaError], NDArray[np.float64]]:
        """encode_many(), and each field's value as it was tokenized (divided by its `per` meta
        field), (N, fields) in document order. times: each observation's ts, for clock fields
        (0, the epoch, where not given)."""
        ids = np.full((len(values), self.doc_len), self.vocab_size - 1, dtype=np.intp)
        bad = np.zeros(len(values), dtype=bool)
        table = self._table(values, times)
        for j, (f, first) in enumerate(zip(self.ordered, self._first_ids, strict=True), start=1):
            x = table[:, j - 1]
            if f.per:
                d = np.array([_number(m.get(f.per)) for m in metas])
                usable = (d >= MIN_DIVISOR) & (d < math.inf)
                bad |= ~usable
                with np.errstate(over="ignore"):  # an overflow is inf: not finite, rejected
                    x = table[:, j - 1] = x / np.where(usable, d, 1.0)
            ok = np.isfinite(x)
            bad |= ~ok
            ids[:, j] = first + self.ordered[j - 1].buckets(np.where(ok, x, 0.0))
        errors = {}
        for i in np.flatnonzero(bad).tolist():
            try:  # the one-at-a-time path knows how to say what is wrong
                self.encode(values[i], metas[i], times[i] if len(times) else 0.0)
            except SchemaError as e:
                errors[i] = e
        return ids, errors, table

    def _table(
        self, values: Sequence[Mapping[str, float | None]], times: Sequence[float] = ()
    ) -> NDArray[np.float64]:
        """Every field's value, (N, fields) in document order; NaN where missing or not a
        number. One conversion for the whole table; per value only when something is odd."""
        names = [f.name for f in self.ordered]
        try:
            table = np.array([[v.get(n) for n in names] for v in values], dtype=float)
        except (TypeError, ValueError):  # a string among the numbers
            table = np.array([[_number(v.get(n)) for n in names] for v in values])
        table = table.reshape(len(values), len(names))
        for j, f in enumerate(self.ordered):
            if f.clock:
                table[:, j] = [clock_value(f.clock, t) for t in times or [0.0] * len(values)]
        return table

    @functools.cached_property
    def _first_ids(self) -> list[int]:
        """The id of each field's bucket 0, in document order."""
        firsts, n = [], 0
        for f in self.ordered:
            firsts.append(n)
            n += f.size
        return firsts

    def _value(
        self, f: Field, values: Mapping[str, float | None], meta: Mapping[str, str]
    ) -> float:
        x = values.get(f.name)
        if x is None:
            raise SchemaError(f"values.{f.name} is missing")
        if not math.isfinite(x):
            raise SchemaError(f"values.{f.name} is not a finite number")
        if f.per:
            problem = divisor_problem(f.per, meta)
            if problem:
                raise SchemaError(problem)
            x /= float(meta[f.per])
            if not math.isfinite(x):
                raise SchemaError(f"values.{f.name} / meta.{f.per} is beyond float range")
        return x

    def meta_problem(self, meta: Mapping[str, str]) -> str | None:
        """Why the meta fields that divide values (`per`) make no sense, or None."""
        for name in self._divisors:
            problem = divisor_problem(name, meta)
            if problem:
                return problem
        return None

    @functools.cached_property
    def _divisors(self) -> list[str]:
        return sorted({f.per for f in self.fields if f.per})

    def ids(self, tokens: Sequence[str]) -> list[int]:
        """[BOS] + ids + [BOS] for tokens in document order."""
        index = self._index
        try:
            body = [index[t] for t in tokens]
        except KeyError as e:
            raise SchemaError(f"unknown token {e.args[0]!r}") from None
        bos = self.vocab_size - 1
        return [bos, *body, bos]

    def parse(self, text: str) -> list[str]:
        """Tokens typed by a person (`C9 M9 D4 S4 L4 N1`), checked against the document order."""
        tokens = text.replace(",", " ").split()
        expected = [f.prefix for f in self.ordered]
        if len(tokens) != len(expected):
            raise SchemaError(
                f"expected {len(expected)} tokens ({' '.join(p + 'N' for p in expected)})"
            )
        index = self._index
        for token, f in zip(tokens, self.ordered, strict=True):  # lengths checked above
            if token not in index or self.field_of(token) is not f:
                raise SchemaError(
                    f"{token!r} is not a {f.label or f.name} token "
                    f"({f.prefix}0-{f.prefix}{f.size - 1})"
                )
        return tokens

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.vocab)}

    def fit(
        self,
        values: Sequence[Mapping[str, float | None]],
        metas: Sequence[Mapping[str, str]],
        times: Sequence[float] = (),
    ) -> Schema:
        """A copy with every `auto` field's quantile edges fitted to these observations, and
        only the clock fields whose every value occurs at these times."""
        fields = []
        for f in self.fields:
            if f.clock:
                if {clock_value(f.clock, t) for t in times} >= set(map(float, range(f.levels))):
                    fields.append(f)
            elif f.auto:
                xs = np.array([self._value(f, v, m) for v, m in zip(values, metas, strict=True)])
                fields.append(
                    msgspec.structs.replace(f, edges=_fitted_edges(xs, f.levels, f.tails))
                )
            else:
                fields.append(f)
        return Schema(fields)


CLOCKS = {"hour": 24, "weekday": 7}


def clock_field(clock: str, prefix: str) -> Field:
    """A context field read from the observation's local time: `hour` 0-23, `weekday` 0-6
    (Monday 0)."""
    levels = CLOCKS[clock]
    return Field(clock, prefix, levels, 0, levels, context=True, label=clock, clock=clock)


def clock_value(clock: str, ts: float) -> float:
    t = time.localtime(ts)
    return float(t.tm_hour if clock == "hour" else t.tm_wday)


# A divisor (`per`) must be at least the smallest normal float: one below it, such as 5e-324,
# is no real quantity (no host has 1e-320 CPUs), and dividing by it overflows to inf.
MIN_DIVISOR = sys.float_info.min


def divisor_problem(name: str, meta: Mapping[str, str]) -> str | None:
    """Why meta field `name` cannot divide a value, or None: it must be a finite number, at
    least MIN_DIVISOR."""
    d = _number(meta.get(name))
    if math.isnan(d):
        return f"meta.{name} is missing or not a number"
    if not MIN_DIVISOR <= d < math.inf:
        return f"meta.{name} must be a positive finite number, not {meta[name][:40]!r}"
    return None


def _number(x: float | str | None) -> float:
    """A value or meta field as a float; NaN for anything missing or not a number."""
    if x is None:
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


BULK = 0.001  # the share of training values at each end left out of a field's "bulk"
TAIL_STEPS = (0.0, 0.25, 1.0, 4.0)  # tail edges beyond the bulk, in units of its width


def _fitted_edges(xs: NDArray[np.float64], levels: int, tails: int) -> list[float]:
    """Edges for `levels` equally likely buckets over the bulk of the training values, plus
    `tails` graded edges beyond each end of the bulk.

    Equal-frequency buckets alone put a value far from anything usual in the same token as an
    ordinary high value, whenever one spike in training stretched the top bucket: a field that
    sat at 0.02 for 99.9% of training and once touched 1.0 would see 0.16 as ordinary. Tail
    tokens say how far beyond the bulk a value lies, so the model learns how rare each distance
    is, and a value beyond anything seen gets a token never seen in training."""
    if not len(xs):
        return []
    lo, hi = (float(q) for q in np.quantile(xs, [BULK, 1 - BULK]))
    # a constant bulk: measure distance by the whole range, or by the value's own size
    width = hi - lo or float(xs.max() - xs.min()) or max(abs(hi), 1.0) * 0.01
    inner: list[float] = np.quantile(
        xs, BULK + (1 - 2 * BULK) * np.arange(1, levels) / levels
    ).tolist()
    steps = TAIL_STEPS[:tails]
    below = [lo - width * d for d in reversed(steps)]
    above = [hi + width * d for d in steps]
    return below + inner + above
