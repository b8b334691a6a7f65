"""The generated JAX modules (``generated/<name>_jax.py``) for every spec.

Oracles, all in float64 (inside ``jax.enable_x64(True)``, restored afterwards):

* the fused ``jax.custom_vjp`` (derived BPTT) against ``jax.vjp`` of the plain ``lax.scan``
  (``implementation="scan"``), for every spec in spec/ and tests/specs, with a random mask,
  ``go_backwards``, initial states and dropout masks: outputs within ``FWD_RTOL`` and the
  gradients of x, the initial states and every parameter within ``GRAD_RTOL`` of the largest
  entry;
* the generated NumPy layer on the same weights (an independent backend): outputs and final
  states within ``NUMPY_TOL``;
* central finite differences of the fused op for a few parameter entries (``FD_RTOL``);
* ``jit``, ``vmap`` (over a stack of batches and of parameter sets) and ``grad`` under ``jit``
  against the eager calls; input validation; ``init``'s distributions by their statistics.

Each spec's comparison is one jitted program (compiled at XLA optimization level 0: the same
values, about half the compile time that dominates cells this small).
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

from rnngen import codegen, spec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "spec").glob("*.yaml")) + sorted((ROOT / "tests" / "specs").glob("*.yaml"))
#: float64 tolerances, relative to the largest entry of the reference array
FWD_RTOL = 1e-12  # fused vs scan forward
GRAD_RTOL = 1e-9  # fused vs scan gradients
NUMPY_TOL = 1e-10  # vs the NumPy layer, absolute after scaling by max(1, |reference|)
FD_RTOL = 1e-6  # central differences, step FD_EPS, relative to max(|analytic|, 1e-3)
FD_EPS = 1e-6
B, T, INPUT, UNITS = 3, 5, 4, 5
JIT_OPTIONS = {"xla_backend_optimization_level": 0}


def _import(path: Path, name: str):
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """spec stem -> (cell spec, jax module, numpy module), built from the spec now."""
    out = tmp_path_factory.mktemp("jax_gen")
    cache = {}

    def get(path: Path):
        if path.stem not in cache:
            cell = spec.load(path)
            files = codegen.render(cell, path.name)
            for suffix in ("_jax.py", "_numpy.py"):
                (out / f"{cell.name}{suffix}").write_text(files[f"{cell.name}{suffix}"])
            cache[path.stem] = (
                cell,
                _import(out / f"{cell.name}_jax.py", f"j_{cell.name}_jax"),
                _import(out / f"{cell.name}_numpy.py", f"j_{cell.name}_numpy"),
            )
        return cache[path.stem]

    return get


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def rel_err(actual, expected) -> float:
    a, e = np.asarray(actual), np.asarray(expected)
    assert a.shape == e.shape, f"shape {a.shape} != {e.shape}"
    if not a.size:
        return 0.0
    return float(np.max(np.abs(a - e))) / max(float(np.max(np.abs(e))), 1e-300)


def problem(mod, seed=0, dropout=True, units=UNITS):
    """Parameters (init plus noise, so zero biases are not special), x, initial states, a mask
    with some masked steps (row 0 entirely used), dropout masks and output cotangents."""
    rng = np.random.default_rng(seed)
    params = mod.init(jax.random.PRNGKey(seed), INPUT, units, dtype=jnp.float64)
    params = {k: v + 0.2 * rng.standard_normal(v.shape) for k, v in params.items()}
    x = rng.standard_normal((B, T, INPUT))
    h0 = [0.5 * rng.standard_normal((B, units)) for _ in mod.STATES]
    mask = rng.random((B, T)) > 0.35
    mask[0] = True
    masks = None
    if dropout and mod.DROPOUT:
        rates = {"dropout": 0.3, "recurrent_dropout": 0.25}
        rates = {k: r for k, r in rates.items() if k in mod.DROPOUT}
        masks = mod.draw_dropout_masks(jax.random.PRNGKey(seed + 1), B, INPUT, units, **rates)
    d_seq = rng.standard_normal((B, T, units))
    d_final = [rng.standard_normal((B, units)) for _ in mod.STATES]
    return params, jnp.asarray(x), [jnp.asarray(h) for h in h0], mask, masks, d_seq, d_final


def vjp_program(mod, options):
    """One function: both implementations' outputs and their VJPs for given cotangents."""

    def run(params, x, h0, mask, masks, d_seq, d_final):
        out = {}
        for impl in ("fused", "scan"):

            def f(p, x, h0, impl=impl):
                return mod.apply(
                    p, x, h0, mask, dropout_masks=masks, implementation=impl, **options
                )

            primal, pullback = jax.vjp(f, params, x, h0)
            out[impl] = (primal, pullback((d_seq, d_final)))
        return out

    return run


