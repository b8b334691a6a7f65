"""Every name rnngen generates, in one place (as ``tangent/naming.py`` does for Tangent).

A generated name says what the buffer holds. The conventions are the constants below; the
derivation and the printers build names only through these functions, and no code parses a
name to recover what it means: that is carried by the IR (:mod:`rnngen.symbolic`).

=====================  ==================================================================
``d_<v>``              the gradient of the loss with respect to value ``v`` (its adjoint)
``d_<v>_pre``          the gradient with respect to the argument of the function making ``v``
``<s>_prev``           state ``s`` entering the step
``<v>_seq``            ``v`` for every step, time first
``<v>_t``              this step's slice of a value computed for every step at once
``<g>_T``              a weight slice, transposed, for the transpose rule inside the loop
``<tensor>_mask_<k>``  the dropout mask of gate ``k`` on ``tensor``
``<o>_grad``           the derivative of the run-time activation given as option ``o``
``<o>_vjp``            its vector-Jacobian product (``<o>_vjp(y, d_y)``, row-wise ones too)
=====================  ==================================================================
"""

from __future__ import annotations

ADJOINT = "d_"
PRE = "_pre"
PREV = "_prev"
SEQ = "_seq"
STEP = "_t"
TRANSPOSED = "_T"
MASK = "_mask_"
DERIVATIVE = "_grad"
VJP = "_vjp"
#: this step's input inside the loop
X_T = "x_t"
#: the gradient of the output a masked step carries to the step before it
CARRY = "d_carry"
#: longest name stem, so every generated line fits in 100 characters
LIMIT = 32


def adjoint(value: str) -> str:
    """``d_<value>``: the gradient of the loss with respect to ``value``."""
    return ADJOINT + value


def pre_adjoint(value: str) -> str:
    """``d_<value>_pre``: the gradient with respect to the argument of ``value``'s function."""
    return ADJOINT + value + PRE


def operand_adjoint(operand: str, weight: str) -> str:
    """The part of ``d_<operand>`` that comes back through the product with ``weight``."""
    return f"{ADJOINT}{operand}_via_{weight}"


def prev(state: str) -> str:
    return state + PREV


def seq(value: str) -> str:
    return value + SEQ


def seq_before(state: str) -> str:
    """The states entering each step: a state buffer (T + 1 steps) without its last entry."""
    return f"{seq(state)}[:-1]"


def seq_after(state: str) -> str:
    """The states leaving each step: a state buffer without its first entry."""
    return f"{seq(state)}[1:]"


def at_step(value: str) -> str:
    return value + STEP


def mask(tensor: str, gate: int) -> str:
    return f"{tensor}{MASK}{gate}"


def dropped(operand: str, gates: str = "") -> str:
    """An operand multiplied by its dropout mask (``gates``: the gate, where masks are per gate)."""
    return f"{operand}_dropped{gates}"


def derivative(option: str) -> str:
    """The run-time derivative of activation option ``option``."""
    return option + DERIVATIVE


def vjp(option: str) -> str:
    """The run-time vector-Jacobian product of activation option ``option``."""
    return option + VJP


def transposed(stem: str) -> str:
    return stem + TRANSPOSED


def product(operand: str, weight: str) -> str:
    """A weight product ``operand @ weight``, named after both."""
    return f"{operand}_{weight}"


def input_gradient_of(operand: str, group: str) -> str:
    """The gradient of a hoisted operand from one hoisted product group, over every step."""
    return f"{ADJOINT}{operand}_from_{group}"


def hoisted_seed(group) -> str:
    """The gradient of a hoisted group's operand, every step (the seed of its VJP)."""
    return input_gradient_of(group.operand, group.name)


def adjoint_sum(adjoint_name: str) -> str:
    """A product gradient summed over steps and batch (for the bias blocks it feeds)."""
    return adjoint_name + "_sum"


def skipped(state: str) -> str:
    """The part of ``d_<state>`` a masked step passes straight to the step before it."""
    return adjoint(state) + "_skip"


def fresh(name: str, taken: set) -> str:
    """``name``, or ``name<k>`` with the first ``k`` that is free; the result is taken."""
    out, k = name, 2
    while out in taken:
        out, k = f"{name}{k}", k + 1
    taken.add(out)
    return out


def short(name: str, limit: int = LIMIT) -> str:
    return name if len(name) <= limit else name[:limit].rstrip("_")
