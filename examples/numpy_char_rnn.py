"""min-char-rnn, rebuilt on rnngen: a character-level language model in NumPy only.

Karpathy's min-char-rnn wrote the forward loop and BPTT of a vanilla RNN by hand. Here the
recurrence and its backward pass come from rnngen's generated NumPy layer
(``generated.simple_rnn_numpy.SimpleRNN``, or any other cell with ``--cell``), with a softmax
readout and the project's Adam (``rnngen.analyze.optim``). Training reads the text in chunks of
``--seq-length`` characters and carries the state from chunk to chunk (truncated BPTT), as
min-char-rnn does; every ``--sample-every`` iterations it prints the smoothed loss and a sample.

The text is ``examples/data/sonnets.txt`` (four of Shakespeare's sonnets, public domain).

    python examples/numpy_char_rnn.py [--cell simple_rnn|gru|lstm] [--iterations N] [--tiny]
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the checkout's generated/ and rnngen, from any folder

from rnngen.analyze.blas import single_threaded  # noqa: E402
from rnngen.analyze.optim import Adam, clip  # noqa: E402

TEXT = HERE / "data" / "sonnets.txt"


def layer_class(cell: str):
    module = importlib.import_module(f"generated.{cell}_numpy")
    return getattr(module, module.__all__[0]), module.STATES


class CharRNN:
    """One-hot characters -> generated recurrent layer -> softmax over the vocabulary."""

    def __init__(self, vocab: int, hidden: int, cell: str, seed: int = 0):
        cls, states = layer_class(cell)
        self.layer = cls(hidden, return_sequences=True, return_state=True, seed=seed)
        self.layer.build(vocab)
        self.n_states = len(states)
        rng = np.random.default_rng(seed)
        self.readout = {
            "kernel": (rng.standard_normal((hidden, vocab)) * 0.01).astype(np.float32),
            "bias": np.zeros(vocab, np.float32),
        }
        self.vocab, self.hidden = vocab, hidden

    @property
    def params(self):
        return {
            **{f"rnn/{k}": v for k, v in self.layer.weights.items()},
            **{f"out/{k}": v for k, v in self.readout.items()},
        }

    def zero_state(self):
        return [np.zeros((1, self.hidden), np.float32) for _ in range(self.n_states)]

    def step(self, codes, state):
        """(probabilities (T, vocab), next state) for the characters ``codes``."""
        x = np.eye(self.vocab, dtype=np.float32)[codes][None]
        seq, *state = self.layer(x, initial_state=state)
        logits = seq[0] @ self.readout["kernel"] + self.readout["bias"]
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True), state, seq[0]

    def loss_and_grads(self, inputs, targets, state):
        p, state, h = self.step(inputs, state)
        loss = float(-np.sum(np.log(p[np.arange(len(targets)), targets])))
        d_logits = p.copy()
        d_logits[np.arange(len(targets)), targets] -= 1  # softmax + cross-entropy
        grads = {"out/kernel": h.T @ d_logits, "out/bias": d_logits.sum(axis=0)}
        d_seq = (d_logits @ self.readout["kernel"].T)[None]
        grads.update({f"rnn/{k}": g for k, g in self.layer.backward(d_seq).weights.items()})
        return loss, grads, state

    def sample(self, state, first: int, n: int, rng) -> list[int]:
        out, code = [], first
        for _ in range(n):
            p, state, _ = self.step([code], state)
            q = p[0].astype(np.float64)
            code = int(rng.choice(self.vocab, p=q / q.sum()))
            out.append(code)
        return out


def train(
    text: str,
    *,
    cell="simple_rnn",
    hidden=100,
    seq_length=25,
    iterations=3000,
    lr=5e-3,
    sample_every=500,
    sample_length=200,
    seed=0,
    log=print,
) -> dict:
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = np.array([index[c] for c in text])
    model = CharRNN(len(chars), hidden, cell, seed)
    opt = Adam(lr)
    rng = np.random.default_rng(seed)
    smooth = -np.log(1.0 / len(chars)) * seq_length  # loss of a uniform guess, per chunk
    losses, samples = [], []
    pos, state = 0, model.zero_state()
    for it in range(1, iterations + 1):
        if pos + seq_length + 1 > len(data):
            pos, state = 0, model.zero_state()  # back to the start of the text
        inputs, targets = data[pos : pos + seq_length], data[pos + 1 : pos + seq_length + 1]
        loss, grads, state = model.loss_and_grads(inputs, targets, state)
        clip(grads, 5.0)
        opt.step(model.params, grads)
        smooth = 0.99 * smooth + 0.01 * loss
        losses.append(loss / seq_length)
        pos += seq_length
        if it % sample_every == 0 or it == iterations:
            codes = model.sample(state, int(inputs[-1]), sample_length, rng)
            text_out = "".join(chars[c] for c in codes)
            samples.append(text_out)
            log(
                f"iteration {it}: smoothed loss {smooth / seq_length:.3f} nats/char\n"
                f"----\n{text_out}\n----"
            )
    return {"losses": losses, "samples": samples, "vocab": len(chars)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="simple_rnn", choices=["simple_rnn", "gru", "lstm"])
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--tiny", action="store_true", help="a few iterations (CI smoke test)")
    args = parser.parse_args(argv)
    text = TEXT.read_text(encoding="utf-8")
    with single_threaded():  # small matrices: one BLAS thread is much faster
        return report(text, args)


def report(text: str, args) -> int:
    if args.tiny:
        out = train(
            text, cell=args.cell, hidden=16, iterations=20, sample_every=20, sample_length=40
        )
    else:
        out = train(text, cell=args.cell, hidden=args.hidden, iterations=args.iterations)
    first, last = np.mean(out["losses"][:10]), np.mean(out["losses"][-10:])
    print(
        f"{out['vocab']} characters; loss {first:.3f} -> {last:.3f} nats/char "
        f"(uniform guess: {np.log(out['vocab']):.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