CASES = [
    # (go_backwards, zero_output_for_mask): every spec runs one, in turn
    (True, False),
    (False, True),
    (True, True),
]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_fused_equals_scan_and_numpy(built, path):
    cell, mod, np_mod = built(path)
    go_backwards, zero_output = CASES[SPECS.index(path) % len(CASES)]
    options = dict(go_backwards=go_backwards, zero_output_for_mask=zero_output)
    params, x, h0, mask, masks, d_seq, d_final = problem(mod, seed=SPECS.index(path))
    args = (params, x, h0, jnp.asarray(mask), masks, jnp.asarray(d_seq), d_final)
    got = jax.jit(vjp_program(mod, options)).lower(*args).compile(JIT_OPTIONS)(*args)
    (seq_f, fin_f), grads_f = got["fused"]
    (seq_s, fin_s), grads_s = got["scan"]
    assert seq_f.dtype == jnp.float64 and seq_f.shape == (B, T, UNITS)
    for a, e in zip([seq_f, *fin_f], [seq_s, *fin_s], strict=True):
        assert rel_err(a, e) <= FWD_RTOL
    names = ["d_params", "d_x", "d_initial_state"]
    for name, g_f, g_s in zip(names, grads_f, grads_s, strict=True):
        leaves_f, leaves_s = jax.tree.leaves(g_f), jax.tree.leaves(g_s)
        assert len(leaves_f) == len(leaves_s) > 0
        for a, e in zip(leaves_f, leaves_s, strict=True):
            assert float(np.max(np.abs(e))) > 0, f"{name}: the scan gradient is zero"
            assert rel_err(a, e) <= GRAD_RTOL, name
    # the independent backend: the NumPy layer on the same weights and inputs
    np_masks = None if masks is None else jax.tree.map(np.asarray, masks)
    ref_seq, ref_final, _ = np_mod.forward(
        np.asarray(x),
        {k: np.asarray(v) for k, v in params.items()},
        [np.asarray(h) for h in h0],
        mask=mask,
        dropout_masks=np_masks,
        **options,
    )
    for a, e in zip([seq_f, *fin_f], [ref_seq, *ref_final], strict=True):
        e = np.asarray(e)
        scale = max(1.0, float(np.max(np.abs(e))))
        assert float(np.max(np.abs(np.asarray(a) - e))) / scale <= NUMPY_TOL


def bool_variants(cell):
    """Every combination of the spec's boolean options other than the defaults."""
    names = [o.name for o in cell.bool_options]
    defaults = tuple(o.default for o in cell.bool_options)
    return [
        dict(zip(names, values, strict=True))
        for values in itertools.product([True, False], repeat=len(names))
        if values != defaults
    ]


SHIPPED = [p for p in SPECS if p.parent.name == "spec"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_boolean_variant_and_the_input_form_variant(built, path):
    """The shipped cells' other option combinations, and a callable activation (the input-form
    variant, whose fused backward differentiates the callable with ``jax.vjp``), fused vs scan,
    in one program per spec."""
    cell, mod, _ = built(path)

    def scaled_tanh(u):
        return 1.7159 * jnp.tanh(2 / 3 * u)

    configs = [dict(activation=scaled_tanh, go_backwards=True)]
    configs += [dict(v, zero_output_for_mask=True) for v in bool_variants(cell)]
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((B, T, INPUT)))
    mask = rng.random((B, T)) > 0.3
    mask[0] = True
    programs, args = [], []
    for i, options in enumerate(configs):
        bools = {o.name: options.get(o.name, o.default) for o in cell.bool_options}
        params = mod.init(jax.random.PRNGKey(i), INPUT, UNITS, dtype=jnp.float64, **bools)
        params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in params.items()}
        h0 = [jnp.asarray(rng.standard_normal((B, UNITS))) for _ in mod.STATES]
        d_seq = jnp.asarray(rng.standard_normal((B, T, UNITS)))
        d_final = [jnp.asarray(rng.standard_normal((B, UNITS))) for _ in mod.STATES]
        programs.append(vjp_program(mod, options))
        args.append((params, x, h0, jnp.asarray(mask), None, d_seq, d_final))

    def run_all(args):
        return [p(*a) for p, a in zip(programs, args, strict=True)]

    results = jax.jit(run_all).lower(args).compile(JIT_OPTIONS)(args)
    for options, got in zip(configs, results, strict=True):
        (seq_f, fin_f), grads_f = got["fused"]
        (seq_s, fin_s), grads_s = got["scan"]
        for a, e in zip([seq_f, *fin_f], [seq_s, *fin_s], strict=True):
            assert rel_err(a, e) <= FWD_RTOL, options
        for a, e in zip(jax.tree.leaves(grads_f), jax.tree.leaves(grads_s), strict=True):
            assert rel_err(a, e) <= GRAD_RTOL, options


