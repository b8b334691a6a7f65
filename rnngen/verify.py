"""``rnngen verify``: check generated recurrent layers against independent references.

For every spec and backend four checks run, each reported as one row (configurations tried,
worst absolute error, worst relative error, tolerance, pass/fail):

``keras``
    The generated layer against the spec's Keras reference (``spec.reference``), float32, with
    identical random weights: returned outputs and states, ``sum(layer.losses)`` and the gradients
    of ``L = sum_i <P_i, returned_i> + sum(layer.losses)`` (random projections ``P_i``) with
    respect to the inputs, the initial states and every weight (``tf.GradientTape`` on Keras).
    The matrix covers the spec's activations and bool options, return_sequences/return_state,
    go_backwards, masks with gaps (+/- zero_output_for_mask, a fully masked row, a masked last
    step), initial states, a stateful call pair, injected dropout + recurrent dropout masks
    (per gate when Keras uses implementation 1) and weight + activity regularizers.
    Known Keras bugs are worked around, not reported: ``SimpleRNN`` drops its
    ``activity_regularizer`` argument, so the documented behaviour is restored by setting
    ``keras_layer.activity_regularizer`` after construction; ``unroll=True`` + ``go_backwards`` +
    ``zero_output_for_mask`` zeroes the wrong steps, so that combination is never generated.
``autodiff``
    The generated layer (float64) against an independent TensorFlow forward pass interpreted
    straight from the parsed SymPy equations (``WeightProduct(a, w)`` -> ``tf.matmul`` with the
    weight block, table functions -> TF ops), with Keras's masking, go_backwards, dropout,
    stateful and regularizer semantics, differentiated by ``tf.GradientTape``. Needs no Keras
    reference, so it works for any spec.
``finite_diff``
    Float64 central differences on the generated functional core ``forward``/``backward``:
    for random directions ``u`` (one per input/state/weight, plus one over everything),
    ``<grad L, u>`` against ``(L(p + eps u) - L(p - eps u)) / (2 eps)``; the cost does not depend
    on the number of parameters. When the direction of one tensor fails, per-entry central
    differences over that tensor (up to 4000 entries) name the worst index.
    ``full_jacobian=True`` adds the whole Jacobian of the outputs
    and final states (one backward per output entry, two forwards per parameter entry) for a
    tiny layer.
``hygiene``
    Each generated module imports in a fresh interpreter; the NumPy module must not pull in
    ``tensorflow`` or ``rnngen``. These subprocesses run concurrently with the other checks
    (``run_cli`` starts those of every shipped module up front).

The ``tf`` backend (``<name>_tf.py``, a Keras 3 layer) gets, for both ``implementation="loop"``
and ``"fused"``, a ``keras/<impl>`` row (against the Keras reference, float32, when the spec has
one) and an ``autodiff/<impl>`` row (against the same equation interpreter as the numpy
``autodiff`` check, in float64 when the layer runs with ``dtype="float64"``, else float32 with the
float32 tolerances), over the same configuration matrix as the numpy backend, dropout included:
the known masks are injected by patching ``get_dropout_mask`` / ``get_recurrent_dropout_mask`` on
the layer's cell instance, exactly as for the Keras reference, and the call runs with
``training=True``. The float64 run uses an exact L1/L2 regularizer (``keras.regularizers.L1L2``
rounds its coefficients to float32). The references run once per configuration and are shared
by the backends. Specs outside spec/ are built into a temporary folder, so a new cell is verified
on both backends.

Tolerance rule (``s = max(1, T / 20)`` grows with the sequence length T):

* forward values (outputs, states, losses): ``max|a - b| / max(1, max|b|) <= f * s`` with
  ``f = 1e-5`` (float32) or ``1e-10`` (float64);
* gradients: ``max|a - b| / max(max|b|, 0.01 * G) <= g * s`` per tensor, relative to the largest
  reference entry of that tensor (``G``: the largest reference gradient entry of the
  configuration, so nearly-zero tensors are not judged on noise), with ``g = 1e-4`` (float32) or
  ``1e-8`` (float64);
* finite differences (float64, ``eps = 1e-5``):
  ``|analytic - numeric| / max(|grad| |u|, |numeric|) <= 1e-6`` (grad and u restricted to
  the direction's group); full Jacobian: per entry, relative to the
  largest Jacobian entry, ``<= 1e-6``.

Results are reproducible for a given ``seed``. A missing ``tf`` module is reported as "not
available".
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sympy as sp

from . import codegen, functions
from . import spec as spec_mod
from .grammar import WeightProduct
from .spec import CellSpec

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CHECKS = ("keras", "autodiff", "finite_diff", "hygiene")
FWD_TOL = {"float32": 1e-5, "float64": 1e-10}
GRAD_TOL = {"float32": 1e-4, "float64": 1e-8}
FD_TOL = 1e-6
FD_EPS = 1e-5
SMOOTH = ("tanh", "sigmoid", "softsign", "softplus", "linear", "exponential", "selu", "elu")
REGS = {  # argument -> (l1, l2)
    "kernel": (0.01, 0.02),
    "recurrent": (0.03, 0.0),
    "bias": (0.0, 0.05),
    "activity": (0.01, 0.02),
}


def _reg(argument: str) -> tuple[float, float]:
    return REGS.get(argument, (0.02, 0.01))


# -- results ------------------------------------------------------------------------------------


@dataclass
class CheckResult:
    spec: str
    backend: str
    check: str
    status: str  # "pass" | "fail" | "n/a" | "error"
    configs: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    tol: str = ""
    seconds: float = 0.0
    note: str = ""
    remark: str = ""  # informational, e.g. a Keras bug that was worked around
    failure: dict | None = None  # smallest failing configuration and its worst entry

    @property
    def passed(self) -> bool:
        return self.status in ("pass", "n/a")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- configurations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    options: tuple  # ((name, value), ...)
    B: int = 3
    T: int = 6
    D: int = 4
    U: int = 5
    return_sequences: bool = True
    return_state: bool = True
    go_backwards: bool = False
    mask: bool = False
    zero_output_for_mask: bool = False
    initial_state: bool = False
    stateful: bool = False
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    regularizers: bool = False
    unroll: bool = False

    @property
    def opts(self) -> dict:
        return dict(self.options)

    def label(self, defaults: dict | None = None) -> str:
        parts = [f"B={self.B} T={self.T} D={self.D} U={self.U}"]
        for k, v in self.options:
            if defaults is None or defaults.get(k) != v:
                parts.append(f"{k}={v}")
        base = Config(options=self.options)
        for f in dataclasses.fields(self):
            if f.name in ("options", "B", "T", "D", "U"):
                continue
            v = getattr(self, f.name)
            if v != getattr(base, f.name):
                parts.append(f"{f.name}={v}")
        return " ".join(parts)

    def size(self, defaults: dict | None = None) -> tuple:
        """Sort key for "smallest": tensor sizes, then how many settings differ from defaults."""
        base = Config(options=self.options)
        changed = sum(
            getattr(self, f.name) != getattr(base, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("options", "B", "T", "D", "U")
        )
        changed += sum(defaults.get(k) != v for k, v in self.options) if defaults else 0
        return (self.B * self.T * max(self.U, self.D), changed, self.label())


def _alternative(opt) -> str:
    for name in ("sigmoid", "tanh", "softsign", "linear"):
        if name != opt.default and name in opt.values:
            return name
    return opt.default


def configurations(cs: CellSpec, quick: bool = False) -> list[Config]:
    """The configuration matrix for the ``keras`` and ``autodiff`` checks."""
    defaults = cs.defaults()
    base = tuple(defaults.items())

    def with_opts(**kw):
        return tuple({**defaults, **kw}.items())

    out = [Config(base)]
    acts = cs.activation_options
    if quick:
        if acts:
            out.append(Config(with_opts(**{o.name: _alternative(o) for o in acts})))
    else:
        for o in acts:
            for v in o.values:
                if v != o.default:
                    out.append(Config(with_opts(**{o.name: v}), T=4))
    bools = [o.name for o in cs.bool_options]
    for combo in itertools.product((True, False), repeat=len(bools)):
        opts = dict(zip(bools, combo, strict=True))
        if any(opts[k] != defaults[k] for k in bools):
            if quick and sum(opts[k] != defaults[k] for k in bools) > 1:
                continue
            out.append(Config(with_opts(**opts)))
    rest = [
        Config(base, mask=True, initial_state=True),
        Config(base, mask=True, go_backwards=True, zero_output_for_mask=True, initial_state=True),
        Config(base, stateful=True, mask=True),
        Config(base, dropout=0.3, recurrent_dropout=0.4, initial_state=True),
        Config(base, regularizers=True),
    ]
    if not quick:
        rest += [
            Config(base, return_sequences=False, return_state=False),
            Config(base, return_sequences=False, return_state=True),
            Config(base, return_sequences=True, return_state=False, initial_state=True),
            Config(base, go_backwards=True),
            Config(base, mask=True, zero_output_for_mask=True),
            Config(base, mask=True, go_backwards=True, initial_state=True),
            Config(base, mask=True, return_sequences=False, zero_output_for_mask=True),
            Config(base, stateful=True, go_backwards=True, return_state=False),
            Config(base, dropout=0.3),
            Config(base, recurrent_dropout=0.4),
            Config(base, dropout=0.3, recurrent_dropout=0.4, mask=True, go_backwards=True),
            Config(base, regularizers=True, return_sequences=False, return_state=False),
            Config(base, regularizers=True, mask=True, return_state=True),
            Config(base, unroll=True, mask=True, initial_state=True),
            Config(base, T=40, B=2, mask=True, initial_state=True),
        ]
        for combo in itertools.product((True, False), repeat=len(bools)):
            opts = dict(zip(bools, combo, strict=True))
            if any(opts[k] != defaults[k] for k in bools):
                rest.append(
                    Config(
                        with_opts(**opts),
                        mask=True,
                        dropout=0.3,
                        recurrent_dropout=0.4,
                        regularizers=True,
                        initial_state=True,
                    )
                )
    return out + rest


def _declared_dropout(cs: CellSpec, cfgs: list[Config]) -> list[Config]:
    """Drop the dropout rates a spec declares no mask for; keep each configuration once."""
    declared = {rate for _, rate in cs.dropout}
    out: list[Config] = []
    for cfg in cfgs:
        cfg = dataclasses.replace(
            cfg,
            dropout=cfg.dropout if "dropout" in declared else 0.0,
            recurrent_dropout=cfg.recurrent_dropout if "recurrent_dropout" in declared else 0.0,
        )
        if cfg not in out:
            out.append(cfg)
    return out


def fd_configurations(cs: CellSpec, quick: bool = False) -> list[Config]:
    """Smooth activations only (finite differences are meaningless at kinks)."""
    defaults = cs.defaults()
    smooth = {o.name: (o.default if o.default in SMOOTH else "tanh") for o in cs.activation_options}
    base = tuple({**defaults, **smooth}.items())
    out = [
        Config(base, initial_state=True),
        Config(
            base,
            mask=True,
            go_backwards=True,
            initial_state=True,
            dropout=0.3,
            recurrent_dropout=0.4,
        ),
    ]
    bools = [o.name for o in cs.bool_options]
    for combo in itertools.product((True, False), repeat=len(bools)):
        opts = dict(zip(bools, combo, strict=True))
        if any(opts[k] != defaults[k] for k in bools):
            out.append(
                Config(
                    tuple({**dict(base), **opts}.items()),
                    mask=True,
                    zero_output_for_mask=True,
                    initial_state=True,
                    dropout=0.3,
                    recurrent_dropout=0.4,
                )
            )
            if quick:
                break
    if not quick:
        for o in cs.activation_options:
            for v in o.values:
                if v in SMOOTH and v != dict(base)[o.name]:
                    out.append(
                        Config(tuple({**dict(base), o.name: v}.items()), T=4, initial_state=True)
                    )
        out.append(Config(base, mask=True, zero_output_for_mask=False, initial_state=True))
    return out


# -- modules ------------------------------------------------------------------------------------

_counter = itertools.count()


def import_path(path: Path, name: str | None = None):
    """Import a Python file under a unique module name."""
    name = name or f"_rnngen_verify_{Path(path).stem}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_into(path: Path, out_dir: Path) -> Path:
    """Generate the modules of the spec at ``path`` into ``out_dir``."""
    from .cli import build_files

    files = build_files([Path(path)])
    codegen.write_atomically(files, Path(out_dir))
    return Path(out_dir)


def _module_dir(cs: CellSpec, path: Path | None, module_dir: Path | None, stack) -> Path:
    if module_dir is not None:
        return Path(module_dir)
    generated = codegen.spec_dir().parent / "generated"
    if path is not None and Path(path).resolve().parent == codegen.spec_dir().resolve():
        if (generated / f"{cs.name}_numpy.py").is_file():
            return generated
    if path is None:
        raise ValueError("a CellSpec without a file needs module_dir=")
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rnngen-verify-")))
    return build_into(path, tmp)


# -- random data --------------------------------------------------------------------------------


def _stable(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode())


def make_data(module, cs: CellSpec, cfg: Config, seed: int) -> dict:
    rng = np.random.default_rng([seed, _stable(cs.name), _stable(cfg.label())])
    B, T, D, U = cfg.B, cfg.T, cfg.D, cfg.U
    bools = {o.name: cfg.opts[o.name] for o in cs.bool_options}
    import inspect

    accepted = inspect.signature(module.weight_shapes).parameters
    shapes = module.weight_shapes(D, U, **{k: v for k, v in bools.items() if k in accepted})
    # unbounded activations (exponential, relu, ...) get smaller weights so nothing overflows
    unbounded = any(
        cfg.opts[o.name] not in ("tanh", "sigmoid", "hard_sigmoid", "softsign")
        for o in cs.activation_options
    )
    a = 0.25 if unbounded else 0.6
    weights = {n: rng.uniform(-a, a, s) for n, s in shapes.items()}
    n_calls = 2 if cfg.stateful else 1
    xs = [(0.5 if unbounded else 1.0) * rng.standard_normal((B, T, D)) for _ in range(n_calls)]
    mask = None
    if cfg.mask:
        mask = rng.random((B, T)) > 0.35
        mask[0, 0] = False  # a leading masked step
        mask[0, 1:3] = True
        if B > 1:
            mask[1, -1] = False  # a masked last step
        if B > 2:
            mask[2] = False  # a fully masked row
    h0 = [0.5 * rng.standard_normal((B, U)) for _ in cs.states] if cfg.initial_state else None
    dmasks = {}
    for rate_name, (tensor, count) in module.DROPOUT.items():
        rate = getattr(cfg, rate_name, 0.0)
        if rate <= 0:
            continue
        shape = (B, D) if tensor == "x" else (B, U)
        per_gate = cfg.recurrent_dropout > 0 and count > 1
        draws = [(rng.random(shape) >= rate) / (1 - rate) for _ in range(count if per_gate else 1)]
        dmasks[rate_name] = draws if per_gate else draws[0]
    n_ret = 1 + (len(cs.states) if cfg.return_state else 0)
    proj = []
    for i in range(n_ret):
        shape = (B, T, U) if (i == 0 and cfg.return_sequences) else (B, U)
        proj.append(rng.standard_normal(shape))
    fd_state_proj = [rng.standard_normal((B, U)) for _ in cs.states]
    return {
        "weights": weights,
        "xs": xs,
        "mask": mask,
        "h0": h0,
        "dmasks": dmasks or None,
        "proj": proj,
        "fd_state_proj": fd_state_proj,
    }


def _reg_kwargs(cs: CellSpec, cfg: Config, make) -> dict:
    if not cfg.regularizers:
        return {}
    args = {w.argument for w in cs.weights}
    out = {f"{a}_regularizer": make(*_reg(a)) for a in sorted(args)}
    out["activity_regularizer"] = make(*REGS["activity"])
    return out


def _layer_kwargs(cfg: Config) -> dict:
    return {
        "return_sequences": cfg.return_sequences,
        "return_state": cfg.return_state,
        "go_backwards": cfg.go_backwards,
        "stateful": cfg.stateful,
        "zero_output_for_mask": cfg.zero_output_for_mask,
        "dropout": cfg.dropout,
        "recurrent_dropout": cfg.recurrent_dropout,
        "unroll": cfg.unroll,
    }


def _cast(v, dtype):
    if v is None:
        return None
    if isinstance(v, list):
        return [np.asarray(a, dtype) for a in v]
    if isinstance(v, dict):
        return {k: _cast(a, dtype) for k, a in v.items()}
    return np.asarray(v, dtype)


# -- the generated NumPy layer ------------------------------------------------------------------


def run_numpy_layer(module, cs: CellSpec, cfg: Config, data: dict, dtype: str) -> dict:
    cls = getattr(module, cs.class_name)
    regs = _reg_kwargs(
        cs, cfg, lambda l1, l2: {"class_name": "L1L2", "config": {"l1": l1, "l2": l2}}
    )
    layer = cls(cfg.U, **cfg.opts, **_layer_kwargs(cfg), **regs, dtype=dtype)
    layer.set_weights([np.asarray(w, dtype) for w in data["weights"].values()])
    out: dict[str, np.ndarray] = {}
    training = data["dmasks"] is not None
    kw = {"mask": data["mask"], "training": training, "dropout_masks": _cast(data["dmasks"], dtype)}
    xs = [np.asarray(x, dtype) for x in data["xs"]]
    if cfg.stateful:
        first = layer(xs[0], **kw)
        first = list(first) if cfg.return_state else [first]
        for i, r in enumerate(first):
            out[f"call1.returned[{i}]"] = np.asarray(r)
        h0 = None
    else:
        h0 = _cast(data["h0"], dtype)
    ret = layer(xs[-1], initial_state=h0, **kw)
    ret = list(ret) if cfg.return_state else [ret]
    for i, r in enumerate(ret):
        out[f"returned[{i}]"] = np.asarray(r)
    proj = [np.asarray(p, dtype) for p in data["proj"]]
    loss_terms = layer.losses
    out["sum(losses)"] = np.asarray(
        float(np.sum([np.sum(v) for v in loss_terms])) if loss_terms else 0.0
    )
    g = layer.backward(proj[0], d_states=proj[1:] if cfg.return_state else None)
    grads = {"d inputs": np.asarray(g.inputs)}
    if data["h0"] is not None and not cfg.stateful:
        for s, d in zip(cs.states, g.initial_state, strict=True):
            grads[f"d initial {s}"] = np.asarray(d)
    for n, d in g.weights.items():
        grads[f"d {n}"] = np.asarray(d)
    return {"values": out, "grads": grads}


# -- Keras reference ----------------------------------------------------------------------------


def _tf():
    import tensorflow as tf

    return tf


def _keras_class(reference: str):
    import importlib

    mod, _, name = reference.rpartition(".")
    return getattr(importlib.import_module(mod), name)


def run_keras_layer(
    cls,
    cs: CellSpec,
    cfg: Config,
    data: dict,
    extra: dict | None = None,
    inject_dropout: bool = True,
    dtype: str = "float32",
) -> dict:
    """Run a Keras-style layer class (the Keras reference or a generated TF layer) in ``dtype``.

    Known dropout masks are injected by patching ``get_dropout_mask`` /
    ``get_recurrent_dropout_mask`` on the layer's cell instance (a list of per-gate masks when
    ``make_data`` drew one per gate), and the call runs with ``training=True``.
    """
    tf = _tf()
    import keras

    tfd = tf.as_dtype(dtype)

    def make_reg(l1, l2):
        if dtype == "float32":
            return keras.regularizers.L1L2(l1=l1, l2=l2)

        # keras.regularizers.L1L2 rounds l1/l2 to float32 even for float64 weights; the
        # float64 autodiff check needs them exact
        class ExactL1L2(keras.regularizers.Regularizer):
            def __call__(self, x):
                return l1 * tf.reduce_sum(tf.abs(x)) + l2 * tf.reduce_sum(tf.square(x))

            def get_config(self):
                return {}

        return ExactL1L2()

    regs = _reg_kwargs(cs, cfg, make_reg)
    layer = cls(cfg.U, **cfg.opts, **_layer_kwargs(cfg), **regs, **(extra or {}), dtype=dtype)
    if regs and layer.activity_regularizer is None:
        # Keras bug: SimpleRNN drops the activity_regularizer argument; restore it.
        layer.activity_regularizer = regs["activity_regularizer"]
    layer.build((cfg.B, cfg.T, cfg.D))
    layer.set_weights([np.asarray(w, dtype) for w in data["weights"].values()])
    if cfg.stateful:
        layer.reset_state()
    dm = data["dmasks"]
    training = dm is not None
    if dm is not None and inject_dropout:

        def getter(key):
            value = dm.get(key)
            if value is None:
                return lambda step_input: None
            if isinstance(value, list):
                consts = [tf.constant(v, tfd) for v in value]
            else:
                consts = tf.constant(value, tfd)
            return lambda step_input: consts

        layer.cell.get_dropout_mask = getter("dropout")
        layer.cell.get_recurrent_dropout_mask = getter("recurrent_dropout")
    mask = None if data["mask"] is None else tf.constant(data["mask"])
    out = {}
    xs = [tf.constant(x, tfd) for x in data["xs"]]
    if cfg.stateful:
        first = layer(xs[0], mask=mask, training=training)
        first = list(first) if cfg.return_state else [first]
        for i, r in enumerate(first):
            out[f"call1.returned[{i}]"] = r.numpy()
    h0 = None if (data["h0"] is None or cfg.stateful) else [tf.constant(h, tfd) for h in data["h0"]]
    weights = list(layer.trainable_weights)
    with tf.GradientTape() as tape:
        tape.watch(xs[-1])
        if h0 is not None:
            tape.watch(h0)
        ret = layer(xs[-1], initial_state=h0, mask=mask, training=training)
        ret = list(ret) if cfg.return_state else [ret]
        losses = list(layer.losses)
        total = (
            tf.add_n([tf.reduce_sum(tf.cast(v, tfd)) for v in losses])
            if losses
            else tf.constant(0.0, tfd)
        )
        loss = total + tf.add_n(
            [tf.reduce_sum(tf.constant(p, tfd) * r) for p, r in zip(data["proj"], ret, strict=True)]
        )
    targets = [xs[-1]] + (h0 or []) + weights
    grads = tape.gradient(loss, targets)
    for i, r in enumerate(ret):
        out[f"returned[{i}]"] = r.numpy()
    out["sum(losses)"] = np.asarray(float(total.numpy()))
    names = ["d inputs"] + [f"d initial {s}" for s in (cs.states if h0 else [])]
    names += [f"d {n}" for n in data["weights"]]
    gd = {}
    for n, g in zip(names, grads, strict=True):
        gd[n] = np.zeros(1) if g is None else np.asarray(tf.convert_to_tensor(g).numpy())
    return {"values": out, "grads": gd}


# -- independent TF forward pass from the parsed equations --------------------------------------

_TF_FUNCS = {
    "linear": lambda tf, u: u,
    "tanh": lambda tf, u: tf.tanh(u),
    "sigmoid": lambda tf, u: tf.sigmoid(u),
    "hard_sigmoid": lambda tf, u: tf.clip_by_value(u / 6 + 0.5, 0.0, 1.0),
    "relu": lambda tf, u: tf.nn.relu(u),
    "relu6": lambda tf, u: tf.nn.relu6(u),
    "elu": lambda tf, u: tf.nn.elu(u),
    "selu": lambda tf, u: tf.nn.selu(u),
    "softplus": lambda tf, u: tf.nn.softplus(u),
    "softsign": lambda tf, u: tf.nn.softsign(u),
    "exponential": lambda tf, u: tf.exp(u),
    "exp": lambda tf, u: tf.exp(u),
    "abs": lambda tf, u: tf.abs(u),
    "silu": lambda tf, u: tf.nn.silu(u),
}


def _tf_function(name: str):
    tf = _tf()
    if name in _TF_FUNCS:
        return lambda u: _TF_FUNCS[name](tf, u)
    src = functions.TABLE[name].tf  # fall back on the table's TF spelling
    return lambda u: eval(src, {"tf": tf, "u": u})  # noqa: S307 - trusted table text


class EquationCell:
    """One step of the cell, interpreted from the SymPy equations with TensorFlow ops."""

    def __init__(self, cs: CellSpec, options: dict, D: int, U: int):
        self.cs, self.options = cs, options
        self.sizes = {sp.Symbol("units"): U, sp.Symbol("input_dim"): D}
        self.blocks: dict[str, tuple[str, Any, int]] = {}  # block -> (weight, index, gate)
        self.absent: set[str] = set()
        for w in cs.weights:
            layout = w.layout(options)
            for lay in w.layouts:
                self.absent.update(lay.names())
            if layout is None:
                continue
            self.absent.difference_update(layout.names())
            shape = [
                int(
                    sp.sympify(s)
                    .subs({sp.Symbol(k.name, real=True): v for k, v in self.sizes.items()})
                    .subs(self.sizes)
                )
                for s in layout.shape
            ]
            cols = shape[-1] // len(layout.blocks[0])
            for r, row in enumerate(layout.blocks):
                for i, name in enumerate(row):
                    sl = slice(i * cols, (i + 1) * cols)
                    idx = (r, sl) if len(layout.blocks) > 1 else (Ellipsis, sl)
                    if len(row) == 1 and len(layout.blocks) == 1:
                        idx = (Ellipsis,)
                    self.blocks[name] = (w.name, idx, i)
        self.eqs = [(e.name, e.rhs(options)) for e in cs.equations]
        self.act_options = {o.name for o in cs.activation_options}
        self.drop_tensors = {t for t, _ in cs.dropout}

    def step(self, x, prev: list, weights: dict, masks: dict | None):
        env = {"x": x}
        for s, v in zip(self.cs.states, prev, strict=True):
            env[f"{s}_prev"] = v
        self._w, self._masks = weights, masks
        for name, rhs in self.eqs:
            env[name] = self.ev(rhs, env, None)
        return env[self.cs.output], [env[s] for s in self.cs.states]

    def ev(self, e, env, gate):
        tf = _tf()
        if isinstance(e, sp.Symbol):
            n = e.name
            if n in env:
                v = env[n]
                if gate is not None and self._masks and n in self._masks:
                    ms = self._masks[n]
                    v = v * ms[gate % len(ms)]
                return v
            if n in self.absent:
                return 0.0
            if n in self.blocks:
                w, idx, _ = self.blocks[n]
                return self._w[w][idx]
            raise KeyError(f"unknown name {n!r} in the equations")
        if isinstance(e, sp.Number):
            return float(e)
        if isinstance(e, WeightProduct):
            a, w = e.args
            if w.name in self.absent:
                return 0.0
            wname, idx, g = self.blocks[w.name]
            return tf.matmul(self.ev(a, env, g), self._w[wname][idx])
        if isinstance(e, sp.Add):
            out = 0.0
            for a in e.args:
                out = out + self.ev(a, env, gate)
            return out
        if isinstance(e, sp.Mul):
            out = 1.0
            for a in e.args:
                out = out * self.ev(a, env, gate)
            return out
        if isinstance(e, sp.Pow):
            return self.ev(e.args[0], env, gate) ** float(e.args[1])
        if isinstance(e, functions._Call):
            cname = type(e).call_name
            if cname in self.act_options:
                name = functions.resolve_activation(self.options[cname])
            else:
                name = type(e).entry.name
            return _tf_function(name)(self.ev(e.args[0], env, gate))
        raise TypeError(f"cannot interpret {type(e).__name__}: {e}")


def run_equations(cs: CellSpec, cfg: Config, data: dict, dtype=np.float64) -> dict:
    """Reference layer: the equations in TF with Keras's layer semantics, float64."""
    tf = _tf()
    cell = EquationCell(cs, cfg.opts, cfg.D, cfg.U)
    wvars = {n: tf.constant(w, tf.float64) for n, w in data["weights"].items()}
    masks = None
    if data["dmasks"] is not None:
        masks = {}
        for tensor, rate_name in cs.dropout:
            v = data["dmasks"].get(rate_name)
            if v is not None:
                masks[tensor] = [
                    tf.constant(m, tf.float64) for m in (v if isinstance(v, list) else [v])
                ]
    B, U = cfg.B, cfg.U
    mask = data["mask"]

    def run(x, states):
        T = x.shape[1]
        order = range(T - 1, -1, -1) if cfg.go_backwards else range(T)
        out_prev = tf.zeros((B, U), tf.float64)
        outs = []
        for t in order:
            o, new = cell.step(x[:, t], states, wvars, masks)
            if mask is not None:
                m = tf.constant(mask[:, t : t + 1])
                new = [tf.where(m, n, s) for n, s in zip(new, states, strict=True)]
                o = tf.where(m, o, tf.zeros_like(o) if cfg.zero_output_for_mask else out_prev)
            states = new
            out_prev = o
            outs.append(o)
        seq = tf.stack(outs, 1)
        ret = [seq if cfg.return_sequences else outs[-1]]
        if cfg.return_state:
            ret += list(states)
        return ret, states

    def penalty(reg, t):
        return reg[0] * tf.reduce_sum(tf.abs(t)) + reg[1] * tf.reduce_sum(t * t)

    out = {}
    xs = [tf.constant(x, tf.float64) for x in data["xs"]]
    zeros = [tf.zeros((B, U), tf.float64) for _ in cs.states]
    if cfg.stateful:
        first, carried = run(xs[0], zeros)
        for i, r in enumerate(first):
            out[f"call1.returned[{i}]"] = r.numpy()
        h0 = None
        start = carried
    else:
        h0 = None if data["h0"] is None else [tf.constant(h, tf.float64) for h in data["h0"]]
        start = h0 or zeros
    with tf.GradientTape() as tape:
        tape.watch(xs[-1])
        tape.watch(list(wvars.values()))
        if h0:
            tape.watch(h0)
        ret, _ = run(xs[-1], start)
        total = tf.constant(0.0, tf.float64)
        if cfg.regularizers:
            for r in ret:
                total += penalty(REGS["activity"], r) / B
            args = {w.name: w.argument for w in cs.weights}
            for n, w in wvars.items():
                total += penalty(_reg(args[n]), w)
        loss = total + tf.add_n(
            [
                tf.reduce_sum(tf.constant(p, tf.float64) * r)
                for p, r in zip(data["proj"], ret, strict=True)
            ]
        )
    targets = [xs[-1]] + (h0 or []) + list(wvars.values())
    grads = tape.gradient(loss, targets)
    for i, r in enumerate(ret):
        out[f"returned[{i}]"] = r.numpy()
    out["sum(losses)"] = np.asarray(float(total.numpy()))
    names = ["d inputs"] + [f"d initial {s}" for s in (cs.states if h0 else [])]
    names += [f"d {n}" for n in wvars]
    gd = {
        n: (np.zeros(1) if g is None else tf.convert_to_tensor(g).numpy())
        for n, g in zip(names, grads, strict=True)
    }
    return {"values": out, "grads": gd}


