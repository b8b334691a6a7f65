"""Dropout masks the layers draw themselves (nothing injected), judged by their statistics.

Two kinds of observation, both backends, TF "loop" and "fused":

* black box: weights chosen so a mask can be read off the outputs (identity kernels, zero
  recurrent kernels, linear activations, inputs of ones), so no hook into the layer is used;
* ``rnngen verify``'s ``dropout`` check (``rnngen/verify/dropout.py``), which records the masks
  and replays them through the independent equation interpreter.

Bound: every fraction is compared with its expectation within ``SIGMAS = 5`` binomial standard
deviations ``sqrt(p (1 - p) / n)`` (a false alarm has probability below 6e-7 per comparison).
Kept entries must equal ``1 / (1 - rate)`` to 1e-6 relative (float32 rounding).

Mutation tests plant the two bugs that injection-only tests miss (the TF layer drawing per-gate
masks under the wrong condition; a NumPy mask scaled by ``1 - rate``) and assert the checks fail.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.tf
pytest.importorskip("tensorflow")

from rnngen import codegen, verify  # noqa: E402
from rnngen.verify.dropout import binomial_upper  # noqa: E402

SPEC_DIR = codegen.spec_dir()
SIGMAS = 5.0
SCALE_RTOL = 1e-6
B, D = 400, 8  # 3200 entries per mask: the 5-sigma band on a keep fraction is about +-0.04
IMPLS = ("loop", "fused")

PER_GATE_BUG = (  # the TF cell draws one mask per gate when *dropout* (not recurrent) is on
    "draws = count if self.recurrent_dropout > 0 else 1",
    "draws = count if self.dropout > 0 else 1",
)
SCALE_BUG = (  # the NumPy mask keeps entries at 1 - rate instead of 1 / (1 - rate)
    "return (keep / (1 - rate)).astype(self.dtype)",
    "return (keep * (1 - rate)).astype(self.dtype)",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The modules ``rnngen build`` writes now, for the three shipped cells."""
    out = {}
    for name in ("simple_rnn", "gru", "lstm"):
        folder = tmp_path_factory.mktemp(name)
        verify.build_into(SPEC_DIR / f"{name}.yaml", folder)
        out[name] = folder
    return out


def _modules(folder, name, mutate_numpy=None, mutate_tf=None, tmp=None):
    """Import ``<name>_numpy`` / ``<name>_tf`` from ``folder``, optionally with a planted bug."""
    mods = []
    for backend, mutate in (("numpy", mutate_numpy), ("tf", mutate_tf)):
        path = folder / f"{name}_{backend}.py"
        if mutate is not None:
            text = path.read_text(encoding="utf-8")
            mutated = text.replace(*mutate)
            assert mutated != text, "mutation did not apply"
            path = tmp / path.name
            path.write_text(mutated, encoding="utf-8")
        mods.append(verify.import_path(path))
    return mods


def _band(p, n):
    return SIGMAS * np.sqrt(p * (1 - p) / n)


def _assert_mask(m, rate, what):
    """Values in {0, 1/(1-rate)}; keep fraction 1 - rate within the binomial bound."""
    m = np.asarray(m, np.float64)
    kept = m != 0
    scale = 1 / (1 - rate)
    np.testing.assert_allclose(m[kept], scale, rtol=SCALE_RTOL, err_msg=f"{what}: kept values")
    frac = kept.mean()
    assert abs(frac - (1 - rate)) <= _band(1 - rate, m.size), (what, frac, 1 - rate)
    # samples are independent: consecutive rows repeat no more often than an exact binomial
    # bound with the one-sided tail of 5 sigma allows
    same = sum(np.array_equal(kept[i], kept[i + 1]) for i in range(len(kept) - 1))
    p_row = (rate**2 + (1 - rate) ** 2) ** m.shape[1]
    assert same <= binomial_upper(len(kept) - 1, p_row), (what, same)


def _agree(a, b):
    return float(np.mean((np.asarray(a) != 0) == (np.asarray(b) != 0)))


def _assert_independent(a, b, rate, what):
    p = rate**2 + (1 - rate) ** 2
    q = _agree(a, b)
    assert abs(q - p) <= _band(p, np.size(a)), (what, q, p)


# -- black box: SimpleRNN with identity kernels and linear activation ----------------------------


def _simple_layer(np_mod, tf_mod, backend, impl, rate_in, rate_rec, seed):
    """A linear SimpleRNN (units = D) whose outputs are readable masks."""
    kernel = np.eye(D) if rate_in else np.zeros((D, D))
    recurrent = np.eye(D) if rate_rec else np.zeros((D, D))
    weights = [kernel, recurrent, np.zeros(D)]
    kw = dict(activation="linear", return_sequences=True, dropout=rate_in)
    kw.update(recurrent_dropout=rate_rec, seed=seed)
    if backend == "numpy":
        layer = np_mod.SimpleRNN(D, **kw, dtype="float64")
        layer.set_weights(weights)
        return lambda x, h0, training: np.asarray(layer(x, initial_state=h0, training=training))
    layer = tf_mod.SimpleRNN(D, **kw, implementation=impl)
    layer.build((B, 3, D))
    layer.set_weights([w.astype(np.float32) for w in weights])
    return lambda x, h0, training: layer(
        x.astype(np.float32), initial_state=h0 and [h0[0].astype(np.float32)], training=training
    ).numpy()


