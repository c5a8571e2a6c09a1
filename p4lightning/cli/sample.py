"""``p4lightning sample``: draw samples from a Boltzmann-generator checkpoint and write them as one unit."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from p4lightning.cli.common import UsageError, load_bg, load_reference, positive, refuse_overwrite

__all__ = ["SAMPLE_DESCRIPTION", "sample_main"]

SAMPLE_DESCRIPTION = (
    "Draw samples from a Boltzmann-generator checkpoint and write them to --out as one unit: samples.dcd and "
    "topology.pdb (mdtraj-readable), samples.npz (energies_kT, log_q, log_weights), summary.json; with "
    "--trajectory/--topology of held-out MD also the evaluation figures. Nothing is created before the inputs "
    "are checked, and a failed run leaves --out as it was."
)


def sample_main(argv: list[str]) -> dict[str, object]:
    """``p4lightning sample``: draw samples from a checkpoint; write trajectory, arrays and (with MD) the evaluation."""
    parser = argparse.ArgumentParser(
        prog="p4lightning sample", description=SAMPLE_DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--ckpt", type=Path, required=True, help="BoltzmannGenerator checkpoint")
    parser.add_argument("--n", type=int, default=5000, help="number of samples")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--chunk", type=int, default=2048, help="samples per batch")
    parser.add_argument("--energy", choices=("torch", "openmm"), default=None, help="energy op (default: the model's)")
    parser.add_argument("--trajectory", nargs="*", default=None, help="held-out MD (files or globs) to evaluate against")
    parser.add_argument("--topology", default=None, help="topology (PDB) of the MD trajectories")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs in --out")
    args = parser.parse_args(argv)
    positive(args.n, "--n")
    positive(args.chunk, "--chunk")
    if args.trajectory and not args.topology:
        raise UsageError("--trajectory needs --topology")
    names = ["samples.dcd", "topology.pdb", "samples.npz", "summary.json"]
    if args.trajectory:
        names += ["energy_violins.png", "ramachandran.png"]
    refuse_overwrite(args.out, names, args.force)
    reference = load_reference(args.trajectory, args.topology, "--trajectory")
    import mdtraj

    from p4lightning._io import staged_folder
    from p4lightning.metrics.definitions import energy_statistics
    from p4lightning.metrics.draw import draw
    from p4lightning.metrics.evaluation import evaluate_model, write_json
    from p4lightning.systems.alanine import N_ATOMS, alanine_dipeptide

    model = load_bg(args.ckpt, args.energy)
    # one draw: written to samples.npz / samples.dcd and scored in summary.json
    samples = draw(model, args.n, torch.Generator().manual_seed(args.seed), args.chunk)
    x, log_q, u = samples.x.cpu(), samples.log_q.cpu(), samples.u.cpu()
    ala2 = alanine_dipeptide(model.hparams.temperature)
    traj = mdtraj.Trajectory(x.reshape(-1, N_ATOMS, 3).float().numpy(), ala2.mdtraj_topology())
    threshold = float(model.data_energy_max)
    summary: dict[str, object] = {"n": args.n, "samples": energy_statistics(u, threshold)}
    ev = (
        evaluate_model(model, reference, args.n, seed=args.seed, samples=samples)
        if reference is not None
        else None
    )
    all_names = [*names, "energy_violins.png", "ramachandran.png"]  # a rerun without MD removes the old figures
    with staged_folder(args.out, all_names) as stage:
        traj.save_dcd(str(stage / "samples.dcd"))
        ala2.write_pdb(stage / "topology.pdb")
        np.savez(
            stage / "samples.npz", energies_kT=u.numpy(), log_q=log_q.numpy(), log_weights=(-u - log_q).numpy(),
            low_energy_threshold_kT=threshold, temperature_K=model.hparams.temperature,
        )  # fmt: skip
        if ev is not None:
            from p4lightning.plots.molecules import plot_evaluations

            plot_evaluations({"BG samples": ev}, stage)
            summary = ev.metrics
        write_json(summary, stage / "summary.json")
    print(f"wrote {args.n} samples to {args.out / 'samples.dcd'} (+ topology.pdb, samples.npz, summary.json)")
    return summary


