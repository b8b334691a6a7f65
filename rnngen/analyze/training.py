"""Memory over training: fit a generated NumPy layer plus a linear readout to a task.

The model is ``pred = layer(x) @ W + b`` (the last output for the adding problem, every
step's output for the copy task). Gradients come from the layer's generated ``backward``;
the parameters are updated by :class:`~.optim.Adam`, with the global gradient norm clipped.
Also the clipping experiment of part 4: plain SGD on an exploding configuration, with and
without ``clip_norm``.
"""

from __future__ import annotations

import numpy as np

from .blas import single_threaded
from .cells import DEFAULT, Cell, Variant
from .optim import SGD, Adam, clip
from .tasks import Task


class Model:
    def __init__(
        self,
        cell: Cell,
        task: Task,
        units: int,
        *,
        seed: int,
        variant: Variant = DEFAULT,
        dtype="float32",
    ):
        self.task = task
        self.layer = cell.layer(
            units,
            variant,
            seed=seed,
            dtype=dtype,
            input_dim=task.input_dim,
            return_sequences=task.sequences,
        )
        rng = np.random.default_rng([seed, 4])
        limit = np.sqrt(6 / (units + task.output_dim))
        self.readout = {
            "kernel": rng.uniform(-limit, limit, (units, task.output_dim)).astype(dtype),
            "bias": np.zeros(task.output_dim, dtype),
        }
        self.dtype = np.dtype(dtype)

    @property
    def params(self) -> dict:
        out = {f"rnn/{k}": v for k, v in self.layer.weights.items()}
        out.update({f"readout/{k}": v for k, v in self.readout.items()})
        return out

    def predict(self, x):
        h = self.layer(np.asarray(x, self.dtype))
        self._h = h
        return h @ self.readout["kernel"] + self.readout["bias"]

    def loss_and_grads(self, x, y):
        """(loss, gradients keyed like :attr:`params`)."""
        with np.errstate(all="ignore"):
            pred = self.predict(x)
            loss, d_pred = self.task.loss(pred, y)
            d_pred = d_pred.astype(self.dtype)
            h = self._h
            w = self.readout["kernel"]
            grads = {
                "readout/kernel": h.reshape(-1, h.shape[-1]).T @ d_pred.reshape(-1, w.shape[1]),
                "readout/bias": d_pred.reshape(-1, w.shape[1]).sum(axis=0),
            }
            layer_grads = self.layer.backward(d_pred @ w.T)
        grads.update({f"rnn/{k}": g for k, g in layer_grads.weights.items()})
        return loss, grads


def train(*args, **kwargs) -> dict:
    """:func:`train_run` with BLAS limited to one thread (see :mod:`.blas`)."""
    with single_threaded():
        return train_run(*args, **kwargs)


def train_run(
    cell: Cell,
    task: Task,
    *,
    units=32,
    steps=1000,
    batch=32,
    lr=1e-2,
    clip_norm=1.0,
    seed=0,
    eval_every=50,
    test_size=256,
    stop_when_solved=True,
    tick=None,
) -> dict:
    """Adam on fresh batches; evaluates on a fixed test batch every ``eval_every`` steps.

    Returns the training-loss curve, the evaluations, the final test loss and accuracy, and
    whether (and at which step) the task was solved (see :mod:`.tasks`)."""
    model = Model(cell, task, units, seed=seed)
    rng = np.random.default_rng([seed, 5, task.steps])
    x_test, y_test = task.batch(np.random.default_rng([seed, 6, task.steps]), test_size)
    opt = Adam(lr)
    losses, evals = [], []
    solved_at = None
    for step in range(1, steps + 1):
        x, y = task.batch(rng, batch)
        loss, grads = model.loss_and_grads(x, y)
        losses.append(loss)
        if not np.isfinite(loss):
            break
        clip(grads, clip_norm)
        opt.step(model.params, grads)
        if step % eval_every == 0 or step == steps:
            with np.errstate(all="ignore"):
                pred = model.predict(x_test)
            test_loss, _ = task.loss(pred, y_test)
            acc = task.accuracy(pred, y_test)
            evals.append({"step": step, "loss": test_loss, "accuracy": acc})
            if tick:
                tick()
            if task.solved(test_loss, acc) and solved_at is None:
                solved_at = step
                if stop_when_solved:
                    break
    last = evals[-1] if evals else {"step": 0, "loss": float("nan"), "accuracy": 0.0}
    return {
        "task": task.name,
        "length": task.steps,
        "train_loss": losses,
        "evals": evals,
        "test_loss": last["loss"],
        "accuracy": last["accuracy"],
        "score": task.score(last["loss"], last["accuracy"]),
        "solved": solved_at is not None,
        "solved_at": solved_at,
        "baseline": task.baseline,
    }


def memory_over_training(cells, task_name: str, lengths, *, tick=None, **kwargs) -> dict:
    """``{cell name: {length: train(...)}}``."""
    out = {}
    for cell in cells:
        out[cell.name] = {T: train(cell, Task(task_name, T), tick=tick, **kwargs) for T in lengths}
    return out


def longest_solved(results: dict) -> int | None:
    """The longest length solved, or None."""
    solved = [T for T, r in results.items() if r["solved"]]
    return max(solved) if solved else None


def clipping_demo(
    cell: Cell,
    variant: Variant,
    *,
    units=32,
    length=50,
    steps=60,
    batch=32,
    lr=0.05,
    clip_norm=1.0,
    seed=0,
) -> dict:
    """Plain SGD on the adding problem from one exploding initialisation, with and without
    ``clip_norm``: the training loss and the gradient norm before clipping, per step
    (NaN once the run has diverged)."""
    task = Task("adding", length)
    out = {"variant": variant.label, "clip_norm": clip_norm, "lr": lr}
    for label, c in (("unclipped", None), ("clipped", clip_norm)):
        model = Model(cell, task, units, seed=seed, variant=variant, dtype="float64")
        rng = np.random.default_rng([seed, 7])
        opt = SGD(lr)
        losses, norms = [], []
        for _ in range(steps):
            x, y = task.batch(rng, batch)
            loss, grads = model.loss_and_grads(x, y)
            norm = clip(grads, c)
            if not (np.isfinite(loss) and np.isfinite(norm)):
                losses += [float("nan")] * (steps - len(losses))
                norms += [float("nan")] * (steps - len(norms))
                break
            losses.append(loss)
            norms.append(norm)
            with np.errstate(all="ignore"):
                opt.step(model.params, grads)
        out[label] = {"loss": losses, "grad_norm": norms}
    return out