@pytest.mark.parametrize(("backend", "impl"), [("numpy", None), ("tf", "loop"), ("tf", "fused")])
def test_simple_rnn_input_mask_read_from_outputs(built, backend, impl):
    """x = 1, kernel = I, recurrent kernel = 0: every output step is the input mask itself."""
    np_mod, tf_mod = _modules(built["simple_rnn"], "simple_rnn")
    rate = 0.3
    run = _simple_layer(np_mod, tf_mod, backend, impl, rate, 0.0, seed=11)
    x = np.ones((B, 4, D))
    first, second = run(x, None, True), run(x, None, True)
    for t in range(1, 4):  # the same mask at every step of a call
        np.testing.assert_array_equal(first[:, t], first[:, 0])
    _assert_mask(first[:, 0], rate, f"{backend}/{impl} input mask")
    _assert_independent(first[:, 0], second[:, 0], rate, "two calls")
    np.testing.assert_array_equal(run(x, None, False), x)  # training=False: no mask


@pytest.mark.parametrize(("backend", "impl"), [("numpy", None), ("tf", "loop"), ("tf", "fused")])
def test_simple_rnn_recurrent_mask_read_from_outputs(built, backend, impl):
    """kernel = 0, recurrent kernel = I, h0 = 1: step t outputs m^(t+1), one m for the call."""
    np_mod, tf_mod = _modules(built["simple_rnn"], "simple_rnn")
    rate = 0.4
    run = _simple_layer(np_mod, tf_mod, backend, impl, 0.0, rate, seed=12)
    x, h0 = np.zeros((B, 3, D)), [np.ones((B, D))]
    y = run(x, h0, True)
    m = y[:, 0]
    _assert_mask(m, rate, f"{backend}/{impl} recurrent mask")
    np.testing.assert_allclose(y[:, 1], m * m, rtol=1e-6)  # the same mask at the next step
    np.testing.assert_allclose(y[:, 2], m * m * m, rtol=1e-6)
    _assert_independent(m, run(x, h0, True)[:, 0], rate, "two calls")
    np.testing.assert_array_equal(run(x, h0, False), np.ones_like(y))


# -- black box: shared or per-gate input masks of GRU and LSTM ----------------------------------


def _gated_first_step(np_mod, tf_mod, kind, backend, impl, rate_in, rate_rec, seed):
    """One step of a linear GRU/LSTM whose output reveals whether two gates share a mask.

    GRU (reset_after, z and h blocks = I, rest 0, h0 = 0, x = 1): h1 = (1 - m_z) m_h.
    LSTM (i and c blocks = I, bias_i = 1, bias_o = 1, rest 0): h1 = (1 + m_i) m_c.
    With one shared mask m_z = m_h (m_i = m_c), so h1 = s = 1 / (1 - rate) is impossible;
    independent per-gate masks give it with probability rate (1 - rate).
    """
    n = {"GRU": 3, "LSTM": 4}[kind]
    eye, zero = np.eye(D), np.zeros((D, D))
    if kind == "GRU":
        kernel = np.concatenate([eye, zero, eye], 1)
        bias = np.zeros((2, 3 * D))
        opts = dict(recurrent_activation="linear", reset_after=True)
    else:
        kernel = np.concatenate([eye, zero, eye, zero], 1)
        bias = np.concatenate([np.ones(D), np.zeros(2 * D), np.ones(D)])
        opts = dict(recurrent_activation="linear", unit_forget_bias=False)
    weights = [kernel, np.zeros((D, n * D)), bias]
    kw = dict(activation="linear", dropout=rate_in, recurrent_dropout=rate_rec, seed=seed, **opts)
    x = np.ones((B, 1, D))
    if backend == "numpy":
        layer = getattr(np_mod, kind)(D, **kw, dtype="float64")
        layer.set_weights(weights)
        return np.asarray(layer(x, training=True))
    layer = getattr(tf_mod, kind)(D, **kw, implementation=impl)
    layer.build((B, 1, D))
    layer.set_weights([w.astype(np.float32) for w in weights])
    return layer(x.astype(np.float32), training=True).numpy()


def _per_gate_fraction(h1, rate, kind):
    s = 1 / (1 - rate)
    values = {"GRU": (0.0, s, (1 - s) * s), "LSTM": (0.0, s, (1 + s) * s)}[kind]
    hit = [np.isclose(h1, v, rtol=1e-5, atol=1e-6) for v in values]
    assert np.all(np.any(hit, axis=0)), f"{kind}: output values outside {values}"
    return float(hit[1].mean())  # only independent gate masks produce s


GATED = [
    (k, b, i)
    for k in ("GRU", "LSTM")
    for b, i in (("numpy", None), ("tf", "loop"), ("tf", "fused"))
]


