"""The ``dropout`` check of ``rnngen verify``: the masks a layer draws itself.

Every other check injects known masks, so they test how masks are *applied*. This one calls the
layer with ``training=True`` and nothing injected, records the masks it drew (the NumPy layer's
tape; the TF cell's ``get_dropout_mask`` / ``get_recurrent_dropout_mask``, wrapped), and checks,
per rate, per gate and per call:

* **replay**: the independent equation interpreter run with the recorded masks reproduces the
  layer's outputs, states and gradients (so the recorded masks are the ones applied, one mask
  for every step of the call) within the ``autodiff`` tolerances;
* **keep fraction**: the fraction of non-zero entries is ``1 - rate`` within ``SIGMAS``
  binomial standard deviations, ``sqrt(rate (1 - rate) / n)`` for ``n`` entries (the report's
  "max abs err" column is the worst deviation);
* **scale**: every kept entry is exactly ``1 / (1 - rate)`` (relative error ``<= 1e-12`` in
  float64, ``1e-6`` in float32; the report's "max rel err" column);
* **independence**: two masks (two samples of a batch, two calls, two gates) agree on an entry
  with probability ``p = rate^2 + (1 - rate)^2``; the observed agreement is within ``SIGMAS``
  binomial standard deviations of ``p``; identical consecutive rows (samples) occur no more
  often than the exact binomial bound with the same tail probability (``TAIL``) allows;
* **per gate exactly when Keras does**: with ``recurrent_dropout > 0`` every gate gets its own
  mask (Keras's implementation 1); otherwise one mask is shared by every gate;
* ``training=False`` applies none: the layer equals the interpreter without masks (once per
  row, with its last configuration).
"""

from __future__ import annotations

import itertools

import numpy as np

from ..spec import CellSpec
from .compare import Compared, compare
from .configs import Config
from .data import make_data
from .layers import run_numpy_layer
from .refs import import_tf, run_equations, run_keras_layer
from .results import CheckResult, run_matrix

SIGMAS = 5.0
#: the one-sided tail probability of a SIGMAS deviation of a normal variable
TAIL = 2.9e-7
RATES = {"dropout": 0.3, "recurrent_dropout": 0.4}
SCALE_TOL = {"float32": 1e-6, "float64": 1e-12}
TOL_TEXT = f"keep ±{SIGMAS:g}σ, exact scale"


def dropout_configurations(cs: CellSpec, quick: bool = False) -> list[Config]:
    """One configuration per declared rate alone and both together (large batch for statistics);
    the full matrix repeats both together for every other combination of bool options."""
    declared = [r for r in RATES if r in {rate for _, rate in cs.dropout}]
    if not declared:
        return []
    defaults = cs.defaults()
    sizes = dict(B=96, T=3, D=10, U=10, initial_state=True)
    scenarios = [{r: RATES[r]} for r in declared]
    if len(declared) > 1:
        scenarios.append(dict(RATES))
    out = [Config(tuple(defaults.items()), **sizes, **s) for s in scenarios]
    if not quick:
        bools = [o.name for o in cs.bool_options]
        for combo in itertools.product((True, False), repeat=len(bools)):
            opts = dict(zip(bools, combo, strict=True))
            if any(opts[k] != defaults[k] for k in bools):
                both = {r: RATES[r] for r in declared}
                out.append(Config(tuple({**defaults, **opts}.items()), **sizes, **both))
    return out


# -- statistics of recorded masks ---------------------------------------------------------------


def binomial_upper(n: int, p: float, tail: float = TAIL) -> int:
    """The smallest ``c`` with ``P(X > c) <= tail`` for ``X ~ Binomial(n, p)``: an exact bound
    for rare counts, where the normal approximation is far too tight."""
    from math import comb

    cdf = 0.0
    for c in range(n + 1):
        cdf += comb(n, c) * p**c * (1 - p) ** (n - c)
        if 1 - cdf <= tail:
            return c
    return n


