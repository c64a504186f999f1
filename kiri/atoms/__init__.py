"""One module per atom: what it observes (its collector) and how it tokenizes (its schema).

The registry here maps atom names to their specs: every module of this package with a SPEC,
and every atom a person defines in config.toml with a `fields` table (below); kiri-atom, kiri
train and kiri score look atoms up by name. Built-in names come first.

    [atoms.gpu]
    command = ["nvidia-smi-json"]   # what `kiri-collect exec --atom gpu` runs
    interval = 30
    [atoms.gpu.fields]
    temp = { lo = 20, hi = 100, levels = 10 }   # uniform buckets over a fixed range, clamped
    util = "auto"                               # quantile edges fitted at training, with tails

A fixed field may also give `label`, `unit` and `context = true`. Its tokens are `FIELD:N`, like
those of an atom fitted from its data. An [atoms.NAME] table without `fields` is no atom here:
its schema is fitted from its observations when it is first trained.
"""

from __future__ import annotations

import functools
import importlib
import math
import pkgutil
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from kiri.config import ConfigError, load_config
from kiri.home import kiri_home, valid_name
from kiri.model.config import Config
from kiri.records import Obs
from kiri.schema import Field, Schema

AUTO_LEVELS = 10  # quantile buckets per field of an atom fitted from its data
AUTO_TAILS = 4  # graded tokens beyond the bulk of the training values, on each side
AUTO_STEPS = 2000  # wide atoms keep learning their fields' joint structure past 1000 steps
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")  # its tokens must not hold a space
FIELD_KEYS = {"lo", "hi", "levels", "label", "unit", "context"}  # of a fixed config field
FIXED_LEVELS = 10  # a fixed config field's buckets, unless it gives `levels`
MAX_LEVELS = 100  # more buckets than this for one field is a typo, not a schema


class AtomSpec(msgspec.Struct, frozen=True):
    name: str
    schema: Schema
    n_layer: int = 2
    n_embd: int = 32
    n_head: int = 4
    block_size: int = 16
    steps: int = 1000  # training steps unless told otherwise
    # what `kiri train` learns from, given the observations it loaded (default: all of them)
    training_set: Callable[[list[Obs]], list[Obs]] | None = None

    def config(self, schema: Schema | None = None) -> Config:
        schema = schema or self.schema
        block = max(self.block_size, schema.doc_len - 1)  # a whole observation fits the context
        return Config(schema.vocab_size, self.n_layer, self.n_embd, self.n_head, block)


class UnknownAtom(KeyError):  # noqa: N818 (the name every lookup catches)
    def __str__(self) -> str:
        return f"unknown atom {self.args[0]!r} (known: {', '.join(known_atoms())})"


class AtomConfigError(ConfigError, ValueError):
    """An atom defined in config.toml that cannot be built; the message names the key.

    A ValueError too, like an invalid atom name, so every command that looks atoms up reports it
    as one line."""


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
    """A built-in atom, else one defined in config.toml; UnknownAtom when neither."""
    spec = _specs().get(name) or _config_spec(name)
    if spec is None:
        raise UnknownAtom(name)
    return spec


def auto_spec(name: str, fields: list[str]) -> AtomSpec:
    """An atom nobody wrote a module for (a Prometheus fleet, a dataset, a custom command): each
    value field gets quantile buckets fitted from the training data, tokens `FIELD:N`."""
    return _user_spec(name, [_auto_field(f) for f in fields])


def _auto_field(name: str) -> Field:
    return Field(name, f"{name}:", AUTO_LEVELS, auto=True, tails=AUTO_TAILS, label=name)


def _user_spec(name: str, fields: list[Field]) -> AtomSpec:
    """The model every atom without a module gets: one layer, sized to its fields."""
    return AtomSpec(
        valid_name(name),
        Schema(fields),
        n_layer=1,
        n_embd=32,
        n_head=4,
        block_size=len(fields) + 1,
        steps=AUTO_STEPS,
    )