@pytest.mark.parametrize("stem", ["gru", "lstm", "exotic"])
def test_fused_gradient_matches_central_differences(built, stem):
    """d loss / d params[name][index] by the fused op against central differences (float64)."""
    _, mod, _ = built(next(p for p in SPECS if p.stem == stem))
    params, x, h0, mask, masks, d_seq, d_final = problem(mod, seed=11)
    mask = jnp.asarray(mask)

    def loss(p):
        seq, final = mod.apply(p, x, h0, mask, dropout_masks=masks, go_backwards=True)
        return jnp.vdot(seq, d_seq) + sum(
            jnp.vdot(f, d) for f, d in zip(final, d_final, strict=True)
        )

    loss_jit = jax.jit(loss)
    grads = jax.jit(jax.grad(loss))(params)
    rng = np.random.default_rng(3)
    for name in params:
        for flat in rng.choice(params[name].size, size=2, replace=False):
            index = np.unravel_index(flat, params[name].shape)
            up = {**params, name: params[name].at[index].add(FD_EPS)}
            down = {**params, name: params[name].at[index].add(-FD_EPS)}
            numeric = float(loss_jit(up) - loss_jit(down)) / (2 * FD_EPS)
            analytic = float(grads[name][index])
            err = abs(numeric - analytic) / max(abs(analytic), 1e-3)
            assert err <= FD_RTOL, f"{name}{index}: analytic {analytic}, numeric {numeric}"


def test_jit_vmap_and_grad_under_jit(built):
    """jit (options static, or closed over), vmap over the batch (each example a batch of one),
    over a stack of batches and over a stack of parameter sets, and grad under jit, each
    against the eager or jitted call (float64)."""
    _, mod, _ = built(next(p for p in SPECS if p.stem == "gru"))
    params, x, h0, mask, _, d_seq, _ = problem(mod, seed=2, dropout=False)
    mask = jnp.asarray(mask)
    eager_seq, eager_final = mod.apply(params, x, h0, mask, reset_after=True)

    jitted = jax.jit(mod.apply, static_argnames=("reset_after", "activation", "implementation"))
    seq, final = jitted(params, x, h0, mask, reset_after=True, activation="tanh")
    assert rel_err(seq, eager_seq) <= 1e-13 and rel_err(final[0], eager_final[0]) <= 1e-13
    closed = jax.jit(lambda p, x: mod.apply(p, x, activation="tanh", go_backwards=True)[0])
    assert rel_err(closed(params, x), mod.apply(params, x, go_backwards=True)[0]) <= 1e-13

    def loss(p, x):
        return jnp.vdot(mod.apply(p, x, h0, mask)[0], d_seq)

    eager_grad = jax.grad(loss)(params, x)
    jit_grad = jax.jit(jax.grad(loss))(params, x)
    for name in params:
        assert rel_err(jit_grad[name], eager_grad[name]) <= 1e-12, name

    # vmap over a stack of batches, and over a stack of parameter sets (with their gradients),
    # against a loop of the jitted calls
    per_example = jax.vmap(lambda xi, hi, mi: mod.apply(params, xi[None], [hi[None]], mi[None])[0])
    assert rel_err(per_example(x, h0[0], mask)[:, 0], eager_seq) <= 1e-13
    xs = jnp.stack([x, 2 * x, -x])
    mapped = jax.vmap(lambda x: mod.apply(params, x, h0, mask)[0])(xs)
    for i in range(3):
        assert rel_err(mapped[i], jitted(params, xs[i], h0, mask)[0]) <= 1e-13
    stacked = {k: jnp.stack([v, 0.5 * v, v + 0.1]) for k, v in params.items()}
    per_set = jax.jit(jax.vmap(jax.grad(loss), in_axes=(0, None)))(stacked, x)
    grad_jit = jax.jit(jax.grad(loss))
    for i in range(3):
        one = grad_jit({k: v[i] for k, v in stacked.items()}, x)
        for name in params:
            assert rel_err(per_set[name][i], one[name]) <= 1e-12, (i, name)


