"""Run in a subprocess by ``tests/test_keras_backends.py``, under one Keras backend
(``KERAS_BACKEND`` set by the caller): runs a generated Keras layer and a reference layer on the
same inputs and weights, with that backend's own autodiff, and prints one JSON line per case
with the largest errors. The calling test holds them to its tolerances.

    python keras_backend_worker.py '<json job>'

A job: ``{"path": folder put first on sys.path, "package": "generated" or "" (top level),
"block_tensorflow": bool, "cases": [...]}``; a case: ``{"name", "spec": the spec's name (its
Keras layer module is ``<package>.<spec>_tf``), "layer": class name in that module,
"reference": "keras_layer" (Keras's own layer of that name) or "loop" (the same layer with
implementation="loop"), "implementation", "units", "kwargs", "masked", "initial_state",
"go_backwards", "seed", "expect" (echoed back)}``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import json
import os
import sys

import numpy as np

B, T, D = 3, 6, 4


class _NoTensorFlow(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes ``import tensorflow`` fail with ImportError, as where TensorFlow is not installed
    (its spec has no origin, so tools that only look for it, such as torch's, skip it)."""

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        raise ImportError(f"{spec.name} is blocked: this run checks the layer works without it")

    def exec_module(self, module):  # pragma: no cover (create_module raised)
        raise ImportError(module.__name__)


def _loss_weights(units, n_states, rng):
    """Weights of a random linear loss of the sequence (B, T, units) and each final state."""
    shapes = [(B, T, units)] + [(B, units)] * n_states
    return [rng.normal(size=shape).astype("float32") for shape in shapes]


def _custom_gradient_torch(outs):
    """Whether a ``torch.autograd.Function`` is in the graph that made ``outs``."""
    import torch

    seen, todo = set(), [o.grad_fn for o in outs if o.grad_fn is not None]
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, torch.autograd.function.BackwardCFunction):
            return True
        todo.extend(n for n, _ in node.next_functions)
    return False


def _run(layer, x, mask, initial_state, ws, training=False):
    """(outputs as NumPy, [d loss / d x, d loss / d each trainable weight], whether a custom
    gradient made them) with a fixed random linear loss over every output (sequence and
    states)."""
    import keras

    backend = keras.backend.backend()
    kwargs = {"mask": mask} if mask is not None else {}
    if initial_state is not None:
        kwargs["initial_state"] = initial_state
    if training:
        kwargs["training"] = True
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            outs = layer(xt, **kwargs)
            loss = sum(tf.reduce_sum(o * w) for o, w in zip(outs, ws, strict=True))
        grads = tape.gradient(loss, [xt, *layer.trainable_variables])
        return [np.asarray(o) for o in outs], [np.asarray(g) for g in grads], None
    if backend == "torch":
        xt = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)
        outs = layer(xt, **kwargs)
        custom = _custom_gradient_torch(outs)
        loss = sum(
            (o * keras.ops.convert_to_tensor(w)).sum() for o, w in zip(outs, ws, strict=True)
        )
        loss.backward()
        wrt = [xt] + [v.value for v in layer.trainable_variables]
        grads = [
            np.zeros(tuple(v.shape), "float32") if v.grad is None else v.grad.cpu().numpy()
            for v in wrt
        ]
        return [o.detach().cpu().numpy() for o in outs], grads, custom
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in layer.trainable_variables]
        fixed = [v.value for v in layer.non_trainable_variables]

        def loss(trainable, x):
            outs, _ = layer.stateless_call(trainable, fixed, x, **kwargs)
            return sum(jnp.sum(o * w) for o, w in zip(outs, ws, strict=True)), outs

        (_, outs), (g_w, g_x) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
            trainable, jnp.asarray(x)
        )
        custom = "custom_vjp" in str(jax.make_jaxpr(loss)(trainable, jnp.asarray(x)))
        return [np.asarray(o) for o in outs], [np.asarray(g) for g in [g_x, *g_w]], custom
    raise ValueError(f"unknown Keras backend {backend!r}")


def _max_abs(a, b):
    return max(float(np.max(np.abs(x - y))) if x.size else 0.0 for x, y in zip(a, b, strict=True))


