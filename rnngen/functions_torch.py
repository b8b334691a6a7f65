"""PyTorch source of the table functions (``rnngen.functions``): each forward body, and the
backward kernels torch has for ``d * f'(y)``. The derivatives themselves are printed from the
table's SymPy expressions, as for NumPy and TensorFlow."""

_SOFTPLUS = "torch.logaddexp(u, torch.zeros_like(u))"
#: PyTorch source of each function's forward pass (the body of ``def name(u)``), one entry per
#: table function; its derivative is printed from the same SymPy expression as for NumPy and TF
# fmt: off
TORCH = {
    "linear": "u", "tanh": "torch.tanh(u)", "sigmoid": "torch.sigmoid(u)",
    "hard_sigmoid": "torch.clamp(u + 3, 0, 6) / 6",
    "hard_silu": "u * (torch.clamp(u + 3, 0, 6) / 6)",
    "relu": "torch.relu(u)", "relu6": "torch.clamp(u, 0, 6)",
    "leaky_relu": "torch.where(u > 0, u, 0.2 * u)",
    "elu": "torch.where(u > 0, u, torch.expm1(torch.clamp(u, max=0)))",
    "celu": "torch.clamp(u, min=0) + torch.expm1(torch.clamp(u, max=0))",
    "selu": "1.0507009873554805 * torch.where(u > 0, u, "
            "1.6732632423543772 * torch.expm1(torch.clamp(u, max=0)))",
    "softplus": _SOFTPLUS, "softsign": "u / (1 + torch.abs(u))",
    "exponential": "torch.exp(u)", "silu": "u * torch.sigmoid(u)",
    "gelu": "0.5 * u * (1 + torch.erf(u * 0.7071067811865476))",
    "mish": f"u * torch.tanh({_SOFTPLUS})",
    "hard_tanh": "torch.clamp(u, -1, 1)",
    "hard_shrink": "torch.where(torch.abs(u) > 0.5, u, 0 * u)",
    "soft_shrink": "torch.where(u > 0.5, u - 0.5, torch.where(u < -0.5, u + 0.5, 0 * u))",
    "tanh_shrink": "u - torch.tanh(u)",
    "log_sigmoid": "-torch.logaddexp(-u, torch.zeros_like(u))",
    "sparse_plus": "torch.where(u <= -1, 0 * u, torch.where(u < 1, 0.25 * (u + 1) ** 2, u))",
    "sparse_sigmoid": "torch.where(u <= -1, 0 * u, torch.where(u >= 1, 0 * u + 1, 0.5 * (u + 1)))",
    "squareplus": "(u + torch.sqrt(u * u + 4)) / 2",
    "exp": "torch.exp(u)", "abs": "torch.abs(u)", "sqrt": "torch.sqrt(u)", "log": "torch.log(u)",
}
# fmt: on

#: PyTorch's own backward kernels for ``d * f'(y)``, written in the output ``y``: one op where
#: the printed derivative takes three (tests check each against the SymPy derivative)
TORCH_VJP = {
    "tanh": "torch.ops.aten.tanh_backward(d, y)",
    "sigmoid": "torch.ops.aten.sigmoid_backward(d, y)",
    "relu": "torch.ops.aten.threshold_backward(d, y, 0)",
}