def test_row_wise_activation_option_fused_equals_scan(built):
    """A row-wise activation option (softmax): the fused backward calls its VJP."""
    _, mod, _ = built(next(p for p in SPECS if p.stem == "simple_rnn"))
    params, x, h0, mask, masks, d_seq, d_final = problem(mod, seed=4)
    args = (params, x, h0, jnp.asarray(mask), masks, jnp.asarray(d_seq), d_final)
    for name in ("softmax", "sparsemax"):
        got = jax.jit(vjp_program(mod, {"activation": name}))(*args)
        (seq_f, _), grads_f = got["fused"]
        (seq_s, _), grads_s = got["scan"]
        assert rel_err(seq_f, seq_s) <= FWD_RTOL
        for a, e in zip(jax.tree.leaves(grads_f), jax.tree.leaves(grads_s), strict=True):
            assert rel_err(a, e) <= GRAD_RTOL, name


def test_bad_input_is_a_clear_error(built):
    _, mod, _ = built(next(p for p in SPECS if p.stem == "lstm"))
    params = mod.init(jax.random.PRNGKey(0), INPUT, UNITS)
    x = jnp.zeros((B, T, INPUT))
    cases = [
        (
            lambda: mod.apply(params, jnp.zeros((B, T, INPUT + 1))),
            "`params\\['kernel'\\]` must have shape \\(5, 20\\)",
        ),
        (lambda: mod.apply(params, jnp.zeros((B, INPUT))), "`x` must be \\(batch, timesteps"),
        (lambda: mod.apply(params, x, [jnp.zeros((B, UNITS))]), "`initial_state` must be 2"),
        (lambda: mod.apply(params, x, [jnp.zeros((B, 2))] * 2), "must have shape \\(batch, units"),
        (lambda: mod.apply(params, x, mask=jnp.ones((B, T + 1), bool)), "`mask` must have shape"),
        (lambda: mod.apply(params, x, implementation="cudnn"), "`implementation` must be one of"),
        (lambda: mod.apply(params, x, activation="tanhh"), "Unknown activation for `activation`"),
        (lambda: mod.apply(params, x, activation="glu"), "row-wise"),
        (lambda: mod.apply({"kernel": params["kernel"]}, x), "`params` must be a dict with keys"),
        (
            lambda: mod.apply(params, x, dropout_masks={"dropout": jnp.ones((B, 1))}),
            "masks must have shape",
        ),
        (lambda: mod.apply(params, x, dropout_masks={"drop": jnp.ones((B, 1))}), "this cell takes"),
        (lambda: mod.init(jax.random.PRNGKey(0), 0, UNITS), "argument `input_dim`"),
        (lambda: mod.init(jax.random.PRNGKey(0), 2, 3, kernel_initializer="nope"), "Unknown init"),
        (lambda: mod.draw_dropout_masks(jax.random.PRNGKey(0), 2, 3, 4, 1.5), "`dropout` must be"),
    ]
    _, plain, _ = built(next(p for p in SPECS if p.stem == "layer_norm_lstm"))  # no dropout
    plain_params = plain.init(jax.random.PRNGKey(0), INPUT, UNITS)
    masks = {"dropout": jnp.ones((B, INPUT))}
    cases.append((lambda: plain.apply(plain_params, x, dropout_masks=masks), "must be None"))
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_init_draws_keras_distributions(built):
    """glorot_uniform: bounded by sqrt(6 / (fan_in + fan_out)), variance 2 / (fan_in + fan_out)
    within 5%; orthogonal: R R^T = I (the whole (units, 4 units) matrix, as Keras); LSTM's
    unit_forget_bias block of ones; initializer config dicts and callables."""
    _, mod, _ = built(next(p for p in SPECS if p.stem == "lstm"))
    input_dim, units = 300, 100
    params = mod.init(jax.random.PRNGKey(1), input_dim, units, dtype=jnp.float64)
    assert {k: v.shape for k, v in params.items()} == mod.weight_shapes(input_dim, units)
    kernel = np.asarray(params["kernel"])
    fan_in, fan_out = input_dim, 4 * units
    assert np.max(np.abs(kernel)) <= np.sqrt(6 / (fan_in + fan_out))
    assert abs(kernel.var() / (2 / (fan_in + fan_out)) - 1) < 0.05
    assert abs(kernel.mean()) < 0.01
    rk = np.asarray(params["recurrent_kernel"])
    np.testing.assert_allclose(rk @ rk.T, np.eye(units), rtol=0, atol=1e-12)
    bias = np.asarray(params["bias"])
    np.testing.assert_array_equal(bias[units : 2 * units], 1.0)
    np.testing.assert_array_equal(np.delete(bias, np.s_[units : 2 * units]), 0.0)
    other = mod.init(
        jax.random.PRNGKey(2),
        input_dim,
        units,
        unit_forget_bias=False,
        kernel_initializer={"class_name": "RandomNormal", "config": {"stddev": 0.5}},
        bias_initializer=lambda key, shape, dtype: jnp.full(shape, 3.0, dtype),
    )
    assert other["kernel"].dtype == jnp.float32
    assert abs(float(np.asarray(other["kernel"]).std()) / 0.5 - 1) < 0.05
    np.testing.assert_array_equal(np.asarray(other["bias"]), 3.0)
    assert not np.array_equal(
        kernel, np.asarray(mod.init(jax.random.PRNGKey(3), input_dim, units)["kernel"])
    )


