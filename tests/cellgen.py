"""Random well-typed recurrent cells drawn from the spec grammar, and the check of one cell.

``generate(rng)`` draws one cell as spec YAML text from a ``random.Random`` (every draw goes
through it, so a seed reproduces a cell); ``cells()`` is the same generator as a Hypothesis
strategy. A drawn cell has one to three states, ``input_dim``/``units`` sizes that match
everywhere, and products whose left sides are ``x``, previous states, new states of this step,
intermediates, weight-only expressions, nested products, and sums, products, powers and
elementwise and row-wise functions of these. It uses every function of ``rnngen.functions.TABLE``
and ``ROW_WISE_TABLE`` (softmax, log_softmax, sparsemax), activation
options, constant powers (negative and fractional ones on positive bases only), division by
positive expressions, matrices and vectors fused into blocks or stacked in rows, weights and
layouts that depend on boolean options, equation alternatives under ``when:`` conditions (with
``and``/``or``/``not``), dead equations and outputs that are not states. ``Cell.features`` says
which of these a cell uses.

``check_cell`` builds a cell into a temporary folder and compares, for every combination of its
boolean options, the generated NumPy layer, the generated TF layer (``implementation="loop"``
and ``"fused"``), the generated PyTorch module's ``forward`` (``"fused"`` and ``"autograd"``) and
the generated JAX module's ``apply`` (``"fused"`` and ``"scan"``; see ``tests/cellbackends.py``),
all in float64, forward and BPTT (inputs, initial states, every weight), with ``rnngen.verify``'s
independent TF interpreter of the parsed equations (``run_equations``), using the verifier's own
data (``make_data``), runners and ``compare``. A backend whose framework is not installed is left
out (and counted as such); one that ``rnngen build`` writes a module for but whose module is
missing or fails to import is a failure.
"""

from __future__ import annotations

import itertools
import random
import re
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cellbackends
import numpy as np
import yaml

from rnngen import functions

UNITS, INPUT = "units", "input_dim"
ATOM, POW, MUL, ADD = 4, 3, 2, 1  # precedence of a rendered expression

#: every elementwise function of the table; all are called directly in equations
FUNCS = tuple(functions.TABLE) + tuple(functions.ROW_WISE_TABLE)  # softmax, ...: row-wise
#: functions defined on positive arguments only: drawn on positive expressions (``positive``)
POSITIVE_DOMAIN = ("sqrt", "log")
#: exponents on an arbitrary base, and those that need a positive base
INT_EXPONENTS = ("2", "3")
POS_EXPONENTS = ("-1", "-0.5", "0.5", "1.5", "-2", "0.25", "-1.5")
#: how often a product's left side is itself a product (``tanh(h_prev @ W1) @ W2``)
NESTED_P = 0.05


@dataclass
class Cell:
    yaml: str
    features: Counter = field(default_factory=Counter)
    seed: object = None
    dead: frozenset = frozenset()  # equations no variant reads (a refusal may name them)


# -- rendering -------------------------------------------------------------------------------


def _par(e, need):
    text, prec = e
    return text if prec >= need else f"({text})"


def _add(a, b, op="+"):
    return (f"{_par(a, ADD)} {op} {_par(b, MUL)}", ADD)


def _mul(a, b, op="*"):
    return (f"{_par(a, MUL)} {op} {_par(b, POW)}", MUL)


def _call(f, a):
    return (f"{f}({a[0]})", ATOM)


def _pow(a, k):
    return (f"{_par(a, ATOM)} ** {k}", POW)


def _mm(a, w):
    return (f"{_par(a, MUL)} @ {w}", MUL)


def _name(n):
    return (n, ATOM)


# -- the generator ---------------------------------------------------------------------------