class _Verdict:
    """Accumulates the statistics of one configuration into a :class:`Compared`."""

    def __init__(self):
        self.res = Compared()
        self._worst_ratio = -1.0

    def add(self, what: str, measured: float, expected: float, bound: float, column=None):
        """``column``: "abs" (the report's max abs err: keep fractions), "rel" (max rel err:
        scale errors), or None (reported only on failure)."""
        err = abs(measured - expected)
        if column == "abs":
            self.res.max_abs = max(self.res.max_abs, err)
        elif column == "rel":
            self.res.max_rel = max(self.res.max_rel, err / max(abs(expected), 1e-30))
        ratio = err / bound if bound > 0 else (0.0 if err == 0 else np.inf)
        if ratio > 1:
            self.res.ok = False
        if ratio > self._worst_ratio:
            self._worst_ratio = ratio
            self.res.worst = {
                "tensor": what,
                "index": None,
                "analytic": float(measured),
                "reference": float(expected),
                "rel": float(err),
                "tol": float(bound),
            }

    def merge(self, what: str, c: Compared) -> None:
        self.res.max_rel = max(self.res.max_rel, c.max_rel)
        if not c.ok:
            self.res.ok = False
            self._worst_ratio = np.inf
            self.res.worst = {**c.worst, "tensor": f"{what}: {c.worst['tensor']}"}


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a != 0) == (b != 0)))


def check_masks(
    v: _Verdict, calls: list[dict], cfg: Config, counts: dict, dtype: str, tensors: dict
) -> None:
    """Statistics of the masks recorded in two calls: ``calls[i][rate] = [mask per gate]``."""
    for rate_name, count in counts.items():
        rate = getattr(cfg, rate_name, 0.0)
        if not 0 < rate < 1:
            continue
        t = tensors[rate_name]
        per_gate = cfg.recurrent_dropout > 0 and count > 1
        p_eq = rate**2 + (1 - rate) ** 2
        for c, masks in enumerate(calls, 1):
            masks = masks.get(rate_name)
            if masks is None:
                v.add(f"{t} mask ({rate_name}) call {c}: drawn masks", 0, 1, 0)
                continue
            for g, m in enumerate(masks):
                m = np.asarray(m, np.float64)
                where = f"{t} mask ({rate_name}) call {c}" + (f" gate {g}" if count > 1 else "")
                n = m.size
                kept = m != 0
                v.add(
                    f"{where}: kept fraction",
                    float(kept.mean()),
                    1 - rate,
                    SIGMAS * np.sqrt(rate * (1 - rate) / n),
                    "abs",
                )
                s = 1 / (1 - rate)
                worst = m[kept][np.argmax(np.abs(m[kept] - s))] if kept.any() else s
                v.add(
                    f"{where}: kept value (1 / (1 - rate))", worst, s, SCALE_TOL[dtype] * s, "rel"
                )
                if m.shape[0] > 1:  # rows (samples) are independent: identical rows are rare
                    pairs = m.shape[0] - 1
                    same = sum(np.array_equal(kept[i], kept[i + 1]) for i in range(pairs))
                    bound = binomial_upper(pairs, p_eq ** m.shape[1])
                    v.add(f"{where}: identical consecutive samples", same, 0, max(bound, 0.5))
            for g, h in itertools.combinations(range(len(masks)), 2):
                where = f"{t} mask ({rate_name}) call {c} gates {g} and {h}"
                a, b = np.asarray(masks[g]), np.asarray(masks[h])
                if per_gate:  # independent masks agree on an entry with probability p_eq
                    v.add(
                        f"{where}: agreement (recurrent_dropout > 0: one mask per gate)",
                        _agreement(a, b),
                        p_eq,
                        SIGMAS * np.sqrt(p_eq * (1 - p_eq) / a.size),
                    )
                else:
                    v.add(
                        f"{where}: differing entries (recurrent_dropout = 0: one shared mask)",
                        float(np.mean(a != b)),
                        0.0,
                        0.0,
                    )
        if all(m.get(rate_name) is not None for m in calls) and len(calls) > 1:
            a, b = (np.asarray(calls[i][rate_name][0]) for i in (0, 1))
            v.add(
                f"{t} mask ({rate_name}): agreement between two calls",
                _agreement(a, b),
                p_eq,
                SIGMAS * np.sqrt(p_eq * (1 - p_eq) / a.size),
            )


