"""The jax backend's rows of ``rnngen verify`` (``--backend jax``): the generated JAX module
(``<name>_jax.py``: functional ``init`` / ``apply``), in float64 but for the Keras comparison.

``autodiff``
    The fused ``apply`` (``jax.custom_vjp``: hoisted forward, derived BPTT as a reverse
    ``lax.scan``) against ``jax.grad`` of the undecorated scan (``implementation="scan"``), for
    any spec, both under ``jax.jit``: outputs, final states and the gradients of the input, the
    initial states and every weight. Every combination of boolean options (``--quick``: the
    defaults and each one flipped), each plain, masked with ``go_backwards``, masked with
    ``zero_output_for_mask``, with injected dropout masks (one shared mask per rate, and one per
    gate where the spec has several gates), with zero initial states, and the input-form variant
    (activations without an output-form derivative).
``keras``
    For the shipped cells (a Keras reference of ``SimpleRNN``, ``GRU`` or ``LSTM``): Keras's own
    layer **on the JAX backend**, in a subprocess with ``KERAS_BACKEND=jax`` and
    float32 (Keras picks its backend at import; this process may hold Keras on TensorFlow), the
    same weights (Keras's names and order), differentiated with ``jax.value_and_grad`` through
    ``layer.stateless_call``; dropout masks are injected by
    patching ``get_dropout_mask`` / ``get_recurrent_dropout_mask`` on the cell, as for the TF
    reference. Both implementations are compared with it, over the boolean options, an
    alternative activation, initial states or none, masks with ``go_backwards`` and
    ``zero_output_for_mask``, and injected dropout. float32, with the float32 tolerances, as the
    numpy and tf backends' ``keras`` rows: Keras 3.15's JAX backend cannot run these layers in
    float64 (``keras.ops.tanh`` returns float32 for a float64 input, so ``lax.scan`` refuses the
    carry). Keras's backends disagree on a leading masked step with a non-zero initial state
    (TensorFlow outputs zeros, as rnngen does; JAX outputs the initial state), so with an initial
    state (and ``zero_output_for_mask=False``) the first processed step is never masked here.
``finite_diff``
    The fused ``apply``'s gradients against float64 central differences: along a random
    direction per tensor and one over everything (as for the other backends), and on a sample of
    single entries of every tensor.
``hygiene``
    The module imports in a fresh interpreter without TensorFlow, Keras or rnngen.

float64 without changing the process: everything here runs inside ``jax.enable_x64(True)``, a
thread-local context, so no other check (or test) of the process sees 64-bit JAX defaults.
Tolerances are :func:`rnngen.verify.compare.compare`'s rule, the same as the numpy and torch
backends' (float64: forward ``1e-10 * s``, gradients ``1e-8 * s`` relative to the tensor's
largest reference entry; float32, ``keras`` only: ``1e-5 * s`` and ``1e-4 * s``) and ``FD_TOL``
along directions; sampled entries: ``|analytic - numeric| <= FD_TOL *
max(max|grad of that tensor|, 0.01 * max|grad|)``.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .compare import FD_EPS, FD_TOL, Compared, compare, tol_text
from .configs import SMOOTH
from .data import stable_seed
from .hygiene import hygiene_row, start_hygiene
from .jax_keras import keras_reference
from .modules import import_path
from .results import CheckResult, run_matrix

#: Keras layers the ``keras`` check runs on the JAX backend
KERAS_CLASSES = ("SimpleRNN", "GRU", "LSTM")
B, INPUT, UNITS = 3, 4, 5
RATES = {"dropout": 0.3, "recurrent_dropout": 0.4}


@dataclass(frozen=True)
class JaxConfig:
    """One configuration of a jax check (its options, what is on, and the sizes)."""

    options: tuple = ()  # (name, value) of boolean and activation options
    mask: bool = False
    go_backwards: bool = False
    zero_output_for_mask: bool = False
    dropout: str = ""  # "" | "shared" (one mask per rate) | "per_gate" (one per gate)
    initial_state: bool = True
    implementation: str = "fused"
    T: int = 6

    def label(self, defaults=None) -> str:
        defaults = defaults or {}
        parts = [f"{k}={v}" for k, v in self.options if defaults.get(k) != v]
        for flag in ("mask", "go_backwards", "zero_output_for_mask"):
            if getattr(self, flag):
                parts.append(flag)
        if self.dropout:
            parts.append(f"dropout ({self.dropout})")
        if not self.initial_state:
            parts.append("zero initial state")
        if self.implementation != "fused":
            parts.append(f"implementation={self.implementation}")
        if self.T != 6:
            parts.append(f"T={self.T}")
        return ", ".join(parts) or "defaults"

    def size(self, defaults=None) -> int:
        return len(self.label(defaults).split(", "))

    @property
    def data_key(self) -> JaxConfig:
        """The configuration without the implementation: what the data and Keras depend on."""
        return replace(self, implementation="fused")


@contextlib.contextmanager
def x64():
    """64-bit JAX inside the block only (thread-local; other checks keep JAX's defaults)."""
    import jax

    if hasattr(jax, "enable_x64"):
        with jax.enable_x64(True):
            yield
        return
    from jax.experimental import enable_x64  # older JAX

    with enable_x64():
        yield


def jax_checks(cs, jax_path, checks, quick, seed, prog, defaults) -> list[CheckResult]:
    """Every jax row of one spec (see the module doc)."""
    if jax_path is None or not Path(jax_path).is_file():
        return [CheckResult(cs.name, "jax", "all", "n/a", note="jax backend not built")]
    try:
        import jax  # noqa: F401
    except ImportError:
        return [CheckResult(cs.name, "jax", "all", "n/a", note="jax is not installed")]
    t0 = time.perf_counter()
    proc = start_hygiene(jax_path) if "hygiene" in checks else None
    out = []
    try:
        module = import_path(jax_path)
    except Exception as err:  # noqa: BLE001 - reported as a row
        out.append(CheckResult(cs.name, "jax", "import", "error", note=f"{err}"[:200]))
        module = None
    ref = (cs.reference or "").rpartition(".")[2]
    with x64():
        if module is not None and "autodiff" in checks:
            fn = lambda cfg: _autodiff_check(module, cs, cfg, seed)  # noqa: E731
            cfgs = autodiff_configs(cs, quick, defaults)
            out.append(
                run_matrix(
                    cs.name, "autodiff", "jax", cfgs, fn, tol_text("float64"), prog, defaults
                )
            )
        if module is not None and "keras" in checks and ref in KERAS_CLASSES:
            out.append(_keras_row(module, cs, ref, quick, seed, prog, defaults))
        if module is not None and "finite_diff" in checks:
            fn = lambda cfg: _fd_check(module, cs, cfg, seed)  # noqa: E731
            text = f"dir + entries {FD_TOL:g} rel"
            cfgs = fd_configs(cs, quick, defaults)
            out.append(run_matrix(cs.name, "finite_diff", "jax", cfgs, fn, text, prog, defaults))
    if proc is not None:
        row = hygiene_row(cs, "jax", proc, True, t0)
        row.tol = "imports jax (no TF, Keras, rnngen)"
        out.append(row)
    return out


# -- configurations -----------------------------------------------------------------------------


def _bool_combos(cs, quick, defaults) -> list[dict]:
    names = [o.name for o in cs.bool_options]
    if quick:
        combos = [dict(defaults)] + [{**defaults, n: not defaults[n]} for n in names]
        return [{n: c[n] for n in names} for c in combos]
    return [
        dict(zip(names, v, strict=True))
        for v in itertools.product((True, False), repeat=len(names))
    ]


def _smooth(cs) -> tuple:
    return tuple(
        (o.name, o.default if o.default in SMOOTH else "tanh") for o in cs.activation_options
    )


def autodiff_configs(cs, quick, defaults) -> list[JaxConfig]:
    """Per bool combination: plain, masked + go_backwards, masked + zero_output_for_mask from
    zero states, dropout (one mask per rate; a list of one per gate) and the input-form
    variant; ``--quick``: all of them for the defaults, and plain + everything at once for each
    flipped option."""
    input_form = tuple((o.name, "silu") for o in cs.activation_options)
    drop = "per_gate" if cs.dropout else ""
    out = []
    for i, combo in enumerate(_bool_combos(cs, quick, defaults)):
        opts = tuple(combo.items())
        if quick and i > 0:
            out += [
                JaxConfig(opts),
                JaxConfig(opts, mask=True, go_backwards=True, dropout=drop),
            ]
            continue
        out += [
            JaxConfig(opts),
            JaxConfig(opts, mask=True, go_backwards=True),
            JaxConfig(opts, mask=True, zero_output_for_mask=True, initial_state=False),
        ]
        if cs.dropout:
            out.append(JaxConfig(opts, mask=True, dropout="shared"))
            out.append(JaxConfig(opts, dropout="per_gate", go_backwards=True))
        if input_form:
            out.append(JaxConfig(opts + input_form, dropout=drop))
    if quick:
        return out
    out.append(JaxConfig(out[0].options, mask=True, go_backwards=True, T=25))
    return out


def fd_configs(cs, quick, defaults) -> list[JaxConfig]:
    """Smooth activations only (central differences are meaningless at kinks): everything at
    once (masks, go_backwards, per-gate dropout, initial states); in full, also a plain masked
    run, zero_output_for_mask, and each bool option flipped."""
    smooth = _smooth(cs)
    bools = tuple((o.name, defaults[o.name]) for o in cs.bool_options)
    drop = "per_gate" if cs.dropout else ""
    cfgs = [JaxConfig(bools + smooth, mask=True, go_backwards=True, dropout=drop, T=4)]
    if not quick:
        cfgs += [
            JaxConfig(bools + smooth, mask=True, T=4),
            JaxConfig(bools + smooth, mask=True, zero_output_for_mask=True, T=4),
        ]
        for o in cs.bool_options:
            flipped = tuple((n, (not v) if n == o.name else v) for n, v in bools)
            cfgs.append(JaxConfig(flipped + smooth, mask=True, dropout=drop, T=4))
    return cfgs


def keras_configs(cs, quick, defaults) -> list[JaxConfig]:
    combos = _bool_combos(cs, quick, defaults)
    alt = tuple(
        (o.name, _alternative_keras(o)) for o in cs.activation_options if _alternative_keras(o)
    )
    data = []
    for combo in combos:
        opts = tuple(combo.items())
        data += [
            JaxConfig(opts),
            JaxConfig(opts, mask=True, go_backwards=True),
            JaxConfig(opts, mask=True, go_backwards=True, zero_output_for_mask=True),
            JaxConfig(opts, mask=True, dropout="keras" if cs.dropout else "", initial_state=False),
        ]
        if quick:  # the other combinations plain only
            data = data[:4] + [JaxConfig(tuple(c.items())) for c in combos[1:]]
            break
    if alt:
        data.append(JaxConfig(tuple(combos[0].items()) + alt, mask=True))
    data = list(dict.fromkeys(data))
    return [replace(c, implementation=i) for c in data for i in ("fused", "scan")]


#: why the keras row's masks never skip the first processed step when an initial state is given
LEADING_MASK_REMARK = (
    "Keras's backends disagree on a leading masked step with a non-zero initial state "
    "(zero_output_for_mask=False): TensorFlow outputs zeros (what rnngen follows, "
    "keras-rnn-semantics), JAX the initial state; so with an initial state the first processed "
    "step is never masked here"
)


def _alternative_keras(opt) -> str | None:
    for name in ("sigmoid", "relu", "softsign", "linear", "tanh"):
        if name != opt.default and name in opt.values:
            return name
    return None


def _dropout_table(cs, module) -> dict:
    """``{rate name: (tensor, masks per rate)}``: the module's ``DROPOUT`` when it has one, else
    one mask per rate from the spec."""
    table = getattr(module, "DROPOUT", None) if module is not None else None
    if table:
        return dict(table)
    return {rate: (tensor, 1) for tensor, rate in cs.dropout}


# -- data and runs -------------------------------------------------------------------------------


def _signature_kwargs(fn, values: dict) -> dict:
    accepted = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        return dict(values)
    return {k: v for k, v in values.items() if k in accepted}


def _data(module, cs, cfg: JaxConfig, seed: int) -> dict:
    """Weights (``init``, moved off their initial values), inputs, masks and projections in
    float64 NumPy, the same for both implementations of one configuration."""
    import jax
    import jax.numpy as jnp

    key = cfg.data_key
    rng = np.random.default_rng([seed, stable_seed(cs.name), stable_seed(key.label())])
    opts = dict(cfg.options)
    bools = {o.name: opts[o.name] for o in cs.bool_options if o.name in opts}
    params = module.init(
        jax.random.PRNGKey(seed),
        INPUT,
        UNITS,
        dtype=jnp.float64,
        **_signature_kwargs(module.init, bools),
    )
    # off the initial values, so biases are not zero and no weight is special
    weights = {
        n: np.asarray(w, np.float64) + 0.2 * rng.standard_normal(np.shape(w))
        for n, w in params.items()
    }
    x = 0.7 * rng.standard_normal((B, cfg.T, INPUT))
    h0 = [0.3 * rng.standard_normal((B, UNITS)) for _ in cs.states] if cfg.initial_state else None
    mask = None
    if cfg.mask:
        mask = np.ones((B, cfg.T), bool)
        mask[0, 1] = mask[1, 0] = False
        mask[2, cfg.T - 2 :] = False  # a masked last step
    dmasks = None
    if cfg.dropout:
        dmasks = {}
        table = _dropout_table(cs, module)
        for rate_name, (tensor, count) in table.items():
            rate = RATES.get(rate_name, 0.3)
            shape = (B, INPUT) if tensor == "x" else (B, UNITS)
            # "per_gate": a list (one mask per gate; a list of one for a one-gate cell);
            # "keras": as Keras draws them, per gate exactly when recurrent_dropout is on
            per_gate = cfg.dropout == "per_gate" or (
                cfg.dropout == "keras" and count > 1 and "recurrent_dropout" in table
            )
            draws = [
                (rng.random(shape) >= rate) / (1 - rate) for _ in range(count if per_gate else 1)
            ]
            dmasks[rate_name] = draws if per_gate else draws[0]
    proj = [rng.standard_normal((B, cfg.T, UNITS))] + [
        rng.standard_normal((B, UNITS)) for _ in cs.states
    ]
    return {"weights": weights, "x": x, "h0": h0, "mask": mask, "dmasks": dmasks, "proj": proj}


def _apply_kwargs(cfg: JaxConfig, data: dict, implementation: str) -> dict:
    return dict(
        mask=data["mask"],
        dropout_masks=data["dmasks"],
        go_backwards=cfg.go_backwards,
        zero_output_for_mask=cfg.zero_output_for_mask,
        implementation=implementation,
        **dict(cfg.options),
    )


def _loss_fn(module, cs, cfg, data, implementation):
    """``L(x, h0, params) = sum(P * sequence) + sum_i sum(Q_i * final_i)``, its auxiliary
    output the returned values."""
    import jax.numpy as jnp

    kw = _apply_kwargs(cfg, data, implementation)
    proj = [jnp.asarray(p) for p in data["proj"]]

    def loss(x, h0, params):
        seq, finals = module.apply(params, x, h0 if cfg.initial_state else None, **kw)
        total = jnp.sum(proj[0] * seq)
        for q, f in zip(proj[1:], finals, strict=True):
            total = total + jnp.sum(q * f)
        return total, (seq, list(finals))

    return loss


def _as(data: dict, dtype) -> dict:
    """``data`` with every float array in ``dtype`` (masks stay boolean)."""

    def cast(v):
        if isinstance(v, dict):
            return {k: cast(a) for k, a in v.items()}
        if isinstance(v, list):
            return [cast(a) for a in v]
        if isinstance(v, np.ndarray) and v.dtype.kind == "f":
            return v.astype(dtype)
        return v

    return {k: cast(v) for k, v in data.items()}


def _run(module, cs, cfg, data, implementation, dtype="float64") -> dict:
    """Returned values and gradients of ``_loss_fn`` (jitted), as NumPy arrays that must come
    back in ``dtype`` (the dtype of ``data``)."""
    import jax
    import jax.numpy as jnp

    loss = _loss_fn(module, cs, cfg, data, implementation)
    fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))
    x = jnp.asarray(data["x"])
    h0 = [jnp.asarray(h) for h in data["h0"]] if data["h0"] is not None else []
    params = {n: jnp.asarray(w) for n, w in data["weights"].items()}
    (_, (seq, finals)), (dx, dh0, dw) = fn(x, h0, params)
    values = {"output": np.asarray(seq)}
    values |= {f"final {s}": np.asarray(f) for s, f in zip(cs.states, finals, strict=True)}
    grads = {"x": np.asarray(dx)}
    grads |= {f"initial {s}": np.asarray(g) for s, g in zip(cs.states, dh0, strict=False)}
    grads |= {n: np.asarray(g) for n, g in dw.items()}
    for kind in (values, grads):
        for name, a in kind.items():
            if a.dtype != np.dtype(dtype):
                raise TypeError(f"{name} came back as {a.dtype}, not {dtype}")
    return {"values": values, "grads": grads}


