"""Row-wise operations in the spec language: ``sum``/``mean`` across the units axis (broadcast
back), ``sqrt`` and ``log``, and the layer-normalised LSTM built from them.

Each cell is checked by the verifier's independent oracle: its TensorFlow interpreter of the
parsed equations (``tf.reduce_sum``/``tf.reduce_mean`` for the reductions), differentiated by
``tf.GradientTape`` in float64, against the generated NumPy layer (float64) and both TF
implementations (loop and fused), forward values and every gradient, over the quick
configuration matrix. Tolerances (float64): forward 1e-10, gradients 1e-8 relative.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from helpers import assert_autodiff_passes

from rnngen import codegen, spec

SPECS = Path(__file__).parent / "specs"

HEADER = """\
name: {name}
class_name: {cls}
weights:
  kernel: {{shape: [input_dim, units], initializer: glorot_uniform}}
  recurrent_kernel: {{shape: [units, units], initializer: orthogonal}}
  bias: {{shape: [units], initializer: random_normal}}
states: [h]
step:
"""

CELLS = {
    # a sum of a state, of a product, of x (the left side of a product), of a weight alone
    "row_sum": """\
  xc: (x - 0.5 * sum(x * x)) @ kernel
  h: tanh(xc + h_prev @ recurrent_kernel - 0.1 * sum(h_prev * h_prev) + sum(bias) * bias)
""",
    # nested means, a mean inside a function call and of an intermediate
    "row_mean": """\
  a: h_prev @ recurrent_kernel
  h: tanh(x @ kernel + a - mean(a * mean(tanh(a) + h_prev)) + bias)
""",
    # sqrt on a >= 0 (1 + h^2 > 0), at the top of a product's left side
    "sqrt_cell": """\
  h: tanh(x @ kernel + sqrt(1 + h_prev * h_prev) @ recurrent_kernel + bias)
""",
    # max/min of two tensors and of a tensor and a number (kinks: the winner's derivative)
    "extrema": """\
  a: h_prev @ recurrent_kernel
  h: tanh(max(x @ kernel, a) + min(a, 0.5 * h_prev) + max(h_prev, 0) * bias)
""",
    # softmax and log-softmax written in equations (shifted by the row mean, which softmax
    # ignores; the shift is differentiated exactly, its contributions cancel)
    "softmax_eq": """\
  a: x @ kernel + h_prev @ recurrent_kernel + bias
  e: exp(a - mean(a))
  h: tanh(e / sum(e) + 0.1 * (a - log(sum(exp(a)))))
""",
    # log on a > 0, with a mean inside it
    "log_cell": """\
  h: tanh(x @ kernel + h_prev @ recurrent_kernel + log(1 + mean(h_prev * h_prev)) * bias)
""",
}


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _spec(name: str) -> str:
    cls = "".join(p.title() for p in name.split("_"))
    return HEADER.format(name=name, cls=cls) + CELLS[name]


@pytest.mark.tf
@pytest.mark.parametrize("name", sorted(CELLS))
def test_rowwise_cell_matches_autodiff(tmp_path, name):
    assert_autodiff_passes(_write(tmp_path, name, _spec(name)))


@pytest.mark.tf
def test_layer_norm_lstm_matches_autodiff():
    assert_autodiff_passes(SPECS / "layer_norm_lstm.yaml")


def test_reductions_are_statements_of_their_own():
    """``mean`` is a forward statement of its own (NumPy ``np.mean(.., keepdims=True)``
    broadcast back; TF ``tf.reduce_mean``); its VJP is the same reduction of the adjoint."""
    from rnngen import symbolic
    from rnngen.grammar import RowMean

    cs = spec.parse(_spec("row_mean"), "<test>")
    v = symbolic.derive(cs).variants[0]
    means = [st for st in v.forward if isinstance(st, symbolic.Assign) and st.expr.func is RowMean]
    assert len(means) == 2  # mean(tanh(a) + h_prev) and the outer mean
    assert all(st.expr.args[0].is_Symbol for st in means)  # each reads one named value
    reads = [st for st in v.backward if isinstance(st, symbolic.Assign) and st.expr.atoms(RowMean)]
    assert reads, "the backward applies mean() to an adjoint"
    assert all(str(m.args[0]).startswith("d_") for st in reads for m in st.expr.atoms(RowMean))
    files = codegen.render(cs, "row_mean.yaml")
    assert "np.mean(" in files["row_mean_numpy.py"]
    assert "tf.reduce_mean(" in files["row_mean_tf.py"]
    assert "np.mean(" not in files["row_mean_tf.py"]
    assert r"\operatorname{mean}_{j}" in files["row_mean.md"]


def test_extrema_derivatives_go_to_the_winner_ties_to_the_first():
    """As TF's gradients of tf.maximum/tf.minimum: d max(a, b)/da = [a >= b], /db = [a < b];
    d min(a, b)/da = [a <= b], /db = [a > b] (a tie gives everything to the first)."""
    import numpy as np
    import sympy as sp

    from rnngen.grammar import Maximum, Minimum, symbol

    a, b = symbol("a"), symbol("b")
    av, bv = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 1.0])
    want = {
        (Maximum, a): [0, 1, 1],
        (Maximum, b): [1, 0, 0],
        (Minimum, a): [1, 1, 0],
        (Minimum, b): [0, 0, 1],
    }
    for (f, var), expected in want.items():
        code = codegen.py(sp.diff(f(a, b), var))
        got = eval(code, {"np": np, "a": av, "b": bv})  # noqa: S307 - our own printed code
        assert list(got) == expected, (f.__name__, var, code)


def test_sqrt_and_log_are_table_functions():
    from rnngen import functions

    assert "sqrt" in functions.TABLE and "log" in functions.TABLE
    assert "sqrt" not in functions.UNSUPPORTED and "log" not in functions.UNSUPPORTED
