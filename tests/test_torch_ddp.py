"""The fused torch module under DistributedDataParallel: 2 CPU processes (gloo, localhost),
each on half of the batch, give the gradients of one process on the whole batch (float64,
``GRAD_RTOL`` relative to the largest entry; DDP averages the two ranks' gradients)."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

pytestmark = pytest.mark.slow

GRAD_RTOL = 1e-10
B, T, INPUT, UNITS, WORLD = 4, 6, 3, 5, 2


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, T, INPUT, generator=g, dtype=torch.float64)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 4:] = mask[2, 0] = False
    return x, mask


def _layer():
    from generated.gru_torch import GRU

    return GRU(INPUT, UNITS, return_sequences=True, dtype=torch.float64, seed=7)


def _loss(layer, x, mask):
    return (layer(x, mask=mask) ** 2).sum()


def _worker(rank, port, out):
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        model = torch.nn.parallel.DistributedDataParallel(_layer())
        x, mask = _data()
        shard = slice(rank * B // WORLD, (rank + 1) * B // WORLD)
        _loss(model, x[shard], mask[shard]).backward()
        if rank == 0:
            np.savez(out, *[p.grad.numpy() for p in model.module.parameters()])
        dist.barrier()  # both ranks done before either tears gloo down
    finally:
        dist.destroy_process_group()
    # done: skip the interpreter's teardown, where gloo's threads abort now and then
    # ("terminate called without an active exception", SIGABRT, about 1 run in 3 without this)
    os._exit(0)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gradients_equal_single_process(tmp_path):
    out = tmp_path / "grads.npz"
    torch.multiprocessing.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    got = np.load(out)
    layer = _layer()
    x, mask = _data()
    (_loss(layer, x, mask) / WORLD).backward()  # DDP averages the ranks' gradients
    for i, p in enumerate(layer.parameters()):
        expected = p.grad.numpy()
        err = np.max(np.abs(got[f"arr_{i}"] - expected)) / np.max(np.abs(expected))
        assert err <= GRAD_RTOL, f"weight {i}: DDP gradient off by {err:.3g} relative"