def _autodiff_check(module, cs, cfg, seed) -> Compared:
    data = _data(module, cs, cfg, seed)
    ours = _run(module, cs, cfg, data, "fused")
    ref = _run(module, cs, cfg, data, "scan")
    return compare(ours, ref, "float64", cfg.T)


# -- finite differences -------------------------------------------------------------------------


def _fd_check(module, cs, cfg, seed) -> Compared:
    """``<grad L, u>`` of the fused op against central differences along random directions
    (one per tensor, one over everything), then single entries of every tensor."""
    import jax
    import jax.numpy as jnp

    data = _data(module, cs, cfg, seed)
    loss = _loss_fn(module, cs, cfg, data, "fused")
    states = [f"initial {s}" for s in cs.states] if cfg.initial_state else []
    names = ["x", *states, *data["weights"]]
    base = {"x": data["x"], **dict(zip(states, data["h0"] or [], strict=True))}
    base |= data["weights"]

    def split(p):
        return p["x"], [p[s] for s in states], {n: p[n] for n in data["weights"]}

    value = jax.jit(lambda p: loss(*split(p))[0])
    grad = jax.jit(jax.grad(lambda p: loss(*split(p))[0]))
    g = {n: np.asarray(v) for n, v in grad({n: jnp.asarray(v) for n, v in base.items()}).items()}

    def at(p) -> float:
        return float(value({n: jnp.asarray(v) for n, v in p.items()}))

    rng = np.random.default_rng([seed, stable_seed(cfg.label()), 11])
    res = Compared()
    gmax = max(float(np.max(np.abs(v))) for v in g.values() if v.size)

    def record(tensor, index, analytic, numeric, rel):
        res.max_abs = max(res.max_abs, abs(analytic - numeric))
        res.max_rel = max(res.max_rel, rel)
        res.ok = res.ok and rel <= FD_TOL
        if res.worst is None or rel > res.worst["rel"]:
            res.worst = {
                "tensor": tensor,
                "index": index,
                "analytic": analytic,
                "reference": numeric,
                "rel": rel,
                "tol": FD_TOL,
            }

    every = {n: rng.standard_normal(np.shape(base[n])) for n in names}
    for group in [[n] for n in names] + [names]:
        u = {n: (every[n] if n in group else np.zeros_like(every[n])) for n in names}
        analytic = float(sum(np.sum(g[n] * u[n]) for n in group))
        plus = at({n: base[n] + FD_EPS * u[n] for n in names})
        minus = at({n: base[n] - FD_EPS * u[n] for n in names})
        numeric = (plus - minus) / (2 * FD_EPS)
        if not np.isfinite(numeric):
            return Compared(skipped=True)
        scale = np.sqrt(sum(np.sum(g[n] ** 2) for n in group)) * np.sqrt(
            sum(np.sum(u[n] ** 2) for n in group)
        )
        rel = abs(analytic - numeric) / max(scale, abs(numeric), 1e-30)
        where = "all" if len(group) > 1 else group[0]
        record(f"direction over {where}", None, analytic, numeric, float(rel))
    for n in names:  # a sample of single entries of every tensor
        size = int(np.size(base[n]))
        if size == 0:
            continue
        picks = rng.choice(size, size=min(size, 4), replace=False)
        denom = max(float(np.max(np.abs(g[n]))), 0.01 * gmax, 1e-30)
        for i in picks:
            shifted = []
            for sign in (1, -1):
                v = np.array(base[n], np.float64)
                v.flat[i] += sign * FD_EPS
                shifted.append(at({**base, n: v}))
            numeric = (shifted[0] - shifted[1]) / (2 * FD_EPS)
            analytic = float(g[n].flat[i])
            idx = [int(k) for k in np.unravel_index(int(i), np.shape(base[n]))]
            record(n, idx, analytic, numeric, abs(analytic - numeric) / denom)
    return res