class _Gen:
    def __init__(self, rng: random.Random):
        self.rng = rng
        self.f: Counter = Counter()
        self.mats: list[dict] = []  # {name, rows, cols, when, fixed}
        self.vecs: list[dict] = []  # {name, size, when, fixed}
        self.special: dict[str, dict] = {}  # weights written as they are (layouts)
        self.must_mats: list[tuple[str, str]] = []  # (block, rows) to use in a product
        self.must_vecs: list[str] = []  # stacked-or-fused-by-option biases to use
        self.vars: dict[str, str] = {"x": INPUT}  # name -> size, usable now
        self.new_states: list[str] = []
        self.intermediates: list[str] = []
        self.bools: list[str] = []
        self.acts: list[str] = []
        self.counter = itertools.count(1)
        self.in_lhs = False  # inside the left side of a product: no products but 'nested' ones

    # randomness: the first choice and "no" are what a shrinker reaches
    def chance(self, p):
        return self.rng.random() >= 1 - p

    def choice(self, seq):
        return seq[self.rng.randrange(len(seq))]

    def fresh(self, prefix):
        return f"{prefix}{next(self.counter)}"

    # weights
    def matrix(self, rows, cols=UNITS):
        if self.must_mats:
            for i, (blk, r) in enumerate(self.must_mats):
                if r == rows and cols == UNITS:
                    del self.must_mats[i]
                    return blk
        reusable = [
            m for m in self.mats if m["rows"] == rows and m["cols"] == cols and not m["when"]
        ]
        if reusable and self.chance(0.15):
            self.f["shared_weight"] += 1
            return self.choice(reusable)["name"]
        name = self.fresh("w")
        self.mats.append({"name": name, "rows": rows, "cols": cols, "when": None})
        return name

    def vector(self, size=UNITS, when=None):
        reusable = [v for v in self.vecs if v["size"] == size and not v["when"]]
        if when is None and reusable and self.chance(0.15):
            self.f["shared_weight"] += 1
            return self.choice(reusable)["name"]
        name = self.fresh("v" if when is None else "b")
        self.vecs.append({"name": name, "size": size, "when": when})
        return name

    def cond(self):
        a = self.choice(self.bools)
        forms = [a, f"not {a}"]
        if len(self.bools) > 1:
            b = [o for o in self.bools if o != a][0]
            forms += [f"{a} and {b}", f"{a} or {b}", f"not {a} and {b}", f"{a} or not {b}"]
        c = self.choice(forms)
        if " and " in c or " or " in c:
            self.f["when_and_or"] += 1
        return c

    def fn(self):
        pool = tuple(f for f in FUNCS if f not in POSITIVE_DOMAIN) + tuple(self.acts)
        name = self.choice(pool)
        self.f[f"fn:{name}" if name in FUNCS else "fn:activation_option"] += 1
        return name

    # expressions (size UNITS or INPUT)
    def positive(self, depth):
        a = self.expr(UNITS, depth)
        forms = [
            lambda: _add(_name("1"), _pow(a, 2)),
            lambda: _add(_name("1"), _call("sigmoid", a)),
            lambda: _add(_name("2"), _call("tanh", a)),
            lambda: _add(_name("0.5"), _call("softplus", a)),
            lambda: _call("exp", _mul(_name("0.5"), a)),
            lambda: _add(_name("1"), _call("abs", a)),
            lambda: _add(_name("1"), _call("relu", a)),
            lambda: _add(_name("1.5"), _call("softsign", a)),
            lambda: _call("sigmoid", a),
            lambda: self.domain("sqrt", _add(_name("1"), _pow(a, 2))),
            lambda: self.domain("log", _add(_name("3"), _call("tanh", a))),
        ]
        return self.choice(forms)()

    def domain(self, name, positive_argument):
        """``sqrt``/``log`` of an argument in their domain, and positive themselves."""
        self.f[f"fn:{name}"] += 1
        return _call(name, positive_argument)

    def leaf(self, size, depth):
        if size == INPUT:
            opts = [lambda: _name("x")]
            ins = [n for n, s in self.vars.items() if s == INPUT and n != "x"]
            if ins:
                opts.append(lambda: _name(self.choice(ins)))
            opts.append(lambda: _mul(_name("x"), _name(self.vector(INPUT))))
            if depth > 0 and not self.in_lhs:
                opts.append(lambda: self.product(INPUT, depth - 1))
            return self.choice(opts)()
        opts = [lambda: _name(self.choice(self.prevs))]
        if depth > 0 and not self.in_lhs:
            opts += [lambda: self.product(UNITS, depth - 1)] * 2
        units = [n for n, s in self.vars.items() if s == UNITS]
        if units:
            opts += [lambda: _name(self.choice(units))] * 2
        opts.append(lambda: _mul(_name(self.vector()), _name(self.choice(self.prevs))))
        if self.chance(0.1):
            return self.weight_only(UNITS)
        return self.choice(opts)()

    def weight_only(self, size):
        self.f["weight_only"] += 1
        v = _name(self.vector(size))
        return self.choice([lambda: _call(self.choice(["sigmoid", "tanh", "exp"]), v), lambda: v])()

    def expr(self, size, depth):
        if depth <= 0 or self.chance(0.25):
            return self.leaf(size, depth)
        kind = self.choice(["sum", "fn", "mul", "scale", "pow", "div", "posfn", "leaf"])
        d = depth - 1
        if kind == "sum":
            a, b = self.expr(size, d), self.expr(size, d)
            return _add(a, b, "+" if a == b else self.choice("+-"))
        if kind == "fn":
            return _call(self.fn(), self.expr(size, d))
        if kind == "mul":
            return _mul(self.expr(size, d), self.expr(size, d))
        if kind == "scale":
            return _mul(_name(self.choice(["0.5", "2", "0.3"])), self.expr(size, d))
        if kind == "pow":
            k = self.choice(INT_EXPONENTS)
            self.f["pow:int"] += 1
            return _pow(self.expr(size, d), k)
        if kind == "div" and size == UNITS:
            self.f["div"] += 1
            return _mul(self.expr(size, d), self.positive(d), "/")
        if kind == "posfn" and size == UNITS:
            k = self.choice(POS_EXPONENTS)
            self.f["pow:negative" if k.startswith("-") else "pow:fractional"] += 1
            if "." in k:
                self.f["pow:fractional"] += 1
            return _pow(self.positive(d), k)
        return self.leaf(size, depth)

    def left(self, rows, depth):
        """The left side of a product with ``rows`` rows."""
        outer, self.in_lhs = self.in_lhs, True
        try:
            return self._left(rows, max(depth, 0))
        finally:
            self.in_lhs = outer

    def _left(self, rows, d):
        if rows == INPUT:
            kinds = ["x", "x", "scaled", "func", "weight_only", "intermediate", "expr"]
            kind = "nested" if self.chance(NESTED_P) else self.choice(kinds)
            ins = [n for n, s in self.vars.items() if s == INPUT and n != "x"]
            if kind == "intermediate" and not ins:
                kind = "x"
            self.f[f"lhs:{kind}"] += 1
            if kind == "x":
                return _name("x")
            if kind == "scaled":
                return _mul(_name("x"), _name(self.vector(INPUT)))
            if kind == "func":
                return _call(self.fn(), _name("x"))
            if kind == "weight_only":
                return self.weight_only(INPUT)
            if kind == "intermediate":
                return _name(self.choice(ins))
            if kind == "nested":
                return _call(self.fn(), self.nested(INPUT, d - 1, rows=UNITS))
            return self.expr(INPUT, d)
        kinds = ["prev", "prev", "new_state", "new_state", "intermediate", "weight_only"]
        kinds += ["sum", "func", "power", "mul", "expr"]
        kind = "nested" if self.chance(NESTED_P) else self.choice(kinds)
        units = [n for n in self.intermediates if self.vars.get(n) == UNITS]
        if kind == "new_state" and not self.new_states:
            kind = "prev"
        if kind == "intermediate" and not units:
            kind = "prev"
        self.f[f"lhs:{kind}"] += 1
        if kind == "prev":
            return _name(self.choice(self.prevs))
        if kind == "new_state":
            return _name(self.choice(self.new_states))
        if kind == "intermediate":
            return _name(self.choice(units))
        if kind == "weight_only":
            return self.weight_only(UNITS)
        if kind == "nested":
            inner = self.nested(UNITS, d - 1)
            return _call(self.fn(), inner) if self.chance(0.8) else inner
        if kind == "sum":
            a, b = self.leaf(UNITS, 0), self.leaf(UNITS, 0)
            return _add(a, b, "+" if a == b else self.choice("+-"))
        if kind == "func":
            return _call(self.fn(), self.leaf(UNITS, 0))
        if kind == "power":
            self.f["pow:int"] += 1
            return _pow(_call(self.choice(["tanh", "sigmoid", "softsign"]), self.leaf(UNITS, 0)), 2)
        if kind == "mul":
            return _mul(self.leaf(UNITS, 0), self.leaf(UNITS, 0))
        return self.expr(UNITS, d)

    def nested(self, cols, depth, rows=None):
        outer, self.in_lhs = self.in_lhs, False
        try:
            return self.product(cols, depth, rows)
        finally:
            self.in_lhs = outer

    def product(self, cols, depth, rows=None):
        if rows is None:
            rows = UNITS if cols == INPUT else self.choice([UNITS, INPUT])
        if cols == INPUT:
            self.f["product:to_input_dim"] += 1
        lhs = self.left(rows, depth)
        return _mm(lhs, self.matrix(rows, cols))

    def preact(self, depth):
        """A sum with at least one product: the argument of a gate or candidate."""
        terms = [self.product(UNITS, depth)]
        for _ in range(self.choice([0, 1, 1, 2])):
            terms.append(
                self.choice([lambda size: self.product(size, depth), self.leaf_term])(UNITS)
            )
        if self.must_vecs:
            terms.append(_name(self.must_vecs.pop()))
        elif self.chance(0.6):
            when = self.cond() if self.bools and self.chance(0.3) else None
            if when:
                self.f["weight_when"] += 1
            terms.append(_name(self.vector(UNITS, when)))
        if self.bools and self.chance(0.12):
            self.f["weight_when"] += 1
            name = self.fresh("w")
            rows = self.choice([UNITS, INPUT])
            self.mats.append({"name": name, "rows": rows, "cols": UNITS, "when": self.cond()})
            terms.append(_mm(self.left(rows, 0), name))
        self.rng.shuffle(terms)
        out = terms[0]
        for t in terms[1:]:
            out = _add(out, t)
        return out

    def leaf_term(self, size):
        return self.expr(size, 1)

    def bounded(self):
        name = self.choice(["tanh", "sigmoid", "softsign", "hard_sigmoid", *self.acts])
        self.f[f"fn:{name}" if name in FUNCS else "fn:activation_option"] += 1
        return name

    # equations
    def gate_eq(self):
        kind = self.choice(["gate", "gate", "expr", "product_only"])
        if kind == "gate":
            return _call(self.bounded(), self.preact(2))
        if kind == "product_only":
            return self.product(UNITS, 2)
        return self.expr(UNITS, 3)

    def input_eq(self):
        self.f["intermediate:input_dim"] += 1
        forms = [
            lambda: _mul(_name("x"), _call("sigmoid", self.product(INPUT, 1, rows=UNITS))),
            lambda: _mul(_call(self.fn(), _name("x")), _name(self.vector(INPUT))),
            lambda: _call("sigmoid", _name(self.vector(INPUT))),
            lambda: self.expr(INPUT, 2),
        ]
        return self.choice(forms)()

    def state_eq(self, s):
        kind = self.choice(["rnn", "gated", "leaky", "expr"])
        self.f[f"state:{kind}"] += 1
        prev = _name(f"{s}_prev")
        if kind == "rnn":
            return _call(self.bounded(), self.preact(2))
        if kind == "gated":
            gates = [n for n in self.intermediates if self.vars.get(n) == UNITS]
            g = _name(self.choice(gates)) if gates and self.chance(0.7) else None
            g = g or _call("sigmoid", self.preact(1))
            cand = _call(self.bounded(), self.preact(2))
            return _add(_mul(g, prev), _mul(_add(_name("1"), g, "-"), cand))
        if kind == "leaky":
            return _add(_mul(_name("0.5"), prev), _mul(_name("0.5"), self.expr(UNITS, 3)))
        return _call(self.bounded(), self.expr(UNITS, 3))

    def alternatives(self, make):
        """One equation, or alternatives under conditions (each drawn by ``make``)."""
        first = make()[0]
        if not (self.bools and self.chance(0.25)):
            return first
        self.f["alternatives"] += 1
        alts = [{"when": self.cond(), "eq": first}]
        if len(self.bools) > 1 and self.chance(0.3):
            when = self.cond()
            if when != alts[0]["when"]:
                alts.append({"when": when, "eq": make()[0]})
        alts.append({"eq": make()[0]})
        return alts

    @property
    def prevs(self):
        return [f"{s}_prev" for s in self.states]

    def generate(self):
        r = self
        n_states = r.choice([1, 2, 3, 1, 2])
        self.states = ["h", "c", "m"][:n_states]
        self.f[f"states:{n_states}"] += 1
        for s in self.states:
            self.vars[f"{s}_prev"] = UNITS
        options: dict = {}
        for name in ("opt_a", "opt_b")[: r.choice([0, 1, 2, 1])]:
            options[name] = r.chance(0.5)
            self.bools.append(name)
        if r.chance(0.4):
            options["activation"] = r.choice(functions.ACTIVATIONS)
            self.acts.append("activation")
            self.f["activation_option"] += 1
        if r.chance(0.15):
            options["recurrent_activation"] = r.choice(functions.ACTIVATIONS)
            self.acts.append("recurrent_activation")
        eqs: dict = {}
        if self.bools:
            self.layouts(eqs)
        for _ in range(r.choice([0, 1, 2, 3])):
            if r.chance(0.15):
                name = self.fresh("xi")
                eqs[name] = self.alternatives(self.input_eq)
                self.vars[name] = INPUT
            else:
                name = self.fresh("g")
                eqs[name] = self.alternatives(self.gate_eq)
                self.vars[name] = UNITS
            self.intermediates.append(name)
        for i, s in enumerate(self.states):
            eqs[s] = self.alternatives(lambda s=s: self.state_eq(s))
            self.vars[s] = UNITS
            self.new_states.append(s)
            if i + 1 < len(self.states) and r.chance(0.3):
                name = self.fresh("g")
                eqs[name] = self.alternatives(self.gate_eq)
                self.vars[name] = UNITS
                self.intermediates.append(name)
        output = None
        if r.chance(0.3):
            units = [n for n in self.intermediates if self.vars[n] == UNITS]
            if units and r.chance(0.3):
                output = r.choice(units)
            else:
                output = "y"
                eqs["y"] = self.alternatives(lambda: self.expr(UNITS, 3))
                self.vars["y"] = UNITS
            self.f["output:not_state"] += 1
        dead = None
        if r.chance(0.1):
            dead = self.fresh("dead")
            size = r.choice([UNITS, UNITS, INPUT])
            eqs[dead] = self.expr(size, 2)[0] if size == INPUT else self.gate_eq()[0]
            self.vars[dead] = size
            self.f["dead"] += 1
        self.read_x(eqs, output)
        self.dead = self.read_everything(eqs, output, dead)
        self.count_exotic(eqs)
        spec = {
            "name": "cell",
            "class_name": "Cell",
            "options": options,
            "weights": _read_weights(self.weights(), eqs),
            "states": list(self.states),
        }
        if output:
            spec["output"] = output
        spec["step"] = eqs
        return yaml.safe_dump(spec, sort_keys=False, width=10**6, default_flow_style=None)

    def layouts(self, eqs):
        """Weights whose layout depends on an option (and the equations that use them)."""
        r = self
        opt = r.choice(self.bools)
        kind = r.choice(["none", "reorder", "stack", "rows", "extra_block"])
        if kind == "none":
            return
        self.f[f"layout:{kind}"] += 1
        if kind == "reorder":  # the blocks of a fused matrix change places
            rows = r.choice([UNITS, INPUT])
            a, b = self.fresh("ka"), self.fresh("kb")
            self.special[self.fresh("kernel")] = {
                "initializer": "glorot_uniform",
                "layouts": [
                    {"when": opt, "shape": [rows, "2 * units"], "blocks": [a, b]},
                    {"shape": [rows, "2 * units"], "blocks": [b, a]},
                ],
            }
            self.must_mats += [(a, rows), (b, rows)]
        elif kind == "stack":  # two biases in rows, or fused along the last axis
            a, b = self.fresh("ba"), self.fresh("bb")
            self.special[self.fresh("bias")] = {
                "initializer": "zeros",
                "layouts": [
                    {"when": opt, "shape": [2, "units"], "blocks": [[a], [b]]},
                    {"shape": ["2 * units"], "blocks": [a, b]},
                ],
            }
            self.must_vecs += [a, b]
        elif kind == "rows":  # the same weight maps x or h_prev, by option
            w = self.fresh("mix")
            self.special[w] = {
                "initializer": "glorot_uniform",
                "layouts": [
                    {"when": opt, "shape": ["input_dim", "units"]},
                    {"shape": ["units", "units"]},
                ],
            }
            name = self.fresh("g")
            f = self.bounded()
            eqs[name] = [
                {"when": opt, "eq": _call(f, _mm(self.left(INPUT, 1), w))[0]},
                {"eq": _call(f, _mm(self.left(UNITS, 1), w))[0]},
            ]
            self.vars[name] = UNITS
            self.intermediates.append(name)
        else:  # a block that exists only under the option (tests/specs/cond.yaml)
            rows = r.choice([UNITS, INPUT])
            a, b = self.fresh("ka"), self.fresh("kb")
            self.special[self.fresh("kernel")] = {
                "initializer": "glorot_uniform",
                "layouts": [
                    {"when": opt, "shape": [rows, "2 * units"], "blocks": [a, b]},
                    {"shape": [rows, "units"], "blocks": [a]},
                ],
            }
            name = self.fresh("g")
            f = self.bounded()
            both = _add(_mm(self.left(rows, 1), a), _mm(self.left(rows, 1), b))
            eqs[name] = [
                {"when": opt, "eq": _call(f, both)[0]},
                {"eq": _call(f, _mm(self.left(rows, 1), a))[0]},
            ]
            self.vars[name] = UNITS
            self.intermediates.append(name)

    def read_everything(self, eqs, output, dead):
        """Make every intermediate but ``dead`` read, in every variant, by a state or the output."""
        sinks = [n for n in eqs if n in self.states or n == output]
        last = sinks[-1]
        order = list(eqs)
        for name in reversed(order[: order.index(last)]):
            if name == dead or name in _surely_live(eqs, sinks):
                continue
            term = _name(name) if self.vars[name] == UNITS else _mm(_name(name), self.matrix(INPUT))
            extra = _mul(_name("0.25"), _call("tanh", term))
            eqs[last] = _map_eq(eqs[last], lambda t, e=extra: _add((t, ADD), e)[0])
        return set(eqs) - _surely_live(eqs, sinks)

    def read_x(self, eqs, output):
        """Every cell reads its input (a layer that never reads x cannot size its weights)."""
        live = [eqs[n] for n in eqs if n in self.states or n == output]
        if any(isinstance(v, str) and re.search(r"\bx\b", v) for v in live):
            return
        last = [n for n in eqs if n in self.states or n == output][-1]
        term = _mul(_name("0.25"), _call("tanh", _mm(_name("x"), self.matrix(INPUT))))

        def add(t):
            return t if re.search(r"\bx\b", t) else _add((t, ADD), term)[0]

        eqs[last] = _map_eq(eqs[last], add)

    def count_exotic(self, eqs):
        texts = [t for v in eqs.values() for t in _texts(v)]
        for n in self.new_states:
            if any(re.search(rf"\b{n}\b(?!_)\s*@|\b{n}\)\s*@", t) for t in texts):
                self.f["new_state_lhs_direct"] += 1
        if any(re.search(r"\*\* -?[0-9.]+ @", t) for t in texts):
            self.f["pow_lhs_unparenthesized"] += 1

    def weights(self):
        r = self.rng
        out = dict(self.special)
        mats = [m for m in self.mats if not m["when"]]
        groups: dict = {}
        for m in mats:
            groups.setdefault((m["rows"], m["cols"]), []).append(m["name"])
        for (rows, cols), names in groups.items():
            r.shuffle(names)
            while names:
                k = self.choice([1, 1, 2, 3]) if cols == UNITS else 1
                blk, names = names[:k], names[k:]
                if len(blk) == 1:
                    init = "orthogonal" if (rows, cols) == (UNITS, UNITS) else "glorot_uniform"
                    out[blk[0]] = {"shape": [rows, cols], "initializer": init}
                else:
                    self.f["fused:matrix"] += 1
                    out[self.fresh("kernel")] = {
                        "shape": [rows, f"{len(blk)} * units"],
                        "blocks": blk,
                        "initializer": "glorot_uniform",
                    }
        for m in self.mats:
            if m["when"]:
                out[m["name"]] = {
                    "shape": [m["rows"], m["cols"]],
                    "initializer": "glorot_uniform",
                    "when": m["when"],
                }
        vecs = {}
        for v in self.vecs:
            vecs.setdefault((v["size"], v["when"]), []).append(v["name"])
        for (size, when), names in vecs.items():
            r.shuffle(names)
            while names:
                k = self.choice([1, 1, 2, 3]) if size == UNITS else 1
                blk, names = names[:k], names[k:]
                extra = {"when": when} if when else {}
                init = self.choice(["zeros", "ones"])
                if len(blk) == 1:
                    out[blk[0]] = {"shape": [size], "initializer": init, **extra}
                elif self.chance(0.5):
                    self.f["fused:vector"] += 1
                    out[self.fresh("bias")] = {
                        "shape": [f"{len(blk)} * units"],
                        "blocks": blk,
                        "initializer": init,
                        **extra,
                    }
                else:
                    self.f["stacked:vector"] += 1
                    out[self.fresh("bias")] = {
                        "shape": [len(blk), "units"],
                        "blocks": [[b] for b in blk],
                        "initializer": init,
                        **extra,
                    }
        names = list(out)
        r.shuffle(names)
        return {n: out[n] for n in names}


