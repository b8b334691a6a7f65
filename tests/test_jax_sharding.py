"""The generated JAX module scales along the batch: on 2 host CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=2``, which must be set before JAX is
imported, hence a subprocess), ``jax.jit(apply)`` and ``jax.jit(jax.grad(loss))`` of the fused
implementation with the batch axis of x, the mask, the initial states, the dropout masks and the
loss projections sharded by ``NamedSharding(mesh, P("batch"))`` (weights replicated) give the
single-device results, and the outputs really are split over both devices; ``jax.shard_map`` with
a ``psum`` of the per-device weight gradients gives them too (``check_vma=False``, the psum
written out), and so does ``shard_map``'s default, ``check_vma=True``, where JAX adds the psum and
the custom_vjp's cotangents must have the types of its inputs.

float64 (``jax_enable_x64`` in the subprocess): forward values to 1e-12 of the largest value,
gradients to 1e-10 relative to each tensor's largest entry (the sharded weight gradients are sums
of two partial sums, a different summation order, so not bitwise)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax")

from rnngen import verify  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FWD_TOL, GRAD_TOL = 1e-12, 1e-10

_SCRIPT = r"""
import importlib.util, json, sys
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

spec = importlib.util.spec_from_file_location("m", sys.argv[1])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
states = json.loads(sys.argv[2])
# Keras's per-gate masks where the module has them (one mask per gate of each rate)
dropout = dict(getattr(m, "DROPOUT", {"dropout": ("x", 1), "recurrent_dropout": ("h_prev", 1)}))
assert len(jax.devices()) == 2, jax.devices()
B, T, D, U = 4, 5, 3, 4
rng = np.random.default_rng(0)
params = {n: jnp.asarray(np.asarray(w) + 0.2 * rng.standard_normal(np.shape(w)))
          for n, w in m.init(jax.random.PRNGKey(0), D, U, dtype=jnp.float64).items()}
batch = {
    "x": rng.standard_normal((B, T, D)),
    "h0": [0.3 * rng.standard_normal((B, U)) for _ in states],
    "mask": rng.random((B, T)) > 0.3,
    "dm": {rate: [(rng.random((B, D if tensor == "x" else U)) >= 0.3) / 0.7
                  for _ in range(count)]
           for rate, (tensor, count) in dropout.items()},
    "proj": [rng.standard_normal((B, T, U))] + [rng.standard_normal((B, U)) for _ in states],
}
batch["dm"] = {k: (v[0] if len(v) == 1 else v) for k, v in batch["dm"].items()} or None

def loss(params, inputs, b):  # differentiated with respect to params and inputs (x, h0)
    seq, finals = forward(params, {**b, **inputs})
    out = jnp.sum(b["proj"][0] * seq)
    for q, f in zip(b["proj"][1:], finals):
        out = out + jnp.sum(q * f)
    return out

def forward(params, b):
    return m.apply(params, b["x"], b["h0"], b["mask"], dropout_masks=b["dm"],
                   go_backwards=True, implementation="fused")

def grad(params, b):
    inputs = {"x": b["x"], "h0": b["h0"]}
    return jax.grad(loss, argnums=(0, 1))(params, inputs, b)

one = jax.devices()[0]
single_b = jax.device_put(batch, one)
single_p = jax.device_put(params, one)
ref_fwd = jax.jit(forward)(single_p, single_b)
ref_grad = jax.jit(grad)(single_p, single_b)

mesh = Mesh(np.array(jax.devices()), ("batch",))
sharded_b = jax.device_put(batch, NamedSharding(mesh, P("batch")))
replicated_p = jax.device_put(params, NamedSharding(mesh, P()))
fwd = jax.jit(forward)(replicated_p, sharded_b)
grd = jax.jit(grad)(replicated_p, sharded_b)

def local_grad(p, b):  # per device: its half of the batch; weight gradients summed over both
    gp, gb = grad(p, b)
    return jax.lax.psum(gp, "batch"), gb

# check_vma=False: the classic data-parallel step, the weight gradients' psum written out (with
# varying-value checking on, JAX would insert that psum itself when transposing the broadcast
# of the replicated weights)
smap = jax.shard_map(local_grad, mesh=mesh, in_specs=(P(), P("batch")),
                     out_specs=(P(), P("batch")), check_vma=False)
