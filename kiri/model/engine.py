"""A scalar value with reverse-mode autograd: the engine of the reference GPT (gpt.py).

Each operation builds its output together with the local gradient with respect to each input;
backward() orders the graph topologically and walks it in reverse, applying the chain rule.
"""

from __future__ import annotations

import math


class Value:
    __slots__ = ("_children", "_local_grads", "data", "grad")

    def __init__(
        self, data: float, children: tuple[Value, ...] = (), local_grads: tuple[float, ...] = ()
    ) -> None:
        self.data = data
        self.grad = 0.0
        self._children = children
        self._local_grads = local_grads

    def __add__(self, other: Value | float) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data + other.data, (self, other), (1, 1))

    def __mul__(self, other: Value | float) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data * other.data, (self, other), (other.data, self.data))

    def __pow__(self, other: float) -> Value:
        return Value(self.data**other, (self,), (other * self.data ** (other - 1),))

    def log(self) -> Value:
        return Value(math.log(self.data), (self,), (1 / self.data,))

    def exp(self) -> Value:
        e = math.exp(self.data)
        return Value(e, (self,), (e,))

    def relu(self) -> Value:
        return Value(max(0, self.data), (self,), (float(self.data > 0),))

    def __neg__(self) -> Value:
        return self * -1

    def __radd__(self, other: float) -> Value:
        return self + other

    def __sub__(self, other: Value | float) -> Value:
        return self + (-other)

    def __rsub__(self, other: float) -> Value:
        return other + (-self)

    def __rmul__(self, other: float) -> Value:
        return self * other

    def __truediv__(self, other: Value | float) -> Value:
        return self * other**-1

    def __rtruediv__(self, other: float) -> Value:
        return other * self**-1

    def __repr__(self) -> str:
        return f"Value(data={self.data}, grad={self.grad})"

    def backward(self) -> None:
        topo: list[Value] = []
        visited: set[int] = set()
        stack: list[tuple[Value, bool]] = [(self, False)]
        while stack:  # iterative post-order: a deep graph must not hit the recursion limit
            v, expanded = stack.pop()
            if expanded:
                topo.append(v)
            elif id(v) not in visited:
                visited.add(id(v))
                stack.append((v, True))
                # reversed, so children are visited first to last as a recursive walk would
                stack.extend((c, False) for c in reversed(v._children))
        self.grad = 1.0
        for v in reversed(topo):
            for child, local in zip(v._children, v._local_grads, strict=True):
                child.grad += local * v.grad