# -- comparison ---------------------------------------------------------------------------------


@dataclass
class Compared:
    max_abs: float = 0.0
    max_rel: float = 0.0
    ok: bool = True
    worst: dict | None = None  # the worst failing (or worst overall) entry
    skipped: bool = False  # the reference itself overflowed: nothing to compare


def compare(ours: dict, ref: dict, dtype: str, T: int) -> Compared:
    s = max(1.0, T / 20)
    res = Compared()
    if not all(
        np.all(np.isfinite(np.asarray(b, np.float64)))
        for kind in ("values", "grads")
        for b in ref[kind].values()
    ):
        res.skipped = True  # e.g. an exponential activation overflowing: no oracle to trust
        return res
    worst_ratio = -1.0
    gscale = max([float(np.max(np.abs(g))) for g in ref["grads"].values() if np.size(g)] + [0.0])
    for kind in ("values", "grads"):
        tol = (FWD_TOL if kind == "values" else GRAD_TOL)[dtype] * s
        for name, b in ref[kind].items():
            b = np.asarray(b, np.float64)
            a = ours[kind].get(name)
            if a is None:
                entry = {
                    "tensor": name,
                    "index": None,
                    "analytic": None,
                    "reference": "present",
                    "rel": float("inf"),
                    "tol": tol,
                }
                res.ok, res.max_rel, res.worst = False, float("inf"), entry
                worst_ratio = float("inf")
                continue
            a = np.asarray(a, np.float64)
            if a.shape != b.shape:
                entry = {
                    "tensor": name,
                    "index": None,
                    "analytic": f"shape {a.shape}",
                    "reference": f"shape {b.shape}",
                    "rel": float("inf"),
                    "tol": tol,
                }
                res.ok, res.max_rel, res.worst = False, float("inf"), entry
                worst_ratio = float("inf")
                continue
            if a.size == 0:
                continue
            diff = np.abs(a - b)
            diff = np.where(np.isnan(diff), np.inf, diff)
            i = int(np.argmax(diff))
            err = float(diff.flat[i])
            if kind == "values":
                denom = max(1.0, float(np.max(np.abs(b))))
            else:
                denom = max(float(np.max(np.abs(b))), 0.01 * gscale, 1e-30)
            rel = err / denom
            res.max_abs = max(res.max_abs, err)
            res.max_rel = max(res.max_rel, rel)
            if rel > tol:
                res.ok = False
            if rel / tol > worst_ratio:
                worst_ratio = rel / tol
                idx = tuple(int(k) for k in np.unravel_index(i, b.shape)) if b.ndim else ()
                res.worst = {
                    "tensor": name,
                    "index": idx,
                    "analytic": float(a.flat[i]),
                    "reference": float(b.flat[i]),
                    "rel": rel,
                    "tol": tol,
                }
    return res


