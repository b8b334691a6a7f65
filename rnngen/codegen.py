"""Code generation: SymPy printers + Jinja2 templates -> generated modules, written atomically.

A backend is a printer, a function map and a template. Expressions are printed
with SymPy's NumPy and TensorFlow printers (the table functions print
themselves); statements, loops and names come from the templates.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jinja2
import sympy as sp

from . import functions, resolve, symbolic
from .printers import base as printers_base
from .printers import jax as printers_jax
from .printers import keras_ops
from .printers.expressions import py, tex, tfpy  # noqa: F401  (tex: re-exported for tests)
from .printers.latex import DerivationPrinter
from .printers.numpy import NumpyPrinter
from .printers.tf import TensorflowPrinter
from .printers.torch import TorchPrinter
from .spec import CellSpec

HERE = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    """``spec/`` or ``templates/``: the checkout's folder, else the installed copy."""
    checkout = HERE.parent / name
    if checkout.is_dir():
        return checkout
    return HERE / "data" / name


def spec_dir() -> Path:
    return _data_dir("spec")


def template_dir() -> Path:
    return _data_dir("templates")


def default_out_dir() -> Path:
    """``generated/`` beside ``spec/`` in a checkout; ``./generated`` for an installed package."""
    checkout = HERE.parent / "spec"
    return HERE.parent / "generated" if checkout.is_dir() else Path.cwd() / "generated"


# -- backends ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """A backend: a printer class for the variant functions and a module skeleton template.

    The template calls ``<name>_functions(v)`` once per variant for the printed functions.
    """

    name: str
    printer: type
    template: str
    suffix: str

    def functions(self, spec: CellSpec):
        return lambda v: self.printer(spec, v).functions().rstrip()


BACKENDS = (
    Backend("numpy", NumpyPrinter, "numpy_layer.py.j2", "_numpy.py"),
    Backend("tf", TensorflowPrinter, "tf_layer.py.j2", "_tf.py"),
    Backend("torch", TorchPrinter, "torch_module.py.j2", "_torch.py"),
    Backend("jax", printers_jax.JaxPrinter, "jax_module.py.j2", "_jax.py"),
)
#: the derivation document: template and suffix
DOCUMENT = ("derivation.md.j2", ".md")


# -- rendering ---------------------------------------------------------------------------------


@functools.cache
def environment() -> jinja2.Environment:
    """The template environment, made once per process so each template compiles once.

    Its globals are the same for every spec; what belongs to one spec is passed to
    ``render`` as template variables (includes see them too).
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters.update(py=py, tfpy=tfpy, pyrepr=repr)
    env.globals.update(
        TABLE=functions.TABLE,
        ACTIVATION_ALIASES=functions.ALIASES,
        REFUSED_ACTIVATIONS=functions.REFUSED,
        REFUSED_AT_RUN_TIME=functions.REFUSED_AT_RUN_TIME,
        ROW_WISE=functions.ROW_WISE_TABLE,
        KERAS_OPS=keras_ops,  # the keras.ops spellings (the Keras layer's step)
        JAX_ROW_WISE=printers_jax.ROW_WISE,  # the JAX module's table bodies
        jax_body=printers_jax.function_body,
        jax_grad=printers_jax.grad_body,
    )
    return env


@dataclass(frozen=True)
class Context:
    """Everything a template needs about one spec, precomputed."""

    spec: CellSpec
    derivation: symbolic.Derivation
    source: str  # spec path as shown in headers

    @property
    def used_functions(self) -> list[str]:
        """Table functions the generated module must define."""
        names: set[str] = set()
        for o in self.spec.activation_options:
            names |= set(o.values)
        for eq in self.spec.equations:
            for _, rhs in eq.alternatives:
                for f in rhs.atoms(sp.Function):
                    if isinstance(f, functions._Call) and f.call_name in functions.TABLE:
                        names.add(f.call_name)
        return sorted(names)

    @property
    def row_wise_calls(self) -> list[str]:
        """Row-wise functions (softmax) the spec's equations call."""
        names = {
            type(f).call_name
            for eq in self.spec.equations
            for _, rhs in eq.alternatives
            for f in rhs.atoms(sp.Function)
            if isinstance(f, functions._RowCall)
        }
        return sorted(names)

    def weight(self, name: str):
        return next(w for w in self.spec.weights if w.name == name)

    @property
    def arguments(self) -> list[str]:
        return list(dict.fromkeys(w.argument for w in self.spec.weights))

    def argument_default(self, argument: str):
        return next(w.initializer for w in self.spec.weights if w.argument == argument)

    @property
    def config_defaults(self) -> dict[str, dict]:
        """Initializer defaults that are config dicts, kept in a module constant."""
        out = {}
        for a in self.arguments:
            default = self.argument_default(a)
            if isinstance(default, dict):
                out[a] = default
        return out

    def default_source(self, argument: str) -> str:
        """Source of an ``<argument>_initializer`` default (no mutable literal in a signature)."""
        if argument in self.config_defaults:
            return f'DEFAULT_INITIALIZERS["{argument}"]'
        return repr(self.argument_default(argument))


# -- module-level questions the skeleton templates ask ----------------------------------------


def condition(*conds, prefix: str = "") -> str:
    """Python source for a conjunction of option conditions."""
    expr = sp.And(*conds)
    if expr is sp.true:
        return "True"
    reps = {s: sp.Symbol(prefix + str(s)) for s in expr.free_symbols}
    return sp.pycode(expr.xreplace(reps))


