"""Long-memory tasks: Hochreiter and Schmidhuber's adding problem and the copy task.

Each task draws batches ``(x, y)`` and scores predictions; :mod:`.training` fits a generated
layer plus a linear readout to it.

- ``adding``: ``x`` is ``(B, T, 2)``: a value in U(0, 1) and a marker that is 1 at exactly two
  steps, one in each half of the sequence. The target is the sum of the two marked values,
  read from the last output; squared-error loss. Predicting the mean (1) scores an MSE of
  1/6. Accuracy: the fraction of sums predicted within 0.04. Solved: test MSE below 0.01.
- ``copy``: ``SYMBOLS`` symbols out of ``CATEGORIES``, then ``T`` blanks with a delimiter on
  the last one, then ``SYMBOLS`` blanks during which the outputs must recall the symbols in
  order (one-hot inputs, softmax readout, cross-entropy on the recall steps). Chance accuracy
  is 1/``CATEGORIES``. Solved: recall accuracy of at least 0.95.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SYMBOLS = 5
CATEGORIES = 4


@dataclass(frozen=True)
class Task:
    name: str
    steps: int  # the memory length T

    @property
    def input_dim(self) -> int:
        return 2 if self.name == "adding" else CATEGORIES + 2

    @property
    def output_dim(self) -> int:
        return 1 if self.name == "adding" else CATEGORIES

    @property
    def sequences(self) -> bool:
        """Whether the loss reads every step's output (copy) or the last one (adding)."""
        return self.name == "copy"

    @property
    def baseline(self) -> float:
        """Loss of the best input-blind prediction."""
        return 1 / 6 if self.name == "adding" else float(np.log(CATEGORIES))

    def batch(self, rng, size: int):
        return (
            adding_batch(rng, size, self.steps)
            if self.name == "adding"
            else copy_batch(rng, size, self.steps)
        )

    def loss(self, pred, y):
        """(mean loss, d loss / d pred) for readout outputs ``pred``."""
        return _mse(pred, y) if self.name == "adding" else _recall_xent(pred, y)

    def accuracy(self, pred, y) -> float:
        if self.name == "adding":
            return float(np.mean(np.abs(pred[:, 0] - y[:, 0]) < 0.04))
        recall = pred[:, -SYMBOLS:]
        return float(np.mean(np.argmax(recall, -1) == y))

    def score(self, loss: float, accuracy: float) -> float:
        """What the report plots against the length: for the adding problem the fraction of
        the target's variance explained, ``1 − MSE / (1/6)`` (0: nothing learned beyond the
        mean; solved above ``SOLVED_SCORE``), for the copy task the recall accuracy."""
        return 1 - loss / self.baseline if self.name == "adding" else accuracy

    @property
    def score_label(self) -> str:
        return "1 − MSE / MSE(mean)" if self.name == "adding" else "recall accuracy"

    @property
    def solved_score(self) -> float:
        return 1 - 0.01 / self.baseline if self.name == "adding" else 0.95

    def solved(self, loss: float, accuracy: float) -> bool:
        return loss < 0.01 if self.name == "adding" else accuracy >= 0.95


TASKS = ("adding", "copy")
LENGTHS = (10, 50, 100, 200)


def adding_batch(rng, size: int, steps: int):
    values = rng.uniform(0, 1, (size, steps))
    marks = np.zeros((size, steps))
    half = max(steps // 2, 1)
    first = rng.integers(0, half, size)
    second = rng.integers(half, steps, size) if steps > 1 else first
    rows = np.arange(size)
    marks[rows, first] = 1
    marks[rows, second] = 1
    x = np.stack([values, marks], axis=-1)
    y = (values * marks).sum(axis=1, keepdims=True)
    return x, y


def copy_batch(rng, size: int, steps: int):
    """Inputs one-hot over ``CATEGORIES`` symbols + blank + delimiter; ``y`` (B, SYMBOLS)."""
    y = rng.integers(0, CATEGORIES, (size, SYMBOLS))
    total = SYMBOLS + steps + SYMBOLS
    codes = np.full((size, total), CATEGORIES)  # blank
    codes[:, :SYMBOLS] = y
    codes[:, SYMBOLS + steps - 1] = CATEGORIES + 1  # delimiter: recall starts after it
    x = np.eye(CATEGORIES + 2)[codes]
    return x, y


def _mse(pred, y):
    diff = pred - y
    return float(np.mean(diff * diff)), 2 * diff / diff.size


def _recall_xent(pred, y):
    recall = pred[:, -SYMBOLS:]
    z = recall - recall.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    b, s = y.shape
    picked = p[np.arange(b)[:, None], np.arange(s)[None, :], y]
    loss = float(-np.mean(np.log(np.maximum(picked, 1e-30))))
    d = p
    d[np.arange(b)[:, None], np.arange(s)[None, :], y] -= 1
    d_pred = np.zeros_like(pred)
    d_pred[:, -SYMBOLS:] = d / (b * s)
    return loss, d_pred
