"""Fuzzing the spec parser: mutated specs either parse or raise SpecError, nothing else.

Specs that parse must also render. Each test is bounded to a few seconds of examples.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnngen import codegen
from rnngen.errors import SpecError
from rnngen.spec import parse

SPECS = {
    p.stem: p.read_text(encoding="utf-8")
    for p in sorted((Path(__file__).parent.parent / "spec").glob("*.yaml"))
}
DATA = {name: yaml.safe_load(text) for name, text in SPECS.items()}

FUZZ = settings(
    max_examples=800,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def outcome(text: str, render: bool = False):
    """Parse (and maybe render); the only allowed failure is SpecError."""
    try:
        spec = parse(text, "fuzz.yaml")
    except SpecError as err:
        assert err.problems, "SpecError without problems"
        for p in err.problems:
            assert p.file == "fuzz.yaml"
            assert str(p).startswith("fuzz.yaml"), str(p)
            assert "\n" not in str(p), p  # one line per problem
        return None
    if render:
        files = codegen.render(spec, "fuzz.yaml")
        assert f"{spec.name}_numpy.py" in files
    return spec


def test_shipped_specs_parse_and_render():
    for text in SPECS.values():
        assert outcome(text, render=True) is not None


# -- structural mutations of the parsed YAML -------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "units",
            "input_dim",
            "3 * units",
            "tanh",
            "h",
            "x",
            "h_prev",
            "kernel",
            "use_bias",
            "",
            "__import__",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _get(node, path):
    for p in path:
        node = node[p]
    return node


@st.composite
def mutated(draw):
    name = draw(st.sampled_from(sorted(DATA)))
    data = copy.deepcopy(DATA[name])
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _get(data, path[:-1])
        action = draw(st.sampled_from(["delete", "replace", "rename", "swap_type", "duplicate"]))
        key = path[-1]
        if action == "delete":
            del parent[key]
        elif action == "replace":
            parent[key] = draw(values)
        elif action == "rename" and isinstance(parent, dict):
            new = draw(
                st.one_of(
                    st.text(max_size=12),
                    st.sampled_from(
                        [
                            str(key) + "s",
                            str(key)[:-1],
                            str(key).upper(),
                            "_" + str(key),
                            "h",
                            "x",
                            "np",
                        ]
                    ),
                )
            )
            parent[new] = parent.pop(key)
        elif action == "swap_type":
            old = parent[key]
            parent[key] = (
                [old]
                if not isinstance(old, list)
                else {"a": old}
                if draw(st.booleans())
                else str(old)
            )
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


@pytest.mark.slow
@FUZZ
@given(mutated())
def test_structural_mutations(text):
    outcome(text)


# -- raw text mutations ----------------------------------------------------------------------


@st.composite
def text_mutated(draw):
    text = SPECS[draw(st.sampled_from(sorted(SPECS)))]
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 20)))
        insert = draw(
            st.one_of(
                st.text(max_size=10),
                st.sampled_from(
                    [
                        ":",
                        "-",
                        "[",
                        "]",
                        "{",
                        "}",
                        "&a",
                        "*a",
                        "!!python/object:os.system",
                        "\t",
                        "  ",
                        "\n",
                        "#",
                        "'",
                        '"',
                        "\\",
                        "|",
                        ">",
                        "\x00",
                        "\ufeff",
                        "\u0445",
                        "@",
                        "**",
                        "(",
                        ")",
                    ]
                ),
            )
        )
        text = text[:i] + insert + text[j:]
    return text


@pytest.mark.slow
@FUZZ
@given(text_mutated())
def test_text_mutations(text):
    outcome(text)


# -- random equations ------------------------------------------------------------------------

SIMPLE = SPECS["simple_rnn"]
EQUATION = "  h: activation(x @ kernel + h_prev @ recurrent_kernel + bias)\n"
assert EQUATION in SIMPLE

leaves = st.one_of(
    st.sampled_from(
        [
            "x",
            "h_prev",
            "bias",
            "kernel",
            "recurrent_kernel",
            "h",
            "y",
            "units",
            "__class__",
            "np",
            "tanh",
            "None",
            "True",
            "...",
            "''",
        ]
    ),
    st.integers(-5, 5).map(str),
    st.floats(-10, 10, allow_nan=False).map(repr),
    st.sampled_from(["1e400", "0x10", "1_000", "1j", "9**9**9"]),
)


def _combine(inner):
    binop = st.tuples(
        inner,
        st.sampled_from(
            [
                "+",
                "-",
                "*",
                "/",
                "@",
                "**",
                "%",
                "//",
                "<<",
                "&",
                "|",
                "^",
                "<",
                "==",
                " and ",
                " or ",
            ]
        ),
        inner,
    )
    call = st.tuples(
        st.sampled_from(
            [
                "tanh",
                "sigmoid",
                "activation",
                "relu",
                "exp",
                "sign",
                "softmax",
                "eval",
                "open",
                "abs",
                "log",
                "frobnicate",
            ]
        ),
        st.lists(inner, max_size=2),
    )
    return st.one_of(
        binop.map(lambda t: f"({t[0]}{t[1]}{t[2]})"),
        call.map(lambda t: f"{t[0]}({', '.join(t[1])})"),
        inner.map(lambda e: f"-{e}"),
        inner.map(lambda e: f"not {e}"),
        inner.map(lambda e: f"{e}.real"),
        inner.map(lambda e: f"{e}[0]"),
        inner.map(lambda e: f"(lambda: {e})()"),
        inner.map(lambda e: f"[{e} for _ in x]"),
    )


expressions = st.recursive(leaves, _combine, max_leaves=12)


def with_equation(expr: str) -> str:
    quoted = expr.replace("\\", "\\\\").replace('"', '\\"')
    return SIMPLE.replace(EQUATION, f'  h: "{quoted}"\n')


@pytest.mark.slow
@FUZZ
@given(expressions)
def test_random_expression_trees(expr):
    outcome(with_equation(expr))


well_typed = st.recursive(
    st.sampled_from(["h_prev", "bias", "x @ kernel", "h_prev @ recurrent_kernel"]),
    lambda inner: st.one_of(
        # constants only next to a non-constant: see test_call_of_constant_renders
        st.tuples(inner, st.sampled_from(["+ 1", "* 0.5", "- 2"])).map(
            lambda t: f"({t[0]} {t[1]})"
        ),
        st.tuples(inner, st.sampled_from(["+", "-", "*"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        st.tuples(
            st.sampled_from(["tanh", "sigmoid", "activation", "relu", "softplus"]), inner
        ).map(lambda t: f"{t[0]}({t[1]})"),
        inner.map(lambda e: f"({e}) ** 2"),
        inner.map(lambda e: f"({e}) @ recurrent_kernel"),
    ),
    max_leaves=6,
)


ALWAYS_BIAS = ", when: use_bias}"
assert ALWAYS_BIAS in SIMPLE


def _render_well_typed(expr):
    """Mostly-valid equations: those that parse must also render without other errors.

    The bias is made unconditional here: see test_call_of_absent_weight_renders.
    """
    every_weight = "x @ kernel + h_prev @ recurrent_kernel + bias"  # a weight must be read
    outcome(with_equation(f"({expr}) + 0.5 * ({every_weight})").replace(ALWAYS_BIAS, "}"), True)


#: Each example derives and renders a module (about half a second): a fixed-seed sample
#: in the normal tier (slow: ~20 s), so a failure reproduces on every machine ...
@pytest.mark.slow
@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(well_typed)
def test_well_typed_equations_render(expr):
    _render_well_typed(expr)


#: ... and a large random run, by hand before resolving:
#: ``python -m pytest -m stress tests/test_fuzz.py``
@pytest.mark.stress
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(well_typed)
def test_well_typed_equations_render_stress(expr):
    _render_well_typed(expr)


def test_power_of_a_call_left_of_a_product_renders():
    """Issue 9 item 6: the LaTeX printer crashed on ``tanh(h_prev) ** 2 @ W``."""
    files = outcome(
        with_equation("tanh(x @ kernel + tanh(h_prev) ** 2 @ recurrent_kernel + bias)"),
        render=True,
    )
    assert files is not None


def test_call_of_absent_weight_renders():
    outcome(with_equation("h_prev + tanh(bias)"), render=True)


def test_call_of_constant_renders():
    outcome(with_equation("h_prev + tanh(1)"), render=True)


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text(text):
    outcome(text)


@pytest.mark.slow
@FUZZ
@given(values)
def test_arbitrary_yaml_documents(data):
    outcome(yaml.safe_dump(data))
