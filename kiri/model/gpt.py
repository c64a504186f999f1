"""The reference GPT: microgpt on the scalar autograd engine, exactly as MICROGPT.md states it.

Slow by design (about 3.5 minutes for the 1,000-step names run): it is the definition the fast
numpy engine (fast.py) is tested against, not what KIRI runs.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import cast

from kiri.model.engine import Value
from kiri.model.size import BETA1, BETA2, EPS_ADAM, EPS_NORM, ModelSize

KV = list[list[list[Value]]]  # a document's keys (or values): per layer, per position, a vector


def total(terms: Iterable[Value]) -> Value:
    """sum(terms), Python's own from its start 0, as microgpt adds up Values. (sum() is typed
    to return that 0 for no terms; there are always some.)"""
    return cast(Value, sum(terms))


def linear(x: list[Value], w: list[list[Value]]) -> list[Value]:
    return [total(wi * xi for wi, xi in zip(wo, x, strict=True)) for wo in w]


def softmax(logits: list[Value]) -> list[Value]:
    max_val = max(val.data for val in logits)
    exps = [(val - max_val).exp() for val in logits]
    denominator = total(exps)
    return [e / denominator for e in exps]


def rmsnorm(x: list[Value]) -> list[Value]:
    ms = total(xi * xi for xi in x) / len(x)
    scale = (ms + EPS_NORM) ** -0.5
    return [xi * scale for xi in x]


class GPT:
    """microgpt's model, Adam state and sampler, on scalar Values."""

    def __init__(
        self, config: ModelSize, matrices: Mapping[str, Iterable[Iterable[float]]]
    ) -> None:
        self.config = config
        self.state_dict = {
            name: [[Value(float(x)) for x in row] for row in rows]
            for name, rows in matrices.items()
        }
        self.params = [p for mat in self.state_dict.values() for row in mat for p in row]
        self.m = [0.0] * len(self.params)
        self.v = [0.0] * len(self.params)
        self.steps_done = 0

    def forward(self, token_id: int, pos_id: int, keys: KV, values: KV) -> list[Value]:
        """Logits for the next token; keys and values are this document's per-layer cache."""
        c, sd = self.config, self.state_dict
        x = [t + p for t, p in zip(sd["wte"][token_id], sd["wpe"][pos_id], strict=True)]
        x = rmsnorm(x)
        for li in range(c.n_layer):
            # 1) multi-head attention over the cached positions
            x_residual = x
            x = rmsnorm(x)
            q = linear(x, sd[f"layer{li}.attn_wq"])
            k = linear(x, sd[f"layer{li}.attn_wk"])
            v = linear(x, sd[f"layer{li}.attn_wv"])
            keys[li].append(k)
            values[li].append(v)
            x_attn = []
            for h in range(c.n_head):
                hs = h * c.head_dim
                q_h = q[hs : hs + c.head_dim]
                k_h = [ki[hs : hs + c.head_dim] for ki in keys[li]]
                v_h = [vi[hs : hs + c.head_dim] for vi in values[li]]
                attn_logits = [
                    total(q_h[j] * k_h[t][j] for j in range(c.head_dim)) / c.head_dim**0.5
                    for t in range(len(k_h))
                ]
                attn_weights = softmax(attn_logits)
                head_out = [
                    total(attn_weights[t] * v_h[t][j] for t in range(len(v_h)))
                    for j in range(c.head_dim)
                ]
                x_attn.extend(head_out)
            x = linear(x_attn, sd[f"layer{li}.attn_wo"])
            x = [a + b for a, b in zip(x, x_residual, strict=True)]
            # 2) MLP
            x_residual = x
            x = rmsnorm(x)
            x = linear(x, sd[f"layer{li}.mlp_fc1"])
            x = [xi.relu() for xi in x]
            x = linear(x, sd[f"layer{li}.mlp_fc2"])
            x = [a + b for a, b in zip(x, x_residual, strict=True)]
        return linear(x, sd["lm_head"])

    def doc_loss(self, tokens: list[int]) -> Value:
        """Mean -log p of each next token of one document ([BOS, ..., BOS]), causally."""
        n = min(self.config.block_size, len(tokens) - 1)
        keys: KV = [[] for _ in range(self.config.n_layer)]
        values: KV = [[] for _ in range(self.config.n_layer)]
        losses = []
        for pos_id in range(n):
            token_id, target_id = tokens[pos_id], tokens[pos_id + 1]
            probs = softmax(self.forward(token_id, pos_id, keys, values))
            losses.append(-probs[target_id].log())
        return (1 / n) * total(losses)

    def loss(self, docs: list[list[int]]) -> Value:
        """A batch's loss: the mean of its documents' losses (one document: microgpt's loss)."""
        return (1 / len(docs)) * total(self.doc_loss(d) for d in docs)

    def train_step(self, docs: list[list[int]], lr: float) -> float:
        """One step: loss, backward, Adam with bias correction; returns the loss."""
        loss = self.loss(docs)
        loss.backward()
        self.steps_done += 1
        t = self.steps_done
        for i, p in enumerate(self.params):
            self.m[i] = BETA1 * self.m[i] + (1 - BETA1) * p.grad
            self.v[i] = BETA2 * self.v[i] + (1 - BETA2) * p.grad**2
            m_hat = self.m[i] / (1 - BETA1**t)
            v_hat = self.v[i] / (1 - BETA2**t)
            p.data -= lr * m_hat / (v_hat**0.5 + EPS_ADAM)
            p.grad = 0
        return loss.data

    def sample(self, rng: random.Random, temperature: float) -> list[int]:
        """Draw one document's ids after BOS, stopping at BOS or the block size."""
        c = self.config
        bos = c.vocab_size - 1
        keys: KV = [[] for _ in range(c.n_layer)]
        values: KV = [[] for _ in range(c.n_layer)]
        token_id, out = bos, []
        for pos_id in range(c.block_size):
            logits = self.forward(token_id, pos_id, keys, values)
            probs = softmax([logit / temperature for logit in logits])
            token_id = rng.choices(range(c.vocab_size), weights=[p.data for p in probs])[0]
            if token_id == bos:
                break
            out.append(token_id)
        return out

    def matrices(self) -> dict[str, list[list[float]]]:
        return {name: [[p.data for p in row] for row in m] for name, m in self.state_dict.items()}