def _texts(value):
    return [value] if isinstance(value, str) else [a["eq"] for a in value]


def _map_eq(value, fn):
    if isinstance(value, str):
        return fn(value)
    return [{**a, "eq": fn(a["eq"])} for a in value]


def _read_weights(weights: dict, eqs: dict) -> dict:
    """The weights some equation names (itself or one of its blocks): rnngen refuses a weight
    nothing reads, and the generator may draw a block that no equation ends up using."""
    texts = [t for v in eqs.values() for t in _texts(v)]

    def named(name):
        pat = re.compile(rf"\b{re.escape(name)}\b")
        return any(pat.search(t) for t in texts)

    def blocks(w):
        rows = w.get("blocks") or [b for lay in w.get("layouts", []) for b in lay["blocks"]]
        return [b for row in rows for b in (row if isinstance(row, list) else [row])]

    return {n: w for n, w in weights.items() if named(n) or any(map(named, blocks(w)))}


def _surely_live(eqs, sinks) -> set:
    """Equations every variant reads: the sinks, and those read by every alternative of a
    surely-live later equation."""
    live = set(sinks)
    for n in reversed(list(eqs)):
        if n in live:
            continue
        pat = re.compile(rf"\b{re.escape(n)}\b(?!_prev)")
        if any(all(pat.search(t) for t in _texts(eqs[m])) for m in live):
            live.add(n)
    return live


