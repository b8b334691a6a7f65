"""The references of ``rnngen verify``: the Keras layer and an independent TensorFlow
interpreter of the parsed equations (differentiated by ``tf.GradientTape``)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import sympy as sp

from .. import functions
from ..grammar import Extremum, Maximum, RowReduction, RowSum, WeightProduct
from ..resolve import resolve
from ..spec import CellSpec
from .configs import Config
from .data import REGS, layer_kwargs, reg_coefficients, reg_kwargs

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's start-up log out

# -- Keras reference ----------------------------------------------------------------------------


def import_tf():
    import tensorflow as tf

    return tf


def preload_tf() -> None:
    """Import TensorFlow and Keras now (a missing one is reported by the checks that need it)."""
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    except ImportError:
        pass


def keras_class(reference: str):
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
    prepare=None,
) -> dict:
    """Run a Keras-style layer class (the Keras reference or a generated TF layer) in ``dtype``.

    Known dropout masks are injected by patching ``get_dropout_mask`` /
    ``get_recurrent_dropout_mask`` on the layer's cell instance (a list of per-gate masks when
    ``make_data`` drew one per gate), and the call runs with ``training=True``.
    """
    tf = import_tf()
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

    regs = reg_kwargs(cs, cfg, make_reg)
    layer = cls(cfg.U, **cfg.opts, **layer_kwargs(cfg), **regs, **(extra or {}), dtype=dtype)
    if regs and layer.activity_regularizer is None:
        # Keras bug: SimpleRNN drops the activity_regularizer argument; restore it.
        layer.activity_regularizer = regs["activity_regularizer"]
    layer.build((cfg.B, cfg.T, cfg.D))
    layer.set_weights([np.asarray(w, dtype) for w in data["weights"].values()])
    if prepare is not None:  # e.g. record the dropout masks the layer draws
        prepare(layer)
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
    for n, g, t in zip(names, grads, targets, strict=True):
        # a tensor the loss does not read (a weight only another variant uses) has a zero
        # gradient of its own shape (Keras variables' string dtypes rule out UnconnectedGradients)
        gd[n] = np.zeros(tuple(t.shape)) if g is None else tf.convert_to_tensor(g).numpy()
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
    # by definition, in the dtype of u: tf.nn.gelu(approximate=False) is off by ~5e-9 in
    # float64, and tf.nn.leaky_relu holds its slope as a float32 attribute (1.5e-8 off)
    "gelu": lambda tf, u: 0.5 * u * (1 + tf.math.erf(u * 0.7071067811865476)),
    "leaky_relu": lambda tf, u: tf.where(u > 0, u, 0.2 * u),
    # row-wise: Keras's own (tf.nn) definitions, across the units axis
    "softmax": lambda tf, u: tf.nn.softmax(u, axis=-1),
    "log_softmax": lambda tf, u: tf.nn.log_softmax(u, axis=-1),
    "sparsemax": lambda tf, u: _keras_activation("sparsemax")(u),
}


def _keras_activation(name: str):
    import keras

    return keras.activations.get(name)


def _tf_function(name: str):
    tf = import_tf()
    if name in _TF_FUNCS:
        return lambda u: _TF_FUNCS[name](tf, u)
    src = functions.TABLE[name].tf  # fall back on the table's TF spelling
    return lambda u: eval(src, {"tf": tf, "u": u})  # noqa: S307 - trusted table text


class EquationCell:
    """One step of the cell, interpreted from the SymPy equations with TensorFlow ops."""

    def __init__(self, cs: CellSpec, options: dict, D: int, U: int):
        self.cs, self.options = cs, options
        # which weights, layouts and blocks are in force: decided once, by rnngen.resolve
        resolved = resolve(cs, {k: v for k, v in options.items() if isinstance(v, bool)})
        self.absent: set[str] = set(resolved.absent)
        self.blocks: dict[str, tuple[str, Any, int]] = {  # block -> (weight, index, gate)
            b.name: (b.weight, b.index(U, D), b.gate) for b in resolved.blocks
        }
        self.eqs = [(e.name, e.rhs(options)) for e in cs.equations]
        self.act_options = {o.name for o in cs.activation_options}
        self.drop_tensors = {t for t, _ in cs.dropout}
        self._w: dict | None = None
        self._sliced: dict = {}

    def new_sequence(self) -> None:
        """Forget the weight blocks sliced so far: a sequence slices each block once, inside
        whatever ``tf.GradientTape`` is recording it."""
        self._w, self._sliced = None, {}

    def _block(self, name: str):
        """The value of weight block ``name``, sliced once per sequence."""
        if name not in self._sliced:
            weight, idx, _ = self.blocks[name]
            self._sliced[name] = self._w[weight][idx]
        return self._sliced[name]

    def step(self, x, prev: list, weights: dict, masks: dict | None):
        env = {"x": x}
        for s, v in zip(self.cs.states, prev, strict=True):
            env[f"{s}_prev"] = v
        if weights is not self._w:
            self._w, self._sliced = weights, {}
        self._masks = masks
        batch = import_tf().shape(x)[:1]
        for name, rhs in self.eqs:
            env[name] = _batched(self.ev(rhs, env, None), batch)
        return env[self.cs.output], [env[s] for s in self.cs.states]

    def ev(self, e, env, gate):
        tf = import_tf()
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
                return self._block(n)
            raise KeyError(f"unknown name {n!r} in the equations")
        if isinstance(e, sp.Number):
            return float(e)
        if isinstance(e, WeightProduct):
            a, w = e.args
            if w.name in self.absent:
                return 0.0
            left = self.ev(a, env, self.blocks[w.name][2])
            if len(left.shape) == 1:  # a left side made of weights only: the same every row
                left = left[None, :]
            return tf.matmul(left, self._block(w.name))
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
        if isinstance(e, Extremum):  # tf.maximum/tf.minimum: TF's gradients at the kinks
            a, b = (self.ev(v, env, gate) for v in e.args)
            like = b if isinstance(a, float) else a
            a, b = (tf.cast(v, like.dtype) if isinstance(v, float) else v for v in (a, b))
            return (tf.maximum if isinstance(e, Maximum) else tf.minimum)(a, b)
        if isinstance(e, RowReduction):  # across units, broadcast back
            v = self.ev(e.args[0], env, gate)
            reduce = tf.reduce_sum if isinstance(e, RowSum) else tf.reduce_mean
            return tf.broadcast_to(reduce(v, axis=-1, keepdims=True), tf.shape(v))
        if isinstance(e, functions._Call | functions._RowCall):
            cname = type(e).call_name
            if cname in self.act_options:
                value = self.options[cname]
                row_wise = isinstance(value, str) and value in functions.ROW_WISE_TABLE
                name = value if row_wise else functions.resolve_activation(value)
            elif isinstance(e, functions._RowCall):
                name = cname
            else:
                name = type(e).entry.name
            return _tf_function(name)(self.ev(e.args[0], env, gate))
        raise TypeError(f"cannot interpret {type(e).__name__}: {e}")


_CELLS: dict = {}  # (interpreter class, id(spec), options, D, U) -> (spec, interpreter)


def equation_cell(cs: CellSpec, options: dict, D: int, U: int) -> EquationCell:
    """The interpreter of ``cs`` under ``options`` for sizes ``D``, ``U``, made once: resolving
    the options and substituting them into the equations costs more than a short sequence."""
    cls = EquationCell  # looked up now: a caller may have replaced it
    key = (cls, id(cs), tuple(sorted(options.items())), D, U)
    hit = _CELLS.get(key)
    if hit is None or hit[0] is not cs:  # (the spec is kept, so its id is not reused)
        if len(_CELLS) > 512:
            _CELLS.clear()
        hit = _CELLS[key] = (cs, cls(cs, options, D, U))
    return hit[1]


def _batched(value, batch):
    """An equation's value as ``[B, n]``: one made of weights only (``[n]``, or ``[1, n]``
    from a product) is the same for every sample."""
    tf = import_tf()
    if isinstance(value, float) or len(value.shape) == 2 and value.shape[0] != 1:
        return value
    value = tf.reshape(value, [1, -1]) if len(value.shape) == 1 else value
    return tf.broadcast_to(value, tf.concat([batch, tf.shape(value)[1:]], 0))


def run_equations(
    cs: CellSpec, cfg: Config, data: dict, dtype=np.float64, *, truncate: int | None = None
) -> dict:
    """Reference layer: the equations in TF with Keras's layer semantics, float64.

    ``truncate=k``: truncated BPTT as autodiff sees it: ``tf.stop_gradient`` on the states (and
    the carried output) entering processed step ``T - k``, and on every earlier output, so only
    the last ``k`` processed steps are differentiated.
    """
    tf = import_tf()
    cell = equation_cell(cs, cfg.opts, cfg.D, cfg.U)
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
    mask = data["mask"]  # [B, T] bool or None: one constant per step, made once
    keep = None if mask is None else [tf.constant(mask[:, t : t + 1]) for t in range(mask.shape[1])]

    def run(x, states, truncate=None):
        cell.new_sequence()  # weight blocks are sliced again, under this call's tape
        x_steps = tf.unstack(x, axis=1)
        T = len(x_steps)
        order = range(T - 1, -1, -1) if cfg.go_backwards else range(T)
        stop = T - truncate if truncate is not None and truncate < T else None
        out_prev = tf.zeros((B, U), tf.float64)
        outs = []
        for i, t in enumerate(order):
            if i == stop:  # nothing flows back into the steps before
                states = [tf.stop_gradient(s) for s in states]
                out_prev = tf.stop_gradient(out_prev)
                outs = [tf.stop_gradient(o) for o in outs]
            o, new = cell.step(x_steps[t], states, wvars, masks)
            if keep is not None:
                m = keep[t]
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
        ret, _ = run(xs[-1], start, truncate)
        total = tf.constant(0.0, tf.float64)
        if cfg.regularizers:
            for r in ret:
                total += penalty(REGS["activity"], r) / B
            args = {w.name: w.argument for w in cs.weights}
            for n, w in wvars.items():
                total += penalty(reg_coefficients(args[n]), w)
        loss = total + tf.add_n(
            [
                tf.reduce_sum(tf.constant(p, tf.float64) * r)
                for p, r in zip(data["proj"], ret, strict=True)
            ]
        )
    targets = [xs[-1]] + (h0 or []) + list(wvars.values())
    grads = tape.gradient(loss, targets, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    for i, r in enumerate(ret):
        out[f"returned[{i}]"] = r.numpy()
    out["sum(losses)"] = np.asarray(float(total.numpy()))
    names = ["d inputs"] + [f"d initial {s}" for s in (cs.states if h0 else [])]
    names += [f"d {n}" for n in wvars]
    gd = {n: tf.convert_to_tensor(g).numpy() for n, g in zip(names, grads, strict=True)}
    return {"values": out, "grads": gd}
