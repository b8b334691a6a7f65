"""Code generation: SymPy printers + Jinja2 templates -> generated modules, written atomically.

A backend is a printer, a function map and a template. Expressions are printed
with SymPy's NumPy and TensorFlow printers (the table functions print
themselves); statements, loops and names come from the templates.
"""

from __future__ import annotations

import ast
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
from .printers.expressions import (  # noqa: F401  (re-exported for templates and tests)
    NumpyCode,
    TensorflowCode,
    latex_name,
    py,
    pyfactor,
    tex,
    tex_products,
    tfpy,
    tfpyfactor,
)
from .printers.numpy import NumpyPrinter
from .printers.tf import TensorflowPrinter
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


# -- rendering ---------------------------------------------------------------------------------


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters.update(
        py=py,
        tfpy=tfpy,
        pyfactor=pyfactor,
        tfpyfactor=tfpyfactor,
        tex=tex,
        latex_name=latex_name,
        pyrepr=repr,
    )
    env.globals.update(tex_products=tex_products, tex=tex)
    env.globals.update(
        isinstance=isinstance,
        Assign=symbolic.Assign,
        Product=symbolic.GroupProduct,
        StoreAdjoint=symbolic.StoreAdjoint,
        OperandVJP=symbolic.OperandVJP,
        Accumulate=symbolic.Accumulate,
        AccumulateStatic=symbolic.AccumulateStatic,
        StaticVJP=symbolic.StaticVJP,
        StaticGrad=symbolic.StaticGrad,
        TABLE=functions.TABLE,
        ACTIVATION_ALIASES=functions.ALIASES,
        REFUSED_ACTIVATIONS=functions.REFUSED,
        enumerate=enumerate,
        zip=zip,
        sorted=sorted,
        len=len,
        sp=sp,
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


# -- template helpers: small questions about a variant, answered from the derivation ----------


def _names_in(exprs) -> set[str]:
    out: set[str] = set()
    for e in exprs:
        out |= {str(s) for s in sp.sympify(e).free_symbols}
    return out


def _forward_exprs(v: symbolic.Variant) -> list:
    exprs = [s.expr for s in v.forward + v.prelude if isinstance(s, symbolic.Assign)]
    return exprs + [g.operand_expr for g in v.groups + v.static_groups]


def _backward_exprs(v: symbolic.Variant) -> list:
    exprs = []
    for s in v.backward + v.static_backward:
        if isinstance(s, symbolic.Assign | symbolic.Accumulate | symbolic.AccumulateStatic):
            exprs.append(s.expr)
        elif isinstance(s, symbolic.StaticGrad):
            exprs.append(s.expr)
        elif isinstance(s, symbolic.StaticVJP):
            exprs.append(symbolic.symbol(s.group.operand))
        elif isinstance(s, symbolic.StoreAdjoint):
            exprs.extend(s.values)
    exprs += [e for _, e in v.state_grads]
    if v.x_grad is not None:
        exprs.append(v.x_grad)
    return exprs


def static_reads(v: symbolic.Variant) -> list[str]:
    """Prelude values (the same at every step) that a backward function reads."""
    names = _names_in(_backward_exprs(v))
    return [n for n in v.static_values if n in names]


def needs_input_dim(v: symbolic.Variant) -> bool:
    """Whether a NumPy function of the variant allocates a buffer of ``input_dim`` columns."""
    sizes = [size for _, size in v.stored] + [w for _, w in adjoint_buffers(v)]
    sizes += [s.size for s in v.backward if isinstance(s, symbolic.AccumulateStatic)]
    sizes += [
        s.block.stop - s.block.start for s in v.backward if isinstance(s, symbolic.Accumulate)
    ]
    return any("input_dim" in {str(x) for x in sp.sympify(e).free_symbols} for e in sizes)


def reads_x_t(v: symbolic.Variant, backward: bool = False) -> bool:
    """Whether the forward (or backward) loop reads this step's input ``x_t``."""
    exprs = (
        _backward_exprs(v)
        if backward
        else [s.expr for s in v.forward if isinstance(s, symbolic.Assign)]
    )
    return "x_t" in _names_in(exprs)


def accumulators(v: symbolic.Variant) -> list:
    """Per-step sums kept across the backward loop, in order: vector weights, then values
    that do not change over time."""
    return [s for s in v.backward if isinstance(s, symbolic.Accumulate | symbolic.AccumulateStatic)]


def hoisted_terms(v: symbolic.Variant) -> list[dict]:
    """After the loop: how each hoisted operand's gradient reaches ``x`` and vector weights."""
    blocks = {b.name: b for b in v.blocks}
    terms, seen_x = [], False
    for g, var, factor in v.hoisted_grads:
        terms.append(
            {
                "group": g,
                "var": var,
                "factor": factor,
                "block": blocks.get(var),
                "first_x": var == "x" and not seen_x and v.x_grad is None,
            }
        )
        seen_x = seen_x or var == "x"
    return terms


def used_vectors(v: symbolic.Variant, backward: bool = False) -> set[str]:
    """Vector blocks a forward (or backward) function reads."""
    if backward:
        return _names_in(_backward_exprs(v) + [f for _, _, f in v.hoisted_grads])
    names = _names_in(_forward_exprs(v))
    return names | {b.name for g in v.hoisted for _, bs in g.folded for b in bs}


def backward_weights(v: symbolic.Variant) -> list[str]:
    """Weights a backward function reads: product weights and parents of used vectors."""
    vectors = used_vectors(v, backward=True)
    names = {g.weight for g in v.groups} | {b.weight for b in v.blocks if b.name in vectors}
    names |= {s.group.weight for s in v.static_backward if isinstance(s, symbolic.StaticVJP)}
    return [w for w, _ in v.weights if w in names]


def backward_states(spec: CellSpec, v: symbolic.Variant) -> list[str]:
    names = _names_in(_backward_exprs(v))
    seqs = {operand_seq(spec, v, g) for g in v.groups}
    return [
        s
        for s in spec.states
        if s in names or f"{s}_prev" in names or {f"{s}_seq[:-1]", f"{s}_seq[1:]"} & seqs
    ]


def hoisted_t(v: symbolic.Variant, expr):
    """Inside the loop a single-product hoisted group is read as ``<name>_t``."""
    reps = {
        symbolic.symbol(g.name): symbolic.symbol(f"{g.name}_t")
        for g in v.hoisted
        if len(g.products) == 1
    }
    expr = symbolic.symbol(expr) if isinstance(expr, str) else sp.sympify(expr)
    return expr.xreplace(reps)


def adjoint_buffers(v: symbolic.Variant) -> list[tuple[str, sp.Expr]]:
    seen: dict[str, sp.Expr] = {}
    for g in v.groups:
        seen.setdefault(g.adjoint, g.width)
    return list(seen.items())


def backward_reads(spec: CellSpec, v: symbolic.Variant) -> list[str]:
    """Lines binding the forward values one backward step reads."""
    names = _names_in(_backward_exprs(v))
    lines = []
    for s in spec.states:
        if f"{s}_prev" in names:
            lines.append(f"{s}_prev = {s}_seq[t]")
        if s in names:
            lines.append(f"{s} = {s}_seq[t + 1]")
    for name, _ in v.stored:
        if name in names:
            lines.append(f"{name} = {name}_seq[t]")
    if "x_t" in names:
        lines.append("x_t = x[t]")
    return lines


def operand_seq(spec: CellSpec, v: symbolic.Variant, g: symbolic.Group) -> str:
    """The operand of a group for every step, as an array (T, B, rows)."""
    if g.hoisted:
        return g.operand
    state = g.operand.removesuffix("_prev")
    if g.operand.endswith("_prev") and state in spec.states:
        return f"{state}_seq[:-1]"
    if g.operand in spec.states:  # this step's new state: the buffer's steps after the first
        return f"{g.operand}_seq[1:]"
    return f"{g.operand}_seq"


def folded_bias(g: symbolic.Group) -> str:
    """Source of the bias row added to a hoisted group: its products' folded biases, in order."""
    folded = dict(g.folded)
    parts = []
    for p, b in g.products:
        names = [f.name for f in folded.get(p, ())]
        parts.append(" + ".join(names) if names else f"np.zeros({py(b.stop - b.start)}, dtype)")
    return parts[0] if len(parts) == 1 else f"np.concatenate([{', '.join(parts)}])"


def mentions(text: str, name: str) -> bool:
    """Whether rendered code uses ``name`` as a word (so a binding for it is needed)."""
    return re.search(rf"\b{re.escape(name)}\b", str(text)) is not None


def transposed(g: symbolic.Group) -> str:
    """Name of a group's weight slice, transposed and contiguous, for the per-step VJP."""
    return f"{g.name.removeprefix(g.operand + '_')}_T"


def condition(*conds, prefix: str = "") -> str:
    """Python source for a conjunction of option conditions."""
    expr = sp.And(*conds)
    if expr is sp.true:
        return "True"
    reps = {s: sp.Symbol(prefix + str(s)) for s in expr.free_symbols}
    return sp.pycode(expr.xreplace(reps))


def gates(spec: CellSpec, d: symbolic.Derivation, tensor: str) -> int:
    return max((gate + 1 for v in d.variants for _, gate, t in v.masks if t == tensor), default=1)


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
    env.globals.update(
        numpy_functions=lambda v: NumpyPrinter(spec, v).functions().rstrip(),
        tf_functions=lambda v: TensorflowPrinter(spec, v).functions().rstrip(),
        used_vectors=used_vectors,
        backward_weights=backward_weights,
        mask_names_backward=lambda v: (
            _names_in(_backward_exprs(v)) | _names_in(f for _, _, f in v.hoisted_grads)
        ),
        backward_states=lambda v: backward_states(spec, v),
        hoisted_t=hoisted_t,
        adjoint_buffers=adjoint_buffers,
        backward_reads=lambda v: backward_reads(spec, v),
        operand_seq=lambda v, g: operand_seq(spec, v, g),
        seed_name=lambda s: f"d_{s.output}",
        condition=condition,
        transposed=transposed,
        hoisted_terms=hoisted_terms,
        static_reads=static_reads,
        accumulators=accumulators,
        reads_x_t=reads_x_t,
        needs_input_dim=needs_input_dim,
        first_operand=lambda v, g: next(h for h in v.hoisted if h.operand == g.operand) is g,
        mentions=mentions,
        folded_bias=folded_bias,
        gates=lambda t: gates(spec, derivation, t),
        placements=resolve.placements,
        units_source=units_source(spec),
        input_dim_sources=input_dim_sources(spec),
    )
    out = {}
    for template, suffix in (
        ("numpy_layer.py.j2", "_numpy.py"),
        ("derivation.md.j2", ".md"),
        ("tf_layer.py.j2", "_tf.py"),
    ):
        if not (template_dir() / template).exists():
            continue
        text = env.get_template(template).render(ctx=ctx, spec=spec, d=derivation)
        if suffix.endswith(".py"):
            text = format_python(text, f"{spec.name}{suffix}")
        out[f"{spec.name}{suffix}"] = text
    return out


def format_python(text: str, name: str) -> str:
    """Check the module parses, then format it with the pinned ruff for stable output.

    The formatter is a declared dependency (``ruff`` in pyproject.toml), always the
    package's own binary, never whichever ``ruff`` is first on PATH: the output is the
    same bytes on every machine.
    """
    try:
        ast.parse(text)
    except SyntaxError as err:  # a template bug, never a user mistake
        raise RuntimeError(f"generated {name} does not parse: {err}") from err
    cmd = [ruff_binary(), "format", "--quiet", "--isolated", "--line-length", "100"]
    cmd += ["--target-version", "py311", "--stdin-filename", name, "-"]
    proc = subprocess.run(cmd, input=text, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
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


def write_atomically(files: dict[str, str], out_dir: Path) -> list[Path]:
    """Write every file into a temporary folder, check it, then move each into place.

    Either all files are replaced or none is: a failure before the final renames
    leaves ``out_dir`` exactly as it was.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".rnngen-", dir=out_dir))
    try:
        for name, text in files.items():
            path = tmp / name
            path.write_text(text, encoding="utf-8", newline="\n")
            if name.endswith(".py"):
                ast.parse(text)
        written = []
        for name in files:
            os.replace(tmp / name, out_dir / name)
            written.append(out_dir / name)
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