def _as_lists(masks: dict, counts: dict) -> dict:
    out = {}
    for rate_name, value in masks.items():
        if value is None:
            continue
        value = list(value) if isinstance(value, list | tuple) else [value]
        if len(value) == 1 and counts[rate_name] > 1:
            value = value * counts[rate_name]
        out[rate_name] = [np.asarray(m) for m in value]
    return out


def _replay(cs, cfg, data, ours, masks, dtype) -> Compared:
    """The equation interpreter with the recorded masks against the layer's own results."""
    replayed = dict(
        data, dmasks={k: [np.asarray(m, np.float64) for m in v] for k, v in masks.items()}
    )
    return compare(ours, run_equations(cs, cfg, replayed), dtype, cfg.T)


def _inference(cs, cfg, data, ours, dtype) -> Compared:
    return compare(ours, run_equations(cs, cfg, dict(data, dmasks=None)), dtype, cfg.T)


# -- the NumPy layer ----------------------------------------------------------------------------


def numpy_dropout_check(
    module, cs: CellSpec, cfg: Config, seed: int, inference: bool = True
) -> Compared:
    """Draw masks in the generated NumPy layer (float64) and check them; see the module doc."""
    counts = {r: c for r, (_, c) in module.DROPOUT.items()}
    tensors = {r: t for r, (t, _) in module.DROPOUT.items()}
    data = make_data(module, cs, cfg, seed)
    layers = []
    ours = run_numpy_layer(
        module,
        cs,
        cfg,
        data,
        "float64",
        draw_masks=True,
        extra={"seed": seed},
        prepare=layers.append,
    )
    (layer,) = layers

    def recorded():
        tape_masks = layer._tape.get("masks")
        if tape_masks is None:
            return {}
        return {r: [np.array(m) for m in tape_masks[t]] for r, t in tensors.items()}

    first = recorded()
    x = np.asarray(data["xs"][-1])
    h0 = None if data["h0"] is None else [np.asarray(h) for h in data["h0"]]
    layer(x, initial_state=h0, mask=data["mask"], training=True)
    second = recorded()
    drawn = {r: m for r, m in first.items() if getattr(cfg, r, 0.0) > 0}
    v = _Verdict()
    check_masks(v, [drawn, {r: second.get(r) for r in drawn}], cfg, counts, "float64", tensors)
    v.merge("replay with the drawn masks", _replay(cs, cfg, data, ours, first, "float64"))
    if inference:
        off = run_numpy_layer(module, cs, cfg, dict(data, dmasks=None), "float64")
        v.merge("training=False", _inference(cs, cfg, data, off, "float64"))
    return v.res


# -- the TF layer -------------------------------------------------------------------------------


def _record_getters(layer, log: dict) -> None:
    """Wrap the cell's mask getters so every mask they hand out is kept in ``log``."""
    cell = layer.cell
    for key, name in (
        ("dropout", "get_dropout_mask"),
        ("recurrent_dropout", "get_recurrent_dropout_mask"),
    ):
        original = getattr(cell, name)

        def wrapped(step_input, original=original, key=key):
            value = original(step_input)
            if value is not None:
                log.setdefault(key, []).append(value)
            return value

        setattr(cell, name, wrapped)