# -- Keras on the JAX backend -------------------------------------------------------------------


def _keras_row(module, cs, ref_class, quick, seed, prog, defaults) -> CheckResult:
    cfgs = keras_configs(cs, quick, defaults)
    keys = list(dict.fromkeys(c.data_key for c in cfgs))
    t0 = time.perf_counter()
    try:
        datas = {k: _as(_data(module, cs, k, seed), np.float32) for k in keys}
        for k, d in datas.items():
            if d["mask"] is not None and k.initial_state and not k.zero_output_for_mask:
                d["mask"][:, -1 if k.go_backwards else 0] = True  # see LEADING_MASK_REMARK
        refs = keras_reference(cs, ref_class, UNITS, RATES, keys, datas)
    except Exception as err:  # noqa: BLE001 - reported as a row
        row = CheckResult(
            cs.name, "jax", "keras", "error", note=f"{type(err).__name__}: {err}"[:300]
        )
        row.seconds = round(time.perf_counter() - t0, 2)
        prog.advance(len(cfgs))
        return row

    def fn(cfg):
        data = datas[cfg.data_key]
        ours = _run(module, cs, cfg, data, cfg.implementation, "float32")
        return compare(ours, refs[cfg.data_key], "float32", cfg.T)

    row = run_matrix(cs.name, "keras", "jax", cfgs, fn, tol_text("float32"), prog, defaults)
    row.seconds = round(time.perf_counter() - t0, 2)
    row.remark = (
        f"keras.layers.{ref_class} on the JAX backend (subprocess) in float32, as the other "
        "backends' keras rows: Keras 3.15's JAX ops turn float64 into float32 (ops.tanh: "
        "result_type('float64', float) is float32), so its float64 layers fail to scan; "
        + LEADING_MASK_REMARK
    )
    return row


def count(cs, checks, quick, defaults) -> int:
    """Progress steps of the jax rows."""
    ref = (cs.reference or "").rpartition(".")[2]
    n = len(keras_configs(cs, quick, defaults)) * ("keras" in checks and ref in KERAS_CLASSES)
    n += len(autodiff_configs(cs, quick, defaults)) * ("autodiff" in checks)
    n += len(fd_configs(cs, quick, defaults)) * ("finite_diff" in checks)
    return n