def _reads(eqs, name):
    pat = re.compile(rf"\b{re.escape(name)}\b(?!_prev)")
    return any(pat.search(t) for n, v in eqs.items() if n != name for t in _texts(v))


def generate(rng: random.Random) -> Cell:
    """One random well-typed cell, as spec YAML text."""
    g = _Gen(rng)
    text = g.generate()
    return Cell(text, g.f, dead=frozenset(g.dead))


def cells():
    """The Hypothesis strategy: a ``Cell`` drawn through Hypothesis's shrinkable ``Random``."""
    from hypothesis import strategies as st

    return st.randoms(use_true_random=False).map(generate)


def cell_from_seed(seed: int, index: int) -> Cell:
    cell = generate(random.Random(f"{seed}:{index}"))
    cell.seed = (seed, index)
    return cell


# -- checking one cell -------------------------------------------------------------------------

#: refusals that name a real problem of a drawn cell (so the grammar may make them)
LEGIT_REFUSALS = (
    re.compile(r"is a constant when"),
    # a weight that exists only under options where no alternative reads it (drawn by chance)
    re.compile(r"no equation reads weight '\w+'.*; remove it or use it in the step"),
)
#: a refusal of an equation that nothing reads is legitimate when the cell has such a one
DEAD_REFUSAL = re.compile(r"nothing reads '(\w+)'")

