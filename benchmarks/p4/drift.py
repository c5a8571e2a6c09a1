r"""Accuracy drift of P⁴Inv's tracked inverse and log-determinant over many merges.

10⁴ merges at n = 256. Each merge is the rank-one step a gradient step would produce,
:math:`\mathbf{u} = -\eta(\mathbf{A} - \mathbf{T})\mathbf{v}/\|\mathbf{v}\|^2` with :math:`\mathbf{v} \sim
\mathcal{N}(0, \mathbf{I})`, driving :math:`\mathbf{A}` from :math:`\mathbf{I}` towards a target
:math:`\mathbf{T}` with condition number 400 (symmetric positive definite, eigenvalues log-spaced in
[1/20, 20], so the path from :math:`\mathbf{I}` stays invertible). Three
bookkeeping modes: float32, float32 with one hyperpower correction every 50 merges (the paper's
N_correct), float64. Errors are measured in float64 against the exact inverse and ``slogdet`` of the
tracked :math:`\mathbf{A}`.

Run: ``python -m benchmarks.p4.drift --out docs/benchmarks/drift.json``
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from p4lightning import P4Inv


def target_matrix(n: int, condition: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    s = torch.logspace(-0.5, 0.5, n, dtype=torch.float64) ** torch.log10(torch.tensor(condition))
    return (u * s) @ u.T  # symmetric positive definite: the path from I stays invertible


def errors(layer: P4Inv) -> dict[str, float]:
    a = layer.matrix.double()
    a_inv = layer.inverse_matrix.double()
    residual = a @ a_inv - torch.eye(a.shape[0], dtype=torch.float64)
    sign, logabsdet = torch.linalg.slogdet(a)
    return {
        "inverse_residual_max": float(residual.abs().max()),
        "inverse_residual_spectral": float(torch.linalg.matrix_norm(residual, ord=2)),
        "log_det_error": float(abs(layer.log_abs_det.double() - logabsdet)),
        "sign_ok": bool(float(layer.det_sign) == float(sign)),
        "condition_number": float(torch.linalg.cond(a)),
    }


def run(mode: str, n: int, merges: int, eta: float, seed: int, record_every: int) -> dict[str, object]:
    torch.manual_seed(seed)
    bookkeeping = torch.float64 if mode == "float64" else None
    layer = P4Inv(
        n, bias=False, dtype=torch.float32, bookkeeping_dtype=bookkeeping, log_det_bounds=(-1e3, 1e3)
    )
    target = target_matrix(n, 400.0, seed)
    g = torch.Generator().manual_seed(seed)
    curve = []
    refused = 0
    start = time.perf_counter()
    k = 0
    while k < merges:
        with torch.no_grad():
            v = layer.v.double()
            u = -eta * (layer.matrix.double() - target) @ v / (v @ v)
            layer.u.copy_(u)
        if not layer.merge(generator=g).accepted:  # ill-conditioned (ln|G| < -6): skip, as in training
            refused += 1
            layer.reset_perturbation(g)
            continue
        k += 1
        if mode == "float32+correction" and k % 50 == 0:
            layer.correct_inverse()
        if k % record_every == 0:
            curve.append({"merge": k, **errors(layer)})
    seconds = time.perf_counter() - start
    return {"mode": mode, "seconds": seconds, "refused": refused, "final": errors(layer), "curve": curve}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--merges", type=int, default=10_000)
    parser.add_argument("--eta", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/drift.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = [
        run(mode, args.n, args.merges, args.eta, args.seed, record_every=max(1, args.merges // 20))
        for mode in ("float32", "float32+correction", "float64")
    ]
    for r in results:
        f = r["final"]
        print(
            f"{r['mode']:20s} max|AA^-1-I| {f['inverse_residual_max']:.2e}  ||AA^-1-I||_2 "
            f"{f['inverse_residual_spectral']:.2e}  |logdet err| {f['log_det_error']:.2e}  "
            f"cond(A) {f['condition_number']:.0f}  sign ok {f['sign_ok']}  refused {r['refused']}  ({r['seconds']:.1f} s)"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": "python -m benchmarks.p4.drift "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if k != "out"),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
