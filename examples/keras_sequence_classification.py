"""Digits as sequences: the generated TF SimpleRNN against keras.layers.SimpleRNN in ``fit``.

scikit-learn's handwritten digits (1797 images of 8×8 pixels, shipped inside the package, no
download) are read row by row: 8 steps of 8 features, 10 classes. The same model is built
twice, once with ``keras.layers.SimpleRNN`` and once with rnngen's generated
``generated.simple_rnn_tf.SimpleRNN``; the second gets the first's initial weights, both see
the same batches in the same order (``shuffle=False`` on one pre-shuffled copy), dropout is 0.
A callback records the loss of every optimiser step. Float32 rounding differs between the two
implementations, so the curves agree closely at first and drift apart eventually; the script
reports for how many steps they agree within ``--rtol`` and plots both curves.

    python examples/keras_sequence_classification.py [--epochs 10] [--out DIR] [--tiny]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

UNITS = 32
BATCH = 32


def load_digits(seed: int = 0):
    """(x (1797, 8, 8) in [0, 1], labels), shuffled once with ``seed``."""
    from sklearn.datasets import load_digits as sk_digits

    data = sk_digits()
    x = (data.images / 16.0).astype(np.float32)
    y = data.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order], y[order]


def build(layer_cls, seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((8, 8)),
            layer_cls(UNITS, dropout=0.0, recurrent_dropout=0.0),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    return model


def _recorder():
    import keras

    class StepLosses(keras.callbacks.Callback):
        """Each optimiser step's own batch loss: the running mean is reset after reading."""

        def __init__(self):
            super().__init__()
            self.losses = []

        def on_train_batch_end(self, batch, logs=None):
            self.losses.append(float(logs["loss"]))
            self.model.reset_metrics()

    return StepLosses()


def train_both(x, y, *, epochs: int, lr: float = 1e-2, seed: int = 0, max_steps=None):
    """Loss per optimiser step for (keras.layers.SimpleRNN, generated SimpleRNN), and the two
    models' final accuracies on the held-out quarter."""
    import keras

    from generated.simple_rnn_tf import SimpleRNN

    split = len(x) * 3 // 4
    if max_steps is not None:  # a smaller training set: exactly max_steps steps per epoch
        split = min(split, max_steps * BATCH)
    x_train, y_train, x_test, y_test = x[:split], y[:split], x[split:], y[split:]
    reference = build(keras.layers.SimpleRNN, seed)
    ours = build(SimpleRNN, seed)
    ours.set_weights(reference.get_weights())  # the same initial weights
    curves, accuracy = {}, {}
    for name, model in (("keras", reference), ("rnngen", ours)):
        model.compile(
            optimizer=keras.optimizers.Adam(lr),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        rec = _recorder()
        model.fit(
            x_train,
            y_train,
            batch_size=BATCH,
            epochs=epochs,
            shuffle=False,
            callbacks=[rec],
            verbose=0,
        )
        curves[name] = np.array(rec.losses)
        accuracy[name] = float(model.evaluate(x_test, y_test, verbose=0)[1])
    return curves, accuracy


def agreement(curves, rtol: float) -> int:
    """Number of leading steps whose losses agree within ``rtol`` (relative)."""
    a, b = curves["keras"], curves["rnngen"]
    bad = np.abs(a - b) > rtol * np.maximum(np.abs(a), 1e-12)
    return int(np.argmax(bad)) if bad.any() else len(a)


def plot(curves, path: Path, together: int) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, (ax, dx) = plt.subplots(1, 2, figsize=(11, 3.6))
    steps = np.arange(1, len(curves["keras"]) + 1)
    ax.plot(steps, curves["keras"], label="keras.layers.SimpleRNN", lw=2.2, alpha=0.6)
    ax.plot(steps, curves["rnngen"], label="generated SimpleRNN (rnngen)", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("batch loss")
    ax.set_title("digits as 8 steps × 8 features, same weights and batches")
    ax.legend()
    diff = np.abs(curves["keras"] - curves["rnngen"]) / np.abs(curves["keras"])
    dx.plot(steps, np.maximum(diff, 1e-10))
    dx.axvline(together, color="grey", ls=":", label=f"together for {together} steps")
    dx.set_yscale("log")
    dx.set_xlabel("optimiser step")
    dx.set_ylabel("|loss difference| / loss")
    dx.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rtol", type=float, default=1e-3)
    parser.add_argument("--out", type=Path, default=Path("examples-out"))
    parser.add_argument("--tiny", action="store_true", help="a few steps (CI smoke test)")
    args = parser.parse_args(argv)
    x, y = load_digits()
    epochs, max_steps = (1, 5) if args.tiny else (args.epochs, None)
    curves, accuracy = train_both(x, y, epochs=epochs, max_steps=max_steps)
    together = agreement(curves, args.rtol)
    n = len(curves["keras"])
    first = min(100, n)
    worst = float(
        np.max(np.abs(curves["keras"][:first] - curves["rnngen"][:first]) / curves["keras"][:first])
    )
    print(
        f"{n} optimiser steps; the loss curves agree within {args.rtol:g} (relative) for "
        f"the first {together} steps; over the first {first}, the largest relative "
        f"difference is {worst:.2e}"
    )
    print(f"test accuracy: keras {accuracy['keras']:.3f}, rnngen {accuracy['rnngen']:.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    plot(curves, args.out / "keras_vs_rnngen_digits.png", together)
    print(f"wrote {args.out / 'keras_vs_rnngen_digits.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
