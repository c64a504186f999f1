"""One module per atom: what it observes (its collector) and how it tokenizes (its schema).

The registry here maps atom names to their specs (every module of this package with a SPEC);
kiri-atom, kiri train and kiri score look atoms up by name.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from pathlib import Path

import msgspec

from kiri.home import kiri_home, valid_name
from kiri.model.config import Config
from kiri.schema import Field, Schema

AUTO_LEVELS = 10  # quantile buckets per field of an atom fitted from its data
AUTO_TAILS = 4  # graded tokens beyond the bulk of the training values, on each side
AUTO_STEPS = 2000  # wide atoms keep learning their fields' joint structure past 1000 steps


class AtomSpec(msgspec.Struct, frozen=True):
    name: str
    schema: Schema
    n_layer: int = 2
    n_embd: int = 32
    n_head: int = 4
    block_size: int = 16
    steps: int = 1000  # training steps unless told otherwise

    def config(self, schema: Schema | None = None) -> Config:
        schema = schema or self.schema
        block = max(self.block_size, schema.doc_len - 1)  # a whole observation fits the context
        return Config(schema.vocab_size, self.n_layer, self.n_embd, self.n_head, block)


class UnknownAtom(KeyError):
    def __str__(self) -> str:
        return f"unknown atom {self.args[0]!r} (known: {', '.join(sorted(_specs()))})"


@functools.cache
def _specs() -> dict[str, AtomSpec]:
    """Every module of this package with a SPEC is an atom, named by its spec."""
    specs = {}
    for info in pkgutil.iter_modules(__path__):
        spec = getattr(importlib.import_module(f"{__name__}.{info.name}"), "SPEC", None)
        if isinstance(spec, AtomSpec):
            specs[spec.name] = spec
    return specs


def atom_spec(name: str) -> AtomSpec:
    try:
        return _specs()[name]
    except KeyError:
        raise UnknownAtom(name) from None


def auto_spec(name: str, fields: list[str]) -> AtomSpec:
    """An atom nobody wrote a module for (a Prometheus fleet, a dataset, a custom command): each
    value field gets quantile buckets fitted from the training data, tokens `FIELD:N`."""
    schema = Schema([Field(f, f"{f}:", AUTO_LEVELS, auto=True, tails=AUTO_TAILS, label=f)
                     for f in fields])
    return AtomSpec(valid_name(name), schema, n_layer=1, n_embd=32, n_head=4,
                    block_size=len(fields) + 1, steps=AUTO_STEPS)


def known_atoms() -> list[str]:
    return sorted(_specs())


def weights_path(atom: str) -> Path:
    """$KIRI_HOME/atoms/ATOM/weights.json"""
    return kiri_home() / "atoms" / valid_name(atom) / "weights.json"


def examples_path(atom: str) -> Path:
    """Observations people called "the new normal", as token documents, trained on every time."""
    return kiri_home() / "atoms" / valid_name(atom) / "normal.ndjson"
