"""The ``init`` check of ``rnngen verify``: the weights a layer builds follow Keras's initializers.

Initial values are random (and Keras's come from TF's stateless RNG, which NumPy cannot
reproduce), so each weight, or block with its own initializer, is judged by statistics that
Keras's definition fixes. The oracle is Keras itself: ``keras.initializers.get`` resolves the
spec's initializer (class, scale, mode, distribution, gain, constant), Keras's
``compute_fans`` gives the fans of the whole (fused) weight, and deterministic initializers
(zeros, ones, constant, identity) are drawn by Keras and compared exactly.

* variance scaling (glorot/he/lecun, ``uniform``): ``max|w| <= L = sqrt(3 scale / n)`` (``n``:
  ``fan_in``, ``fan_out`` or their mean), ``max|w| >= L (1 - 15 / N)`` for ``N`` entries (a
  miss has probability ``e^-15``), and ``mean(w^2)`` within ``SIGMAS`` standard errors of
  ``L^2 / 3``; normal variants: ``mean(w^2)`` within ``SIGMAS`` standard errors of ``scale / n``
  (and ``|w| <= 2 stddev`` when truncated);
* orthogonal (``gain g``): on the matrix ``rows = prod(shape[:-1])`` by ``cols = shape[-1]``,
  ``W W^T = g^2 I`` when ``rows < cols`` (orthonormal rows: a fused recurrent kernel
  ``[units, n units]``), else ``W^T W = g^2 I``; tolerance ``1e-5 g^2`` (float32);
* random normal / uniform / truncated normal: the mean and the variance, ``SIGMAS`` standard
  errors.

Sizes: ``(input_dim, units)`` in ``SIZES``, so kernels are tall and wide and the gated cells'
recurrent kernels wide.
"""

from __future__ import annotations

import inspect
import itertools

import numpy as np

from ..spec import CellSpec, holds
from .compare import Compared
from .configs import Config
from .refs import equation_cell
from .results import CheckResult, run_matrix

SIGMAS = 5.0
SIZES = ((40, 16), (8, 16))
ORTH_TOL = {"float32": 1e-5, "float64": 1e-10}
TOL_TEXT = f"{SIGMAS:g}σ, limit, orth 1e-5"


def init_options(cs: CellSpec, quick: bool = False) -> list[dict]:
    """Option values to build with: the defaults and each bool option flipped (all combinations
    in the full matrix)."""
    defaults = cs.defaults()
    bools = [o.name for o in cs.bool_options]
    out = [dict(defaults)]
    for combo in itertools.product((True, False), repeat=len(bools)):
        opts = dict(zip(bools, combo, strict=True))
        flipped = sum(opts[k] != defaults[k] for k in bools)
        if flipped and (not quick or flipped == 1):
            out.append({**defaults, **opts})
    return out


def regions(cs: CellSpec, options: dict, D: int, U: int) -> list[tuple[str, tuple, object]]:
    """(weight, index, initializer) for every region with one initializer: whole weights, or
    the blocks of a weight with active ``block_initializers`` (the rest of such a weight is
    checked block by block when its initializer is deterministic, else left out)."""
    blocks = equation_cell(cs, options, D, U).blocks
    out = []
    for w in cs.weights:
        if w.layout(options) is None:
            continue
        active = {b: init for b, when, init in w.block_initializers if holds(when, options)}
        if not active:
            out.append((w.name, (Ellipsis,), w.initializer))
            continue
        for name, (wname, idx, _) in blocks.items():
            if wname != w.name:
                continue
            if name in active:
                out.append((w.name, idx, active[name]))
            elif _deterministic(w.initializer):
                out.append((w.name, idx, w.initializer))
    return out


def _keras_init(identifier):
    import keras

    return keras.initializers.get(identifier)


def _deterministic(identifier) -> bool:
    return type(_keras_init(identifier)).__name__ in ("Zeros", "Ones", "Constant", "Identity")


def _name(identifier) -> str:
    if isinstance(identifier, dict):
        return f"{identifier.get('class_name')}{identifier.get('config') or ''}"
    return str(identifier)


