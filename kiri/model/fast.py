"""The fast engine: microgpt's mathematics in numpy float64, the default everywhere.

Same parameters, same forward pass and same Adam as the reference (gpt.py), but over a batch of
documents at once: documents are padded to one length and a mask keeps padding out of the loss.
Attention over the whole sequence with a causal mask computes exactly what microgpt's KV cache
does one token at a time. The backward pass is written by hand, and every parameter lives in one
flat vector so that Adam is a handful of vector operations.

Shapes in comments: B documents, T positions, C = n_embd, H heads, D = head_dim, V vocab.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

from kiri.model.size import BETA1, BETA2, EPS_ADAM, EPS_NORM, ModelSize, matrix_shapes

FloatArray: TypeAlias = NDArray[np.float64]
IntArray: TypeAlias = NDArray[np.intp]

# Scoring: each forward pass takes as many documents as keep its attention weights
# (docs x heads x T x T) to about 2 MB, so the temporaries stay in cache; larger chunks win
# alone but lose when two scoring processes share the cache.
SCORE_ATTENTION = 1 << 18  # attention weights per forward pass
SCORE_CHUNK = 256  # and never more documents than this


def _keep_freed_memory() -> None:
    """Every forward pass frees and reallocates the same megabyte-sized temporaries. glibc hands
    such blocks back to the kernel at once, and each reuse then page-faults page by page: over a
    third of the scoring time. Keep freed blocks in the process instead (glibc only)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 64 << 20)
        libc.mallopt(m_trim_threshold, 128 << 20)
    except (OSError, AttributeError):  # not glibc: its allocator makes its own choices
        pass


_keep_freed_memory()


