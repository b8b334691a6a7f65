"""rnngen analyze: analysis numbers against cases with a known answer, the report, training.

Tolerances are written in each test. The analytic oracles: a linear SimpleRNN with
W = g·orthogonal, whose ‖∂h_T/∂h_t‖ and ‖∂L/∂h_t‖ are exactly g^(T−t) times their value at
t = T; a diagonal (IndRNN-like) cell, whose Jacobian product is a diagonal computed here
independently of the generated code.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest

from rnngen.analyze import gradients, spectra
from rnngen.analyze.cells import DEFAULT, Variant, gate_matrices, load_cells
from rnngen.analyze.optim import Adam, clip
from rnngen.analyze.tasks import CATEGORIES, SYMBOLS, Task, adding_batch, copy_batch
from rnngen.analyze.training import Model, clipping_demo, train
from rnngen.cli import main, resolve_specs

EXACT = 1e-10  # float64 analytic cases: relative error of every point
IND_RNN = """\
name: ind_rnn
class_name: IndRNN
doc: Independently recurrent units (Li et al., 2018), an elementwise recurrent weight.
options: {activation: tanh}
weights:
  kernel: {shape: [input_dim, units], initializer: glorot_uniform}
  recurrent_kernel: {shape: [units], initializer: ones, argument: recurrent}
  bias: {shape: [units], initializer: zeros}
states: [h]
dropout: {x: dropout, h_prev: recurrent_dropout}
step:
  h: activation(x @ kernel + recurrent_kernel * h_prev + bias)