B, T, D, U = 2, 4, 3, 4
BACKENDS = ("numpy", "tf/loop", "tf/fused")
BACKENDS += tuple(label for label, _ in cellbackends.TORCH + cellbackends.JAX)
#: backends other than NumPy/TF: (framework, module suffix, ((label, implementation), ...), runner)
MODULE_BACKENDS = (
    ("torch", "_torch.py", cellbackends.TORCH, cellbackends.run_torch),
    ("jax", "_jax.py", cellbackends.JAX, cellbackends.run_jax),
)


@dataclass
class Failure:
    kind: str  # crash | mismatch | bad_refusal | oracle
    backend: str  # parse | build | import <b> | oracle | one of BACKENDS
    message: str
    config: str = ""

    def signature(self) -> str:
        msg = re.sub(r"\d+", "N", self.message.splitlines()[0] if self.message else "")
        return f"{self.kind} {self.backend}: {msg[:160]}"


@dataclass
class Outcome:
    status: str  # passed | refused | failed | skipped
    failures: list = field(default_factory=list)
    message: str = ""
    seconds: float = 0.0
    combos: int = 0
    skipped_combos: int = 0
    worst: dict = field(default_factory=dict)  # backend -> worst relative error seen
    checked: Counter = field(default_factory=Counter)  # backend -> configurations compared
    absent: set = field(default_factory=set)  # frameworks not installed (backends left out)


def _api():
    """The verifier functions this check reuses (public names of :mod:`rnngen.verify`)."""
    from rnngen import verify

    names = (
        "Config",
        "make_data",
        "run_numpy_layer",
        "run_keras_layer",
        "run_equations",
        "compare",
        "build_into",
        "import_path",
        "FWD_TOL",
        "GRAD_TOL",
    )
    return {n: getattr(verify, n) for n in names}


def _short(err: BaseException) -> str:
    """``Type: first line of the message [file:function]`` (Keras's call wrapper unwrapped)."""
    tb = traceback.extract_tb(err.__traceback__)
    where = ""
    for fr in reversed(tb):
        if "/rnngen/" in fr.filename or re.search(r"_(numpy|tf|torch|jax)\.py$", fr.filename):
            where = f" [{Path(fr.filename).name}:{fr.name}]"
            break
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(err)).splitlines()]
    lines = [ln for ln in lines if ln]
    if lines and lines[0].startswith("Exception encountered when calling") and len(lines) > 1:
        lines = lines[1:]
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", lines[0]) if lines else ""
    return f"{type(err).__name__}: {text}"[:300] + where


def combos(cs) -> list[dict]:
    names = [o.name for o in cs.bool_options]
    return [
        dict(zip(names, v, strict=True))
        for v in itertools.product([True, False], repeat=len(names))
    ] or [{}]