def rmsnorm(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    """x / rms(x) over the last axis; also returns the scale, for the backward pass."""
    ms = np.einsum("...i,...i->...", x, x)[..., None] / x.shape[-1]  # faster than (x*x).mean
    scale: FloatArray = (ms + EPS_NORM) ** -0.5
    return x * scale, scale


def rmsnorm_backward(dy: FloatArray, x: FloatArray, scale: FloatArray) -> FloatArray:
    xdy = np.einsum("...i,...i->...", x, dy)[..., None]
    dx: FloatArray = scale * dy - x * (scale**3 / x.shape[-1] * xdy)
    return dx


def causal_exp(att: FloatArray, causal: FloatArray, lower: FloatArray | None = None) -> FloatArray:
    """exp() of att (..., T, T) under the causal mask (0 or -inf), in place, each row scaled by
    exp(-its max) or not at all: the softmax before its division by the row sums.

    Subtracting each row's max only keeps exp() in range. A caller that knows every score
    already is (|x| < EXP_SAFE) passes the mask as 1/0 `lower` instead: the masked scores are
    then zeroed by a product after exp(), since exp(-inf) takes a slow path several times the
    cost of the others. numpy's reductions along a short contiguous axis are slow, so the row
    max walks it slice by slice.
    """
    if lower is not None:
        np.exp(att, out=att)
        att *= lower
        return att
    att += causal
    top = att[..., 0].copy()
    for s in range(1, att.shape[-1]):
        np.maximum(top, att[..., s], out=top)
    att -= top[..., None]
    return np.exp(att, out=att)


def row_sums(x: FloatArray) -> FloatArray:
    """x.sum(-1), as a product with ones: several times faster along a short last axis."""
    return x @ np.ones(x.shape[-1])


EXP_SAFE = 700.0  # exp(x) neither overflows nor underflows to 0 for |x| below this


def _score_bound(wqkv: FloatArray, H: int, D: int) -> float:
    """An upper bound on every attention score |q . k| / sqrt(D), from the weights alone.

    The attention input is rmsnormed, so its length is at most sqrt(C), and each head's q and k
    are at most that times the Frobenius norm of the head's rows of wq and wk.
    """
    C = wqkv.shape[1]
    norms = np.sqrt(np.einsum("ij,ij->i", wqkv[: 2 * C], wqkv[: 2 * C]).reshape(2, H, D).sum(-1))
    return float((norms[0] * norms[1]).max() * C * D**-0.5)


def log_softmax(logits: FloatArray) -> FloatArray:
    shifted = logits - logits.max(-1, keepdims=True)
    logp: FloatArray = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return logp


def picked_nll(logits: FloatArray, targets: IntArray) -> FloatArray:
    """-log softmax(logits)[target] along the last axis, without the whole log-softmax.

    The log-sum-exp skips the shift by each row's max (a slow reduction along a short axis)
    unless exp() over- or underflowed somewhere; then it is computed again, shifted."""
    picked: FloatArray = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
    with np.errstate(over="ignore", divide="ignore"):
        lse = np.log(row_sums(np.exp(logits)))
    if not np.isfinite(lse).all():
        top = logits.max(-1)
        lse = top + np.log(row_sums(np.exp(logits - top[..., None])))
    return lse - picked


def nll_and_mean(
    logits: FloatArray, targets: IntArray, values: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """picked_nll(), and the mean of values (same shape as logits) under softmax(logits)."""
    top = logits.max(-1, keepdims=True)  # padding slots are -inf: their exp is 0
    e = np.exp(logits - top)
    sums = row_sums(e)
    picked = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
    nll: FloatArray = top[..., 0] + np.log(sums) - picked
    e *= values
    mean: FloatArray = row_sums(e) / sums
    return nll, mean


class _Slots(NamedTuple):
    """restrict_outputs()' tables: slot s at position t is token ids[t, s]; mask[t, s] is 0, or
    -inf for a padding slot of a field with fewer tokens than the widest; first[t] is
    groups[t].start."""

    ids: IntArray  # (T, S)
    mask: FloatArray  # (T, S)
    first: IntArray  # (T,)


class _Layer(NamedTuple):
    """One layer's activations in forward(), as backward() needs them."""

    x_res: FloatArray
    xn: FloatArray
    s1: FloatArray
    q: FloatArray
    k: FloatArray
    v: FloatArray
    att: FloatArray
    y: FloatArray
    x_mid: FloatArray
    xn2: FloatArray
    s2: FloatArray
    a: FloatArray


@dataclass
class Cache:
    """What forward() keeps for backward(): the input ids, the embedding before its rmsnorm
    and the norm's scale, the last layer's output x, and each layer's activations."""

    ids: IntArray
    x_emb: FloatArray
    scale: FloatArray
    x: FloatArray
    layers: list[_Layer]


class FastGPT:
    """microgpt over batches, in numpy: training, scoring and sampling."""

    def __init__(self, config: ModelSize, matrices: Mapping[str, ArrayLike]) -> None:
        self.config = config
        shapes = matrix_shapes(config)
        self.theta = np.concatenate([np.asarray(matrices[n], float).ravel() for n, _ in shapes])
        self.grad = np.zeros_like(self.theta)
        self.m = np.zeros_like(self.theta)
        self.v = np.zeros_like(self.theta)
        self.steps_done = 0
        self.w = self._views(self.theta)
        self.g = self._views(self.grad)
        c = config
        self._causal = np.triu(np.full((c.block_size, c.block_size), -np.inf), 1)  # (T, T)
        self._lower = np.tril(np.ones((c.block_size, c.block_size)))  # the same mask as 1/0
        self._slots: _Slots | None = None

    def restrict_outputs(self, groups: Sequence[range]) -> None:
        """Let position t predict only among the token ids in groups[t].

        An atom's document has a fixed layout: the field at each position is known, so the
        softmax there runs over that field's tokens instead of the whole vocabulary. A trained
        model puts its mass there anyway; restricting it makes every -log p a distribution over
        one field's values, and the output layer costs a field's size instead of the
        vocabulary's. Logits then come in slots: slot s at position t is token
        groups[t].start + s.
        """
        width = max(len(g) for g in groups)
        ids = np.array([[g.start + min(s, len(g) - 1) for s in range(width)] for g in groups])
        mask = np.array([[0.0 if s < len(g) else -np.inf for s in range(width)] for g in groups])
        self._slots = _Slots(ids, mask, np.array([g.start for g in groups]))

    @property
    def slot_width(self) -> int:
        """How many output slots each position has (restrict_outputs() makes them)."""
        return int(self._restricted().ids.shape[1])

    def _restricted(self) -> _Slots:
        """The slot tables, for code that runs only once restrict_outputs() has made them."""
        assert self._slots is not None, "restrict_outputs() makes the slots"
        return self._slots

    def _views(self, flat: FloatArray) -> dict[str, FloatArray]:
        """Named matrix views into a flat vector; wq, wk, wv also as one stacked (3C, C) view."""
        views: dict[str, FloatArray] = {}
        offset = 0
        for name, (rows, cols) in matrix_shapes(self.config):
            views[name] = flat[offset : offset + rows * cols].reshape(rows, cols)
            if name.endswith("attn_wq"):  # wq, wk and wv lie next to each other in the vector
                views[name.replace("wq", "wqkv")] = flat[offset : offset + 3 * rows * cols].reshape(
                    3 * rows, cols
                )
            offset += rows * cols
        return views

    def matrices(self) -> dict[str, FloatArray]:
        return {name: self.w[name].copy() for name, _ in matrix_shapes(self.config)}

    # -- forward -----------------------------------------------------------------------------

    def bounded(self) -> list[bool]:
        """Per layer: do the weights keep every attention score within exp()'s range?"""
        c = self.config
        return [
            _score_bound(self.w[f"layer{li}.attn_wqkv"], c.n_head, c.head_dim) < EXP_SAFE
            for li in range(c.n_layer)
        ]

    def forward(
        self,
        ids: IntArray,
        keep: bool = True,
        bounded: Sequence[bool] | None = None,
        start: tuple[FloatArray, FloatArray] | None = None,
    ) -> tuple[FloatArray, Cache | None]:
        """Logits (B, T, V) for every position of ids (B, T), and what backward() needs.

        keep=False (scoring) keeps nothing for backward, so each temporary is freed at once.
        bounded: self.bounded(), for a caller that runs many forward passes on fixed weights.
        start: layer 0's input x and its q, k, v for ids, looked up (scoring only: keep=False).
        """
        c, w = self.config, self.w
        B, T = ids.shape
        H, D, C = c.n_head, c.head_dim, c.n_embd
        if start is None:
            x_emb = w["wte"][ids]  # (B, T, C)
            x_emb += w["wpe"][:T]
            x, scale = rmsnorm(x_emb)
        else:
            x, qkv0 = start
        layers: list[_Layer] = []
        causal = self._causal[:T, :T]
        for li in range(c.n_layer):
            p = f"layer{li}."
            # 1) attention
            x_res = x
            if li == 0 and start is not None:
                qkv = qkv0
            else:
                xn, s1 = rmsnorm(x)
                qkv = xn.reshape(B * T, C) @ w[p + "attn_wqkv"].T  # (B*T, 3C)
            q, k, v = qkv.reshape(B, T, 3, H, D).transpose(2, 0, 3, 1, 4)  # each (B, H, T, D)
            # (B, H, T, T); gemm on contiguous operands is twice as fast as on strided views,
            # and the contiguous copy of k carries the 1/sqrt(D) in the same pass
            att = q @ np.multiply(k.transpose(0, 1, 3, 2), D**-0.5, out=np.empty((B, H, D, T)))
            in_range = self.bounded()[li] if bounded is None else bounded[li]
            att = causal_exp(att, causal, self._lower[:T, :T] if in_range else None)
            if keep:  # backward needs the attention weights themselves
                att /= row_sums(att)[..., None]
                y = att @ v
            else:  # the same, normalizing D values per row instead of T weights
                y = att @ v
                y /= row_sums(att)[..., None]  # in place: a fresh array costs more
            y = y.transpose(0, 2, 1, 3).reshape(B * T, C)  # heads concatenated in order
            x_mid = (y @ w[p + "attn_wo"].T).reshape(B, T, C)
            x_mid += x_res
            # 2) MLP
            xn2, s2 = rmsnorm(x_mid)
            a = xn2.reshape(B * T, C) @ w[p + "mlp_fc1"].T  # (B*T, 4C)
            np.maximum(a, 0.0, out=a)  # ReLU in place: a fresh array costs more than the max
            x = (a @ w[p + "mlp_fc2"].T).reshape(B, T, C)
            x += x_mid
            if keep:
                layers.append(_Layer(x_res, xn, s1, q, k, v, att, y, x_mid, xn2, s2, a))
        cache = Cache(ids, x_emb, scale, x, layers) if keep else None
        if self._slots is not None:
            slot_ids, mask, _ = self._slots
            head = w["lm_head"][slot_ids[:T]]  # (T, S, C): each position's own output rows
            logits = (x.transpose(1, 0, 2) @ head.transpose(0, 2, 1)).transpose(1, 0, 2)
            if np.isinf(mask[:T]).any():  # some field has fewer tokens than the widest
                logits += mask[:T]
            return logits, cache  # (B, T, S)
        logits = x.reshape(B * T, C) @ w["lm_head"].T
        return logits.reshape(B, T, -1), cache

    def _slot(self, targets: IntArray) -> IntArray:
        """Token ids (B, T) as slots of their positions' groups (0 where out of range: padding)."""
        ids, _, first = self._restricted()
        slot = targets - first[: targets.shape[1]]
        return np.where((slot >= 0) & (slot < ids.shape[1]), slot, 0)

    # -- backward ----------------------------------------------------------------------------

    def backward(self, dlogits: FloatArray, cache: Cache) -> None:
        """Accumulate d(loss)/d(theta) into self.grad, given d(loss)/d(logits) (B, T, V)."""
        c, w, g = self.config, self.w, self.g
        B, T, V = dlogits.shape
        H, D, C = c.n_head, c.head_dim, c.n_embd
        if self._slots is not None:
            ids = self._slots[0][:T]
            dl = dlogits.transpose(1, 0, 2)  # (T, B, S)
            np.add.at(g["lm_head"], ids, dl.transpose(0, 2, 1) @ cache.x.transpose(1, 0, 2))
            dx = (dl @ w["lm_head"][ids]).transpose(1, 0, 2)
        else:
            dl = dlogits.reshape(B * T, V)
            g["lm_head"] += dl.T @ cache.x.reshape(B * T, C)
            dx = (dl @ w["lm_head"]).reshape(B, T, C)
        for li in reversed(range(c.n_layer)):
            p = f"layer{li}."
            x_res, xn, s1, q, k, v, att, y, x_mid, xn2, s2, a = cache.layers[li]
            # 2) MLP: x = fc2(relu(fc1(rmsnorm(x_mid)))) + x_mid
            d2 = dx.reshape(B * T, C)
            g[p + "mlp_fc2"] += d2.T @ a
            dh = (d2 @ w[p + "mlp_fc2"]) * (a > 0)  # relu(h) > 0 exactly where h > 0
            g[p + "mlp_fc1"] += dh.T @ xn2.reshape(B * T, C)
            dxn2 = (dh @ w[p + "mlp_fc1"]).reshape(B, T, C)
            dx = dx + rmsnorm_backward(dxn2, x_mid, s2)
            # 1) attention: x_mid = wo(heads(rmsnorm(x_res))) + x_res
            d1 = dx.reshape(B * T, C)
            g[p + "attn_wo"] += d1.T @ y
            dy = (d1 @ w[p + "attn_wo"]).reshape(B, T, H, D).transpose(0, 2, 1, 3)  # (B,H,T,D)
            datt = dy @ v.transpose(0, 1, 3, 2)  # (B, H, T, T)
            dv = att.transpose(0, 1, 3, 2) @ dy
            datt = att * (datt - (datt * att).sum(-1, keepdims=True)) * D**-0.5
            dq = datt @ k
            dk = datt.transpose(0, 1, 3, 2) @ q
            dqkv = np.stack((dq, dk, dv), 2).transpose(0, 3, 2, 1, 4).reshape(B * T, 3 * C)
            g[p + "attn_wqkv"] += dqkv.T @ xn.reshape(B * T, C)
            dxn = (dqkv @ w[p + "attn_wqkv"]).reshape(B, T, C)
            dx = dx + rmsnorm_backward(dxn, x_res, s1)
        ids, x_emb, scale = cache.ids, cache.x_emb, cache.scale
        demb = rmsnorm_backward(dx, x_emb, scale)  # (B, T, C)
        np.add.at(g["wte"], ids.ravel(), demb.reshape(B * T, C))
        g["wpe"][:T] += demb.sum(0)

    # -- training ----------------------------------------------------------------------------

    def _batch(self, docs: Sequence[Sequence[int]]) -> tuple[IntArray, IntArray, FloatArray]:
        """Inputs (B, T), targets (B, T) and loss weights (B, T), padded to the longest doc."""
        n = [min(self.config.block_size, len(d) - 1) for d in docs]
        T = max(n)
        ids = np.zeros((len(docs), T + 1), dtype=np.intp)
        weights = np.zeros((len(docs), T))
        for b, (doc, nb) in enumerate(zip(docs, n, strict=True)):
            ids[b, : nb + 1] = doc[: nb + 1]
            weights[b, :nb] = 1.0 / (nb * len(docs))  # mean over positions, then over docs
        return ids[:, :-1], ids[:, 1:], weights

    def loss_and_grad(self, docs: Sequence[Sequence[int]]) -> float:
        """The batch loss (mean of document losses); leaves its gradient in self.grad."""
        ids, targets, weights = self._batch(docs)
        logits, cache = self.forward(ids)
        assert cache is not None  # forward() keeps it by default
        if self._slots is not None:
            targets = self._slot(targets)
        logp = log_softmax(logits)  # (B, T, V)
        picked = np.take_along_axis(logp, targets[..., None], -1)[..., 0]
        dlogits = np.exp(logp)  # softmax - onehot(target), weighted
        B, T = targets.shape
        dlogits[np.arange(B)[:, None], np.arange(T), targets] -= 1.0
        dlogits *= weights[..., None]
        self.grad.fill(0.0)
        self.backward(dlogits, cache)
        return float(-(picked * weights).sum())

    def train_step(self, docs: Sequence[Sequence[int]], lr: float) -> float:
        loss = self.loss_and_grad(docs)
        self.steps_done += 1
        t, g = self.steps_done, self.grad
        self.m *= BETA1
        self.m += (1 - BETA1) * g
        self.v *= BETA2
        self.v += (1 - BETA2) * (g * g)
        m_hat = self.m / (1 - BETA1**t)
        v_hat = self.v / (1 - BETA2**t)
        self.theta -= lr * m_hat / (v_hat**0.5 + EPS_ADAM)
        return loss

    # -- scoring and sampling ----------------------------------------------------------------

    def token_nll(self, ids: IntArray, first: int = 1, stop: int | None = None) -> FloatArray:
        """-log p of tokens ids[:, first:stop] given all tokens before them, for many documents.

        ids is (N, L) with every document the same length; the result is (N, stop - first).
        Tokens before `first` (BOS and context tokens) are conditioned on but not scored.
        """
        return self.token_scores(ids, first, stop)[0]

    def token_scores(
        self,
        ids: IntArray,
        first: int = 1,
        stop: int | None = None,
        slot_values: FloatArray | None = None,
        observed: FloatArray | None = None,
    ) -> tuple[FloatArray, FloatArray | None]:
        """token_nll(), and with slot_values (stop - first, S), the value each slot of each
        scored position stands for, and observed (N, stop - first), the values themselves: how
        far each observed value lies from the model's prediction, sum_s p(s) |observed - value
        of s| (restrict_outputs() must have made the slots)."""
        ids = np.asarray(ids, dtype=np.intp)
        stop = ids.shape[1] if stop is None else stop
        out = np.empty((len(ids), stop - first))
        far = None if slot_values is None or observed is None else np.empty_like(out)
        if not len(ids):
            return out, far
        c = self.config
        per_doc = c.n_head * (stop - 1) ** 2
        most = max(1, min(SCORE_CHUNK, SCORE_ATTENTION // per_doc))
        size = -(-len(ids) // -(-len(ids) // most))  # even chunks of at most `most`
        targets, rows = ids[:, first:stop], None
        if self._slots is not None:
            slots = self._slot(ids[:, 1:stop])
            targets = slots[:, first - 1 :]
            rows = self._table_rows(ids[:, : stop - 1], slots[:, :-1])
        table = None if rows is None else self._first_layer_table(stop - 1)
        bounded = self.bounded()
        for lo in range(0, len(ids), size):
            start = (
                None
                if table is None or rows is None
                else self._looked_up(table, rows[lo : lo + size])
            )
            logits, _ = self.forward(
                ids[lo : lo + size, : stop - 1], keep=False, bounded=bounded, start=start
            )
            scored = logits[:, first - 1 :]
            if far is None or slot_values is None or observed is None:
                out[lo : lo + size] = picked_nll(scored, targets[lo : lo + size])
                continue
            out[lo : lo + size], far[lo : lo + size] = nll_and_mean(
                scored,
                targets[lo : lo + size],
                np.abs(observed[lo : lo + size, :, None] - slot_values),
            )
        return out, far

    def _table_rows(self, inputs: IntArray, slots: IntArray) -> IntArray | None:
        """Each input token's row in _first_layer_table, (N, T). None when the documents are no
        more than the slots (building the table would cost more than it saves), or when one
        holds a token outside its position's field."""
        ids, _, _ = self._restricted()
        N, T = inputs.shape
        S = ids.shape[1]
        if N <= S:
            return None
        in_slots = np.c_[np.zeros((N, 1), dtype=np.intp), slots[:, : T - 1]]
        if not (inputs[:, 1:] == ids[: T - 1][np.arange(T - 1), in_slots[:, 1:]]).all():
            return None
        if not (inputs[:, 0] == self.config.vocab_size - 1).all():  # BOS first
            return None
        rows: IntArray = np.arange(T) * S + in_slots
        return rows

    def _first_layer_table(self, T: int) -> FloatArray:
        """Layer 0's input x and q, k, v for every token each of positions 0..T-1 can hold, as
        rows (T * S, 4C): they depend on the position and the token alone, and an atom's
        position holds BOS or one of its field's few tokens."""
        c, w = self.config, self.w
        ids, _, _ = self._restricted()
        S = ids.shape[1]
        inputs = np.vstack([np.full((1, S), c.vocab_size - 1), ids[: T - 1]])  # (T, S)
        x, _ = rmsnorm(w["wte"][inputs] + w["wpe"][:T, None])
        xn, _ = rmsnorm(x)
        qkv = xn.reshape(T * S, -1) @ w["layer0.attn_wqkv"].T
        return np.hstack([x.reshape(T * S, -1), qkv])

    def _looked_up(self, table: FloatArray, rows: IntArray) -> tuple[FloatArray, FloatArray]:
        """forward()'s start for documents whose table rows are rows (B, T): x (B, T, C), and
        q, k, v (B*T, 3C)."""
        C = self.config.n_embd
        found = table[rows.ravel()]
        return found[:, :C].reshape(*rows.shape, C), found[:, C:]

    def next_logits(self, prefix: Sequence[int]) -> FloatArray:
        """Logits (V,) for the token after prefix (-inf for tokens outside its group)."""
        logits, _ = self.forward(np.asarray([prefix], dtype=np.intp))
        if self._slots is None:
            last: FloatArray = logits[0, -1]
            return last
        ids, mask, _ = self._slots
        real = np.isfinite(mask[len(prefix) - 1])  # padding slots repeat a real id: skip them
        full = np.full(self.config.vocab_size, -np.inf)
        full[ids[len(prefix) - 1][real]] = logits[0, -1][real]
        return full

    def sample(self, rng: random.Random, temperature: float) -> list[int]:
        """Draw one document's ids after BOS, with microgpt's draws from rng."""
        c = self.config
        bos = c.vocab_size - 1
        prefix, out = [bos], []
        for _ in range(c.block_size):
            z = self.next_logits(prefix) / temperature
            probs = np.exp(z - z.max())
            probs /= probs.sum()
            token_id = rng.choices(range(c.vocab_size), weights=probs.tolist())[0]
            if token_id == bos:
                break
            out.append(token_id)
            prefix.append(token_id)
        return out