sm_grad = jax.jit(smap)(replicated_p, sharded_b)
# with varying-value checking on (the default): no psum written, JAX's transpose adds it; the
# custom_vjp's cotangents must then have the types of its inputs
try:
    vma_grad = jax.jit(jax.shard_map(grad, mesh=mesh, in_specs=(P(), P("batch")),
                                     out_specs=(P(), P("batch"))))(replicated_p, sharded_b)
    vma_error = None
except Exception as err:
    vma_grad, vma_error = None, f"{type(err).__name__}: {err}"[:600]
sm_fwd = jax.jit(jax.shard_map(forward, mesh=mesh, in_specs=(P(), P("batch")),
                               out_specs=P("batch")))(replicated_p, sharded_b)

def flat(tree):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(tree)]

def err(ours, ref, kind):
    out = 0.0
    for a, b in zip(flat(ours), flat(ref), strict=True):
        assert a.shape == b.shape and a.dtype == np.float64, (a.shape, b.shape, a.dtype)
        scale = max(1.0, float(np.max(np.abs(b)))) if kind == "fwd" else float(np.max(np.abs(b)))
        out = max(out, float(np.max(np.abs(a - b))) / max(scale, 1e-30))
    return out

seq = fwd[0]
report = {
    "devices": [str(d) for d in jax.devices()],
    "jit_fwd": err(fwd, ref_fwd, "fwd"),
    "jit_grad": err(grd, ref_grad, "grad"),
    "shard_map_fwd": err(sm_fwd, ref_fwd, "fwd"),
    "shard_map_grad": err(sm_grad, ref_grad, "grad"),
    "shard_map_vma_error": vma_error,
    "shard_map_vma_grad": None if vma_error else err(vma_grad, ref_grad, "grad"),
    "seq_devices": len(seq.sharding.device_set),
    "seq_replicated": bool(seq.sharding.is_fully_replicated),
    "seq_shards": [list(s.data.shape) for s in seq.addressable_shards],
    "final_shards": [list(s.data.shape) for s in fwd[1][0].addressable_shards],
    "dx_shards": [list(s.data.shape) for s in grd[1]["x"].addressable_shards],
    "dkernel_replicated": bool(grd[0][next(iter(params))].sharding.is_fully_replicated),
    "n_weights": len(params),
}
print("REPORT" + json.dumps(report))
"""


_REPORTS: dict = {}


def _report(name: str, tmp_path_factory) -> dict:
    """The subprocess's report for the spec ``name`` (run once per spec)."""
    if name not in _REPORTS:
        folder = tmp_path_factory.mktemp(f"{name}_build")
        verify.build_into(ROOT / "spec" / f"{name}.yaml", folder)
        module = folder / f"{name}_jax.py"
        assert module.is_file(), f"rnngen build wrote no {module.name}"
        states = {"gru": ["h"], "lstm": ["h", "c"]}[name]
        env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
        env.pop("JAX_ENABLE_X64", None)
        proc = subprocess.run(
            [sys.executable, "-c", _SCRIPT, str(module), json.dumps(states)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT")]
        assert proc.returncode == 0 and lines, proc.stderr[-3000:]
        _REPORTS[name] = json.loads(lines[-1][len("REPORT") :])
    return _REPORTS[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_apply_shards_along_the_batch(name, tmp_path_factory):
    r = _report(name, tmp_path_factory)
    assert len(r["devices"]) == 2
    # the result really is split over the two devices, half the batch each
    assert r["seq_devices"] == 2 and not r["seq_replicated"], r
    assert r["seq_shards"] == [[2, 5, 4], [2, 5, 4]], r
    assert r["final_shards"] == [[2, 4], [2, 4]], r
    assert r["dx_shards"] == [[2, 5, 3], [2, 5, 3]], r
    assert r["dkernel_replicated"], r
    # ... and equals the single-device run: jit over the sharded arrays, and shard_map with the
    # weight gradients' psum written out
    assert r["jit_fwd"] <= FWD_TOL, r
    assert r["jit_grad"] <= GRAD_TOL, r
    assert r["shard_map_fwd"] <= FWD_TOL, r
    assert r["shard_map_grad"] <= GRAD_TOL, r


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_shard_map_default_checking(name, tmp_path_factory):
    """shard_map's default varying-axes checking (check_vma=True): JAX adds the weight
    gradients' psum, and the fused op's cotangents must have the types of its inputs."""
    r = _report(name, tmp_path_factory)
    assert r["shard_map_vma_error"] is None, r["shard_map_vma_error"]
    assert r["shard_map_vma_grad"] <= GRAD_TOL, r
