"""The model's size, its parameter matrices in microgpt's order, and their initial draws."""

from __future__ import annotations

import random

import msgspec

INIT_STD = 0.08


class ModelSize(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The model's size: vocabulary, layers, width, heads and context."""

    vocab_size: int  # tokens plus BOS, which is the last id
    n_layer: int = 1
    n_embd: int = 16
    n_head: int = 4
    block_size: int = 16

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def problems(self) -> list[str]:
        """What makes this config unusable, if anything."""
        out = [
            f"{name} must be at least 1, got {value}"
            for name, value in msgspec.structs.asdict(self).items()
            if value < 1
        ]
        if self.vocab_size < 2:
            out.append(f"vocab_size must be at least 2, got {self.vocab_size}")
        if self.n_head >= 1 and self.n_embd % self.n_head:
            out.append(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        return out


def matrix_shapes(c: ModelSize) -> list[tuple[str, tuple[int, int]]]:
    """Every parameter matrix as (name, (out, in)), in the order of the initial draws."""
    shapes = [
        ("wte", (c.vocab_size, c.n_embd)),
        ("wpe", (c.block_size, c.n_embd)),
        ("lm_head", (c.vocab_size, c.n_embd)),
    ]
    for i in range(c.n_layer):
        shapes += [
            (f"layer{i}.attn_wq", (c.n_embd, c.n_embd)),
            (f"layer{i}.attn_wk", (c.n_embd, c.n_embd)),
            (f"layer{i}.attn_wv", (c.n_embd, c.n_embd)),
            (f"layer{i}.attn_wo", (c.n_embd, c.n_embd)),
            (f"layer{i}.mlp_fc1", (4 * c.n_embd, c.n_embd)),
            (f"layer{i}.mlp_fc2", (c.n_embd, 4 * c.n_embd)),
        ]
    return shapes


def num_params(c: ModelSize) -> int:
    return sum(rows * cols for _, (rows, cols) in matrix_shapes(c))


def init_matrices(c: ModelSize, rng: random.Random) -> dict[str, list[list[float]]]:
    """Draw every parameter from N(0, 0.08), matrix by matrix, row by row, as microgpt does."""
    return {
        name: [[rng.gauss(0, INIT_STD) for _ in range(cols)] for _ in range(rows)]
        for name, (rows, cols) in matrix_shapes(c)
    }


# Adam's constants and the rmsnorm epsilon, as microgpt fixes them.
BETA1, BETA2, EPS_ADAM = 0.85, 0.99, 1e-8
EPS_NORM = 1e-5