def check_cell(
    cell: Cell,
    seed: int = 0,
    workdir: Path | None = None,
    backends=BACKENDS,
    max_combos: int | None = None,
    module_combos: dict | None = None,
) -> Outcome:
    """Build ``cell`` and compare every backend with the equation interpreter (float64).

    Every combination of boolean options is checked, or the defaults and ``max_combos - 1``
    others drawn at random. ``module_combos`` (``{"torch": n, "jax": n}``) runs a framework's
    module on the first ``n`` of these whose reference is usable (the defaults first; ``None``
    or absent: all).
    """
    from rnngen.errors import SpecError
    from rnngen.spec import parse

    api = _api()
    import logging

    logging.getLogger("tensorflow").setLevel(logging.CRITICAL)  # tf_should_use noise
    t0 = time.perf_counter()
    out = Outcome("passed")

    def fail(kind, backend, message, config=""):
        out.failures.append(Failure(kind, backend, message, config))

    try:
        cs = parse(cell.yaml, "cell.yaml")
    except SpecError as err:
        return _refusal(out, err, "parse", t0, cell.dead)
    except Exception as err:  # noqa: BLE001 - a crash is a finding
        fail("crash", "parse", _short(err))
        return _done(out, t0)
    with tempfile.TemporaryDirectory(prefix="rnngen-cell-", dir=workdir) as tmp:
        tmp = Path(tmp)
        path = tmp / f"{cs.name}.yaml"
        path.write_text(cell.yaml, encoding="utf-8")
        try:
            api["build_into"](path, tmp / "out")
        except SpecError as err:
            return _refusal(out, err, "build", t0, cell.dead)
        except Exception as err:  # noqa: BLE001
            fail("crash", "build", _short(err))
            return _done(out, t0)
        mods = {}
        files = [("numpy", f"{cs.name}_numpy.py"), ("tf", f"{cs.name}_tf.py")]
        built = {b.name for b in _codegen_backends()}
        for framework, suffix, labels, _ in MODULE_BACKENDS:
            if not any(label in backends for label, _ in labels) or framework not in built:
                continue
            if cellbackends.installed(framework):
                files.append((framework, cs.name + suffix))
            else:
                out.absent.add(framework)
        for backend, file in files:
            try:
                mods[backend] = api["import_path"](tmp / "out" / file)
            except Exception as err:  # noqa: BLE001
                fail("crash", f"import {backend}", _short(err))
        if out.failures:
            return _done(out, t0)
        crng = random.Random(f"{seed}:{cell.seed}")  # the same draws while a cell is shrunk
        zrng = random.Random(f"{seed}:{cell.seed}:zero")  # apart, so crng's draws are as before
        todo = combos(cs)
        default = {o.name: o.default for o in cs.bool_options}
        todo.sort(key=lambda c: c != default)  # the defaults first
        if max_combos is not None and len(todo) > max_combos:
            todo = [todo[0]] + crng.sample(todo[1:], max_combos - 1)
        for opts in todo:
            full = dict(cs.defaults())
            full.update(opts)
            for o in cs.activation_options:  # a random allowed activation per combination
                full[o.name] = crng.choice(o.values)
            # Keras's layer semantics around the cell, drawn too: masked steps, reversed time
            mask, backwards = crng.random() < 0.25, crng.random() < 0.25
            zero = zrng.random() < 0.5 and mask  # zero_output_for_mask, on half the masked
            cfg = api["Config"](
                tuple(full.items()),
                B=B,
                T=T,
                D=D,
                U=U,
                initial_state=True,
                mask=mask,
                go_backwards=backwards,
                zero_output_for_mask=zero,
            )
            label = " ".join(f"{k}={v}" for k, v in full.items())
            label += " mask" * mask + " zero_output_for_mask" * zero + " go_backwards" * backwards
            out.combos += 1
            compared = out.combos - 1 - out.skipped_combos  # earlier ones not skipped
            run_modules = {
                f: (module_combos or {}).get(f) is None or compared < module_combos[f]
                for f, *_ in MODULE_BACKENDS
            }
            _check_config(api, cs, mods, cfg, seed, label, out, fail, backends, run_modules)
    return _done(out, t0)


def _codegen_backends():
    from rnngen import codegen

    return codegen.BACKENDS


def _check_config(api, cs, mods, cfg, seed, label, out, fail, backends, run_modules=None):
    try:
        data = api["make_data"](mods["numpy"], cs, cfg, seed)
    except Exception as err:  # noqa: BLE001
        fail("crash", "numpy", "make_data: " + _short(err), label)
        return
    try:
        ref = api["run_equations"](cs, cfg, data)
        bad = _misshaped(ref, cs, cfg)
        if bad:
            raise ValueError(f"returns {bad}")
    except Exception as err:  # noqa: BLE001
        # the verifier's interpreter fails on this cell: a finding of its own; the layers are
        # still compared, with the same interpreter made to broadcast time-invariant values
        fail("oracle", "oracle", _short(err), label)
        try:
            ref = _broadcasting_equations(api, cs, cfg, data)
        except Exception as err2:  # noqa: BLE001
            fail("oracle", "oracle", "broadcasting interpreter: " + _short(err2), label)
            return
    _unconnected_as_zeros(ref, data, cs)
    if _diverged(ref):
        out.skipped_combos += 1
        return
    runners = {
        "numpy": lambda: api["run_numpy_layer"](mods["numpy"], cs, cfg, data, "float64"),
    }
    cls = getattr(mods["tf"], cs.class_name)
    for impl in ("loop", "fused"):
        runners[f"tf/{impl}"] = lambda impl=impl: api["run_keras_layer"](
            cls, cs, cfg, data, extra={"implementation": impl}, dtype="float64"
        )
    for framework, _, labels, runner in MODULE_BACKENDS:
        if (run_modules or {}).get(framework, True) and framework in mods:
            for backend, impl in labels:
                runners[backend] = lambda runner=runner, m=mods[framework], impl=impl: runner(
                    m, cs, cfg, data, impl
                )
    for backend, run in runners.items():
        if backend not in backends:
            continue
        try:
            ours = run()
        except Exception as err:  # noqa: BLE001
            fail("crash", backend, _short(err), label)
            continue
        _unconnected_as_zeros(ours, data, cs)
        res = api["compare"](ours, ref, "float64", cfg.T)
        if res.skipped:
            out.skipped_combos += 1
            return
        out.worst[backend] = max(out.worst.get(backend, 0.0), res.max_rel)
        out.checked[backend] += 1
        if not res.ok:
            w = res.worst or {}
            fail(
                "mismatch",
                backend,
                f"{w.get('tensor')} rel {w.get('rel'):.3g} > {w.get('tol'):.3g} "
                f"(ours {w.get('analytic')}, reference {w.get('reference')})",
                label,
            )


