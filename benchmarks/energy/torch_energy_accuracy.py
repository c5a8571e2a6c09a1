r"""TorchEnergy against OpenMM's Reference platform, term by term: the validation table of the docs.

Sets (alanine dipeptide, openmmtools ``AlanineDipeptideImplicit``, no constraints): held-out MD frames (test
replicas); the same + 0.004 nm and + 0.02 nm Gaussian noise; MD frames with one non-bonded pair pulled to 0.05 nm;
samples of a trained Boltzmann generator (``--ckpt``), which include its high-energy tail. For each set and term
(one force group per force) the largest error of the float64 energy relative to the sum of |terms| of that
conformation, the largest float64 force error (kJ mol⁻¹ nm⁻¹), and the largest float32 error (total energy,
relative to the sum of |terms|; with and without float64 bonded terms).

Run: ``python -m benchmarks.energy.torch_energy_accuracy --ckpt checkpoints/paper_p4inv.ckpt --out docs/benchmarks/torch_energy_accuracy``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import write_report

ROOT = Path(__file__).parents[2]
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, default=Path("checkpoints/paper_p4inv.ckpt"))
    parser.add_argument("--n", type=int, default=200, help="conformations per set")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/torch_energy_accuracy"))
    args = parser.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    from p4lightning.data.md_datamodule import load_positions
    from p4lightning.models.boltzmann import BoltzmannGenerator
    from p4lightning.systems.alanine import alanine_dipeptide
    from p4lightning.systems.torch_energy import TorchEnergy
    from p4lightning.testing import openmm_reference

    ala2 = alanine_dipeptide(600.0)
    rng = np.random.default_rng(0)
    files = [str(ROOT / f"data/ala2_600K_replicas/replica_{r:03d}.dcd") for r in range(36, 40)]
    md = load_positions(files, str(ROOT / "data/ala2_600K_replicas/topology.pdb"), 22).astype(np.float64)
    md = md[rng.choice(len(md), args.n, replace=False)]
    pulled = md.copy()
    for k, x in enumerate(pulled):
        i, j = (0, 15 + k % 7) if k % 2 else (5, 9 + k % 5)
        d = x[i] - x[j]
        x[i] = x[j] + 0.05 * d / np.linalg.norm(d)
    model = BoltzmannGenerator.load_from_checkpoint(args.ckpt, map_location="cpu", weights_only=False)
    with torch.no_grad():
        samples, _ = model.sample(args.n, torch.Generator().manual_seed(0))
    sets = {
        "MD (test replicas)": md,
        "MD + 0.004 nm noise": md + 0.004 * rng.standard_normal(md.shape),
        "MD + 0.02 nm noise": md + 0.02 * rng.standard_normal(md.shape),
        "one pair pulled to 0.05 nm": pulled,
        f"BG samples ({args.ckpt.name})": samples.double().reshape(-1, 22, 3).numpy(),
    }
    energy = TorchEnergy(ala2.system, 600.0)
    e32 = {b: TorchEnergy(ala2.system, 600.0, bonded_float64=b) for b in (False, True)}
    rows = []
    for name, xyz in sets.items():
        ref_terms, _, ref_forces = openmm_reference(ala2.system, xyz)
        abs_sum = sum(np.abs(v) for v in ref_terms.values())
        x = torch.tensor(xyz, requires_grad=True)
        terms = energy.terms_kj(x)
        total = sum(terms.values())
        (grad,) = torch.autograd.grad(total.sum(), x)
        row = {"set": name, "n": len(xyz), "max_energy_kT": float(total.max() / energy.kt)}
        for k, v in terms.items():
            row[k] = float((np.abs(v.detach().numpy() - ref_terms[k]) / abs_sum).max())
        row["total"] = float((np.abs(total.detach().numpy() - sum(ref_terms.values())) / abs_sum).max())
        f_scale = np.abs(ref_forces).max(axis=(1, 2))  # largest |force| of each conformation
        _, forces = energy.potential_and_forces(torch.tensor(xyz))  # the analytic gradient (shipped path)
        err = np.abs(forces.numpy() - ref_forces)
        row["force_abs"] = float(err.max())
        row["force_rel"] = float((err.max(axis=(1, 2)) / f_scale).max())
        row["force_abs (autograd)"] = float(np.abs(-grad.numpy() - ref_forces).max())
        for b, op in e32.items():
            t32, f32 = op.potential_and_forces(torch.tensor(xyz, dtype=torch.float32))
            tag = " (bonded float64)" if b else ""
            t32 = t32.double().numpy()
            row[f"float32{tag}"] = float((np.abs(t32 - sum(ref_terms.values())) / abs_sum).max())
            row[f"float32 forces{tag}"] = float(
                (np.abs(f32.double().numpy() - ref_forces).max(axis=(1, 2)) / f_scale).max()
            )
        rows.append(row)
    cols = [
        "bond", "angle", "torsion", "nonbonded", "gb", "total", "force_abs", "force_rel", "force_abs (autograd)",
        "float32", "float32 (bonded float64)", "float32 forces", "float32 forces (bonded float64)",
    ]  # fmt: skip
    lines = [
        "# TorchEnergy vs OpenMM Reference (float64), alanine dipeptide, no constraints",
        "",
        f"Command: `python -m benchmarks.energy.torch_energy_accuracy --ckpt {args.ckpt} --n {args.n}`  ",
        "Energy columns: the largest |E_torch − E_OpenMM| over the set, relative to the sum of |terms| of that "
        "conformation; `force_abs`: the largest force error (kJ mol⁻¹ nm⁻¹) of `potential_and_forces` (the analytic "
        "gradient), float64; `force_rel`: the same relative to the largest |force| of that conformation; "
        "`force_abs (autograd)`: autograd through the energy expressions instead; float32 columns: total energy, "
        "and forces relative to the largest |force|, in float32. Targets: float64 ≤ 1e-9 (energies), "
        "≤ 1e-8 kJ mol⁻¹ nm⁻¹ (forces); float32 ≤ 1e-5.",
        "",
        "| set | n | max u (k_BT) | " + " | ".join(cols) + " |",
        "|---|---|---|" + "---|" * len(cols),
    ]
    for r in rows:
        lines.append(f"| {r['set']} | {r['n']} | {r['max_energy_kT']:.3g} | " + " | ".join(f"{r[c]:.1e}" for c in cols) + " |")
    write_report(args.out, lines, rows)


if __name__ == "__main__":
    main()