def _max_rel(a, b):
    """The largest error of each gradient relative to that gradient's largest entry."""
    out = 0.0
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape, (x.shape, y.shape)
        scale = float(np.max(np.abs(y))) if y.size else 0.0
        err = float(np.max(np.abs(x - y))) if y.size else 0.0
        out = max(out, err / scale if scale > 0 else err)
    return out


def _inject_masks(module, layers, rng, units, per_gate):
    """Patch each layer's cell to return the same dropout masks (values 0 or 1/(1-rate)): one
    per gate when recurrent dropout is on (Keras's implementation 1), else one."""
    import keras

    def draw(shape, rate, count):
        masks = [
            keras.ops.convert_to_tensor(
                ((rng.random(shape) >= rate) / (1 - rate)).astype("float32")
            )
            for _ in range(count if per_gate else 1)
        ]
        return masks if per_gate and count > 1 else masks[0]

    cell = layers[0].cell
    x_count = module.DROPOUT["dropout"][1]
    h_count = module.DROPOUT["recurrent_dropout"][1]
    x_masks = draw((B, D), cell.dropout, x_count) if cell.dropout else None
    h_masks = draw((B, units), cell.recurrent_dropout, h_count) if cell.recurrent_dropout else None
    for layer in layers:
        layer.cell.get_dropout_mask = lambda step_input, m=x_masks: m
        layer.cell.get_recurrent_dropout_mask = lambda step_input, m=h_masks: m


def run_case(module, case):
    import keras

    rng = np.random.default_rng(case.get("seed", 0))
    units = case["units"]
    kwargs = dict(case.get("kwargs", {}))
    common = {
        "return_sequences": True,
        "return_state": True,
        "go_backwards": case.get("go_backwards", False),
        **kwargs,
    }
    ours_cls = getattr(module, case["layer"])
    ours = ours_cls(units, implementation=case["implementation"], **common)
    if case["reference"] == "keras_layer":
        ref = getattr(keras.layers, case["layer"])(units, **common)
    else:
        ref = ours_cls(units, implementation="loop", **common)
    x = rng.normal(size=(B, T, D)).astype("float32")
    mask = None
    if case.get("masked"):
        mask = np.ones((B, T), bool)
        mask[0, :2] = False  # leading masked steps
        mask[1, -2:] = False  # trailing
        mask[2, 2] = False  # one in the middle
    n_states = len(module.STATES)
    initial = None
    if case.get("initial_state"):
        initial = [rng.normal(size=(B, units)).astype("float32") for _ in range(n_states)]
    ref.build((B, T, D))
    ours.build((B, T, D))
    weights = [rng.normal(scale=0.5, size=w.shape).astype("float32") for w in ref.get_weights()]
    ref.set_weights(weights)
    ours.set_weights(ref.get_weights())
    training = bool(kwargs.get("dropout") or kwargs.get("recurrent_dropout"))
    if training:  # the same known masks in both layers (keras-rnn-semantics.md, 2.2)
        _inject_masks(module, [ref, ours], rng, units, kwargs.get("recurrent_dropout", 0) > 0)
    ws = _loss_weights(units, n_states, rng)
    out_ref, grad_ref, _ = _run(ref, x, mask, initial, ws, training)
    out, grad, custom = _run(ours, x, mask, initial, ws, training)
    return {
        "name": case["name"],
        "implementation": case["implementation"],
        "expect": case.get("expect", {}),
        "uses_fused": bool(ours.uses_fused()),
        "custom_gradient": custom,
        "forward_abs": _max_abs(out, out_ref),
        "grad_rel": _max_rel(grad, grad_ref),
        "n_grads": len(grad),
        "n_outputs": len(out),
    }


def main():
    job = json.loads(sys.argv[1])
    if job.get("block_tensorflow"):
        sys.meta_path.insert(0, _NoTensorFlow())
    sys.path.insert(0, job["path"])
    import keras

    assert keras.backend.backend() == os.environ["KERAS_BACKEND"], keras.backend.backend()
    prefix = f"{job['package']}." if job.get("package") else ""
    for case in job["cases"]:
        module = importlib.import_module(f"{prefix}{case['spec']}_tf")
        print(json.dumps(run_case(module, case)), flush=True)
    print(json.dumps({"tensorflow_imported": "tensorflow" in sys.modules}), flush=True)


if __name__ == "__main__":
    main()