# -- finite differences -------------------------------------------------------------------------


def _fd_setup(module, cs: CellSpec, cfg: Config, data: dict):
    w0 = {n: np.asarray(w, np.float64) for n, w in data["weights"].items()}
    x0 = np.asarray(data["xs"][-1], np.float64)
    h0 = (
        [np.asarray(h, np.float64) for h in data["h0"]]
        if data["h0"] is not None
        else [np.zeros((cfg.B, cfg.U)) for _ in cs.states]
    )
    P = np.random.default_rng(_stable(cfg.label())).standard_normal((cfg.B, cfg.T, cfg.U))
    Q = data["fd_state_proj"]
    kw = dict(
        mask=data["mask"],
        dropout_masks=_cast(data["dmasks"], np.float64),
        go_backwards=cfg.go_backwards,
        zero_output_for_mask=cfg.zero_output_for_mask,
        **cfg.opts,
    )
    params = {
        "x": x0,
        **{f"initial {s}": h for s, h in zip(cs.states, h0, strict=True)},
        **{n: w for n, w in w0.items()},
    }

    def unpack(p):
        return (p["x"], {n: p[n] for n in w0}, [p[f"initial {s}"] for s in cs.states])

    def outputs(p):
        x, w, h = unpack(p)
        y, states, tape = module.forward(x, w, h, **kw)
        return y, states, tape

    def loss(p):
        y, states, _ = outputs(p)
        return float(np.sum(P * y) + sum(np.sum(q * s) for q, s in zip(Q, states, strict=True)))

    def grad(p, dy=P, ds=Q):
        _, _, tape = outputs(p)
        dx, dh, dw = module.backward(tape, dy, [np.array(d) for d in ds])
        g = {"x": dx, **{f"initial {s}": d for s, d in zip(cs.states, dh, strict=True)}}
        g.update(dw)
        return g

    return params, outputs, loss, grad


