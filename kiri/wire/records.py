"""The wire format: every record KIRI stages exchange, as one msgspec tagged union.

One JSON object per line, tagged by ``kind``. Every field has a default and decoders ignore
unknown fields, so a stage reads streams written by older and newer versions alike. Times are
Unix seconds. JSON cannot carry NaN and msgspec rejects numbers out of float range, so every
decoded number is finite; the encoder writes a non-finite float as null, a missing value. Field
names are an interface: add fields, never rename them.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

# what decoding a line or a file can raise: malformed or mistyped JSON, bytes that are not UTF-8,
# and JSON nested deeper than the decoder will recurse (a 1 KB line of brackets is enough)
UNDECODABLE = (msgspec.MsgspecError, UnicodeDecodeError, RecursionError)


# Unix seconds up to the year 3000: a time every clock, calendar and file name can hold, so a
# record whose ts would overflow them (1e17 did) is a bad line at decode time, not a crash later
MAX_TS = 32503680000.0
Time = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_TS)]


class _Record(msgspec.Struct, tag_field="kind"):
    ts: Time = 0.0


class Obs(_Record, tag="obs"):
    """One observation of an atom's source: raw values, not yet quantized."""

    atom: str = ""
    host: str = ""
    values: dict[str, float | None] = {}
    meta: dict[str, str] = {}


class Score(_Record, tag="score", omit_defaults=True):
    """An observation as the atom saw it: its tokens and how surprising each one was. Fields at
    their defaults are left out of its line: a score goes out for every observation."""

    atom: str = ""
    host: str = ""
    values: dict[str, float | None] = {}
    tokens: list[str] = []
    nll: list[float] = []  # each token's -log p
    z: list[float] = []  # and against its field's held-out -log p, in standard deviations
    spread: list[float] = []  # each value against its field's training median, in robust spreads
    # what explains an alert, sent with a score at or above its threshold only (on every one
    # it would double the stream; the dashboard's recording keeps it always): each token's
    # field, as its name (a key of values), label and unit, so that no later stage needs the
    # atom's schema to name a culprit; each field's value as tokenized (load per CPU); its
    # usual range in training (p5 and p95; empty from a model trained before KIRI kept them);
    # and which way of moving is bad news ("high", "low", "either" or "neither",
    # kiri.atoms.schema.WORSE)
    fields: list[tuple[str, str, str]] = []
    measured: list[float] = []
    usual_low: list[float] = []
    usual_high: list[float] = []
    worse: list[str] = []
    surprise: float = 0.0  # how unusual: the largest z and the fields' distances (detector.py)
    threshold: float = 0.0
    model: str = ""
    early: bool = False  # the model has not seen enough of this host yet (kiri.atoms.retraining)


class Culprit(msgspec.Struct):
    """One field an alert is about, explained for people: `load 0.31 per CPU is low (usually
    0.9–1.4)`. Carried by the decision, so that no later stage needs the atom's schema."""

    token: str = ""  # the field's token, as in the decision's culprits
    atom: str = ""
    field: str = ""  # its name, a key of the observation's values
    label: str = ""  # as people name it: "load"
    unit: str = ""  # of value, low and high: "%", " per CPU"
    value: float | None = None  # as tokenized (load per CPU); None when the score had none
    direction: str = ""  # "high" or "low" against its training median; "" when unknown
    low: float | None = None  # its usual range in training (p5 to p95); None when unknown
    high: float | None = None
    z: float = 0.0  # its token's -log p in held-out standard deviations
    worse: str = "either"  # which way of moving is bad news (kiri.atoms.schema.WORSE)


class Decision(_Record, tag="decision"):
    """What to do about a score: ok, alert, resolve, suppress, retrain or spawn."""

    id: str = ""
    atom: str = ""
    host: str = ""
    action: str = "ok"
    severity: str = ""
    surprise: float = 0.0
    threshold: float = 0.0
    culprits: list[tuple[str, float]] = []  # every token with its z, likeliest culprit first
    explained: list[Culprit] = []  # an alert's named culprits (kiri.wire.patterns), for people
    tokens: list[str] = []  # the observation's tokens in document order (a new normal's example)
    # an alert's: 1 - the share of this atom's earlier scores on this host as surprising (else 0)
    rarity: float = 0.0
    summary: str = ""
    detail: str = ""  # more for people, in lines: the error output behind a supervisor's alert
    incident: str = ""
    atoms: list[str] = []
    by: str = ""  # who chose the action: "policy" (the k-of-n default) or "nerve"
    state: dict[str, float] = {}  # each atom's surprise / threshold on this host, as decided


class Outcome(_Record, tag="outcome"):
    """How delivering one decision to one sink went."""

    id: str = ""
    action: str = ""
    sink: str = ""
    ok: bool = True
    error: str = ""
    detail: str = ""


class Verdict(_Record, tag="verdict"):
    """A person's judgement of an alert: confirm or dismiss."""

    alert: str = ""
    verdict: str = ""
    source: str = ""
    by: str = ""
    note: str = ""
    normal: bool = False  # a dismissal saying "this is the new normal": learn it


class Rule(_Record, tag="rule"):
    """A learned instruction for kiri-decide, such as suppressing a dismissed pattern. It holds
    for one atom on one host until it expires: kiri-decide refuses a rule without both."""

    id: str = ""
    atom: str = ""
    host: str = ""
    match: list[str] = []
    action: str = "suppress"
    expires: float = 0.0
    reason: str = ""


Record = Obs | Score | Decision | Outcome | Verdict | Rule
KINDS: dict[str, type[Record]] = {cls.__struct_config__.tag: cls for cls in Record.__args__}
