"""The row-wise Keras activations (softmax, log_softmax, sparsemax): data for the printers.

A row-wise function works across the units axis, so it has no elementwise derivative. Each entry
gives its forward body and its vector-Jacobian product per backend, and any module-level
helpers those bodies call. :mod:`rnngen.functions` makes the SymPy classes that print them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RowWise:
    """A Keras activation that works across a row (the units axis), such as softmax.

    Such a function has no elementwise derivative, so an activation option that takes it calls
    its vector-Jacobian product: ``vjp(y, d)`` is the gradient with respect to the input ``u``
    given ``d``, the gradient with respect to the output ``y = f(u)``, written in ``y``.
    ``numpy``/``tf`` are the bodies of ``def name(u)``; ``vjp_numpy``/``vjp_tf`` the bodies of
    ``def name_vjp(y, d)``. ``tests/test_activations.py`` checks each against Keras's own
    function and TensorFlow autodiff of it.
    """

    name: str
    numpy: str
    tf: str
    torch: str
    vjp_numpy: str
    vjp_tf: str
    vjp_torch: str
    # the VJP reads the output y (else the input u: the input-form variant serves it)
    reads_output: bool = True
    # module-level helper functions the bodies call, per backend (Python source)
    helpers: tuple[tuple[str, str], ...] = ()

    def helper(self, backend: str) -> str:
        return dict(self.helpers).get(backend, "")


# Keras 3.15's sparsemax, step for step (keras/src/backend/tensorflow/nn.py), including its
# threshold: the sum of the cumulative sums over the support (where sparsemax takes the last
# one), so its rows need not sum to 1. Its VJP: on the active set, d minus the active sum of d
# times d tau / d u_j = (k - rank_j + 1) / k for the k largest inputs.
_SPARSEMAX_NUMPY = """
def _sparsemax_threshold(u):
    order = np.argsort(-u, axis=-1, kind="stable")
    z = np.take_along_axis(u, order, -1)
    c = np.cumsum(z, axis=-1)
    r = np.arange(1, u.shape[-1] + 1, dtype=u.dtype)
    support = z - (c - 1) / r > 0
    k = support.sum(axis=-1, keepdims=True).astype(u.dtype)
    return order, k, (np.where(support, c, 0).sum(axis=-1, keepdims=True) - 1) / k


def _sparsemax(u):
    \"\"\"Keras 3.15's sparsemax across the last axis (its threshold included).\"\"\"
    return np.maximum(u - _sparsemax_threshold(u)[2], 0)


def _sparsemax_vjp(u, d):
    \"\"\"The gradient through Keras's sparsemax, given d, the gradient of its output.\"\"\"
    order, k, tau = _sparsemax_threshold(u)
    rank = np.empty(u.shape, dtype=u.dtype)
    ranks = np.broadcast_to(np.arange(1, u.shape[-1] + 1, dtype=u.dtype), u.shape)
    np.put_along_axis(rank, order, ranks, -1)
    d_active = np.where(u - tau > 0, d, 0)
    weight = np.where(rank <= k, (k - rank + 1) / k, 0)
    return d_active - d_active.sum(axis=-1, keepdims=True) * weight
"""
_AUTODIFF_ROW_VJP_TF = """
def _autodiff_row_vjp(f, u, d):
    \"\"\"The gradient through f at u given d, the gradient of its output (TF autodiff).\"\"\"
    with tf.GradientTape() as tape:
        tape.watch(u)
        y = f(u)
    return tape.gradient(y, u, output_gradients=d)
"""
_SPARSEMAX_TORCH = """
def _sparsemax(u):
    \"\"\"Keras 3.15's sparsemax across the last axis (its threshold included).\"\"\"
    z = torch.sort(u, dim=-1, descending=True).values
    c = torch.cumsum(z, dim=-1)
    r = torch.arange(1, u.shape[-1] + 1, dtype=u.dtype, device=u.device)
    support = z - (c - 1) / r > 0
    k = support.sum(dim=-1, keepdim=True).to(u.dtype)
    tau = (torch.where(support, c, torch.zeros_like(c)).sum(dim=-1, keepdim=True) - 1) / k
    return torch.clamp(u - tau, min=0)


def _autodiff_row_vjp(f, u, d):
    \"\"\"The gradient through f at u given d, the gradient of its output (torch autograd).\"\"\"
    with torch.enable_grad():
        u = u.detach().requires_grad_(True)
        return torch.autograd.grad(f(u), u, d)[0]
"""

ROW_WISE_TABLE = {
    e.name: e
    for e in (
        RowWise(
            "softmax",
            "np.exp(u - np.logaddexp.reduce(u, axis=-1, keepdims=True))",
            "tf.nn.softmax(u, axis=-1)",
            "torch.softmax(u, dim=-1)",
            "y * (d - (d * y).sum(axis=-1, keepdims=True))",
            "y * (d - tf.reduce_sum(d * y, -1, keepdims=True))",
            "y * (d - (d * y).sum(dim=-1, keepdim=True))",
        ),
        RowWise(
            "log_softmax",
            "u - np.logaddexp.reduce(u, axis=-1, keepdims=True)",
            "tf.nn.log_softmax(u, axis=-1)",
            "torch.log_softmax(u, dim=-1)",
            "d - np.exp(y) * d.sum(axis=-1, keepdims=True)",
            "d - tf.exp(y) * tf.reduce_sum(d, -1, keepdims=True)",
            "d - torch.exp(y) * d.sum(dim=-1, keepdim=True)",
        ),
        RowWise(
            "sparsemax",
            "_sparsemax(u)",
            "keras.activations.sparsemax(u)",
            "_sparsemax(u)",
            "_sparsemax_vjp(u, d)",
            "_autodiff_row_vjp(keras.activations.sparsemax, u, d)",
            "_autodiff_row_vjp(_sparsemax, u, d)",
            reads_output=False,
            helpers=(
                ("numpy", _SPARSEMAX_NUMPY),
                ("tf", _AUTODIFF_ROW_VJP_TF),
                ("torch", _SPARSEMAX_TORCH),
            ),
        ),
    )
}