def fd_check(module, cs: CellSpec, cfg: Config, data: dict, seed: int) -> Compared:
    params, _, loss, grad = _fd_setup(module, cs, cfg, data)
    g = grad(params)
    rng = np.random.default_rng([seed, _stable(cfg.label()), 7])
    res = Compared()
    groups = [[n] for n in params] + [list(params)]
    for group in groups:
        u = {
            n: (rng.standard_normal(params[n].shape) if n in group else np.zeros_like(params[n]))
            for n in params
        }
        analytic = float(sum(np.sum(np.asarray(g[n], np.float64) * u[n]) for n in group))
        plus = {n: params[n] + FD_EPS * u[n] for n in params}
        minus = {n: params[n] - FD_EPS * u[n] for n in params}
        numeric = (loss(plus) - loss(minus)) / (2 * FD_EPS)
        if not np.isfinite(numeric):
            return Compared(skipped=True)  # the loss itself overflows: no oracle to trust
        scale = np.sqrt(sum(np.sum(np.asarray(g[n]) ** 2) for n in group)) * np.sqrt(
            sum(np.sum(u[n] ** 2) for n in group)
        )
        err = abs(analytic - numeric)
        rel = err / max(scale, abs(numeric), 1e-30)
        if not np.isfinite(rel):
            rel = float("inf")
        res.max_abs, res.max_rel = max(res.max_abs, err), max(res.max_rel, rel)
        if rel > FD_TOL:
            res.ok = False
        if res.worst is None or rel > res.worst["rel"]:
            res.worst = {
                "tensor": "direction over " + ("all" if len(group) > 1 else group[0]),
                "index": None,
                "analytic": analytic,
                "reference": numeric,
                "rel": rel,
                "tol": FD_TOL,
            }
    if (
        not res.ok
        and res.worst["tensor"].startswith("direction over ")
        and res.worst["tensor"] != "direction over all"
    ):
        res.worst.update(_localize(params, loss, g, res.worst["tensor"][len("direction over ") :]))
    return res