class _Verdict:
    def __init__(self):
        self.res = Compared()
        self._worst = -1.0

    def add(self, what, measured, expected, bound, column=None):
        err = abs(float(measured) - float(expected))
        if column == "abs":
            self.res.max_abs = max(self.res.max_abs, err)
        elif column == "rel":
            self.res.max_rel = max(self.res.max_rel, err / max(abs(float(expected)), 1e-30))
        ratio = err / bound if bound > 0 else (0.0 if err == 0 else np.inf)
        self.res.ok = self.res.ok and ratio <= 1
        if ratio > self._worst:
            self._worst = ratio
            self.res.worst = {
                "tensor": what,
                "index": None,
                "analytic": float(measured),
                "reference": float(expected),
                "rel": err,
                "tol": float(bound),
            }


class _Suffixed:
    """Appends where a weight was built (``at``) to every statistic's name."""

    def __init__(self, v: _Verdict, at: str):
        self.v, self.at = v, at

    def add(self, what, *args):
        self.v.add(what + self.at, *args)


def check_weight(
    v: _Verdict, what: str, w: np.ndarray, full_shape, identifier, dtype, at: str = ""
) -> None:
    """Statistics of one region ``w`` of a weight of shape ``full_shape`` (``at``: where it was
    built, appended to each statistic's name)."""
    v = _Suffixed(v, at)
    from keras.src.initializers.random_initializers import compute_fans

    init = _keras_init(identifier)
    kind = type(init).__name__
    w = np.asarray(w, np.float64)
    n_entries = w.size
    what = f"{what} ({_name(identifier)})"
    if kind in ("Zeros", "Ones", "Constant", "Identity"):
        expected = np.asarray(init(w.shape, dtype=dtype), np.float64)
        v.add(f"{what}: max |w - keras|", float(np.max(np.abs(w - expected))), 0.0, 0.0, "abs")
        return
    if hasattr(init, "scale") and hasattr(init, "mode") and hasattr(init, "distribution"):
        fan_in, fan_out = compute_fans(tuple(full_shape))
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[init.mode]
        var = init.scale / max(1.0, n)
        fans = f"fan_in={fan_in}, fan_out={fan_out}"
        m2 = float(np.mean(w * w))
        if init.distribution == "uniform":
            limit = np.sqrt(3 * var)
            top = float(np.max(np.abs(w)))
            v.add(f"{what}: max |w| above the limit ({fans})", max(top, limit), limit, limit * 1e-6)
            if n_entries >= 30:
                v.add(
                    f"{what}: max |w| below the limit ({fans})",
                    min(top, limit),
                    limit,
                    limit * 15 / n_entries,
                    "rel",
                )
            se = limit**2 * np.sqrt(4 / 45 / n_entries)
            v.add(f"{what}: mean w^2 ({fans})", m2, limit**2 / 3, SIGMAS * se, "rel")
        else:
            if init.distribution == "truncated_normal":
                stddev = np.sqrt(var) / 0.87962566103423978
                top = float(np.max(np.abs(w)))
                v.add(f"{what}: max |w| <= 2 stddev", max(top, 2 * stddev), 2 * stddev, 1e-6)
            v.add(
                f"{what}: mean w^2 ({fans})", m2, var, SIGMAS * var * np.sqrt(2 / n_entries), "rel"
            )
        return
    if kind == "Orthogonal":
        gain = float(init.gain)
        rows = int(np.prod(full_shape[:-1]))
        m = w.reshape(rows, full_shape[-1])
        gram = m @ m.T if rows < m.shape[1] else m.T @ m
        side = "rows" if rows < m.shape[1] else "columns"
        dev = float(np.max(np.abs(gram - gain**2 * np.eye(len(gram)))))
        v.add(
            f"{what}: orthonormal {side} (max |gram - g^2 I|)",
            dev,
            0.0,
            ORTH_TOL[dtype] * gain**2,
            "abs",
        )
        return
    if kind in ("RandomNormal", "RandomUniform", "TruncatedNormal"):
        if kind == "RandomUniform":
            lo, hi = float(init.minval), float(init.maxval)
            mean, var = (lo + hi) / 2, (hi - lo) ** 2 / 12
        else:
            mean, var = float(init.mean), float(init.stddev) ** 2
            if kind == "TruncatedNormal":
                var *= 0.7737413  # variance of a standard normal truncated at +-2
        v.add(f"{what}: mean", float(np.mean(w)), mean, SIGMAS * np.sqrt(var / n_entries), "abs")
        spread = float(np.mean((w - mean) ** 2))  # standard error below var sqrt(2 / N)
        v.add(f"{what}: variance", spread, var, SIGMAS * var * np.sqrt(2 / n_entries), "rel")
        return
    # other initializers (e.g. a callable): no statistic is defined here