#: a reference value beyond this is a diverging cell: float64 formulas that agree everywhere
#: else (NumPy's sigmoid 0.5 + 0.5 tanh(u / 2) is exactly 0 below u = -38, TF's is e^u) part
#: ways there, and no comparison at 1e-10 means anything (seed 2027, cell 361: -3.5e26)
DIVERGED = 1e15


def _diverged(ref) -> bool:
    values = [np.asarray(v) for v in ref["values"].values()]
    return any(v.size and np.nanmax(np.abs(v)) > DIVERGED for v in values)


def _misshaped(ref, cs, cfg) -> str:
    """A returned tensor of the wrong shape (the interpreter keeps a state that only weights
    define as a vector without the batch axis)."""
    want = [(cfg.B, cfg.T, cfg.U)] + [(cfg.B, cfg.U)] * len(cs.states)
    for i, shape in enumerate(want):
        got = ref["values"].get(f"returned[{i}]")
        if got is not None and tuple(got.shape) != shape:
            return f"returned[{i}] of shape {tuple(got.shape)}, not {shape}"
    return ""


def _broadcasting_equations(api, cs, cfg, data):
    """``run_equations`` with an interpreter that gives a time-invariant (weight-only) left side
    of '@', output or state the batch axis; otherwise the verifier's own interpreter."""
    import sys

    import tensorflow as tf

    from rnngen.grammar import WeightProduct

    mod = sys.modules[api["run_equations"].__module__]
    base = mod.EquationCell

    class Broadcasting(base):
        def step(self, x, prev, weights, masks):
            self._batch = tf.shape(x)[0]
            out, states = super().step(x, prev, weights, masks)
            return self._rows(out), [self._rows(s) for s in states]

        def _rows(self, v):
            v = tf.convert_to_tensor(v, tf.float64)
            return tf.broadcast_to(v, [self._batch, tf.shape(v)[-1]]) if v.shape.rank < 2 else v

        def ev(self, e, env, gate):
            if isinstance(e, WeightProduct) and e.args[1].name not in self.absent:
                a, w = e.args
                wname, idx, g = self.blocks[w.name]
                return tf.matmul(self._rows(self.ev(a, env, g)), self._w[wname][idx])
            return super().ev(e, env, gate)

    mod.EquationCell = Broadcasting
    try:
        return api["run_equations"](cs, cfg, data)
    finally:
        mod.EquationCell = base


def _unconnected_as_zeros(ref, data, cs):
    """``run_equations`` and ``run_keras_layer`` report the gradient of a tensor the loss does
    not read (a weight only another variant uses) as ``np.zeros(1)``: its value is zero with the
    tensor's shape."""
    import numpy as np

    shapes = {"d inputs": np.shape(data["xs"][-1])}
    for s, h in zip(cs.states, data["h0"] or [], strict=False):
        shapes[f"d initial {s}"] = np.shape(h)
    shapes.update({f"d {n}": np.shape(w) for n, w in data["weights"].items()})
    for name, g in ref["grads"].items():
        g = np.asarray(g)
        if g.shape == (1,) and not g.any() and shapes.get(name, (1,)) != (1,):
            ref["grads"][name] = np.zeros(shapes[name])


def _legit(problem: str, dead) -> bool:
    m = DEAD_REFUSAL.search(problem)
    if m:
        # an equation read only by dead ones is dead too; one that cancels out where it is
        # written (``a + xi - xi``, drawn by chance) is unread (seed 2027, cell 37)
        users = re.findall(r"'(\w+)'", problem.partition("only used by")[2].split(";")[0])
        return (
            m.group(1) in dead
            or "cancels out of" in problem
            or bool(users)
            and all(u in dead for u in users)
        )
    return any(p.search(problem) for p in LEGIT_REFUSALS)


def _refusal(out, err, stage, t0, dead=frozenset()):
    msg = "; ".join(str(p) for p in err.problems) if getattr(err, "problems", None) else str(err)
    out.message = msg
    problems = [str(pr) for pr in getattr(err, "problems", ())]
    unread = {m.group(1) for pr in problems if (m := DEAD_REFUSAL.search(pr))}
    # what is refused as unread counts as dead for the equations only it reads
    dead = set(dead) | {n for pr in problems if "cancels out of" in pr for n in unread}
    if all(_legit(pr, dead) for pr in problems):
        out.status = "refused"
    else:
        out.failures.append(Failure("bad_refusal", stage, msg))
    return _done(out, t0)


def _done(out, t0):
    out.seconds = time.perf_counter() - t0
    if out.failures:
        out.status = "failed"
    elif out.status == "passed" and out.combos and out.skipped_combos == out.combos:
        out.status = "skipped"
    return out


@dataclass
class Summary:
    seed: int
    cells: int = 0
    built: int = 0
    refused: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    classes: dict = field(default_factory=dict)  # signature -> [count, first cell]
    features: Counter = field(default_factory=Counter)  # feature -> cells using it
    failures: list = field(default_factory=list)  # (cell, outcome)
    checked: Counter = field(default_factory=Counter)  # backend -> configurations compared
    cells_checked: Counter = field(default_factory=Counter)  # backend -> cells compared
    worst: dict = field(default_factory=dict)  # backend -> worst relative error
    absent: set = field(default_factory=set)  # frameworks not installed

    def line(self) -> str:
        return (
            f"seed={self.seed} cells={self.cells} built={self.built} refused={self.refused} "
            f"passed={self.passed} failed={self.failed} "
            f"skipped(reference overflow or diverged)={self.skipped} "
            f"wall={self.seconds:.1f}s ({self.seconds / max(self.cells, 1):.2f}s/cell)"
        )

    def backends_line(self) -> str:
        """Per backend: cells and configurations compared, worst relative error."""
        parts = [
            f"{b}: {self.cells_checked[b]} cells/{self.checked[b]} configs, "
            f"worst rel {self.worst.get(b, 0.0):.2g}"
            for b in BACKENDS
            if self.checked[b]
        ]
        parts += [f"{f}: not installed" for f in sorted(self.absent)]
        return "; ".join(parts)

    def report(self) -> str:
        lines = [self.line(), "  " + self.backends_line()]
        for sig, (n, cell) in sorted(self.classes.items(), key=lambda kv: -kv[1][0]):
            lines.append(f"  {n:4d} x {sig}   (first: seed {cell.seed})")
        return "\n".join(lines)


