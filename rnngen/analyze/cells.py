"""Load the generated NumPy layer of a spec and make layers in the configurations analyzed.

Shipped specs use ``generated/`` (when it is present); any other spec is built into a
temporary folder, as ``rnngen verify`` does. Only NumPy modules are imported.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import itertools
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import codegen
from ..build import build_files, parse_specs
from ..grammar import holds

_counter = itertools.count()


@dataclass(frozen=True)
class Variant:
    """One configuration of a cell: recurrent initializer, activation, recurrent gain."""

    init: str = "orthogonal"
    activation: str = "tanh"
    gain: float = 1.0

    @property
    def label(self) -> str:
        return f"{self.init}/{self.activation}/g={self.gain:g}"


DEFAULT = Variant()
#: the comparisons of part 1: one change from the default at a time
VARIANTS = (
    DEFAULT,
    Variant(init="glorot_uniform"),
    Variant(activation="relu"),
    Variant(gain=0.5),
    Variant(gain=1.5),
)


@dataclass
class Cell:
    """A spec and its generated NumPy module."""

    name: str
    class_name: str
    module: Any
    spec: Any  # rnngen.spec.CellSpec
    path: Path
    recurrent: tuple[str, ...] = ()  # weights whose initializer argument is "recurrent"
    blocks: dict[str, tuple[str, ...]] = field(default_factory=dict)  # weight -> gate names

    @property
    def cls(self):
        return getattr(self.module, self.class_name)

    def has_option(self, name: str) -> bool:
        return any(o.name == name for o in self.spec.options)

    def applicable(self, variant: Variant) -> bool:
        """Whether the cell has the knobs this variant turns."""
        if variant.activation != DEFAULT.activation and not self.has_option("activation"):
            return False
        if variant.init != DEFAULT.init:
            params = inspect.signature(self.cls).parameters
            if "recurrent_initializer" not in params:
                return False
            matrices = [w for w in self.recurrent if _rank(self.spec, w) == 2]
            if not matrices:
                return False
        return bool(self.recurrent) or variant.gain == 1.0

    def layer(
        self,
        units: int,
        variant: Variant = DEFAULT,
        *,
        seed: int,
        dtype="float64",
        input_dim: int,
        **kwargs,
    ):
        """A built layer in ``variant``: the weights of the ``recurrent_initializer`` argument
        drawn by ``variant.init`` (offered only for cells with a recurrent matrix, see
        :meth:`applicable`) and multiplied by ``variant.gain``."""
        params = inspect.signature(self.cls).parameters
        args = dict(kwargs)
        if "activation" in params and self.has_option("activation"):
            args["activation"] = variant.activation
        if "recurrent_initializer" in params and variant.init != DEFAULT.init:
            args["recurrent_initializer"] = variant.init
        layer = self.cls(units, seed=seed, dtype=dtype, **args)
        layer.build(input_dim)
        for name in self.recurrent:
            layer.weights[name] = layer.weights[name] * layer.dtype.type(variant.gain)
        return layer


def _rank(cs, weight: str) -> int:
    w = next(w for w in cs.weights if w.name == weight)
    layout = w.layout(cs.defaults()) or w.layouts[0]
    return len(layout.shape)


def _import(path: Path):
    name = f"_rnngen_analyze_{path.stem}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_cells(paths: list[Path], stack: contextlib.ExitStack) -> list[Cell]:
    """Parse every spec (a :class:`~rnngen.errors.SpecError` lists every problem), then import
    each generated NumPy module: shipped specs from ``generated/`` when it is there, any other
    spec built into a temporary folder that ``stack`` removes."""
    specs = parse_specs(paths)
    shipped = codegen.spec_dir().resolve()
    generated = codegen.default_out_dir()
    tmp = None
    cells = []
    for path, cs in zip(paths, specs, strict=True):
        module_file = generated / f"{cs.name}_numpy.py"
        if not (Path(path).resolve().parent == shipped and module_file.is_file()):
            if tmp is None:
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rnngen-an-")))
            text = build_files([Path(path)])[f"{cs.name}_numpy.py"]
            module_file = tmp / f"{cs.name}_numpy.py"
            module_file.write_text(text, encoding="utf-8")
        module = _import(module_file)
        cells.append(_cell(cs, module, Path(path)))
    return cells


def _cell(cs, module, path: Path) -> Cell:
    values = cs.defaults()
    recurrent, blocks = [], {}
    for w in cs.weights:
        if not holds(w.when, values):
            continue
        if w.argument == "recurrent":
            recurrent.append(w.name)
            layout = w.layout(values)
            if layout is not None and len(layout.blocks) == 1 and len(layout.blocks[0]) > 1:
                blocks[w.name] = layout.blocks[0]
    return Cell(cs.name, cs.class_name, module, cs, path, tuple(recurrent), blocks)


def gate_matrices(cell: Cell, layer) -> dict[str, np.ndarray]:
    """Each recurrent weight, split into its gate blocks (``recurrent_kernel_z``, ...); a
    vector recurrent weight (an elementwise, IndRNN-like recurrence) becomes a diagonal."""
    out = {}
    for name in cell.recurrent:
        w = np.asarray(layer.weights[name], dtype=np.float64)
        if w.ndim == 1:
            w = np.diag(w)
        gates = cell.blocks.get(name)
        if gates:
            for gate, part in zip(gates, np.split(w, len(gates), axis=-1), strict=True):
                out[gate] = part
        else:
            out[name] = w
    return out