def tf_layer_dropout_check(
    cls,
    numpy_module,
    cs: CellSpec,
    cfg: Config,
    seed: int,
    impl: str,
    dtype: str,
    inference: bool = True,
) -> Compared:
    """Draw masks in the generated TF layer and check them; see the module doc."""
    tf = import_tf()
    counts = {r: c for r, (_, c) in numpy_module.DROPOUT.items()}
    tensors = {r: t for r, (t, _) in numpy_module.DROPOUT.items()}
    data = make_data(numpy_module, cs, cfg, seed)
    log: dict = {}
    layers = []

    def prepare(layer):
        layers.append(layer)
        _record_getters(layer, log)

    extra = {"implementation": impl, "seed": seed}
    ours = run_keras_layer(
        cls, cs, cfg, dict(data, dmasks={}), extra, False, dtype, prepare=prepare
    )
    (layer,) = layers
    v = _Verdict()

    def one_call(values: dict) -> dict:
        out = {}
        for key, seen in values.items():
            arrays = [[np.asarray(m) for m in _seq(s)] for s in seen]
            for k, other in enumerate(arrays[1:], 2):  # the same mask at every step of a call
                same = len(other) == len(arrays[0]) and all(
                    np.array_equal(a, b) for a, b in zip(arrays[0], other, strict=True)
                )
                v.add(
                    f"{tensors[key]} mask ({key}): request {k} differs from request 1",
                    float(not same),
                    0.0,
                    0.0,
                )
            out[key] = arrays[0]
        return _as_lists(out, counts)

    first = one_call(log)
    log.clear()
    tfd = tf.as_dtype(dtype)
    h0 = None if data["h0"] is None else [tf.constant(h, tfd) for h in data["h0"]]
    mask = None if data["mask"] is None else tf.constant(data["mask"])
    layer(tf.constant(data["xs"][-1], tfd), initial_state=h0, mask=mask, training=True)
    second = one_call(log)
    drawn = {r: m for r, m in first.items() if getattr(cfg, r, 0.0) > 0}
    check_masks(v, [drawn, {r: second.get(r) for r in drawn}], cfg, counts, dtype, tensors)
    v.merge("replay with the drawn masks", _replay(cs, cfg, data, ours, first, dtype))
    if inference:
        off = run_keras_layer(cls, cs, cfg, dict(data, dmasks=None), extra, False, dtype)
        v.merge("training=False", _inference(cs, cfg, data, off, dtype))
    return v.res


def _seq(value):
    return list(value) if isinstance(value, list | tuple) else [value]


# -- report rows --------------------------------------------------------------------------------


def tf_configurations(cs: CellSpec, quick: bool, impl: str) -> list[Config]:
    """Quick mode shares the scenarios out between the two implementations (they draw their
    masks with the same cell code); the full matrix gives each implementation every one."""
    cfgs = dropout_configurations(cs, quick)
    if not quick:
        return cfgs
    return cfgs[("loop", "fused").index(impl) :: 2] or cfgs


def numpy_rows(cs: CellSpec, module, quick, seed, prog, defaults) -> list[CheckResult]:
    cfgs = dropout_configurations(cs, quick)
    if not cfgs:
        return [
            CheckResult(cs.name, "numpy", "dropout", "n/a", note="the spec declares no dropout")
        ]
    # training=False is checked once per row, with the last configuration (every rate on)
    fn = lambda cfg: numpy_dropout_check(module, cs, cfg, seed, cfg == cfgs[-1])  # noqa: E731
    return [run_matrix(cs.name, "dropout", "numpy", cfgs, fn, TOL_TEXT, prog, defaults)]


def tf_rows(cs: CellSpec, cls, numpy_module, quick, seed, prog, defaults, dtype):
    if not dropout_configurations(cs, quick):
        return [CheckResult(cs.name, "tf", "dropout", "n/a", note="the spec declares no dropout")]
    rows = []
    for impl in ("loop", "fused"):
        cfgs = tf_configurations(cs, quick, impl)

        def fn(cfg, impl=impl, last=cfgs[-1]):
            return tf_layer_dropout_check(
                cls, numpy_module, cs, cfg, seed, impl, dtype, inference=cfg == last
            )

        rows.append(
            run_matrix(cs.name, f"dropout/{impl}", "tf", cfgs, fn, TOL_TEXT, prog, defaults)
        )
    return rows
