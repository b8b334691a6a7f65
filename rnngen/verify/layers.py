"""The layer under test: runs the generated NumPy layer the way the references run theirs."""

from __future__ import annotations

import numpy as np

from ..spec import CellSpec
from .configs import Config
from .data import cast, layer_kwargs, reg_kwargs


def run_numpy_layer(
    module,
    cs: CellSpec,
    cfg: Config,
    data: dict,
    dtype: str,
    *,
    truncate: int | None = None,
    draw_masks: bool = False,
    extra: dict | None = None,
    prepare=None,
) -> dict:
    """Run the generated NumPy layer: returned values, losses and ``backward`` gradients.

    ``data["dmasks"]`` are injected (``training=True``) unless ``draw_masks``, where the layer
    draws its own masks (``training=True``, ``dropout_masks=None``); ``truncate`` is passed to
    ``backward``; ``extra`` goes to the constructor; ``prepare(layer)`` runs before the call.
    """
    cls = getattr(module, cs.class_name)
    regs = reg_kwargs(
        cs, cfg, lambda l1, l2: {"class_name": "L1L2", "config": {"l1": l1, "l2": l2}}
    )
    layer = cls(cfg.U, **cfg.opts, **layer_kwargs(cfg), **regs, **(extra or {}), dtype=dtype)
    layer.set_weights([np.asarray(w, dtype) for w in data["weights"].values()])
    if prepare is not None:
        prepare(layer)
    out: dict[str, np.ndarray] = {}
    training = data["dmasks"] is not None or draw_masks
    masks = None if draw_masks else cast(data["dmasks"], dtype)
    kw = {"mask": data["mask"], "training": training, "dropout_masks": masks}
    xs = [np.asarray(x, dtype) for x in data["xs"]]
    if cfg.stateful:
        first = layer(xs[0], **kw)
        first = list(first) if cfg.return_state else [first]
        for i, r in enumerate(first):
            out[f"call1.returned[{i}]"] = np.asarray(r)
        h0 = None
    else:
        h0 = cast(data["h0"], dtype)
    ret = layer(xs[-1], initial_state=h0, **kw)
    ret = list(ret) if cfg.return_state else [ret]
    for i, r in enumerate(ret):
        out[f"returned[{i}]"] = np.asarray(r)
    proj = [np.asarray(p, dtype) for p in data["proj"]]
    loss_terms = layer.losses
    out["sum(losses)"] = np.asarray(
        float(np.sum([np.sum(v) for v in loss_terms])) if loss_terms else 0.0
    )
    g = layer.backward(proj[0], d_states=proj[1:] if cfg.return_state else None, truncate=truncate)
    grads = {"d inputs": np.asarray(g.inputs)}
    if data["h0"] is not None and not cfg.stateful:
        for s, d in zip(cs.states, g.initial_state, strict=True):
            grads[f"d initial {s}"] = np.asarray(d)
    for n, d in g.weights.items():
        grads[f"d {n}"] = np.asarray(d)
    return {"values": out, "grads": grads}