def test_dropout_masks_follow_keras():
    """One mask per gate with recurrent_dropout > 0, else one shared; kept fraction within 5
    binomial standard deviations of 1 - rate; kept values 1 / (1 - rate)."""
    import generated.gru_jax as mod

    per_gate = mod.draw_dropout_masks(jax.random.PRNGKey(0), 400, 50, 60, 0.25, 0.4)
    assert len(per_gate["dropout"]) == 3 and len(per_gate["recurrent_dropout"]) == 3
    assert not np.array_equal(per_gate["dropout"][0], per_gate["dropout"][1])
    for rate, drawn in ((0.25, per_gate["dropout"]), (0.4, per_gate["recurrent_dropout"])):
        m = np.asarray(drawn[0])
        kept = float((m > 0).mean())
        assert abs(kept - (1 - rate)) <= 5 * np.sqrt(rate * (1 - rate) / m.size)
        np.testing.assert_allclose(m[m > 0], 1 / (1 - rate), rtol=1e-6)
    shared = mod.draw_dropout_masks(jax.random.PRNGKey(0), 4, 5, 6, dropout=0.5)
    assert set(shared) == {"dropout"} and shared["dropout"].shape == (4, 5)
    assert mod.draw_dropout_masks(jax.random.PRNGKey(0), 4, 5, 6) is None


def test_every_activation_matches_numpy_and_its_vjp_matches_jax_autodiff(built):
    """Each activation the module accepts by name: its jnp body against the NumPy layer's
    (1e-12), and the VJP the fused backward calls against ``jax.vjp`` of that body (1e-12)."""
    _, mod, np_mod = built(next(p for p in SPECS if p.stem == "gru"))
    rng = np.random.default_rng(8)
    u = 3 * rng.standard_normal((4, 7))
    u[np.abs(u) < 1e-3] += 0.01  # away from the kinks at 0
    d = rng.standard_normal((4, 7))
    assert set(mod.ACTIVATIONS) == set(np_mod.ACTIVATIONS)
    for name, (f, vjp, reads_output) in mod.ACTIVATIONS.items():
        y = f(jnp.asarray(u))
        expected = np_mod.ACTIVATIONS[name][0](u)
        assert rel_err(y, expected) <= 1e-12, name
        _, pullback = jax.vjp(f, jnp.asarray(u))
        (reference,) = pullback(jnp.asarray(d))
        got = vjp(y if reads_output else jnp.asarray(u), jnp.asarray(d))
        assert rel_err(got, reference) <= 1e-12, name


SPLIT_BIAS = """\
name: split_bias
class_name: SplitBias
weights:
  kernel: {shape: [input_dim, units], initializer: glorot_uniform}
  bias: {shape: [2 * units], blocks: [b, v], initializer: ones}
states: [h]
output: y
step: {h: tanh(x @ kernel + b + v * h_prev), y: h}
"""


def test_a_weight_split_between_the_projection_and_the_loop_gets_both_gradients(built, tmp_path):
    """One weight, two blocks: ``b`` folded into the hoisted input projection (its gradient
    summed in the backward scan's carry) and ``v`` read in the loop (its own accumulator). Both
    blocks' gradients must survive into ``d_bias``: the fused VJP against the scan's, 1e-9."""
    path = tmp_path / "split_bias.yaml"
    path.write_text(SPLIT_BIAS)
    _, mod, _ = built(path)
    params, x, h0, mask, masks, d_seq, d_final = problem(mod, seed=3)
    args = (params, x, h0, jnp.asarray(mask), masks, jnp.asarray(d_seq), d_final)
    got = jax.jit(vjp_program(mod, {})).lower(*args).compile(JIT_OPTIONS)(*args)
    d_bias_fused, d_bias_scan = (got[impl][1][0]["bias"] for impl in ("fused", "scan"))
    half = UNITS  # the b block
    assert float(np.max(np.abs(np.asarray(d_bias_scan[:half])))) > 0
    assert rel_err(d_bias_fused, d_bias_scan) <= GRAD_RTOL