def _split(v: _Verdict, cs, options, D, U, weights: dict, dtype: str, backend: str) -> None:
    for wname, idx, identifier in regions(cs, options, D, U):
        w = np.asarray(weights[wname])
        region = w[idx]
        full = w.shape if idx == (Ellipsis,) else region.shape
        label = f"{wname}" if idx == (Ellipsis,) else f"{wname}{_index_text(idx)}"
        at = f" (input_dim={D}, units={U})"
        check_weight(v, f"{backend} {label}", region, full, identifier, dtype, at)


def _index_text(idx) -> str:
    parts = []
    for i in idx:
        if isinstance(i, slice):
            parts.append(f"{i.start}:{i.stop}")
        elif i is Ellipsis:
            parts.append("...")
        else:
            parts.append(str(i))
    return "[" + ", ".join(parts) + "]"


def _bool_kwargs(module, options: dict) -> dict:
    accepted = inspect.signature(module.weight_shapes).parameters
    return {k: v for k, v in options.items() if k in accepted}


def numpy_init_check(module, cs: CellSpec, options: dict, seed: int) -> Compared:
    """Build the NumPy layer (float32, as users get it) at every size in ``SIZES``."""
    v = _Verdict()
    cls = getattr(module, cs.class_name)
    for i, (D, U) in enumerate(SIZES):
        layer = cls(U, **options, seed=seed + i)
        layer.build(D)
        _split(v, cs, options, D, U, layer.weights, "float32", "numpy")
    return v.res


def tf_init_check(cls, numpy_module, cs: CellSpec, options: dict, seed: int) -> Compared:
    """Build the TF layer (float32) at every size in ``SIZES``; seeds via Keras's global seed."""
    import keras

    v = _Verdict()
    for i, (D, U) in enumerate(SIZES):
        keras.utils.set_random_seed(seed + i)
        layer = cls(U, **options)
        layer.build((2, 3, D))
        names = list(numpy_module.weight_shapes(D, U, **_bool_kwargs(numpy_module, options)))
        weights = dict(zip(names, layer.get_weights(), strict=True))
        _split(v, cs, options, D, U, weights, "float32", "tf")
    return v.res


# -- report rows --------------------------------------------------------------------------------


def _label(defaults):
    def label(cfg: Config) -> str:
        changed = [f"{k}={v}" for k, v in cfg.options if defaults.get(k) != v]
        sizes = ", ".join(f"input_dim={d} units={u}" for d, u in SIZES)
        return " ".join(changed or ["default options"]) + f" (sizes {sizes})"

    return label


def numpy_rows(cs: CellSpec, module, quick, seed, prog, defaults) -> list[CheckResult]:
    cfgs = [Config(tuple(o.items())) for o in init_options(cs, quick)]
    fn = lambda cfg: numpy_init_check(module, cs, cfg.opts, seed)  # noqa: E731
    row = run_matrix(
        cs.name, "init", "numpy", cfgs, fn, TOL_TEXT, prog, defaults, label=_label(defaults)
    )
    return [row]


def tf_rows(cs: CellSpec, cls, numpy_module, quick, seed, prog, defaults) -> list[CheckResult]:
    cfgs = [Config(tuple(o.items())) for o in init_options(cs, quick)]
    fn = lambda cfg: tf_init_check(cls, numpy_module, cs, cfg.opts, seed)  # noqa: E731
    row = run_matrix(
        cs.name, "init", "tf", cfgs, fn, TOL_TEXT, prog, defaults, label=_label(defaults)
    )
    return [row]
