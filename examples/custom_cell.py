"""Your own cell, end to end: write a spec, build it, verify it, train it, analyze it.

The cell is a minimal gated unit (``examples/mgu.yaml``, Zhou et al., 2016): a GRU with a
single forget gate. The script

1. builds it with ``rnngen build examples/mgu.yaml --out OUT/mgu_generated`` (NumPy layer,
   Keras layer, derivation document);
2. checks it with ``rnngen verify examples/mgu.yaml --quick`` (TF autodiff of the same
   equations and finite differences; needs TensorFlow);
3. trains it next to SimpleRNN on the adding problem and writes the comparison report with
   ``rnngen analyze examples/mgu.yaml simple_rnn --train adding --out OUT/report``.

    python examples/custom_cell.py [--out DIR] [--lengths 10,50,100] [--tiny]

``--tiny`` runs everything at a toy size and skips the verifier (CI runs it on its own).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEC = HERE / "mgu.yaml"


def rnngen(*args: str) -> int:
    """Run the rnngen command line in a subprocess, echoing it."""
    print("$ rnngen " + " ".join(args), flush=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "rnngen", *args], env=env).returncode


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("examples-out"))
    parser.add_argument("--lengths", default="10,50,100")
    parser.add_argument("--tiny", action="store_true", help="toy sizes, no verify (CI smoke)")
    args = parser.parse_args(argv)
    out = args.out
    if rnngen("build", str(SPEC), "--out", str(out / "mgu_generated")):
        return 1

    # the generated NumPy layer is an ordinary module: import it and run it
    path = out / "mgu_generated" / "mgu_numpy.py"
    module_spec = importlib.util.spec_from_file_location("mgu_numpy", path)
    mgu = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(mgu)
    import numpy as np

    layer = mgu.MGU(8, return_sequences=True, seed=0)
    y = layer(np.random.default_rng(0).random((2, 5, 3)).astype(np.float32))
    grads = layer.backward(np.ones_like(y))
    print(
        f"MGU(8) on (2, 5, 3) -> {y.shape}; weight gradients "
        f"{ {k: v.shape for k, v in grads.weights.items()} }"
    )

    verified = None
    if args.tiny:
        print("(--tiny: skipping rnngen verify)")
    elif importlib.util.find_spec("tensorflow") is None:
        print("TensorFlow is not installed: skipping rnngen verify")
    else:
        verified = rnngen("verify", str(SPEC), "--quick") == 0

    size = (
        ["--units", "4", "--steps", "10", "--seeds", "1", "--lengths", "4,8", "--train-steps", "20"]
        if args.tiny
        else ["--lengths", args.lengths]
    )
    code = rnngen(
        "analyze", str(SPEC), "simple_rnn", "--train", "adding", *size, "--out", str(out / "report")
    )
    if code:
        return code
    print(f"open {out / 'report' / 'report.html'}")
    if verified is False:
        print("rnngen verify reported a failure: see its table above")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
