"""The generated PyTorch and JAX modules of a cell, run the way ``rnngen.verify`` runs the others.

``run_torch`` and ``run_jax`` call the functional core of ``<name>_torch.py``
(``forward(x, weights, initial_state, ...)``) and of ``<name>_jax.py``
(``apply(params, x, initial_state, mask, ...)``) in float64 on a verifier configuration's data
(``rnngen.verify.make_data``: the same weights, inputs, initial states, masks, dropout masks and
loss projections the NumPy and TF layers get) and return what the verifier's runners return:
``{"values": {"returned[i]": ..., "sum(losses)": 0}, "grads": {"d inputs": ..., "d initial <s>":
..., "d <weight>": ...}}`` as NumPy arrays, the gradients those of
``L = sum_i <proj_i, returned_i>`` by the framework's own differentiation (``torch.autograd.grad``,
``jax.grad``) of the chosen implementation, so ``rnngen.verify.compare`` judges them against the
equation interpreter's ``tf.GradientTape`` gradients. JAX runs inside ``jax.enable_x64(True)``,
which restores the previous setting on exit.
"""

from __future__ import annotations

import importlib.util
import inspect

import numpy as np

#: (backend label, implementation) of every run here
TORCH = (("torch/fused", "fused"), ("torch/autograd", "autograd"))
JAX = (("jax/fused", "fused"), ("jax/scan", "scan"))


#: the JAX run is one ``jax.jit`` program compiled with these XLA options (``None``: eager):
#: compiling dominates a cell this small, and these make it ~4x faster (the legacy CPU emitters,
#: no LLVM optimization); the values agree with the eager run's to ~1e-16. An option this
#: jaxlib does not know is dropped (the program is then compiled with XLA's defaults).
JIT_OPTIONS: dict | None = {
    "xla_backend_optimization_level": 0,
    "xla_cpu_use_fusion_emitters": False,
}


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _unsupported(cfg) -> None:
    """What these runners do not model (the property test never asks for it)."""
    if cfg.stateful or cfg.regularizers:
        raise NotImplementedError("stateful calls and regularizers are not run here")


def _weight_names(module, cs, cfg) -> list[str]:
    bools = {o.name: cfg.opts[o.name] for o in cs.bool_options}
    accepted = inspect.signature(module.weight_shapes).parameters
    shapes = module.weight_shapes(cfg.D, cfg.U, **{k: v for k, v in bools.items() if k in accepted})
    return list(shapes)


def _check_names(names, data, backend) -> None:
    if names != list(data["weights"]):
        raise AssertionError(
            f"{backend} weight_shapes names {names}, the NumPy module {list(data['weights'])}"
        )


def _returned(seq, final, cfg) -> list:
    ret = [seq if cfg.return_sequences else seq[:, -1]]
    return ret + list(final) if cfg.return_state else ret


def _result(ret, grads, names) -> dict:
    values = {f"returned[{i}]": np.asarray(r) for i, r in enumerate(ret)}
    values["sum(losses)"] = np.asarray(0.0)
    return {"values": values, "grads": dict(zip(names, grads, strict=True))}


def _grad_names(cs, data, names) -> list[str]:
    out = ["d inputs"] + [f"d initial {s}" for s in (cs.states if data["h0"] is not None else [])]
    return out + [f"d {n}" for n in names]


def run_torch(module, cs, cfg, data, implementation: str) -> dict:
    """The torch module's ``forward`` with ``implementation`` ("fused" or "autograd")."""
    import torch

    _unsupported(cfg)
    names = _weight_names(module, cs, cfg)
    _check_names(names, data, "torch")

    def leaf(a):
        return torch.tensor(np.asarray(a, np.float64), dtype=torch.float64, requires_grad=True)

    def const(a):
        if a is None:
            return None
        if isinstance(a, list):
            return [const(m) for m in a]
        if isinstance(a, dict):
            return {k: const(m) for k, m in a.items()}
        return torch.as_tensor(np.asarray(a))

    x = leaf(data["xs"][-1])
    h0 = None if data["h0"] is None else [leaf(h) for h in data["h0"]]
    weights = [leaf(data["weights"][n]) for n in names]
    seq, final = module.forward(
        x,
        weights,
        h0,
        mask=const(data["mask"]),
        dropout_masks=const(data["dmasks"]),
        go_backwards=cfg.go_backwards,
        zero_output_for_mask=cfg.zero_output_for_mask,
        implementation=implementation,
        **cfg.opts,
    )
    ret = _returned(seq, final, cfg)
    loss = sum((torch.as_tensor(p) * r).sum() for p, r in zip(data["proj"], ret, strict=True))
    leaves = [x, *(h0 or []), *weights]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    grads = [
        np.zeros(tuple(v.shape)) if g is None else g.numpy()
        for g, v in zip(grads, leaves, strict=True)
    ]
    return _result([r.detach().numpy() for r in ret], grads, _grad_names(cs, data, names))


def run_jax(module, cs, cfg, data, implementation: str) -> dict:
    """The JAX module's ``apply`` with ``implementation`` ("fused" or "scan"), float64."""
    import jax
    import jax.numpy as jnp

    _unsupported(cfg)
    names = _weight_names(module, cs, cfg)
    _check_names(names, data, "jax")
    with jax.enable_x64(True):

        def arr(a):
            if a is None:
                return None
            if isinstance(a, list):
                return [arr(m) for m in a]
            if isinstance(a, dict):
                return {k: arr(m) for k, m in a.items()}
            a = np.asarray(a)
            return jnp.asarray(a, jnp.float64 if a.dtype.kind == "f" else a.dtype)

        x = arr(data["xs"][-1])
        h0 = arr(data["h0"])
        params = {n: arr(data["weights"][n]) for n in names}
        mask, dmasks, proj = arr(data["mask"]), arr(data["dmasks"]), arr(data["proj"])

        def returned(x, h0, params):
            seq, final = module.apply(
                params,
                x,
                h0,
                mask,
                dropout_masks=dmasks,
                go_backwards=cfg.go_backwards,
                zero_output_for_mask=cfg.zero_output_for_mask,
                implementation=implementation,
                **cfg.opts,
            )
            return _returned(seq, final, cfg)

        def loss(x, h0, params):
            ret = returned(x, h0, params)
            return sum(jnp.sum(p * r) for p, r in zip(proj, ret, strict=True)), ret

        both = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)
        if JIT_OPTIONS is None:
            (_, ret), (gx, gh, gp) = both(x, h0, params)
        else:  # one XLA program for the value and the gradients, compiled once
            (_, ret), (gx, gh, gp) = _compiled(jax.jit(both), x, h0, params)(x, h0, params)
        for r in ret:
            if r.dtype != jnp.float64:
                raise AssertionError(f"jax returned {r.dtype}, not float64, under enable_x64")
        grads = [gx, *(gh or []), *(gp[n] for n in names)]
        grads = [np.asarray(g) for g in grads]
        return _result([np.asarray(r) for r in ret], grads, _grad_names(cs, data, names))


def _compiled(fn, *args):
    global JIT_OPTIONS
    lowered = fn.lower(*args)
    try:
        return lowered.compile(JIT_OPTIONS)
    except Exception as err:  # noqa: BLE001 - an XLA option this jaxlib lacks
        if "compile option" not in str(err):
            raise
        JIT_OPTIONS = {}
        return lowered.compile()
