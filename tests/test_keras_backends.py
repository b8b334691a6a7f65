"""The generated Keras layer on every Keras 3 backend: TensorFlow, JAX and PyTorch, each in its
own subprocess (``KERAS_BACKEND`` is read once, at Keras's import), against Keras's own layer on
that backend.

For the shipped specs (SimpleRNN, GRU, LSTM), both implementations ("loop": the keras.ops step
under ``keras.layers.RNN``; "fused": the backend's custom-gradient op) are compared with
``keras.layers.SimpleRNN``/``GRU``/``LSTM`` holding the same weights: every returned tensor
(sequence and states) and the gradient of a random linear loss of them with respect to the
input and every weight, by the backend's own autodiff (``tf.GradientTape``, ``jax.grad`` of a
stateless call, ``torch`` backward). On JAX and PyTorch the worker blocks ``import tensorflow``:
the layer must run without it. Cells from ``tests/specs`` are built into a temporary folder and
their fused op compared with their loop on JAX and PyTorch (imported as top-level modules there).
``model.fit`` with Masking and dropout follows Keras's loss curve on each backend.

This file imports no TensorFlow itself (the subprocesses do), so it is not marked ``tf``; the
TensorFlow run is marked ``tf``, and skips without TensorFlow, as the others do without JAX or
PyTorch.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).with_name("keras_backend_worker.py")

#: float32 tolerances: largest absolute output error; largest gradient error relative to the
#: largest entry of that gradient (input and each weight)
FORWARD_ATOL = 1e-5
GRAD_RTOL = 1e-4

KINDS = {"SimpleRNN": "simple_rnn", "GRU": "gru", "LSTM": "lstm"}


def _cases(kind: str) -> list[dict]:
    """Cases for one Keras layer: both implementations of each."""
    base = [
        {"name": f"{kind} plain", "kwargs": {}},
        {
            "name": f"{kind} masked, go_backwards, initial state",
            "kwargs": {},
            "masked": True,
            "go_backwards": True,
            "initial_state": True,
        },
        {
            "name": f"{kind} masked, zero_output_for_mask, dropout",
            "kwargs": {"zero_output_for_mask": True, "dropout": 0.3, "recurrent_dropout": 0.2},
            "masked": True,
        },
    ]
    if kind == "GRU":
        base.append({"name": "GRU reset_after=False", "kwargs": {"reset_after": False}})
    return [
        {
            **c,
            "spec": KINDS[kind],
            "layer": kind,
            "reference": "keras_layer",
            "units": 5,
            "implementation": impl,
            "seed": i,
        }
        for i, c in enumerate(base)
        for impl in ("loop", "fused")
    ]


def _run_worker(backend: str, job: dict, timeout: int = 600) -> list[dict]:
    """The worker's rows under Keras backend ``backend`` (a package of that name); the last
    row says whether TensorFlow got imported."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, str(WORKER), json.dumps(job)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert rows and "tensorflow_imported" in rows[-1], proc.stdout[-3000:]
    return rows


