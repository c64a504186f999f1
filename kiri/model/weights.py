"""Weights files: JSON, never pickle, written atomically and validated completely on load.

A file holds a format tag and version, the model config, the vocabulary (BOS is implicit, the
last id), every parameter matrix as nested lists, and the provenance of the training run. Atoms
add their schema and calibration in `extra`. Floats are written in shortest round-trip form, so
a saved model loads bit for bit. A writer killed mid-write leaves its temporary file behind;
the next save or load beside it removes it.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import numpy as np
from numpy.typing import NDArray

from kiri.home.paths import atomic_write, private_dir
from kiri.model.size import ModelSize, matrix_shapes, num_params
from kiri.wire.errors import KiriError

if TYPE_CHECKING:
    from kiri.model.training import Matrices

FORMAT = "kiri-weights"
VERSION = 1


class WeightsError(KiriError, ValueError):
    """A weights file that cannot be used; the message names the file and the problem."""


class Provenance(msgspec.Struct):
    source: str = ""  # what it was trained on
    steps: int = 0
    batch: int = 1
    seed: int = 0
    lr: float = 0.0
    engine: str = ""
    final_loss: float = 0.0
    created: float = 0.0  # Unix time
    seconds: float = 0.0  # training time


class WeightsFile(msgspec.Struct):
    format: str
    version: int
    config: ModelSize
    vocab: list[str]
    params: dict[str, list[list[float]]]
    provenance: Provenance = msgspec.field(default_factory=Provenance)
    extra: dict[str, object] = {}


class Weights(msgspec.Struct):
    """A loaded, validated model: what an engine needs, plus where it came from."""

    config: ModelSize
    vocab: list[str]
    matrices: dict[str, NDArray[np.float64]]
    provenance: Provenance
    extra: dict[str, object]
    id: str  # short content hash, carried in score records as the model that scored


_decoder = msgspec.json.Decoder(WeightsFile)


def save(
    path: Path,
    config: ModelSize,
    vocab: list[str],
    matrices: Matrices,
    provenance: Provenance,
    extra: dict[str, object] | None = None,
) -> str:
    """Write a weights file atomically with mode 0600; returns its id."""
    if not provenance.created:
        provenance.created = time.time()
    doc = WeightsFile(
        format=FORMAT,
        version=VERSION,
        config=config,
        vocab=vocab,
        params={
            name: np.asarray(matrices[name], float).tolist() for name, _ in matrix_shapes(config)
        },
        provenance=provenance,
        extra=extra or {},
    )
    data = msgspec.json.encode(doc)
    private_dir(path.parent)
    remove_stale_temps(path)
    atomic_write(path, data)
    return _id(data)


def remove_stale_temps(path: Path) -> None:
    """Remove the temporary files beside `path` whose writer has died: it names them after
    itself (kiri.home.paths.atomic_write), and a file whose writer is gone will never land."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        writer = tmp.name[len(path.name) + 2 :].split(".")[0]
        if not (writer.isdigit() and _alive(int(writer))):
            with contextlib.suppress(OSError):  # gone already, or a directory we only read
                tmp.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def load(path: Path) -> Weights:
    """Read and validate a weights file; any problem raises WeightsError naming the file."""
    remove_stale_temps(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise WeightsError(f"{path}: cannot read weights: {e.strerror}") from e
    try:
        doc = _decoder.decode(data)
    except (msgspec.DecodeError, RecursionError) as e:  # and a ValidationError (a subclass)
        raise WeightsError(f"{path}: not a readable weights file: {e}") from e
    problem = _problem(doc)
    if problem:
        raise WeightsError(f"{path}: {problem}")
    matrices = {name: np.asarray(doc.params[name], float) for name, _ in matrix_shapes(doc.config)}
    for name, m in matrices.items():
        if not np.isfinite(m).all():
            raise WeightsError(f"{path}: parameter {name} holds a non-finite number")
    return Weights(doc.config, doc.vocab, matrices, doc.provenance, doc.extra, _id(data))


def _problem(doc: WeightsFile) -> str | None:
    """What makes a decoded weights file unusable, if anything: the first problem found."""
    return _header_problem(doc) or _params_problem(doc)


def _header_problem(doc: WeightsFile) -> str | None:
    """Format, version, config and vocabulary."""
    if doc.format != FORMAT:
        return f"not a KIRI weights file (format {doc.format!r}, expected {FORMAT!r})"
    if doc.version > VERSION:
        return f"weights format version {doc.version} is newer than this KIRI reads ({VERSION})"
    if bad := doc.config.problems():
        return "bad config: " + "; ".join(bad)
    if len(doc.vocab) + 1 != doc.config.vocab_size:
        return (
            f"vocabulary has {len(doc.vocab)} tokens but the config says vocab_size "
            f"{doc.config.vocab_size} (tokens + BOS)"
        )
    if len(set(doc.vocab)) != len(doc.vocab):
        return "vocabulary has duplicate tokens"
    return None


def _params_problem(doc: WeightsFile) -> str | None:
    """Every parameter matrix the config names, each of its shape."""
    expected = dict(matrix_shapes(doc.config))
    if set(doc.params) != set(expected):
        missing = sorted(set(expected) - set(doc.params))
        unknown = sorted(set(doc.params) - set(expected))
        return f"parameters do not match the config (missing {missing}, unexpected {unknown})"
    for name, (rows, cols) in expected.items():
        m = doc.params[name]
        if len(m) != rows or any(len(row) != cols for row in m):
            got = f"{len(m)}x{len(m[0]) if m else 0}"
            return f"parameter {name} has shape {got}, expected {rows}x{cols}"
    return None


def _id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def describe(w: Weights, path: Path) -> list[str]:
    """Lines for `kiri info`: config, vocabulary, parameter counts and provenance."""
    c, p = w.config, w.provenance
    lines = [
        f"weights: {path} (id {w.id})",
        f"config: n_layer {c.n_layer}, n_embd {c.n_embd}, n_head {c.n_head}, "
        f"block_size {c.block_size}, vocab_size {c.vocab_size}",
        f"vocab ({len(w.vocab)} + BOS): {' '.join(w.vocab)}",
        "parameters:",
    ]
    lines += [f"  {name:<18} {r:>4} x {k:<4} {r * k:>8,}" for name, (r, k) in matrix_shapes(c)]
    lines.append(f"  {'total':<18} {'':>11} {num_params(c):>8,}")
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p.created)) if p.created else "?"
    lines.append(
        f"trained: on {p.source or '?'}, {p.steps} steps at batch {p.batch}, lr {p.lr}, "
        f"seed {p.seed}, {p.engine} engine, final loss {p.final_loss:.4f}, "
        f"{p.seconds:.1f} s, {created}"
    )
    return lines
