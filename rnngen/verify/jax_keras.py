"""The reference of the jax backend's ``keras`` row (:mod:`rnngen.verify.jax_checks`): Keras's
own ``SimpleRNN``/``GRU``/``LSTM`` on the JAX backend, in a subprocess with ``KERAS_BACKEND=jax``
(Keras picks its backend at import, and the verifying process may hold Keras on TensorFlow).

One subprocess per spec runs every configuration: the layer is built in float32 with the given
weights (matched by Keras's variable names), dropout masks are injected by patching
``get_dropout_mask`` / ``get_recurrent_dropout_mask`` on its cell (as the TF reference does), and
``jax.value_and_grad`` differentiates ``sum_i <P_i, returned_i>`` through
``layer.stateless_call`` with respect to every trainable variable, the input and the initial
states. The script imports neither TensorFlow nor rnngen.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

TIMEOUT = 600

_KERAS_SCRIPT = r"""
import json, os, sys
os.environ["KERAS_BACKEND"] = "jax"
import numpy as np
import jax
import jax.numpy as jnp
import keras

job = json.loads(open(sys.argv[1]).read())
data = np.load(sys.argv[2])
out = {}
for i, case in enumerate(job["cases"]):
    k = f"{i}/"
    cls = getattr(keras.layers, job["class"])
    kw = dict(case["options"])
    if job["class"] in ("GRU", "LSTM"):
        kw["use_cudnn"] = False
    layer = cls(
        job["units"], return_sequences=True, return_state=True, dtype="float32",
        go_backwards=case["go_backwards"], zero_output_for_mask=case["zero_output_for_mask"],
        dropout=case["dropout"], recurrent_dropout=case["recurrent_dropout"], **kw,
    )
    x = jnp.asarray(data[k + "x"])
    layer.build(x.shape)
    by_name = {v.name: v for v in layer.weights}
    for name in case["weights"]:
        by_name[name].assign(data[k + "w/" + name])
    training = False
    if case["dropout_masks"]:
        training = True
        def getter(rate):
            n = case["dropout_masks"].get(rate)
            if n is None:
                return lambda step_input: None
            if n == -1:
                value = jnp.asarray(data[k + "dm/" + rate])
            else:
                value = [jnp.asarray(data[k + f"dm/{rate}/{j}"]) for j in range(n)]
            return lambda step_input: value
        layer.cell.get_dropout_mask = getter("dropout")
        layer.cell.get_recurrent_dropout_mask = getter("recurrent_dropout")
    mask = jnp.asarray(data[k + "mask"]) if case["mask"] else None
    h0 = [jnp.asarray(data[k + f"h0/{j}"]) for j in range(case["n_h0"])]
    proj = [jnp.asarray(data[k + f"proj/{j}"]) for j in range(case["n_proj"])]
    tv = [v.value for v in layer.trainable_variables]
    ntv = [v.value for v in layer.non_trainable_variables]
    names = [v.name for v in layer.trainable_variables]

    def loss(tv, x, h0):
        ret, _ = layer.stateless_call(
            tv, ntv, x, initial_state=h0 or None, mask=mask, training=training
        )
        total = sum(jnp.sum(p * r) for p, r in zip(proj, ret))
        return total, ret

    (_, ret), (dtv, dx, dh0) = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(
        tv, x, h0
    )
    res = {k + "ret/" + str(j): np.asarray(r) for j, r in enumerate(ret)}
    res[k + "d/x"] = np.asarray(dx)
    res.update({k + f"d/h0/{j}": np.asarray(g) for j, g in enumerate(dh0)})
    res.update({k + "d/w/" + n: np.asarray(g) for n, g in zip(names, dtv)})
    out.update(res)
np.savez(sys.argv[3], **out)
print("KERAS", keras.__version__, keras.backend.backend(), flush=True)
"""


def keras_reference(cs, ref_class, units, rates, cfgs, datas) -> dict:
    """Run Keras's ``ref_class`` on the JAX backend over ``cfgs`` (with their data ``datas``),
    in one subprocess; returns ``{cfg: {"values": ..., "grads": ...}}`` with the names
    :mod:`rnngen.verify.jax_checks` gives its own results."""
    cases, arrays = [], {}
    for i, cfg in enumerate(cfgs):
        d = datas[cfg]
        k = f"{i}/"
        arrays[k + "x"] = d["x"]
        for name, w in d["weights"].items():
            arrays[k + "w/" + name] = w
        for j, h in enumerate(d["h0"] or []):
            arrays[k + f"h0/{j}"] = h
        for j, p in enumerate(d["proj"]):
            arrays[k + f"proj/{j}"] = p
        if d["mask"] is not None:
            arrays[k + "mask"] = d["mask"]
        masks = {}
        for rate, m in (d["dmasks"] or {}).items():
            if isinstance(m, list):
                masks[rate] = len(m)
                for j, a in enumerate(m):
                    arrays[k + f"dm/{rate}/{j}"] = a
            else:
                masks[rate] = -1
                arrays[k + f"dm/{rate}"] = m
        cases.append(
            {
                "options": [list(kv) for kv in cfg.options],
                "weights": list(d["weights"]),
                "go_backwards": cfg.go_backwards,
                "zero_output_for_mask": cfg.zero_output_for_mask,
                "dropout": rates["dropout"] if "dropout" in masks else 0.0,
                "recurrent_dropout": (
                    rates["recurrent_dropout"] if "recurrent_dropout" in masks else 0.0
                ),
                "dropout_masks": masks,
                "mask": d["mask"] is not None,
                "n_h0": len(d["h0"] or []),
                "n_proj": len(d["proj"]),
            }
        )
    with tempfile.TemporaryDirectory(prefix="rnngen-verify-keras-jax-") as tmp:
        job, inp, res = (Path(tmp) / n for n in ("job.json", "in.npz", "out.npz"))
        job.write_text(json.dumps({"class": ref_class, "units": units, "cases": cases}))
        np.savez(inp, **arrays)
        env = {**os.environ, "KERAS_BACKEND": "jax"}
        env.pop("JAX_ENABLE_X64", None)
        env["TF_CPP_MIN_LOG_LEVEL"] = "3"
        proc = subprocess.run(
            [sys.executable, "-c", _KERAS_SCRIPT, str(job), str(inp), str(res)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
            timeout=TIMEOUT,
        )
        if proc.returncode != 0 or not res.is_file():
            lines = proc.stderr.strip().splitlines() or ["?"]
            errors = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception)\b", ln)]
            tail = (errors or lines)[-1]
            raise RuntimeError(f"Keras on the JAX backend failed: {tail}"[:300])
        if "KERAS" not in proc.stdout or " jax" not in proc.stdout:
            raise RuntimeError(f"the Keras subprocess did not run on JAX: {proc.stdout[-200:]}")
        got = dict(np.load(res))
    out = {}
    for i, cfg in enumerate(cfgs):
        k, d = f"{i}/", datas[cfg]
        values = {"output": got[k + "ret/0"]}
        values |= {f"final {s}": got[k + f"ret/{j + 1}"] for j, s in enumerate(cs.states)}
        grads = {"x": got[k + "d/x"]}
        grads |= {
            f"initial {s}": got[k + f"d/h0/{j}"]
            for j, s in enumerate(cs.states)
            if d["h0"] is not None
        }
        grads |= {n: got[k + "d/w/" + n] for n in d["weights"]}
        out[cfg] = {"values": values, "grads": grads}
    return out