FD_LOCALIZE_MAX = 4000


def _localize(params, loss, g, name):
    """The worst entry of one tensor by per-entry central differences (small tensors only)."""
    value = params[name]
    if value.size > FD_LOCALIZE_MAX:
        return {}
    analytic = np.asarray(g[name], np.float64)
    worst = None
    for i in range(value.size):
        shifted = []
        for sign in (1, -1):
            v = value.copy()
            v.flat[i] += sign * FD_EPS
            shifted.append(loss({**params, name: v}))
        numeric = (shifted[0] - shifted[1]) / (2 * FD_EPS)
        err = abs(analytic.flat[i] - numeric)
        if worst is None or err > worst[0]:
            worst = (err, i, float(analytic.flat[i]), numeric)
    _, i, a, n = worst
    return {
        "tensor": name,
        "index": [int(k) for k in np.unravel_index(i, value.shape)],
        "analytic": a,
        "reference": n,
    }


def full_jacobian_check(module, cs: CellSpec, cfg: Config, data: dict) -> Compared:
    params, outputs, _, _ = _fd_setup(module, cs, cfg, data)

    def flat_out(p):
        y, states, _ = outputs(p)
        return np.concatenate([y.ravel()] + [s.ravel() for s in states])

    y0, states0, tape = outputs(params)
    n_out = y0.size + sum(s.size for s in states0)
    names = list(params)
    numeric = {n: np.zeros((n_out,) + params[n].shape) for n in names}
    for n in names:
        for idx in np.ndindex(params[n].shape):
            plus = dict(params)
            minus = dict(params)
            plus[n] = params[n].copy()
            minus[n] = params[n].copy()
            plus[n][idx] += FD_EPS
            minus[n][idx] -= FD_EPS
            numeric[n][(slice(None),) + idx] = (flat_out(plus) - flat_out(minus)) / (2 * FD_EPS)
    analytic = {n: np.zeros_like(numeric[n]) for n in names}
    for k in range(n_out):
        e = np.zeros(n_out)
        e[k] = 1.0
        dy = e[: y0.size].reshape(y0.shape)
        ds, off = [], y0.size
        for s in states0:
            ds.append(e[off : off + s.size].reshape(s.shape))
            off += s.size
        dx, dh, dw = module.backward(tape, dy, ds)
        g = {"x": dx, **{f"initial {s}": d for s, d in zip(cs.states, dh, strict=True)}, **dw}
        for n in names:
            analytic[n][k] = g[n]
    scale = max(float(np.max(np.abs(v))) for v in numeric.values())
    res = Compared()
    for n in names:
        diff = np.abs(analytic[n] - numeric[n])
        i = int(np.argmax(diff))
        err = float(diff.flat[i])
        rel = err / max(scale, 1e-30)
        res.max_abs, res.max_rel = max(res.max_abs, err), max(res.max_rel, rel)
        if rel > FD_TOL:
            res.ok = False
        if res.worst is None or rel > res.worst["rel"]:
            idx = np.unravel_index(i, diff.shape)
            res.worst = {
                "tensor": f"jacobian d out[{idx[0]}] / d {n}",
                "index": tuple(int(k) for k in idx[1:]),
                "analytic": float(analytic[n].flat[i]),
                "reference": float(numeric[n].flat[i]),
                "rel": rel,
                "tol": FD_TOL,
            }
    return res