def _gated(built, kind, mutate_tf=None, tmp=None):
    name = {"GRU": "gru", "LSTM": "lstm"}[kind]
    return _modules(built[name], name, mutate_tf=mutate_tf, tmp=tmp)


@pytest.mark.parametrize(("kind", "backend", "impl"), GATED)
def test_dropout_alone_shares_one_input_mask_across_gates(built, kind, backend, impl):
    np_mod, tf_mod = _gated(built, kind)
    h1 = _gated_first_step(np_mod, tf_mod, kind, backend, impl, 0.3, 0.0, seed=5)
    assert _per_gate_fraction(h1, 0.3, kind) == 0.0  # Keras's implementation 2


@pytest.mark.parametrize(("kind", "backend", "impl"), GATED)
def test_recurrent_dropout_draws_one_input_mask_per_gate(built, kind, backend, impl):
    np_mod, tf_mod = _gated(built, kind)
    rate = 0.3
    h1 = _gated_first_step(np_mod, tf_mod, kind, backend, impl, rate, 0.2, seed=6)
    p = rate * (1 - rate)  # m_z = 0 (m_i = 0) and m_h = s (m_c = s), independently
    assert abs(_per_gate_fraction(h1, rate, kind) - p) <= _band(p, h1.size)


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_black_box_catches_per_gate_masks_under_the_wrong_condition(built, kind, tmp_path):
    np_mod, tf_mod = _gated(built, kind, mutate_tf=PER_GATE_BUG, tmp=tmp_path)
    for impl in IMPLS:
        h1 = _gated_first_step(np_mod, tf_mod, kind, "tf", impl, 0.3, 0.0, seed=5)
        assert _per_gate_fraction(h1, 0.3, kind) > 0.1  # the bug draws per-gate masks


def test_black_box_catches_a_mask_scaled_by_one_minus_rate(built, tmp_path):
    np_mod, tf_mod = _modules(
        built["simple_rnn"], "simple_rnn", mutate_numpy=SCALE_BUG, tmp=tmp_path
    )
    run = _simple_layer(np_mod, tf_mod, "numpy", None, 0.3, 0.0, seed=11)
    with pytest.raises(AssertionError, match="kept values"):
        _assert_mask(run(np.ones((B, 2, D)), None, True)[:, 0], 0.3, "numpy input mask")


# -- rnngen verify's dropout check ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["simple_rnn", "gru", "lstm"])
def test_verify_dropout_check_passes(name):
    results = verify.verify_spec(
        SPEC_DIR / f"{name}.yaml", backends=("numpy", "tf"), quick=False, checks=("dropout",)
    )
    rows = {(r.backend, r.check): r for r in results}
    assert set(rows) == {("numpy", "dropout"), ("tf", "dropout/loop"), ("tf", "dropout/fused")}
    for r in rows.values():
        assert r.status == "pass", (r.check, r.failure)
        assert r.configs >= 3  # dropout alone, recurrent dropout alone, both
        assert r.max_abs < 0.05  # worst keep-fraction deviation (5 sigma is about 0.05 here)


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_verify_catches_per_gate_masks_under_the_wrong_condition(name, built, tmp_path):
    shutil.copy(built[name] / f"{name}_numpy.py", tmp_path)
    text = (built[name] / f"{name}_tf.py").read_text(encoding="utf-8")
    mutated = text.replace(*PER_GATE_BUG)
    assert mutated != text
    (tmp_path / f"{name}_tf.py").write_text(mutated, encoding="utf-8")
    results = verify.verify_spec(
        SPEC_DIR / f"{name}.yaml",
        backends=("numpy", "tf"),
        quick=True,
        module_dir=tmp_path,
        checks=("dropout",),
    )
    status = {(r.backend, r.check): r for r in results}
    assert status[("numpy", "dropout")].status == "pass"
    failed = [r for r in results if r.backend == "tf" and r.status == "fail"]
    assert failed, [(r.check, r.status) for r in results]
    for r in failed:
        assert "gates" in r.failure["tensor"], r.failure  # named: the per-gate statistic


@pytest.mark.parametrize("name", ["simple_rnn", "gru", "lstm"])
def test_verify_catches_a_numpy_mask_scaled_by_one_minus_rate(name, built, tmp_path):
    text = (built[name] / f"{name}_numpy.py").read_text(encoding="utf-8")
    mutated = text.replace(*SCALE_BUG)
    assert mutated != text
    (tmp_path / f"{name}_numpy.py").write_text(mutated, encoding="utf-8")
    (row,) = verify.verify_spec(
        SPEC_DIR / f"{name}.yaml", quick=True, module_dir=tmp_path, checks=("dropout",)
    )
    assert row.status == "fail"
    assert "kept value" in row.failure["tensor"], row.failure
    rate = 0.3 if "(dropout)" in row.failure["tensor"] else 0.4
    assert row.failure["analytic"] == pytest.approx(1 - rate)  # the planted scale
    assert row.failure["reference"] == pytest.approx(1 / (1 - rate))
