"""Optimisers for the generated NumPy layers: Adam (Kingma and Ba, 2015) and plain SGD.

Parameters and gradients are dicts of arrays keyed by name; ``step`` updates the arrays in
place, so a layer's ``weights`` dict can be passed directly.
"""

from __future__ import annotations

import numpy as np


class Adam:
    """``m ← β1 m + (1−β1) g``, ``v ← β2 v + (1−β2) g²``,
    ``p ← p − lr · m̂ / (√v̂ + ε)`` with bias-corrected ``m̂, v̂`` (Keras's defaults)."""

    def __init__(self, lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        self.lr, self.beta_1, self.beta_2, self.epsilon = lr, beta_1, beta_2, epsilon
        self.t = 0
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def step(self, params: dict, grads: dict) -> None:
        self.t += 1
        b1, b2 = self.beta_1, self.beta_2
        lr_t = self.lr * np.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        for name, g in grads.items():
            p = params[name]
            m = self.m.setdefault(name, np.zeros_like(p))
            v = self.v.setdefault(name, np.zeros_like(p))
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= (lr_t * m / (np.sqrt(v) + self.epsilon)).astype(p.dtype)


class SGD:
    """``p ← p − lr · g``."""

    def __init__(self, lr=0.01):
        self.lr = lr

    def step(self, params: dict, grads: dict) -> None:
        for name, g in grads.items():
            params[name] -= (self.lr * g).astype(params[name].dtype)


def global_norm(grads: dict) -> float:
    return float(np.sqrt(sum(float(np.sum(np.square(g))) for g in grads.values())))


def clip(grads: dict, clip_norm: float | None) -> float:
    """Rescale ``grads`` in place to a global norm of at most ``clip_norm``; returns the norm
    before clipping."""
    norm = global_norm(grads)
    if clip_norm is not None and np.isfinite(norm) and norm > clip_norm:
        for g in grads.values():
            g *= clip_norm / norm
    return norm