# -- hygiene ------------------------------------------------------------------------------------

_HYGIENE = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("m", sys.argv[1])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
bad = sorted(k for k in sys.modules if k.split(".")[0] in ("tensorflow", "rnngen", "keras"))
print("LOADED:" + ",".join(bad))
"""


def start_hygiene(path: Path) -> subprocess.Popen:
    """Import ``path`` in a fresh interpreter (runs concurrently with the other checks)."""
    return subprocess.Popen(
        [sys.executable, "-c", _HYGIENE, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tempfile.gettempdir(),
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def finish_hygiene(proc: subprocess.Popen, forbid: bool) -> tuple[bool, str]:
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return False, "import timed out"
    if proc.returncode != 0:
        return False, "import failed: " + (stderr.strip().splitlines() or ["?"])[-1]
    line = [ln for ln in stdout.splitlines() if ln.startswith("LOADED:")]
    loaded = [m for m in line[-1][7:].split(",") if m] if line else []
    if forbid and loaded:
        tops = sorted({m.split(".")[0] for m in loaded})
        return False, f"imports {', '.join(tops)}"
    return True, ""


def hygiene_check(path: Path, forbid: bool) -> tuple[bool, str]:
    return finish_hygiene(start_hygiene(path), forbid)


def prestart_hygiene(paths, backends=("numpy", "tf")) -> dict:
    """Start the hygiene imports of the shipped generated modules of ``paths`` at once.

    Returns ``{resolved module path: Popen}`` for :func:`verify_spec`'s ``hygiene_procs``
    (specs outside spec/ are built into a temporary folder later and are not started here).
    """
    generated = codegen.spec_dir().parent / "generated"
    shipped = codegen.spec_dir().resolve()
    out = {}
    for path in paths:
        path = Path(path)
        if path.resolve().parent != shipped:
            continue
        try:
            name = spec_mod.load(path).name
        except Exception:  # noqa: BLE001 - verify_spec reports it
            continue
        for backend in backends:
            module = generated / f"{name}_{backend}.py"
            if backend in ("numpy", "tf") and module.is_file():
                out.setdefault(module.resolve(), start_hygiene(module))
    return out


# -- driver -------------------------------------------------------------------------------------


class _Progress:
    def __init__(self, progress, task):
        self.progress, self.task = progress, task

    def advance(self, n=1):
        if self.progress is not None:
            self.progress.advance(self.task, n)


def _run_matrix(
    name, check, backend, configs, fn, dtype_for_tol, progress, defaults
) -> CheckResult:
    t0 = time.perf_counter()
    res = CheckResult(spec=name, backend=backend, check=check, status="pass", configs=0)
    failures = []
    skipped = 0
    for cfg in configs:
        try:
            with np.errstate(all="ignore"):
                c = fn(cfg)
        except Exception as err:  # noqa: BLE001 - reported as a failing row
            c = Compared(
                ok=False,
                max_abs=float("inf"),
                max_rel=float("inf"),
                worst={
                    "tensor": "exception",
                    "index": None,
                    "analytic": f"{type(err).__name__}: {err}"[:300],
                    "reference": None,
                    "rel": float("inf"),
                    "tol": None,
                },
            )
        if c.skipped:
            skipped += 1
            progress.advance()
            continue
        res.configs += 1
        res.max_abs = max(res.max_abs, c.max_abs)
        res.max_rel = max(res.max_rel, c.max_rel)
        if not c.ok:
            failures.append((cfg, c))
        progress.advance()
    res.tol = dtype_for_tol
    if failures:
        cfg, c = min(failures, key=lambda fc: fc[0].size(defaults))
        res.status = "fail"
        res.failure = {"config": cfg.label(defaults), "failing_configs": len(failures), **c.worst}
        res.note = f"{len(failures)}/{res.configs} configurations fail"
    if skipped:
        res.remark = (res.remark + "; " if res.remark else "") + (
            f"{skipped} configuration(s) skipped: the reference overflowed (inf/nan)"
        )
        if res.configs == 0:  # nothing was compared: not a pass
            res.status = "fail"
            res.note = "every configuration overflowed in the reference"
    res.seconds = round(time.perf_counter() - t0, 2)
    return res


def _tol_text(dtype: str) -> str:
    return f"fwd {FWD_TOL[dtype]:g}·s, grad {GRAD_TOL[dtype]:g}·s"


def verify_spec(
    path_or_spec,
    backends=("numpy",),
    quick: bool = False,
    seed: int = 0,
    module_dir: Path | str | None = None,
    numpy_module=None,
    full_jacobian: bool = False,
    checks=CHECKS,
    progress=None,
    hygiene_procs: dict | None = None,
) -> list[CheckResult]:
    """Run the checks for one spec; returns one :class:`CheckResult` per backend and check.

    ``hygiene_procs``: hygiene imports already started (see :func:`prestart_hygiene`), keyed by
    resolved module path; the ones this spec needs are taken out of the dict.

    ``module_dir``: a folder holding ``<name>_numpy.py`` (and optionally ``<name>_tf.py``) to
    verify instead of the shipped/generated ones; ``numpy_module``: an already imported module.
    """
    if isinstance(path_or_spec, CellSpec):
        cs, path = path_or_spec, None
    else:
        path = Path(path_or_spec)
        cs = spec_mod.load(path)
    defaults = cs.defaults()
    results: list[CheckResult] = []
    with contextlib.ExitStack() as stack:
        if numpy_module is None or "hygiene" in checks or "tf" in backends:
            mdir = _module_dir(cs, path, Path(module_dir) if module_dir else None, stack)
        else:
            mdir = None
        np_path = mdir / f"{cs.name}_numpy.py" if mdir else None
        if numpy_module is None:
            numpy_module = import_path(np_path)
        tf_path = mdir / f"{cs.name}_tf.py" if mdir else None
        if tf_path is not None and not tf_path.is_file():
            tf_path = None
        # hygiene imports run in fresh interpreters, concurrently with every other check
        hygiene = {}
        started = hygiene_procs if hygiene_procs is not None else {}
        if "hygiene" in checks:
            if "numpy" in backends and np_path is not None:
                hygiene["numpy"] = started.pop(np_path.resolve(), None) or start_hygiene(np_path)
            if "tf" in backends and tf_path is not None:
                hygiene["tf"] = started.pop(tf_path.resolve(), None) or start_hygiene(tf_path)
        stack.callback(_reap, hygiene)
        cfgs = configurations(cs, quick) if ("keras" in checks or "autodiff" in checks) else []
        fd_cfgs = fd_configurations(cs, quick) if "finite_diff" in checks else []
        cfgs, fd_cfgs = _declared_dropout(cs, cfgs), _declared_dropout(cs, fd_cfgs)
        per_backend = ("keras" in checks and cs.reference is not None) + ("autodiff" in checks)
        total = (
            len(cfgs) * per_backend * ("numpy" in backends)
            + len(fd_cfgs) * ("numpy" in backends)
            + (1 if full_jacobian and "numpy" in backends else 0)
            + (2 * len(cfgs) * per_backend if "tf" in backends and tf_path is not None else 0)
        )
        refs = _RefCache(cs, numpy_module, seed)
        prog = progress if progress is not None else _Progress(None, None)
        task = None
        if progress is not None:
            task = progress.add_task(f"{cs.name}", total=total)
            prog = _Progress(progress, task)
        for backend in backends:
            if backend == "numpy":
                results += _numpy_checks(
                    cs,
                    numpy_module,
                    np_path,
                    cfgs,
                    fd_cfgs,
                    checks,
                    seed,
                    full_jacobian,
                    prog,
                    defaults,
                    refs=refs,
                    hygiene_proc=hygiene.pop("numpy", None),
                )
            elif backend == "tf":
                results += _tf_checks(
                    cs, tf_path, cfgs, checks, defaults, refs, prog, hygiene.pop("tf", None)
                )
            else:
                results.append(
                    CheckResult(
                        cs.name, backend, "all", "error", note=f"unknown backend {backend!r}"
                    )
                )
        if task is not None:
            progress.update(task, visible=False)
    return results


def _reap(procs: dict) -> None:
    """Stop hygiene subprocesses that were started but never collected (an error elsewhere)."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


