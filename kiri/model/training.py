"""The training loop microgpt runs, shared by both engines, and its character-level documents."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeAlias

from kiri.model.size import ModelSize, init_matrices

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    # Every parameter matrix by name: as nested lists (init_matrices, gpt.py) or arrays (fast.py).
    Matrices: TypeAlias = Mapping[str, Sequence[Sequence[float]] | NDArray[np.float64]]


class Engine(Protocol):
    config: ModelSize

    def train_step(self, docs: list[list[int]], lr: float) -> float: ...

    def sample(self, rng: random.Random, temperature: float) -> list[int]: ...

    def matrices(self) -> Matrices: ...


def engine_class(name: str) -> Callable[[ModelSize, Matrices], Engine]:
    if name == "pure":
        from kiri.model.gpt import GPT

        return GPT
    if name == "fast":
        from kiri.model.fast import FastGPT

        return FastGPT
    raise ValueError(f"unknown engine {name!r} (choose fast or pure)")


def new_engine(name: str, config: ModelSize, rng: random.Random) -> Engine:
    """A freshly initialised model; the draws come from rng, after any earlier draws."""
    return engine_class(name)(config, init_matrices(config, rng))


class TextDocs:
    """Character-level documents, read and shuffled exactly as microgpt does."""

    def __init__(self, path: Path, rng: random.Random) -> None:
        text = path.read_text(encoding="utf-8")
        self.docs = [line.strip() for line in text.splitlines() if line.strip()]
        rng.shuffle(self.docs)
        self.chars = sorted(set("".join(self.docs)))
        self._ids = {ch: i for i, ch in enumerate(self.chars)}
        self.bos = len(self.chars)

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def encode(self, doc: str) -> list[int]:
        return [self.bos] + [self._ids[ch] for ch in doc] + [self.bos]

    def token_docs(self) -> list[list[int]]:
        return [self.encode(d) for d in self.docs]


def train(
    engine: Engine,
    docs: Sequence[list[int]],
    steps: int,
    *,
    batch: int = 1,
    lr: float = 0.01,
    on_step: Callable[[int, float], None] | None = None,
) -> float:
    """microgpt's schedule: step s takes the next `batch` documents in order, lr decays to 0.

    Returns the last step's loss.
    """
    loss = float("nan")
    for step in range(steps):
        first = step * batch
        chunk = [docs[(first + j) % len(docs)] for j in range(batch)]
        loss = engine.train_step(chunk, lr * (1 - step / steps))
        if on_step:
            on_step(step, loss)
    return loss
