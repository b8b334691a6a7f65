"""What the eigenvalues say: the spectrum of the recurrent kernel at initialisation.

For each recurrent weight (split into its gates when fused, ``recurrent_kernel_z`` ...) the
eigenvalues, the spectral radius and the singular values, next to the per-step growth factor
measured by :mod:`.gradients`. For a linear cell ``h_t = W h_{t-1}`` the norm of
``∂h_T/∂h_t`` grows or decays like ``ρ(W)^(T-t)`` asymptotically; the nonlinearity and the
gates multiply that by their derivatives, so the measured factor is lower.
"""

from __future__ import annotations

import numpy as np

from .cells import DEFAULT, Cell, Variant, gate_matrices


def spectrum(matrix: np.ndarray) -> dict:
    """Eigenvalues (of the square part), spectral radius, singular values (descending)."""
    m = np.asarray(matrix, dtype=np.float64)
    square = m[:, : m.shape[0]] if m.shape[1] >= m.shape[0] else m[: m.shape[1]]
    eig = np.linalg.eigvals(square)
    sv = np.linalg.svd(m, compute_uv=False)
    return {
        "eigenvalues": eig,
        "spectral_radius": float(np.max(np.abs(eig))) if eig.size else 0.0,
        "singular_values": sv,
        "max_singular_value": float(sv[0]) if sv.size else 0.0,
    }


def cell_spectra(cell: Cell, variant: Variant = DEFAULT, *, units, input_dim, seeds) -> dict:
    """Per gate: the spectrum for seed 0 and, over seeds, the median spectral radius and
    largest singular value."""
    out = {}
    for seed in range(seeds):
        layer = cell.layer(units, variant, seed=seed, input_dim=input_dim)
        for gate, m in gate_matrices(cell, layer).items():
            s = spectrum(m)
            entry = out.setdefault(gate, {"radius": [], "max_sv": []})
            entry["radius"].append(s["spectral_radius"])
            entry["max_sv"].append(s["max_singular_value"])
            if seed == 0:
                entry["eigenvalues"] = s["eigenvalues"]
                entry["singular_values"] = s["singular_values"]
    for entry in out.values():
        entry["spectral_radius"] = float(np.median(entry.pop("radius")))
        entry["max_singular_value"] = float(np.median(entry.pop("max_sv")))
    return out


def spectra_table(cell: Cell, flow: dict, *, units, input_dim, seeds) -> list[dict]:
    """One row per analyzed variant: each gate's spectral radius and largest singular value,
    and the measured growth factors of part 1."""
    rows = []
    for label, result in flow.items():
        spectra = cell_spectra(
            cell, result["variant"], units=units, input_dim=input_dim, seeds=seeds
        )
        rows.append(
            {
                "variant": label,
                "gates": {
                    g: {
                        "spectral_radius": s["spectral_radius"],
                        "max_singular_value": s["max_singular_value"],
                    }
                    for g, s in spectra.items()
                },
                "measured_rate_jacobian": result["jacobian"]["rate"],
                "measured_rate_loss": result["loss"]["rate"],
            }
        )
    return rows