class _RefCache:
    """Test data and reference results per configuration, shared by the backends.

    The numpy and tf backends are checked on identical data, so the Keras reference and the
    equation interpreter run once per configuration, not once per backend and implementation.
    """

    def __init__(self, cs: CellSpec, module, seed: int):
        self.cs, self.module, self.seed = cs, module, seed
        self._data: dict = {}
        self._keras: dict = {}
        self._eqs: dict = {}

    def data(self, cfg: Config) -> dict:
        if cfg not in self._data:
            self._data[cfg] = make_data(self.module, self.cs, cfg, self.seed)
        return self._data[cfg]

    def keras(self, cfg: Config) -> dict:
        if cfg not in self._keras:
            cls = _keras_class(self.cs.reference)
            self._keras[cfg] = run_keras_layer(cls, self.cs, cfg, self.data(cfg))
        return self._keras[cfg]

    def equations(self, cfg: Config) -> dict:
        if cfg not in self._eqs:
            self._eqs[cfg] = run_equations(self.cs, cfg, self.data(cfg))
        return self._eqs[cfg]


def _hygiene_row(cs, backend, proc, forbid, t0) -> CheckResult:
    ok, why = finish_hygiene(proc, forbid=forbid)
    return CheckResult(
        cs.name,
        backend,
        "hygiene",
        "pass" if ok else "fail",
        configs=1,
        tol="imports NumPy only" if forbid else "imports",
        note=why,
        seconds=round(time.perf_counter() - t0, 2),
        failure=None if ok else {"config": "fresh interpreter", "tensor": why},
    )


def _numpy_checks(
    cs,
    module,
    np_path,
    cfgs,
    fd_cfgs,
    checks,
    seed,
    full_jacobian,
    prog,
    defaults,
    refs=None,
    hygiene_proc=None,
) -> list[CheckResult]:
    t_start = time.perf_counter()
    out = []
    if refs is None or refs.module is not module:
        refs = _RefCache(cs, module, seed)
    if "keras" in checks:
        if cs.reference is None:
            out.append(
                CheckResult(cs.name, "numpy", "keras", "n/a", note="spec has no Keras reference")
            )
        else:

            def keras_fn(cfg):
                data = refs.data(cfg)
                ref = refs.keras(cfg)
                ours = run_numpy_layer(module, cs, cfg, data, "float32")
                return compare(ours, ref, "float32", cfg.T)

            r = _run_matrix(
                cs.name, "keras", "numpy", cfgs, keras_fn, _tol_text("float32"), prog, defaults
            )
            if cs.class_name == "SimpleRNN" or "SimpleRNN" in cs.reference:
                r.remark = (
                    "Keras SimpleRNN ignores its activity_regularizer argument (Keras "
                    "bug); the reference sets keras_layer.activity_regularizer instead"
                )
            out.append(r)
    if "autodiff" in checks:

        def auto_fn(cfg):
            data = refs.data(cfg)
            ref = refs.equations(cfg)
            ours = run_numpy_layer(module, cs, cfg, data, "float64")
            return compare(ours, ref, "float64", cfg.T)

        out.append(
            _run_matrix(
                cs.name, "autodiff", "numpy", cfgs, auto_fn, _tol_text("float64"), prog, defaults
            )
        )
    if "finite_diff" in checks:

        def fd_fn(cfg):
            return fd_check(module, cs, cfg, make_data(module, cs, cfg, seed), seed)

        r = _run_matrix(
            cs.name, "finite_diff", "numpy", fd_cfgs, fd_fn, f"dir {FD_TOL:g} rel", prog, defaults
        )
        if full_jacobian:
            smooth = {
                o.name: (o.default if o.default in SMOOTH else "tanh")
                for o in cs.activation_options
            }
            jcfg = Config(
                tuple({**defaults, **smooth}.items()),
                B=2,
                T=3,
                D=2,
                U=2,
                mask=True,
                initial_state=True,
                dropout=0.3,
                recurrent_dropout=0.4,
            )
            j = _run_matrix(
                cs.name,
                "finite_diff",
                "numpy",
                [jcfg],
                lambda c: full_jacobian_check(module, cs, c, make_data(module, cs, c, seed)),
                "",
                prog,
                defaults,
            )
            r.configs += j.configs
            r.max_abs, r.max_rel = max(r.max_abs, j.max_abs), max(r.max_rel, j.max_rel)
            r.tol += " (+ full Jacobian)"
            if j.status == "fail":
                r.note = "; ".join(x for x in (r.note, "full Jacobian fails") if x)
                r.status, r.failure = "fail", j.failure
        out.append(r)
    if "hygiene" in checks:
        t0 = time.perf_counter()
        if np_path is None:
            out.append(
                CheckResult(cs.name, "numpy", "hygiene", "n/a", note="module given without a file")
            )
        else:
            if hygiene_proc is None:
                hygiene_proc, t_start = start_hygiene(np_path), t0
            out.append(_hygiene_row(cs, "numpy", hygiene_proc, True, t_start))
    return out


