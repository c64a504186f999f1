"""The registry of atoms: their names mapped to their specs. The built-in atoms are the modules
of kiri.atoms named in BUILT_IN, each with a SPEC (what it observes and how it tokenizes),
and every atom a person defines in config.toml with a `fields` table (below); kiri-atom, kiri
train and kiri score look atoms up by name. Built-in names come first.

    [atoms.gpu]
    command = ["nvidia-smi-json"]   # what `kiri-collect exec --atom gpu` runs
    interval = 30
    [atoms.gpu.fields]
    temp = { lo = 20, hi = 100, levels = 10 }   # uniform buckets over a fixed range, clamped
    util = "auto"                               # quantile edges fitted at training, with tails
    clock = ["hour"]                            # the local hour as context (also "weekday")

A fixed field may also give `label`, `unit` and `context = true`. Its tokens are `FIELD:N`, like
those of an atom fitted from its data. An [atoms.NAME] table without `fields` is no atom here:
its schema is fitted from its observations when it is first trained. `clock` gives either kind
of atom the observation's local hour and weekday as context tokens (`hour:13`), kept at each
training only when its observations hold every hour (every weekday): off by default, because on
the benchmarks the hour helped some data and hurt other (bench/results/detect-experiments.md).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable

import msgspec

from kiri.atoms.schema import Field, Schema, clock_field
from kiri.home.config import ConfigError, FieldSpec, config_atom, load_config
from kiri.home.paths import valid_name
from kiri.model.size import ModelSize
from kiri.wire.records import Obs

BUILT_IN = ("pulse", "rhythm", "drift", "mikrotik", "nerve")  # kiri/atoms/NAME.py
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
    # what `kiri train` learns from, given the observations it loaded (default: all of them)
    training_set: Callable[[list[Obs]], list[Obs]] | None = None

    def config(self, schema: Schema | None = None) -> ModelSize:
        schema = schema or self.schema
        block = max(self.block_size, schema.doc_len - 1)  # a whole observation fits the context
        return ModelSize(schema.vocab_size, self.n_layer, self.n_embd, self.n_head, block)


class UnknownAtom(KeyError):  # noqa: N818 (the name every lookup catches)
    def __str__(self) -> str:
        return f"unknown atom {self.args[0]!r} (known: {', '.join(known_atoms())})"


@functools.cache
def _specs() -> dict[str, AtomSpec]:
    """The built-in atoms, each named by its spec."""
    specs = {}
    for module in BUILT_IN:
        spec = importlib.import_module(f"kiri.atoms.{module}").SPEC
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


def _clock_fields(name: str) -> list[Field]:
    return [clock_field(c, f"{c}:") for c in config_atom(name).clock]


def _auto_field(name: str) -> Field:
    return Field(name, f"{name}:", AUTO_LEVELS, auto=True, tails=AUTO_TAILS, label=name)


def _user_spec(name: str, fields: list[Field]) -> AtomSpec:
    """The model every atom without a module gets: one layer, sized to its fields, with the
    clock fields its config.toml table asks for."""
    clocks = [c for c in _clock_fields(name) if c.name not in {f.name for f in fields}]
    fields = clocks + fields
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
    """Built-in atoms and those config.toml defines (a broken config.toml defines none here, so
    that --help still works: every stage reports it when it starts)."""
    try:
        defined = [name for name, table in load_config().atoms.items() if table.fields]
    except ConfigError:
        defined = []
    return sorted(set(_specs()) | set(defined))


def _config_spec(name: str) -> AtomSpec | None:
    """The atom [atoms.NAME] defines in config.toml, or None when it defines no fields."""
    fields = config_atom(name).fields
    if fields is None:
        return None
    return _user_spec(name, [_config_field(f, spec) for f, spec in fields.items()])


def _config_field(name: str, spec: FieldSpec) -> Field:
    """One field of a config atom: "auto", or a fixed range (kiri/home/config.py checked both)."""
    if spec == "auto":
        return _auto_field(name)
    return Field(
        name,
        f"{name}:",
        spec.levels,
        spec.lo,
        spec.hi,
        context=spec.context,
        label=name if spec.label is None else spec.label,
        unit=spec.unit,
        worse=spec.worse,
    )