def input_dim_sources(spec: CellSpec) -> list[tuple[str, str, int, int, int]]:
    """Where an unbuilt layer reads ``input_dim`` from a weight list, decided from the spec.

    One ``(weight, condition source, ndim, axis, coefficient)`` per weight layout with an
    ``N * input_dim`` dimension, in spec order: the first whose condition holds is used.
    """
    size = sp.Symbol("input_dim", real=True)
    out = []
    covered = sp.false  # the options under which an earlier source is read
    for w in spec.weights:
        for in_force, lay in resolve.layout_conditions(w):
            for axis, dim in enumerate(lay.shape):
                coeff = sp.simplify(dim / size)
                if coeff.is_Integer and coeff > 0:
                    when = sp.And(w.when, in_force)
                    covered = sp.simplify_logic(sp.Or(covered, when))
                    # once every option combination has a source, the last needs no test
                    cond = "True" if covered is sp.true else condition(when, prefix="self.")
                    out.append((w.name, cond, len(lay.shape), axis, int(coeff)))
                    if cond == "True":  # always in force: later sources are never read
                        return out
                    break
    return out


def units_source(spec: CellSpec) -> str:
    """Source computing ``units`` from the ``weights`` dict (and the boolean options in scope).

    Uses a weight that always exists; when its layout depends on options, the expression
    picks the layout in force, as ``weight_shapes`` does.
    """
    units = symbolic.UNITS

    def dim_source(w, lay):
        for axis, dim in enumerate(lay.shape):
            coeff = sp.simplify(dim / units)
            if coeff.is_Integer:
                div = "" if coeff == 1 else f" // {coeff}"
                return f'weights["{w.name}"].shape[{axis}]{div}'
        return None

    for w in spec.weights:
        if w.when is not sp.true:
            continue
        sources = [(lay.when, dim_source(w, lay)) for lay in w.layouts]
        if any(src is None for _, src in sources):
            continue
        expr = sources[-1][1]
        for when, src in reversed(sources[:-1]):
            expr = f"({src} if {condition(when)} else {expr})"
        return expr
    raise ValueError("no weight that always exists has a dimension in units")


def render(spec: CellSpec, source: str) -> dict[str, str]:
    """file name -> text, for one spec."""
    derivation = symbolic.derive(spec)
    # the source name is printed into docstrings: keep only characters that cannot escape them
    source = re.sub(r"[^A-Za-z0-9._/-]", "_", source)
    ctx = Context(spec, derivation, source)
    env = environment()
    variables = {
        **{f"{b.name}_functions": b.functions(spec) for b in BACKENDS},
        "derivation_printer": lambda v: DerivationPrinter(spec, v),
        "condition": condition,
        "gates": lambda tensor: printers_base.gates(derivation, tensor),
        "placements": resolve.placements,
        "units_source": units_source(spec),
        "input_dim_sources": input_dim_sources(spec),
    }
    out = {}
    for template, suffix in [(b.template, b.suffix) for b in BACKENDS] + [DOCUMENT]:
        if not (template_dir() / template).exists():
            continue
        text = env.get_template(template).render(ctx=ctx, spec=spec, d=derivation, **variables)
        if suffix.endswith(".py"):
            text = format_python(text, f"{spec.name}{suffix}")
        out[f"{spec.name}{suffix}"] = text
    return out


def format_python(text: str, name: str) -> str:
    """Format a generated module with the pinned ruff for stable output (it must parse).

    The formatter is a declared dependency (``ruff`` in pyproject.toml), always the
    package's own binary, never whichever ``ruff`` is first on PATH: the output is the
    same bytes on every machine.
    """
    cmd = [ruff_binary(), "format", "--quiet", "--isolated", "--line-length", "100"]
    cmd += ["--target-version", "py311", "--stdin-filename", name, "-"]
    proc = subprocess.run(cmd, input=text, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        try:  # ruff refuses a module that does not parse: say where, in Python's words
            ast.parse(text)
        except SyntaxError as err:  # a template bug, never a user mistake
            raise RuntimeError(f"generated {name} does not parse: {err}") from err
        raise RuntimeError(f"ruff could not format generated {name}: {proc.stderr.strip()}")
    return proc.stdout


def ruff_binary() -> str:
    """The ruff executable installed with rnngen (the ``ruff`` package's own binary)."""
    try:
        from ruff.__main__ import find_ruff_bin
    except ImportError as err:
        raise RuntimeError(
            "rnngen needs its formatter, the 'ruff' package: pip install 'ruff>=0.17,<0.18'"
        ) from err
    return str(find_ruff_bin())


def write_atomically(
    files: dict[str, str], out_dir: Path, *, check_syntax: bool = True
) -> list[Path]:
    """Write every file into a temporary folder, check it, then move each into place.

    Either all files are replaced or none is: a failure before the final renames
    leaves ``out_dir`` exactly as it was. ``check_syntax=False`` skips parsing the Python
    files again, for modules :func:`render` made (ruff formatted them, which parses them).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".rnngen-", dir=out_dir))
    try:
        for name, text in files.items():
            path = tmp / name
            path.write_text(text, encoding="utf-8", newline="\n")
            if check_syntax and name.endswith(".py"):
                ast.parse(text)
        written = []
        for name in files:
            os.replace(tmp / name, out_dir / name)
            written.append(out_dir / name)
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