def _tf_layer_dtype(cls, U: int) -> str:
    """``"float64"`` when the generated TF layer builds and runs in float64, else ``"float32"``."""
    tf = _tf()
    try:
        layer = cls(U, dtype="float64")
        y = layer(tf.zeros((1, 2, 2), tf.float64))
        ok = y.dtype == tf.float64 and all(w.dtype == "float64" for w in layer.weights)
    except Exception:  # noqa: BLE001 - no float64 support: fall back on float32
        ok = False
    return "float64" if ok else "float32"


def _tf_checks(
    cs, tf_path, cfgs, checks, defaults, refs, prog, hygiene_proc=None
) -> list[CheckResult]:
    """The generated Keras 3 layer, both implementations: against the Keras reference (float32)
    and against the equation interpreter with autodiff (float64 when the layer supports it)."""
    if tf_path is None:
        if hygiene_proc is not None:
            _reap({"tf": hygiene_proc})
        return [CheckResult(cs.name, "tf", "all", "n/a", note="tf backend not available")]
    t_start = time.perf_counter()
    if "hygiene" in checks and hygiene_proc is None:
        hygiene_proc = start_hygiene(tf_path)
    try:
        rows = _tf_layer_checks(cs, tf_path, cfgs, checks, defaults, refs, prog)
    finally:
        hyg = _hygiene_row(cs, "tf", hygiene_proc, False, t_start) if hygiene_proc else None
    return ([hyg] if hyg else []) + rows


def _tf_layer_checks(cs, tf_path, cfgs, checks, defaults, refs, prog):
    out = []
    if not ("keras" in checks and cs.reference is not None) and "autodiff" not in checks:
        return out
    try:
        module = import_path(tf_path)
        cls = getattr(module, cs.class_name)
    except Exception as err:  # noqa: BLE001
        note = f"{type(err).__name__}: {err}"[:200]
        return [CheckResult(cs.name, "tf", "import", "error", note=note)]
    if "keras" in checks and cs.reference is not None:
        for impl in ("loop", "fused"):

            def fn(cfg, impl=impl):
                ref = refs.keras(cfg)
                ours = run_keras_layer(cls, cs, cfg, refs.data(cfg), extra={"implementation": impl})
                return compare(ours, ref, "float32", cfg.T)

            r = _run_matrix(
                cs.name, f"keras/{impl}", "tf", cfgs, fn, _tol_text("float32"), prog, defaults
            )
            r.remark = "tf backend: dropout masks injected via cell.get_(recurrent_)dropout_mask"
            out.append(r)
    if "autodiff" in checks:
        dtype = _tf_layer_dtype(cls, 2)
        for impl in ("loop", "fused"):

            def auto_fn(cfg, impl=impl):
                ref = refs.equations(cfg)
                ours = run_keras_layer(
                    cls, cs, cfg, refs.data(cfg), extra={"implementation": impl}, dtype=dtype
                )
                return compare(ours, ref, dtype, cfg.T)

            r = _run_matrix(
                cs.name, f"autodiff/{impl}", "tf", cfgs, auto_fn, _tol_text(dtype), prog, defaults
            )
            if dtype != "float64":
                r.note = "layer does not run in float64; float32 tolerances"
            out.append(r)
    return out


# -- reporting ----------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    if v is None:
        return "-"
    if v == 0:
        return "0"
    if not np.isfinite(v):
        return "inf"
    return f"{v:.2e}"


def render(results: list[CheckResult], console) -> None:
    from rich.table import Table

    by_spec: dict[str, list[CheckResult]] = {}
    for r in results:
        by_spec.setdefault(r.spec, []).append(r)
    for name, rows in by_spec.items():
        table = Table(title=f"rnngen verify: {name}", title_justify="left")
        for col in (
            "backend",
            "check",
            "configs",
            "max abs err",
            "max rel err",
            "tolerance",
            "time",
            "result",
        ):
            table.add_column(col, justify="right" if col in ("configs", "time") else "left")
        for r in rows:
            style = {"pass": "green", "fail": "bold red", "n/a": "yellow", "error": "bold red"}[
                r.status
            ]
            table.add_row(
                r.backend,
                r.check,
                str(r.configs),
                _fmt(r.max_abs),
                _fmt(r.max_rel),
                r.tol,
                f"{r.seconds:.1f}s",
                f"[{style}]{r.status.upper() if r.status != 'n/a' else 'n/a'}[/]"
                + (f" {r.note}" if r.note else ""),
            )
        console.print(table)
        for remark in dict.fromkeys(r.remark for r in rows if r.remark):
            console.print(f"  note: {remark}")
        for r in rows:
            if r.failure:
                f = r.failure
                console.print(
                    f"[bold red]{name} / {r.backend} / {r.check}[/] smallest failing "
                    f"configuration: {f.get('config')}"
                )
                if "analytic" in f:
                    idx = f.get("index")
                    where = f"{f.get('tensor')}" + (f"[{', '.join(map(str, idx))}]" if idx else "")
                    console.print(
                        f"    worst entry {where}: analytic/generated = "
                        f"{f.get('analytic')!r}   reference = {f.get('reference')!r}"
                        f"   (rel err {_fmt(f.get('rel'))}, tol {f.get('tol')})"
                    )
                else:
                    console.print(f"    {f.get('tensor')}")


def run_cli(
    paths,
    backends=("numpy",),
    quick: bool = False,
    seed: int = 0,
    json_path: Path | None = None,
    full_jacobian: bool = False,
) -> bool:
    """Verify every spec, print rich tables, optionally write JSON; True iff all checks pass."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console()
    console.width = max(console.width, 120)
    results: list[CheckResult] = []
    t0 = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as prog:
        # the hygiene imports of every shipped module start now, overlapping all other checks
        started = prestart_hygiene(paths, backends)
        try:
            for path in paths:
                results += verify_spec(
                    path,
                    backends=tuple(backends),
                    quick=quick,
                    seed=seed,
                    full_jacobian=full_jacobian,
                    progress=prog,
                    hygiene_procs=started,
                )
        finally:
            _reap(started)
    render(results, console)
    ok = all(r.passed for r in results)
    elapsed = time.perf_counter() - t0
    console.print(
        ("[green]all checks pass[/]" if ok else "[bold red]verification failed[/]")
        + f" ({elapsed:.1f}s, seed {seed}{', quick' if quick else ''})"
    )
    if json_path is not None:
        payload = {
            "ok": ok,
            "seed": seed,
            "quick": quick,
            "seconds": round(elapsed, 2),
            "tolerance_rule": __doc__.split("Tolerance rule")[1].split("Results are")[0].strip(),
            "results": [r.as_dict() for r in results],
        }
        Path(json_path).write_text(
            json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8"
        )
    return ok