"""


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    spec = tmp_path_factory.mktemp("specs") / "ind_rnn.yaml"
    spec.write_text(IND_RNN)
    with contextlib.ExitStack() as stack:
        loaded = load_cells(resolve_specs(("simple_rnn", "gru", "lstm", str(spec))), stack)
        yield {c.name: c for c in loaded}


SIZE = dict(steps=30, input_dim=3, batch=3)


# -- part 1: gradient flow ---------------------------------------------------------------------


@pytest.mark.parametrize("gain", [0.5, 1.0, 1.5])
@pytest.mark.parametrize("units", [6, 70])  # exact Jacobian, and Gaussian probes (U > 64)
def test_linear_orthogonal_rnn_decays_by_exactly_g_per_step(cells, gain, units):
    variant = Variant(activation="linear", gain=gain)
    expected = gain ** np.arange(SIZE["steps"] + 1)
    for seed in range(2):
        loss = gradients.loss_curve(cells["simple_rnn"], variant, units=units, seed=seed, **SIZE)
        np.testing.assert_allclose(loss, expected, rtol=EXACT)
        jac = gradients.jacobian_curve(cells["simple_rnn"], variant, units=units, seed=seed, **SIZE)
        if units <= gradients.EXACT_UNITS:
            np.testing.assert_allclose(jac, expected, rtol=EXACT)
        else:  # Gaussian probes: an unbiased estimate of ‖J‖_F² / U; Q^k keeps every norm
            ratio = jac[1:] / expected[1:]
            np.testing.assert_allclose(ratio, ratio[0], rtol=EXACT)
            assert abs(ratio[0] - 1) < 0.1
        assert gradients.fit_rate(jac) == pytest.approx(gain, rel=EXACT)
        assert gradients.fit_rate(loss) == pytest.approx(gain, rel=EXACT)


def _with_recurrent(cell, u):
    """The cell, making layers whose elementwise recurrent weight is ``u``."""
    original = cell.layer

    def layer(*args, **kwargs):
        out = original(*args, **kwargs)
        out.weights["recurrent_kernel"] = np.array(u, dtype=out.dtype)
        return out

    return layer


@pytest.mark.parametrize("activation", ["linear", "tanh"])
def test_diagonal_cell_jacobian_matches_independent_product(cells, monkeypatch, activation):
    """IndRNN: ∂h_T/∂h_t = Π diag(u · act'(pre)), computed here by an independent loop."""
    cell = cells["ind_rnn"]
    units, steps, input_dim, batch = 5, 25, 3, 2
    u = np.array([0.3, 0.6, 0.9, 1.0, 1.2])
    monkeypatch.setattr(cell, "layer", _with_recurrent(cell, u))
    variant = Variant(activation=activation)
    curve = gradients.jacobian_curve(
        cell, variant, units=units, steps=steps, input_dim=input_dim, batch=batch, seed=0
    )
    # the same inputs and weights, then the recurrence written out by hand
    rng = np.random.default_rng([0, 2])
    x = gradients.random_inputs(rng, batch, steps, input_dim)
    layer = cell.layer(units, variant, seed=0, input_dim=input_dim)
    kernel, bias = layer.weights["kernel"], layer.weights["bias"]
    h = np.zeros((batch, units))
    derivs = []
    for t in range(steps):
        pre = x[:, t] @ kernel + u * h + bias
        h = pre if activation == "linear" else np.tanh(pre)
        derivs.append(u * (np.ones_like(h) if activation == "linear" else 1 - h * h))
    expected = [1.0]
    prod = np.ones((batch, units))
    for t in range(steps - 1, -1, -1):
        prod = prod * derivs[t]  # row b: diagonal of ∂h_T/∂h_t for sequence b
        expected.append(np.sqrt(np.mean(prod**2)))
    np.testing.assert_allclose(curve, expected, rtol=EXACT)
    if activation == "linear":  # ‖diag(u)^d‖_F / √U
        np.testing.assert_allclose(
            curve,
            np.sqrt(np.mean(u[None] ** (2 * np.arange(steps + 1)[:, None]), axis=1)),
            rtol=EXACT,
        )


def test_diagonal_cell_spectrum_is_its_weight(cells):
    cell = cells["ind_rnn"]
    layer = cell.layer(4, Variant(gain=0.7), seed=0, input_dim=2)
    ((name, m),) = gate_matrices(cell, layer).items()
    s = spectra.spectrum(m)
    assert s["spectral_radius"] == pytest.approx(0.7, rel=1e-12)  # ones · gain
    np.testing.assert_allclose(s["singular_values"], 0.7, rtol=1e-12)


@pytest.mark.parametrize("gain", [0.5, 1.5])
def test_orthogonal_spectrum_is_gain(cells, gain):
    out = spectra.cell_spectra(
        cells["simple_rnn"], Variant(gain=gain), units=8, input_dim=3, seeds=2
    )
    s = out["recurrent_kernel"]
    assert s["spectral_radius"] == pytest.approx(gain, rel=1e-10)
    np.testing.assert_allclose(np.abs(s["eigenvalues"]), gain, rtol=1e-10)
    np.testing.assert_allclose(s["singular_values"], gain, rtol=1e-10)


def test_fused_kernels_split_per_gate(cells):
    for name, gates in (("gru", "zrh"), ("lstm", "ifco")):
        cell = cells[name]
        layer = cell.layer(4, seed=0, input_dim=3)
        blocks = gate_matrices(cell, layer)
        assert list(blocks) == [f"recurrent_kernel_{g}" for g in gates]
        np.testing.assert_array_equal(
            np.hstack(list(blocks.values())), layer.weights["recurrent_kernel"]
        )


def test_variants_change_what_they_name(cells):
    cell = cells["simple_rnn"]
    base = cell.layer(6, seed=3, input_dim=2)
    doubled = cell.layer(6, Variant(gain=2.0), seed=3, input_dim=2)
    np.testing.assert_allclose(
        doubled.weights["recurrent_kernel"], 2 * base.weights["recurrent_kernel"], rtol=1e-15
    )
    np.testing.assert_array_equal(doubled.weights["kernel"], base.weights["kernel"])
    glorot = cell.layer(6, Variant(init="glorot_uniform"), seed=3, input_dim=2)
    assert glorot.recurrent_initializer == "glorot_uniform"
    assert cell.layer(6, Variant(activation="relu"), seed=3, input_dim=2).activation == "relu"
    assert not cells["ind_rnn"].applicable(Variant(init="glorot_uniform"))  # a vector


def test_fit_rate_ignores_underflow_and_needs_two_points():
    curve = np.array([1.0, 0.5, 0.25, 0.0, 0.0])
    assert gradients.fit_rate(curve) == pytest.approx(0.5, rel=1e-12)
    assert np.isnan(gradients.fit_rate(np.array([1.0, 0.0, np.inf])))


# -- part 4: truncation --------------------------------------------------------------------------


def test_truncation_error_vanishes_at_full_length_and_shrinks(cells):
    out = gradients.truncation_error(
        cells["simple_rnn"], Variant(activation="linear", gain=0.5), units=6, seeds=2, **SIZE
    )
    assert out["k"][-1] == SIZE["steps"]
    assert out["median"][-1] == 0.0
    assert np.all(np.diff(out["median"]) <= 1e-15)
    # the missing terms are bounded by a geometric tail: error(k) <= C · 0.5^k
    k = np.asarray(out["k"][:-1])
    bound = out["median"][0] / 0.5 * 0.5**k * 4
    assert np.all(out["median"][:-1] <= bound)


# -- optimiser, tasks, model gradients -----------------------------------------------------------


def test_adam_first_step_is_lr_times_sign():
    p = {"w": np.array([1.0, -2.0, 3.0])}
    g = {"w": np.array([0.1, -5.0, 1e-3])}
    Adam(lr=0.01, epsilon=1e-12).step(p, g)
    np.testing.assert_allclose(p["w"], [0.99, -1.99, 2.99], rtol=1e-9)


def test_clip_rescales_to_global_norm():
    g = {"a": np.array([3.0]), "b": np.array([4.0])}
    assert clip(g, 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose([g["a"][0], g["b"][0]], [0.6, 0.8])


def test_adding_batch():
    x, y = adding_batch(np.random.default_rng(0), 50, 20)
    marks = x[..., 1]
    assert np.all(marks.sum(axis=1) == 2)
    assert np.all(marks[:, :10].sum(axis=1) == 1)
    np.testing.assert_allclose(y[:, 0], (x[..., 0] * marks).sum(axis=1))


def test_copy_batch():
    x, y = copy_batch(np.random.default_rng(0), 4, 7)
    codes = x.argmax(-1)
    np.testing.assert_array_equal(codes[:, :SYMBOLS], y)
    assert np.all(codes[:, SYMBOLS + 6] == CATEGORIES + 1)
    assert x.shape == (4, SYMBOLS + 7 + SYMBOLS, CATEGORIES + 2)


@pytest.mark.parametrize("task", ["adding", "copy"])
@pytest.mark.parametrize("spec", ["simple_rnn", "gru", "lstm"])
def test_model_gradients_match_finite_differences(cells, task, spec):
    """Readout + generated backward against float64 central differences, along a random
    direction: |analytic − numeric| <= 1e-6 relative."""
    t = Task(task, 4)
    model = Model(cells[spec], t, 3, seed=1, dtype="float64")
    x, y = t.batch(np.random.default_rng(2), 3)
    _, grads = model.loss_and_grads(x, y)
    rng = np.random.default_rng(3)
    params = model.params
    direction = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    analytic = sum(float(np.sum(grads[k] * direction[k])) for k in params)
    eps = 1e-6

    def loss_at(sign):
        for k, v in params.items():
            v += sign * eps * direction[k]
        out = model.loss_and_grads(x, y)[0]
        for k, v in params.items():
            v -= sign * eps * direction[k]
        return out

    numeric = (loss_at(1) - loss_at(-1)) / (2 * eps)
    assert abs(analytic - numeric) <= 1e-6 * max(abs(numeric), 1e-3)


# -- part 3: training ----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["simple_rnn", "gru", "lstm"])
def test_training_decreases_the_loss(cells, spec):
    """Adding problem at T = 5: the untrained readout is off by the mean target (about 1),
    which the bias alone learns; the last 20 losses average under half the first 20."""
    r = train(
        cells[spec],
        Task("adding", 5),
        units=8,
        steps=150,
        batch=32,
        eval_every=50,
        stop_when_solved=False,
    )
    loss = np.asarray(r["train_loss"])
    assert len(loss) == 150
    assert loss[-20:].mean() < 0.5 * loss[:20].mean()


def test_copy_training_decreases_the_loss(cells):
    r = train(
        cells["gru"],
        Task("copy", 2),
        units=8,
        steps=150,
        batch=32,
        eval_every=50,
        stop_when_solved=False,
    )
    loss = np.asarray(r["train_loss"])
    assert loss[-20:].mean() < 0.8 * loss[:20].mean()


def test_clipping_keeps_an_exploding_run_finite(cells):
    """SimpleRNN, relu, gain 2: the forward pass grows by about 2·√½ per step, so unclipped
    SGD overflows; with clip_norm every step stays finite and the loss falls."""
    demo = clipping_demo(
        cells["simple_rnn"], Variant(activation="relu", gain=2.0), units=16, length=40, steps=30
    )
    assert not np.all(np.isfinite(demo["unclipped"]["loss"]))
    clipped = np.asarray(demo["clipped"]["loss"])
    assert np.all(np.isfinite(clipped))
    assert clipped[-5:].mean() < clipped[:5].mean()


# -- the command and its report ------------------------------------------------------------------


def _png_ok(path: Path):
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    img = matplotlib.image.imread(path)
    assert img.shape[0] > 100 and img.shape[1] > 100, path
    assert float(np.std(img[..., :3])) > 0.01, f"{path} is blank"


def test_report_renders_every_figure(tmp_path):
    pytest.importorskip("matplotlib")
    from click.testing import CliRunner

    out = tmp_path / "report"
    args = [
        "analyze",
        "simple_rnn",
        "lstm",
        "--units",
        "4",
        "--steps",
        "12",
        "--seeds",
        "2",
        "--train",
        "adding",
        "--lengths",
        "4,8",
        "--train-steps",
        "20",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "simple_rnn" in result.output and "longest T" in result.output
    expected = {
        "overview.png",
        "gradient_flow.png",
        "spectra.png",
        "truncation_clipping.png",
        "training.png",
    }
    assert {p.name for p in out.glob("*.png")} == expected
    for name in expected:
        _png_ok(out / name)
    html = (out / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(expected)
    for title in (
        "1. Gradient flow",
        "2. What the eigenvalues",
        "3. Memory over training",
        "4. Truncation and clipping",
    ):
        assert title in html
    data = json.loads((out / "results.json").read_text())
    assert sorted(data["figures"]) == sorted(expected)
    cell = data["cells"]["simple_rnn"]
    assert len(cell["flow"][DEFAULT.label]["jacobian"]["median"]) == 13
    assert set(cell["training"]) == {"4", "8"}
    assert [r["cell"] for r in data["summary"]] == ["simple_rnn", "lstm"]


def test_user_spec_and_bad_spec(tmp_path):
    pytest.importorskip("matplotlib")
    from click.testing import CliRunner

    spec = tmp_path / "ind_rnn.yaml"
    spec.write_text(IND_RNN)
    out = tmp_path / "r"
    runner = CliRunner()
    ok = runner.invoke(
        main,
        ["analyze", str(spec), "--units", "3", "--steps", "6", "--seeds", "1", "--out", str(out)],
    )
    assert ok.exit_code == 0, (ok.output, repr(ok.exception), ok.stderr_bytes)
    assert (out / "report.html").is_file()
    bad = Path(__file__).parent / "bad_specs" / "01_yaml_syntax.yaml"
    analyzed = runner.invoke(main, ["analyze", str(bad), "--out", str(tmp_path / "x")])
    built = runner.invoke(main, ["build", str(bad), "--out", str(tmp_path / "y")])
    assert analyzed.exit_code == built.exit_code == 2
    assert analyzed.output == built.output and analyzed.output.count("\n") >= 1
    assert "Traceback" not in analyzed.output
    assert not (tmp_path / "x").exists()