def _check(rows: list[dict], backend: str, custom_gradient: bool) -> None:
    """Tolerances, and that "fused" ran the fused op (through a custom-gradient op in the
    graph where ``custom_gradient``: JAX and PyTorch, whose worker can see it)."""
    failures = []
    for r in rows:
        what = f"{backend} {r['name']} [{r['implementation']}]"
        if r["forward_abs"] > FORWARD_ATOL:
            failures.append(f"{what}: outputs off by {r['forward_abs']:.3g} > {FORWARD_ATOL}")
        if r["grad_rel"] > GRAD_RTOL:
            failures.append(f"{what}: gradients off by {r['grad_rel']:.3g} > {GRAD_RTOL} (rel)")
        fused = r["implementation"] == "fused"
        expect = {"uses_fused": fused, "custom_gradient": fused, **r["expect"]}
        if r["uses_fused"] != expect["uses_fused"]:
            failures.append(f"{what}: uses_fused() is {r['uses_fused']}")
        if custom_gradient and r["custom_gradient"] != expect["custom_gradient"]:
            failures.append(f"{what}: custom-gradient op in the graph: {r['custom_gradient']}")
    assert not failures, "\n".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "without_tf"),
    [pytest.param("tensorflow", False, marks=pytest.mark.tf), ("jax", True), ("torch", True)],
)
def test_shipped_layers_match_keras_on_every_backend(backend, without_tf):
    """Outputs to 1e-5 and gradients to 1e-4 (relative) of Keras's own layer, both
    implementations, with and without a mask, go_backwards, initial states and dropout."""
    cases = [c for kind in KINDS for c in _cases(kind)]
    job = {"path": str(ROOT), "package": "generated", "block_tensorflow": without_tf}
    rows = _run_worker(backend, {**job, "cases": cases})
    assert rows[-1]["tensorflow_imported"] != without_tf
    results = rows[:-1]
    assert len(results) == len(cases)
    for r in results:  # every returned tensor and every gradient was compared
        assert r["n_outputs"] >= 2 and r["n_grads"] >= 3, r
    _check(results, backend, custom_gradient=without_tf)


def test_layer_on_jax_and_torch_needs_no_tensorflow():
    """Importing the layer on JAX and PyTorch (TensorFlow blocked) runs a loop call, and asks
    for no TensorFlow: a quick, unmarked check of the import rule."""
    for backend in ("jax", "torch"):
        if importlib.util.find_spec(backend) is None:
            continue
        case = {
            "name": "GRU plain",
            "spec": "gru",
            "layer": "GRU",
            "reference": "keras_layer",
            "units": 3,
            "implementation": "loop",
        }
        job = {"path": str(ROOT), "package": "generated", "block_tensorflow": True}
        rows = _run_worker(backend, {**job, "cases": [case]})
        assert rows[-1] == {"tensorflow_imported": False}
        _check(rows[:-1], backend, custom_gradient=True)


#: cells from tests/specs: vector weights and blocks (mgu), row reductions (layer_norm_lstm), an
#: output that is not the first state (leaky_readout)
TEST_SPECS = ("mgu", "layer_norm_lstm", "leaky_readout")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_test_spec_cells_fused_match_loop(backend, tmp_path):
    """Cells from tests/specs, built into a folder and imported as top-level modules: the fused
    op (the sibling module's custom gradient) against the keras.ops loop. For a cell whose
    output is not its first state, on JAX with a mask, "auto" runs the loop (Keras's JAX loop
    outputs the first state at masked steps, which the fused op cannot follow); on PyTorch,
    whose loop outputs the last output there, it runs the fused op, with the same results."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    out = tmp_path / "built"
    specs = [ROOT / "tests" / "specs" / f"{name}.yaml" for name in TEST_SPECS]
    build = subprocess.run(
        [sys.executable, "-m", "rnngen", "build", *map(str, specs), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    cases = []
    masked = {"masked": True, "go_backwards": True}
    for spec_name, spec_path in zip(TEST_SPECS, specs, strict=True):
        class_name = yaml.safe_load(spec_path.read_text())["class_name"]
        variants = [("plain", {}), ("masked, go_backwards", masked)]
        if spec_name == "leaky_readout":
            on_torch = backend == "torch"
            expect = {"uses_fused": True, "custom_gradient": on_torch}
            variants = [("auto, masked", {**masked, "implementation": "auto", "expect": expect})]
        for i, (what, extra) in enumerate(variants):
            cases.append(
                {
                    "name": f"{class_name} {what}",
                    "spec": spec_name,
                    "layer": class_name,
                    "reference": "loop",
                    "units": 5,
                    "implementation": "fused",
                    "seed": i,
                    **extra,
                }
            )
    job = {"path": str(out), "package": "", "block_tensorflow": True, "cases": cases}
    rows = _run_worker(backend, job)
    assert rows[-1] == {"tensorflow_imported": False}
    assert len(rows) == len(cases) + 1
    _check(rows[:-1], backend, custom_gradient=True)


# -- the keras.ops spellings of the table functions ---------------------------------------------

_OPS_SCRIPT = """
import json, sys
import numpy as np
from keras import ops
grid = np.load(sys.argv[1])
bodies = json.loads(sys.argv[2])
out = {}
for name, body in bodies.items():
    scope = {"ops": ops}
    exec(f"def f(u):\\n    return {body}\\n", scope)
    out[name] = np.asarray(ops.convert_to_numpy(scope["f"](ops.convert_to_tensor(grid))))