def known_atoms() -> list[str]:
    """Built-in atoms and those config.toml defines (a broken config.toml defines none here:
    it is reported when one of its atoms is used)."""
    try:
        defined = [n for n, t in _config_atoms().items() if isinstance(t, dict) and "fields" in t]
    except ConfigError:
        defined = []
    return sorted(set(_specs()) | set(defined))


def config_atom(name: str) -> dict[str, Any]:
    """The [atoms.NAME] table of config.toml; {} when there is none."""
    table = _config_atoms().get(name, {})
    if not isinstance(table, dict):
        raise AtomConfigError(f"config.toml: atoms.{name} must be a table")
    return table


def _config_atoms() -> dict[str, Any]:
    try:
        atoms = load_config().get("atoms", {})
    except ConfigError as e:  # unreadable: said the way every atom lookup says it
        raise AtomConfigError(str(e)) from None
    if not isinstance(atoms, dict):
        raise AtomConfigError("config.toml: atoms must be a table of atoms ([atoms.NAME])")
    return atoms


def _config_spec(name: str) -> AtomSpec | None:
    """The atom [atoms.NAME] defines in config.toml, or None when it defines no fields."""
    fields = config_atom(name).get("fields")
    if fields is None:
        return None
    where = f"config.toml: atoms.{name}.fields"
    if not isinstance(fields, dict) or not fields:
        raise AtomConfigError(f"{where} must be a table of at least one field")
    built = [_config_field(f, spec, f"{where}.{f}") for f, spec in fields.items()]
    if all(f.context for f in built):
        raise AtomConfigError(f"{where}: every field is context; score at least one")
    try:
        return _user_spec(name, built)
    except ValueError as e:  # an invalid atom name
        raise AtomConfigError(f"config.toml: atoms.{name}: {e}") from None


def _config_field(name: str, spec: Any, where: str) -> Field:
    """One field of a config atom: "auto", or a table { lo, hi, levels, … }."""
    if not FIELD_NAME.match(name):
        raise AtomConfigError(
            f"{where}: a field name is letters, digits, '_', '.' and '-', "
            "starting with a letter or '_'"
        )
    if spec == "auto":
        return _auto_field(name)
    if not isinstance(spec, dict) or not {"lo", "hi"} <= spec.keys():
        raise AtomConfigError(
            f'{where}: expected "auto" or a table like '
            f"{{ lo = 0, hi = 100, levels = 10 }}, got {spec!r}"
        )
    if unknown := sorted(spec.keys() - FIELD_KEYS):
        raise AtomConfigError(
            f"{where}: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(FIELD_KEYS))})"
        )
    lo, hi, levels = spec["lo"], spec["hi"], spec.get("levels", FIXED_LEVELS)
    if not all(_is_number(x) for x in (lo, hi)) or not lo < hi:
        raise AtomConfigError(f"{where}: lo and hi must be numbers, lo < hi")
    if not isinstance(levels, int) or isinstance(levels, bool) or not 1 <= levels <= MAX_LEVELS:
        raise AtomConfigError(f"{where}: levels must be a whole number from 1 to {MAX_LEVELS}")
    if not isinstance(spec.get("context", False), bool):
        raise AtomConfigError(f"{where}: context must be true or false")
    return Field(
        name,
        f"{name}:",
        levels,
        float(lo),
        float(hi),
        context=spec.get("context", False),
        label=str(spec.get("label", name)),
        unit=str(spec.get("unit", "")),
    )


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def weights_path(atom: str) -> Path:
    """$KIRI_HOME/atoms/ATOM/weights.json"""
    return kiri_home() / "atoms" / valid_name(atom) / "weights.json"


def examples_path(atom: str) -> Path:
    """Observations people called "the new normal", as token documents, trained on every time."""
    return kiri_home() / "atoms" / valid_name(atom) / "normal.ndjson"
