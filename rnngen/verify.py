"""``rnngen verify``: check generated recurrent layers against independent references.

What is verified is the code ``rnngen build`` writes for the spec now: every spec, shipped or
not, is built into a temporary folder first (``generated/`` is never imported; when it differs
from the fresh build the report says it is stale).

For every spec and backend these checks run, each reported as one row (configurations tried,
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
``truncate``
    ``backward(truncate=k)`` of the NumPy layer against autodiff of the equation interpreter with
    the gradient stopped at processed step ``T - k`` (:mod:`rnngen.verify_truncate`).
``dropout``
    The masks the layer draws itself (``training=True``, nothing injected), NumPy and both TF
    implementations: replayed through the equation interpreter, keep fraction ``1 - rate``
    within 5 binomial sigmas, kept entries exactly ``1 / (1 - rate)``, independent between
    samples, calls and (exactly when ``recurrent_dropout > 0``, as Keras) gates, and none with
    ``training=False`` (:mod:`rnngen.verify_dropout`).
``init``
    The weights the layer builds (NumPy and TF) against Keras's initializer definitions:
    variance-scaling limits and moments from Keras's fans of the whole fused weight,
    orthonormal rows or columns of orthogonal weights, exact constants
    (:mod:`rnngen.verify_init`).
``hygiene``
    Each generated module imports in a fresh interpreter; the NumPy module must not pull in
    ``tensorflow`` or ``rnngen`` (:mod:`rnngen.verify_hygiene`). These subprocesses run
    concurrently with the other checks (``run_cli`` starts those of every module up front).

The ``tf`` backend (``<name>_tf.py``, a Keras 3 layer) gets, for both ``implementation="loop"``
and ``"fused"``, a ``keras/<impl>`` row (against the Keras reference, float32, when the spec has
one) and an ``autodiff/<impl>`` row (against the same equation interpreter as the numpy
``autodiff`` check, in float64 when the layer runs with ``dtype="float64"``, else float32 with the
float32 tolerances), over the same configuration matrix as the numpy backend, dropout included, plus
``dropout/<impl>`` and ``init`` rows:
the known masks are injected by patching ``get_dropout_mask`` / ``get_recurrent_dropout_mask`` on
the layer's cell instance, exactly as for the Keras reference, and the call runs with
``training=True``. The float64 run uses an exact L1/L2 regularizer (``keras.regularizers.L1L2``
rounds its coefficients to float32). The references run once per configuration and are shared
by the backends. A new cell is verified on both backends like a shipped one.

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
import json
import tempfile
import time
from pathlib import Path

from . import spec as spec_mod
from . import verify_dropout, verify_init, verify_truncate
from .spec import CellSpec
from .verify_base import (  # noqa: F401 - the public names of rnngen.verify
    CHECKS,
    FD_EPS,
    FD_TOL,
    FWD_TOL,
    GRAD_TOL,
    REGS,
    SMOOTH,
    CheckResult,
    Compared,
    Config,
    _cast,
    _declared_dropout,
    _layer_kwargs,
    _module_dir,
    _Progress,
    _reg,
    _reg_kwargs,
    _run_matrix,
    _stable,
    _tol_text,
    build_into,
    compare,
    configurations,
    fd_configurations,
    import_path,
    make_data,
    run_numpy_layer,
    stale_generated,
)
from .verify_fd import fd_check, full_jacobian_check  # noqa: F401
from .verify_hygiene import (  # noqa: F401
    _reap,
    finish_hygiene,
    hygiene_check,
    prestart_hygiene,
    start_hygiene,
)
from .verify_refs import (  # noqa: F401
    EquationCell,
    _keras_class,
    _tf,
    run_equations,
    run_keras_layer,
)
from .verify_report import _fmt, render  # noqa: F401

# -- driver -------------------------------------------------------------------------------------


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
    built_dir: Path | None = None,
) -> list[CheckResult]:
    """Run the checks for one spec; returns one :class:`CheckResult` per backend and check.

    ``hygiene_procs``: hygiene imports already started (see :func:`prestart_hygiene`), keyed by
    resolved module path; the ones this spec needs are taken out of the dict.

    By default the spec is built into a temporary folder (what ``rnngen build`` writes now,
    never the files in ``generated/``; a stale ``generated/`` is named in a remark).
    ``built_dir``: that build, made already (``run_cli`` builds every spec first).
    ``module_dir``: a folder holding ``<name>_numpy.py`` (and optionally ``<name>_tf.py``) to
    verify instead; ``numpy_module``: an already imported module.
    """
    if isinstance(path_or_spec, CellSpec):
        cs, path = path_or_spec, None
    else:
        path = Path(path_or_spec)
        cs = spec_mod.load(path)
    defaults = cs.defaults()
    results: list[CheckResult] = []
    with contextlib.ExitStack() as stack:
        if built_dir is not None and module_dir is None:
            mdir = Path(built_dir)
        elif numpy_module is None or "hygiene" in checks or "tf" in backends:
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
            + _extra_count(cs, checks, backends, quick, tf_path is not None)
        )
        refs = _RefCache(cs, numpy_module, seed)
        prog = progress if progress is not None else _Progress(None, None)
        task = None
        if progress is not None:
            task = progress.add_task(f"{cs.name}", total=total)
            prog = _Progress(progress, task)
        for backend in backends:
            if backend == "numpy":
                rows = _numpy_checks(
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
                extra = _numpy_extra(cs, numpy_module, checks, quick, seed, prog, defaults)
                last = [r for r in rows if r.check == "hygiene"]
                results += [r for r in rows if r.check != "hygiene"] + extra + last
            elif backend == "tf":
                results += _tf_checks(
                    cs,
                    tf_path,
                    cfgs,
                    checks,
                    defaults,
                    refs,
                    prog,
                    hygiene.pop("tf", None),
                    quick=quick,
                )
            else:
                results.append(
                    CheckResult(
                        cs.name, backend, "all", "error", note=f"unknown backend {backend!r}"
                    )
                )
        if task is not None:
            progress.update(task, visible=False)
        if path is not None and mdir is not None and module_dir is None and results:
            stale = stale_generated(path, mdir)
            if stale:
                results[0].remark = "; ".join(
                    x
                    for x in (
                        results[0].remark,
                        f"generated/ is stale ({', '.join(stale)}; run `rnngen build`): "
                        "verified what `rnngen build` writes now",
                    )
                    if x
                )
    return results


def _extra_count(cs, checks, backends, quick, has_tf) -> int:
    """Progress steps of the truncate, dropout and init checks."""
    n = 0
    if "numpy" in backends:
        n += len(verify_truncate.truncate_configurations(cs, quick)) * ("truncate" in checks)
        n += len(verify_dropout.dropout_configurations(cs, quick)) * ("dropout" in checks)
        n += len(verify_init.init_options(cs, quick)) * ("init" in checks)
    if "tf" in backends and has_tf:
        if "dropout" in checks:
            n += sum(len(verify_dropout.tf_configurations(cs, quick, i)) for i in ("loop", "fused"))
        n += len(verify_init.init_options(cs, quick)) * ("init" in checks)
    return n


def _numpy_extra(cs, module, checks, quick, seed, prog, defaults) -> list[CheckResult]:
    """The rows of the checks outside the configuration matrix: truncated BPTT, drawn dropout
    masks, initial weights."""
    out = []
    if "truncate" in checks:
        out += verify_truncate.numpy_rows(cs, module, quick, seed, prog, defaults)
    if "dropout" in checks:
        out += verify_dropout.numpy_rows(cs, module, quick, seed, prog, defaults)
    if "init" in checks:
        out += verify_init.numpy_rows(cs, module, quick, seed, prog, defaults)
    return out


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
    cs, tf_path, cfgs, checks, defaults, refs, prog, hygiene_proc=None, quick=False
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
        rows = _tf_layer_checks(cs, tf_path, cfgs, checks, defaults, refs, prog, quick)
    finally:
        hyg = _hygiene_row(cs, "tf", hygiene_proc, False, t_start) if hygiene_proc else None
    return ([hyg] if hyg else []) + rows


def _tf_layer_checks(cs, tf_path, cfgs, checks, defaults, refs, prog, quick=False):
    out = []
    wanted = ("keras" in checks and cs.reference is not None) or any(
        c in checks for c in ("autodiff", "dropout", "init")
    )
    if not wanted:
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
            r.remark = (
                "keras/* and autodiff/* inject dropout masks via "
                "cell.get_(recurrent_)dropout_mask; dropout/* check the masks the layer draws"
            )
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
    module, seed = refs.module, refs.seed
    if "dropout" in checks:
        dtype = _tf_layer_dtype(cls, 2)
        out += verify_dropout.tf_rows(cs, cls, module, quick, seed, prog, defaults, dtype)
    if "init" in checks:
        out += verify_init.tf_rows(cs, cls, module, quick, seed, prog, defaults)
    return out


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
        with contextlib.ExitStack() as stack:
            # every spec is built first (what `rnngen build` writes now, never generated/), so
            # the hygiene imports of every module start at once, overlapping all other checks
            built = {}
            for path in paths:
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="rnngen-verify-"))
                built[path] = build_into(path, Path(tmp))
            started = prestart_hygiene(built, backends)
            stack.callback(_reap, started)
            for path in paths:
                results += verify_spec(
                    path,
                    backends=tuple(backends),
                    quick=quick,
                    seed=seed,
                    full_jacobian=full_jacobian,
                    progress=prog,
                    hygiene_procs=started,
                    built_dir=built[path],
                )
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
