"""One spec through ``rnngen verify``: :func:`verify_spec` runs the checks of every backend and
returns the report's rows (what the checks are: :mod:`rnngen.verify`). The NumPy backend's
matrix checks are here; the TF backend's are in :mod:`rnngen.verify.tf_checks`, the torch
backend's in :mod:`rnngen.verify.torch_checks`, the jax backend's in
:mod:`rnngen.verify.jax_checks`."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from .. import spec as spec_mod
from ..spec import CellSpec
from . import dropout, init, truncate
from .compare import FD_TOL, compare, tol_text
from .configs import SMOOTH, Config, configurations, declared_dropout, fd_configurations
from .data import make_data
from .fd import fd_check, full_jacobian_check
from .hygiene import hygiene_row, reap, start_hygiene
from .jax_checks import count as jax_count
from .jax_checks import jax_checks
from .layers import run_numpy_layer
from .modules import import_path, modules_folder, stale_generated
from .refs import keras_class, run_equations, run_keras_layer
from .results import CHECKS, CheckResult, ProgressTask, run_matrix
from .tf_checks import tf_checks
from .torch_checks import count as torch_count
from .torch_checks import torch_checks


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
            mdir = modules_folder(cs, path, Path(module_dir) if module_dir else None, stack)
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
        stack.callback(reap, hygiene)
        cfgs = configurations(cs, quick) if ("keras" in checks or "autodiff" in checks) else []
        fd_cfgs = fd_configurations(cs, quick) if "finite_diff" in checks else []
        cfgs, fd_cfgs = declared_dropout(cs, cfgs), declared_dropout(cs, fd_cfgs)
        per_backend = ("keras" in checks and cs.reference is not None) + ("autodiff" in checks)
        total = (
            len(cfgs) * per_backend * ("numpy" in backends)
            + len(fd_cfgs) * ("numpy" in backends)
            + (1 if full_jacobian and "numpy" in backends else 0)
            + (2 * len(cfgs) * per_backend if "tf" in backends and tf_path is not None else 0)
            + _extra_count(cs, checks, backends, quick, tf_path is not None)
            + (torch_count(cs, checks, quick, defaults) if "torch" in backends else 0)
            + (jax_count(cs, checks, quick, defaults) if "jax" in backends else 0)
        )
        refs = _RefCache(cs, numpy_module, seed)
        prog = progress if progress is not None else ProgressTask(None, None)
        task = None
        if progress is not None:
            task = progress.add_task(f"{cs.name}", total=total)
            prog = ProgressTask(progress, task)
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
                results += tf_checks(
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
            elif backend == "torch":
                torch_path = mdir / f"{cs.name}_torch.py" if mdir else None
                results += torch_checks(cs, torch_path, checks, quick, seed, prog, defaults)
            elif backend == "jax":
                jax_path = mdir / f"{cs.name}_jax.py" if mdir else None
                results += jax_checks(cs, jax_path, checks, quick, seed, prog, defaults)
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
        n += len(truncate.truncate_configurations(cs, quick)) * ("truncate" in checks)
        n += len(dropout.dropout_configurations(cs, quick)) * ("dropout" in checks)
        n += len(init.init_options(cs, quick)) * ("init" in checks)
    if "tf" in backends and has_tf:
        if "dropout" in checks:
            n += sum(len(dropout.tf_configurations(cs, quick, i)) for i in ("loop", "fused"))
        n += len(init.init_options(cs, quick)) * ("init" in checks)
    return n


def _numpy_extra(cs, module, checks, quick, seed, prog, defaults) -> list[CheckResult]:
    """The rows of the checks outside the configuration matrix: truncated BPTT, drawn dropout
    masks, initial weights."""
    out = []
    if "truncate" in checks:
        out += truncate.numpy_rows(cs, module, quick, seed, prog, defaults)
    if "dropout" in checks:
        out += dropout.numpy_rows(cs, module, quick, seed, prog, defaults)
    if "init" in checks:
        out += init.numpy_rows(cs, module, quick, seed, prog, defaults)
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
            cls = keras_class(self.cs.reference)
            self._keras[cfg] = run_keras_layer(cls, self.cs, cfg, self.data(cfg))
        return self._keras[cfg]

    def equations(self, cfg: Config) -> dict:
        if cfg not in self._eqs:
            self._eqs[cfg] = run_equations(self.cs, cfg, self.data(cfg))
        return self._eqs[cfg]


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

            r = run_matrix(
                cs.name, "keras", "numpy", cfgs, keras_fn, tol_text("float32"), prog, defaults
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
            run_matrix(
                cs.name, "autodiff", "numpy", cfgs, auto_fn, tol_text("float64"), prog, defaults
            )
        )
    if "finite_diff" in checks:

        def fd_fn(cfg):
            return fd_check(module, cs, cfg, make_data(module, cs, cfg, seed), seed)

        r = run_matrix(
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
            j = run_matrix(
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
            out.append(hygiene_row(cs, "numpy", hygiene_proc, True, t_start))
    return out
