r"""Which samples carry a Boltzmann generator's importance weight, and where they are.

Draws ``--n`` samples exactly as ``p4lightning evaluate`` does (same seed, same order: the held-out MD's noise
draw first, then the samples in chunks of 2,048), and prints the ``--top`` largest log-weights
:math:`\ln w = -u - \ln q` relative to the median, with each sample's energy, :math:`\ln q`, (φ, ψ), whether it has
MD's labeling (:mod:`p4lightning.systems.observables`) and its three most unusual flow coordinates (distance from
the samples' median in their standard deviations), plus the share of the total weight (on MD's labeling) of the
samples in the φ ≈ 0…1.5 rad transition region. Writes the same as JSON with ``--out``.

Run: ``python -m p4lightning.experiments.weight_outliers --ckpt checkpoints/spline_p4inv.ckpt --n 100000``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from p4lightning._io import atomic_path

__all__ = ["main", "outliers"]

REPLICAS = "data/ala2_600K_replicas"
TRANSITION = (0.0, 1.5)  # rad: φ between the β/αR basins (φ < 0) and αL (φ ≈ 1)


@torch.no_grad()
def outliers(model: Any, md_x: torch.Tensor, n: int, top: int = 10, seed: int = 0, chunk: int = 2048) -> dict[str, Any]:
    """The ``top`` largest log-weights of ``n`` samples of ``model`` and where they are (see the module docstring)."""
    from p4lightning.metrics.definitions import reverse_ess
    from p4lightning.systems.observables import phi_psi, same_labeling

    g = torch.Generator().manual_seed(seed)
    torch.randn(md_x.shape, generator=g, dtype=md_x.dtype)  # evaluate_model's noise draw comes first
    ys, xs, lqs = [], [], []
    for start in range(0, n, chunk):
        x, log_q, y = model.sample_with_coordinates(min(chunk, n - start), g)
        xs.append(x)
        ys.append(y)
        lqs.append(log_q.double())
    x, y, log_q = torch.cat(xs), torch.cat(ys), torch.cat(lqs)
    u = model.energies(x.double()).double()
    log_w = -u - log_q
    labeled = same_labeling(x.reshape(-1, 22, 3).double(), md_x.reshape(-1, 22, 3).double())
    lw = torch.where(labeled, log_w, -torch.inf)
    finite = torch.isfinite(lw)
    median = lw[finite].median()
    phi, psi = phi_psi(x.reshape(-1, 22, 3).double())
    w = torch.softmax(torch.nan_to_num(lw, nan=-torch.inf), 0)
    in_transition = (phi > TRANSITION[0]) & (phi < TRANSITION[1])
    spread = y.std(0)
    centre = y.median(0).values
    rows = []
    for i in torch.argsort(torch.nan_to_num(lw, nan=-torch.inf), descending=True)[:top].tolist():
        d = ((y[i] - centre).abs() / spread).double()
        unusual = torch.argsort(d, descending=True)[:3].tolist()
        rows.append({"log_w_minus_median": float(lw[i] - median), "weight_share": float(w[i]), "u_kT": float(u[i]),
                     "log_q": float(log_q[i]), "phi": float(phi[i]), "psi": float(psi[i]),
                     "unusual_coordinates": {str(j): float(d[j]) for j in unusual}})  # fmt: skip
    return {
        "n": n,
        "reverse_ess_labeled": reverse_ess(lw),
        "transition_region_rad": list(TRANSITION),
        "transition_sample_fraction": float(in_transition.double().mean()),
        "transition_weight_share": float(w[in_transition].sum()),
        "top": rows,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from p4lightning.cli.common import load_bg, load_reference

    parser = argparse.ArgumentParser(prog="python -m p4lightning.experiments.weight_outliers", description=__doc__)
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    if args.n < 1 or args.top < 1:
        parser.error("--n and --top must be >= 1")
    md = load_reference([f"{REPLICAS}/replica_03[6-9].dcd"], f"{REPLICAS}/topology.pdb", "--trajectory")
    if md is None:  # pragma: no cover - the shipped replicas are always given
        parser.error("no held-out MD frames")
    result = outliers(load_bg(args.ckpt), md, args.n, args.top, args.seed)
    print(f"reverse ESS (MD's labeling) {result['reverse_ess_labeled']:.4f} on {args.n} samples; "
          f"phi in {TRANSITION}: {result['transition_sample_fraction']:.4f} of the samples, "
          f"{result['transition_weight_share']:.3f} of the weight")  # fmt: skip
    for r in result["top"]:
        coords = ", ".join(f"{k}: {v:.1f} sd" for k, v in r["unusual_coordinates"].items())
        print(f"ln w - median {r['log_w_minus_median']:6.2f}  share {r['weight_share']:.3f}  u {r['u_kT']:7.2f}  "
              f"phi {r['phi']:5.2f} psi {r['psi']:5.2f}  most unusual flow coordinates {coords}")  # fmt: skip
    if args.out is not None:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