np.savez(sys.argv[3], **out)
"""


def _expected(name: str, grid):
    """float64 values of table function ``name`` on ``grid``: the SymPy expression of an
    elementwise function; the NumPy body of a row-wise one (rows of the grid)."""
    import math

    import numpy as np
    import sympy as sp

    from rnngen import functions

    if name in functions.ROW_WISE_TABLE:
        e = functions.ROW_WISE_TABLE[name]
        scope = {"np": np}
        exec(e.helper("numpy") + f"\ndef f(u):\n    return {e.numpy}\n", scope)
        return scope["f"](grid)
    numeric = {
        "Sigmoid": lambda a: 1 / (1 + np.exp(-a)),
        "Softplus": lambda a: np.logaddexp(0, a),
        "erf": np.vectorize(math.erf, otypes=[float]),
        "expm1": np.expm1,
    }
    with np.errstate(invalid="ignore", divide="ignore"):
        f = sp.lambdify(functions.u, functions.TABLE[name].expr, modules=[numeric, "numpy"])
        return np.broadcast_to(np.asarray(f(grid), dtype=float), grid.shape)


#: (backend, dtype, absolute and relative tolerance): float64 where the loop is checked in
#: float64 (Keras 3.15's JAX ops compute float64 inputs in float32)
OPS_RUNS = [
    pytest.param("tensorflow", "float32", 2e-6, 1e-5, marks=pytest.mark.tf),
    pytest.param("tensorflow", "float64", 1e-12, 1e-12, marks=pytest.mark.tf),
    ("jax", "float32", 2e-6, 1e-5),
    ("torch", "float32", 2e-6, 1e-5),
    ("torch", "float64", 1e-12, 1e-12),
]


@pytest.mark.parametrize(("backend", "dtype", "atol", "rtol"), OPS_RUNS)
def test_keras_ops_spellings_compute_the_table_functions(backend, dtype, atol, rtol, tmp_path):
    """Each keras.ops body the step calls, run on the backend (a grid over [-4, 4] in rows of 8),
    against the table's SymPy expression in float64 (NumPy's body for the row-wise ones), where
    the function is defined: ``atol`` plus ``rtol`` relative (float32: 2e-6 + 1e-5; float64:
    1e-12 + 1e-12, which a constant kept in float32, such as a slope, fails)."""
    import numpy as np

    from rnngen.printers import keras_ops

    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    grid = np.linspace(-4, 4, 801 * 8, dtype=np.float64).reshape(-1, 8)
    grid32 = grid.astype(dtype)
    np.save(tmp_path / "grid.npy", grid32)
    bodies = {**keras_ops.FUNCTIONS, **keras_ops.ROW_WISE}
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _OPS_SCRIPT,
            str(tmp_path / "grid.npy"),
            json.dumps(bodies),
            str(tmp_path / "out.npz"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = np.load(tmp_path / "out.npz")
    bad = []
    for name in bodies:
        want = _expected(name, grid32.astype(np.float64))
        defined = np.isfinite(want)
        assert defined.mean() > 0.4, name
        assert got[name].dtype == dtype, f"{name} computed in {got[name].dtype}"
        err = np.abs(got[name][defined] - want[defined]) - rtol * np.abs(want[defined])
        if err.max() > atol:
            bad.append(f"{name}: off by {err.max():.3g} beyond {atol} + {rtol} * |value|")
    assert not bad, "\n".join(bad)


_ALONE_SCRIPT = """
import sys
import numpy as np
from keras import ops
sys.path.insert(0, sys.argv[1])
import gru_tf
x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype("float32")
auto = gru_tf.GRU(5, return_sequences=True)
loop = gru_tf.GRU(5, return_sequences=True, implementation="loop")
auto.build(x.shape)
loop.build(x.shape)
loop.set_weights(auto.get_weights())
print("auto uses fused:", auto.uses_fused())
y_auto, y_loop = (ops.convert_to_numpy(layer(x)) for layer in (auto, loop))
print("auto vs loop:", float(np.abs(y_auto - y_loop).max()))
try:
    gru_tf.GRU(5, implementation="fused")(x)
