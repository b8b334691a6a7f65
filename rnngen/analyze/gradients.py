"""Gradient flow at initialisation, measured through the generated backward pass.

Two curves per cell and configuration, both against the distance ``d = T - t`` from the
last step:

- ``loss``: ``‖∂L/∂s_t‖ / ‖∂L/∂h_T‖`` for a squared-error loss on a random linear readout of
  the last output (``s_t`` are all the states entering step ``t + 1``: ``h`` for SimpleRNN
  and GRU, ``h`` and ``c`` for LSTM);
- ``jacobian``: ``‖∂h_T/∂s_t‖_F / √U``, the root-mean-square singular value of the Jacobian
  product, from vector-Jacobian products of the generated backward pass: exact (one probe
  per output unit, ``I`` as the probes) when ``U <= EXACT_UNITS``, otherwise estimated with
  Gaussian probes (``E‖vᵀJ‖² = ‖J‖²_F``).

Both are root-mean-square over sequences in one seed, then summarized over seeds (median and
the min-max band). :func:`fit_rate` fits ``log(norm) ≈ a + d·log(rate)``: ``rate`` is the
factor the norm is multiplied by per step back in time (< 1 vanishes, > 1 explodes).
"""

from __future__ import annotations

import numpy as np

from .cells import DEFAULT, Cell, Variant

EXACT_UNITS = 64
PROBES = 8  # Gaussian probes per sequence when U > EXACT_UNITS
TINY = 1e-300


def random_inputs(rng, batch: int, steps: int, input_dim: int) -> np.ndarray:
    return rng.standard_normal((batch, steps, input_dim))


def loss_curve(cell: Cell, variant: Variant, *, units, steps, input_dim, batch, seed):
    """``‖∂L/∂s_t‖`` at distances ``0..T`` normalized by distance 0, RMS over the batch."""
    rng = np.random.default_rng([seed, 1])
    layer = cell.layer(units, variant, seed=seed, input_dim=input_dim)
    x = random_inputs(rng, batch, steps, input_dim)
    readout = rng.standard_normal((units, 1)) / np.sqrt(units)
    target = rng.standard_normal((batch, 1))
    with np.errstate(all="ignore"):
        h = layer(x)
        d_out = (h @ readout - target) @ readout.T  # dL/dh_T, L = ½‖h_T·w − y‖² per sequence
        grads = layer.backward(d_out)
        return _curve(np.sqrt(np.vdot(d_out, d_out)), grads.state_norms)


def jacobian_curve(cell: Cell, variant: Variant, *, units, steps, input_dim, batch, seed):
    """``‖∂h_T/∂s_t‖_F / √U`` at distances ``0..T`` (1 at distance 0), RMS over sequences."""
    rng = np.random.default_rng([seed, 2])
    layer = cell.layer(units, variant, seed=seed, input_dim=input_dim)
    x = random_inputs(rng, batch, steps, input_dim)
    if units <= EXACT_UNITS:
        probes = np.tile(np.eye(units), (batch, 1))  # row b*U + i probes unit i of sequence b
        per, draws = units, 1
    else:
        probes = rng.standard_normal((batch * PROBES, units))
        per, draws = PROBES, PROBES
    x = np.repeat(x, per, axis=0)
    with np.errstate(all="ignore"):
        layer(x)
        grads = layer.backward(probes)
    norms = grads.state_norms / np.sqrt(batch * draws * units)
    return _curve(1.0, norms * 1.0)


def _curve(at_zero, state_norms) -> np.ndarray:
    """Distance-ordered curve: index d holds the norm d steps before the last one."""
    out = np.empty(len(state_norms) + 1)
    out[0] = 1.0
    with np.errstate(all="ignore"):
        out[1:] = np.asarray(state_norms, dtype=np.float64)[::-1] / at_zero
    return out


def fit_rate(curve, skip: int = 1) -> float:
    """Per-step factor from a least-squares line through ``log(curve[d])``, ``d >= skip``.

    Points that vanished below 1e-300 or overflowed are left out; NaN when fewer than two
    remain."""
    d = np.arange(len(curve), dtype=np.float64)
    y = np.asarray(curve, dtype=np.float64)
    ok = (d >= skip) & np.isfinite(y) & (y > TINY)
    if ok.sum() < 2:
        return float("nan")
    slope = np.polyfit(d[ok], np.log(y[ok]), 1)[0]
    return float(np.exp(slope))


def summarize(curves: list[np.ndarray]) -> dict:
    """Median and min-max band over seeds (in log space, so overflow stays visible)."""
    a = np.vstack(curves)
    with np.errstate(all="ignore"):
        a = np.where(np.isfinite(a), a, np.inf)
    return {
        "median": np.median(a, axis=0),
        "low": np.min(a, axis=0),
        "high": np.max(a, axis=0),
        "rate": fit_rate(np.median(a, axis=0)),
        "seed_rates": [fit_rate(c) for c in curves],
    }


def gradient_flow(cell: Cell, variants, *, units, steps, input_dim, batch, seeds, tick=None):
    """Part 1 for one cell: ``{variant label: {"loss": summary, "jacobian": summary}}``."""
    out = {}
    for variant in variants:
        if not cell.applicable(variant):
            continue
        size = dict(units=units, steps=steps, input_dim=input_dim, batch=batch)
        loss = [loss_curve(cell, variant, seed=s, **size) for s in range(seeds)]
        jac = [jacobian_curve(cell, variant, seed=s, **size) for s in range(seeds)]
        out[variant.label] = {
            "variant": variant,
            "loss": summarize(loss),
            "jacobian": summarize(jac),
        }
        if tick:
            tick()
    return out


# -- part 4: truncation and clipping ------------------------------------------------------------


def truncation_error(
    cell: Cell, variant: Variant = DEFAULT, *, units, steps, input_dim, batch, seeds, ks=None
):
    """Relative error of the weight gradients of ``backward(truncate=k)`` against full BPTT,
    ``‖g_k − g‖ / ‖g‖`` over all weights, for the last-output loss; median and band over seeds.
    """
    ks = ks or truncation_lengths(steps)
    errors = []
    for seed in range(seeds):
        rng = np.random.default_rng([seed, 3])
        layer = cell.layer(units, variant, seed=seed, input_dim=input_dim)
        x = random_inputs(rng, batch, steps, input_dim)
        readout = rng.standard_normal((units, 1)) / np.sqrt(units)
        target = rng.standard_normal((batch, 1))
        with np.errstate(all="ignore"):
            h = layer(x)
            d_out = (h @ readout - target) @ readout.T
            full = _flat(layer.backward(d_out).weights)
            row = []
            for k in ks:
                g = _flat(layer.backward(d_out, truncate=k).weights)
                row.append(float(np.linalg.norm(g - full) / max(np.linalg.norm(full), TINY)))
        errors.append(row)
    a = np.array(errors)
    return {
        "k": list(ks),
        "median": np.median(a, axis=0),
        "low": a.min(axis=0),
        "high": a.max(axis=0),
    }


def truncation_lengths(steps: int) -> list[int]:
    ks = [k for k in (1, 2, 3, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500) if k < steps]
    return ks + [steps]


def _flat(weights: dict) -> np.ndarray:
    return np.concatenate([np.ravel(g) for g in weights.values()])
