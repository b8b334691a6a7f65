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
    the gradient stopped at processed step ``T - k`` (:mod:`rnngen.verify.truncate`).
``dropout``
    The masks the layer draws itself (``training=True``, nothing injected), NumPy and both TF
    implementations: replayed through the equation interpreter, keep fraction ``1 - rate``
    within 5 binomial sigmas, kept entries exactly ``1 / (1 - rate)``, independent between
    samples, calls and (exactly when ``recurrent_dropout > 0``, as Keras) gates, and none with
    ``training=False`` (:mod:`rnngen.verify.dropout`).
``init``
    The weights the layer builds (NumPy and TF) against Keras's initializer definitions:
    variance-scaling limits and moments from Keras's fans of the whole fused weight,
    orthonormal rows or columns of orthogonal weights, exact constants
    (:mod:`rnngen.verify.init`).
``hygiene``
    Each generated module imports in a fresh interpreter; the NumPy module must not pull in
    ``tensorflow`` or ``rnngen`` (:mod:`rnngen.verify.hygiene`). These subprocesses run
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

The ``torch`` backend (``<name>_torch.py``) has ``nn``, ``autograd``, ``finite_diff`` and
``hygiene`` rows (:mod:`rnngen.verify.torch_checks`). The ``jax`` backend (``<name>_jax.py``,
functional ``init``/``apply``) has, in float64: ``autodiff`` (the fused ``jax.custom_vjp`` against
``jax.grad`` of the undecorated ``lax.scan``, any spec), ``finite_diff`` (random directions and
sampled entries) and ``hygiene``; and ``keras``, for the shipped cells, against Keras's own layer
on the JAX backend in a subprocess, in float32 (:mod:`rnngen.verify.jax_checks`,
:mod:`rnngen.verify.jax_keras`).

Tolerance rule {TOLERANCE_RULE}

Results are reproducible for a given ``seed``. A missing ``tf`` module is reported as "not
available".

Modules, one job each: :mod:`~rnngen.verify.configs` (configuration matrices),
:mod:`~rnngen.verify.data` (random test data, layer arguments), :mod:`~rnngen.verify.modules`
(build and import what is checked), :mod:`~rnngen.verify.layers` (run the generated NumPy layer),
:mod:`~rnngen.verify.refs` (the Keras runner and the autodiff equation interpreter),
:mod:`~rnngen.verify.compare` (tolerances, the comparison rule), :mod:`~rnngen.verify.fd`
(finite differences), :mod:`~rnngen.verify.truncate`, :mod:`~rnngen.verify.dropout`,
:mod:`~rnngen.verify.init`, :mod:`~rnngen.verify.hygiene` (the other checks),
:mod:`~rnngen.verify.results` (report rows), :mod:`~rnngen.verify.driver` and
:mod:`~rnngen.verify.tf_checks`, :mod:`~rnngen.verify.torch_checks`,
:mod:`~rnngen.verify.jax_checks` and :mod:`~rnngen.verify.jax_keras` (one spec, every backend),
:mod:`~rnngen.verify.report` (tables) and :mod:`~rnngen.verify.run` (``rnngen verify``: every
spec, tables, JSON).
"""

from __future__ import annotations

from .compare import FD_EPS, FD_TOL, FWD_TOL, GRAD_TOL, TOLERANCE_RULE, Compared, compare, tol_text
from .configs import SMOOTH, Config, configurations, fd_configurations
from .data import make_data
from .driver import verify_spec
from .fd import fd_check, fd_setup, full_jacobian_check
from .layers import run_numpy_layer
from .modules import build_into, import_path
from .refs import EquationCell, run_equations, run_keras_layer
from .results import CHECKS, CheckResult
from .run import run_cli

if __doc__:  # None under python -OO
    __doc__ = __doc__.replace("{TOLERANCE_RULE}", TOLERANCE_RULE)

__all__ = [
    "CHECKS",
    "FD_EPS",
    "FD_TOL",
    "FWD_TOL",
    "GRAD_TOL",
    "SMOOTH",
    "TOLERANCE_RULE",
    "CheckResult",
    "Compared",
    "Config",
    "EquationCell",
    "build_into",
    "compare",
    "configurations",
    "fd_check",
    "fd_configurations",
    "fd_setup",
    "full_jacobian_check",
    "import_path",
    "make_data",
    "run_cli",
    "run_equations",
    "run_keras_layer",
    "run_numpy_layer",
    "tol_text",
    "verify_spec",
]