def run_sample(
    seed: int, n: int, progress=None, workdir=None, max_combos=None, module_combos=None
) -> Summary:
    """Draw and check ``n`` cells from ``seed`` (cell i is ``cell_from_seed(seed, i)``);
    ``max_combos`` and ``module_combos`` as :func:`check_cell` takes them."""
    s = Summary(seed)
    t0 = time.perf_counter()
    for i in range(n):
        cell = cell_from_seed(seed, i)
        s.features.update(set(cell.features))
        res = check_cell(cell, seed, workdir, max_combos=max_combos, module_combos=module_combos)
        s.cells += 1
        s.checked.update(res.checked)
        s.cells_checked.update(set(res.checked))
        s.absent |= res.absent
        for b, w in res.worst.items():
            s.worst[b] = max(s.worst.get(b, 0.0), w)
        s.built += res.status != "refused" and not any(
            f.backend in ("parse", "build") for f in res.failures
        )
        if res.status == "refused":
            s.refused += 1
        elif res.status == "failed":
            s.failed += 1
            s.failures.append((cell, res))
            for sig in dict.fromkeys(f.signature() for f in res.failures):
                n_, first = s.classes.get(sig, (0, cell))
                s.classes[sig] = (n_ + 1, first)
        elif res.status == "skipped":
            s.skipped += 1
        else:
            s.passed += 1
        if progress:
            progress(i, cell, res)
    s.seconds = time.perf_counter() - t0
    return s


# -- shrinking a failing cell ------------------------------------------------------------------


def shrink(text: str, still_fails, max_tries: int = 300) -> str:
    """Greedily simplify spec ``text`` while ``still_fails(text)`` holds; the smallest found.

    After a simplification is kept, the next pass resumes at the same candidate position (the
    earlier candidates failed to simplify just before); a last pass from the start confirms.
    """
    data = yaml.safe_load(text)
    tries, start = 0, 0
    while tries < max_tries:
        kept = False
        for k, cand in enumerate(_candidates(data)):
            if k < start:
                continue
            tries += 1
            if tries > max_tries:
                break
            if still_fails(_dump(cand)):
                data, start, kept = cand, k, True
                break
        if not kept:
            if start == 0:
                break
            start = 0
    return _dump(data)


def _dump(data) -> str:
    return yaml.safe_dump(data, sort_keys=False, width=10**6, default_flow_style=None)


def _refs(data) -> str:
    texts = [t for v in data["step"].values() for t in _texts(v)]
    conds = [a.get("when", "") for v in data["step"].values() if not isinstance(v, str) for a in v]
    return " ".join(texts + [str(c) for c in conds] + [str(data.get("output", ""))])


def _candidates(data):
    import ast
    import copy

    step = data["step"]
    states = data["states"]
    if "output" in data and data["output"] not in states:
        d = copy.deepcopy(data)
        del d["output"]
        yield d
    for n in list(step):
        if n not in states and not re.search(
            rf"\b{n}\b", _refs({**data, "step": {k: v for k, v in step.items() if k != n}})
        ):
            d = copy.deepcopy(data)
            del d["step"][n]
            yield d
    for n, v in step.items():
        if not isinstance(v, str):
            for a in v:
                d = copy.deepcopy(data)
                d["step"][n] = a["eq"]
                yield d
            for i in range(len(v) - 1):
                if len(v) > 2:
                    d = copy.deepcopy(data)
                    del d["step"][n][i]
                    yield d
    for n, v in step.items():
        for ai, text in enumerate(_texts(v)):
            tree = ast.parse(text, mode="eval")
            nodes = [x for x in ast.walk(tree) if isinstance(x, ast.BinOp | ast.Call | ast.UnaryOp)]
            for k in range(len(nodes)):
                for side in ("left", "right", "arg"):
                    t2 = copy.deepcopy(tree)
                    node = [
                        x for x in ast.walk(t2) if isinstance(x, ast.BinOp | ast.Call | ast.UnaryOp)
                    ][k]
                    repl = (
                        getattr(node, side, None)
                        if isinstance(node, ast.BinOp)
                        else node.args[0]
                        if isinstance(node, ast.Call) and side == "arg"
                        else node.operand
                        if isinstance(node, ast.UnaryOp) and side == "arg"
                        else None
                    )
                    if repl is None or (
                        isinstance(node, ast.BinOp)
                        and isinstance(node.op, ast.MatMult)
                        and side == "right"
                    ):
                        continue
                    if (
                        isinstance(node, ast.BinOp)
                        and isinstance(node.op, ast.Pow)
                        and side == "right"
                    ):
                        continue
                    _replace(t2, node, repl)
                    d = copy.deepcopy(data)
                    new = ast.unparse(t2)
                    if isinstance(v, str):
                        d["step"][n] = new
                    else:
                        d["step"][n][ai]["eq"] = new
                    yield d
    refs = _refs(data)
    for w, spec in data["weights"].items():
        names = [w] + _block_names(spec)
        if len(data["weights"]) > 1 and not any(re.search(rf"\b{b}\b", refs) for b in names):
            d = copy.deepcopy(data)
            del d["weights"][w]
            yield d
        if "blocks" in spec and "layouts" not in spec:
            d = copy.deepcopy(data)
            del d["weights"][w]
            rows = (
                spec["shape"][0]
                if len(spec["shape"]) == 2 and not isinstance(spec["blocks"][0], list)
                else None
            )
            for b in _block_names(spec):
                d["weights"][b] = {
                    "shape": [rows, "units"] if rows else ["units"],
                    "initializer": "zeros",
                }
            yield d
        if "when" in spec:
            d = copy.deepcopy(data)
            del d["weights"][w]["when"]
            yield d
    for o in list(data.get("options") or {}):
        if not re.search(rf"\b{o}\b", refs) and not re.search(rf"\b{o}\b", str(data["weights"])):
            d = copy.deepcopy(data)
            del d["options"][o]
            yield d


def _block_names(spec) -> list[str]:
    out = []
    for lay in spec.get("layouts") or [spec]:
        for b in lay.get("blocks") or []:
            out += b if isinstance(b, list) else [b]
    return out


def _replace(tree, old, new):
    import ast

    for parent in ast.walk(tree):
        for fname, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, fname, new)
                return
            if isinstance(value, list) and any(v is old for v in value):
                value[[i for i, v in enumerate(value) if v is old][0]] = new
                return