except ValueError as err:
    print("fused:", " ".join(str(err).split()))
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_without_the_fused_module_auto_runs_the_loop_and_fused_says_what_is_missing(
    backend, tmp_path
):
    """The layer module alone (top level, no ``gru_torch``/``gru_jax`` beside it): "auto" runs
    the loop (same outputs as "loop"), and "fused" raises a ValueError naming the module."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    layer = (ROOT / "generated" / "gru_tf.py").read_text(encoding="utf-8")
    (tmp_path / "gru_tf.py").write_text(layer, encoding="utf-8")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", _ALONE_SCRIPT, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    assert lines["auto uses fused"] == "False"
    assert float(lines["auto vs loop"]) == 0.0
    message = lines["fused"]
    assert f"'gru_{backend}'" in message and "cannot be imported" in message, message
    assert "implementation='fused' cannot run" in message, message


_FIT_SCRIPT = """
import json, sys
import numpy as np
import keras
sys.path.insert(0, sys.argv[1])
from generated import gru_tf, lstm_tf, simple_rnn_tf
modules = {"SimpleRNN": simple_rnn_tf, "GRU": gru_tf, "LSTM": lstm_tf}
rng = np.random.default_rng(0)
x = rng.normal(size=(16, 7, 3)).astype("float32")
x[:5, -2:] = 0.0  # masked by Masking
y = rng.normal(size=(16, 4)).astype("float32")
out = {}
for kind, module in modules.items():
    for impl in ("keras_layer", "loop", "fused"):
        keras.utils.set_random_seed(1)
        kw = dict(dropout=0.2, recurrent_dropout=0.1, seed=3)
        if impl == "keras_layer":
            layer = getattr(keras.layers, kind)(4, **kw)
        else:
            layer = getattr(module, kind)(4, implementation=impl, **kw)
        model = keras.Sequential([keras.Input((7, 3)), keras.layers.Masking(), layer])
        model.compile("sgd", "mse")
        out[f"{kind} {impl}"] = model.fit(x, y, epochs=3, batch_size=8, verbose=0).history["loss"]
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", [pytest.param("tensorflow", marks=pytest.mark.tf), "jax", "torch"]
)
def test_fit_with_dropout_and_masking_follows_kerass_loss_curve(backend):
    """``model.fit`` (compiled as each backend's trainer does: tf.function, jax.jit, torch
    eager) with Masking, dropout and recurrent dropout seeded alike: the per-epoch losses of
    both implementations equal Keras's own layer's to 1e-5 relative (the same seed draws the
    same masks)."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", _FIT_SCRIPT, str(ROOT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    losses = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = []
    for kind in KINDS:
        ref = losses[f"{kind} keras_layer"]
        for impl in ("loop", "fused"):
            got = losses[f"{kind} {impl}"]
            err = max(abs(a - b) / abs(b) for a, b in zip(got, ref, strict=True))
            if err > 1e-5:
                bad.append(f"{kind} {impl}: losses {got} vs Keras {ref} ({err:.3g} relative)")
    assert not bad, "\n".join(bad)
