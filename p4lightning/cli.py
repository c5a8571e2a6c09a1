r"""The ``p4lightning`` command.

* ``p4lightning fit|validate|test --config configs/...yaml [--section.key value ...]`` — LightningCLI: every
  ``__init__`` argument of the model, datamodule, trainer and callbacks is an option, ``--help`` is generated
  from their type hints and docstrings, ``--print_config`` shows the resolved config.
* ``p4lightning sample --ckpt RUN.ckpt --n 5000 --out samples/`` — load a Boltzmann-generator checkpoint, draw
  samples with their reduced energies and log importance weights, write them as an mdtraj-readable DCD
  trajectory (+ PDB topology) and ``samples.npz``; with ``--trajectory/--topology`` of reference MD data
  also the energy-violin and Ramachandran figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LightningCLI

__all__ = ["main", "sample_main"]


def _quiet() -> None:
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*enablePackrat.*")


def _ensure_single_openmp_thread() -> None:
    """Re-execute this process with ``OMP_NUM_THREADS=1`` unless the caller chose a thread count.

    torch's OpenMP threads and the OpenMM workers share the cores. Measured (``docs/benchmarks/bg_step.md``): one
    torch thread is as fast as the default two for the Boltzmann generator's small operations and cannot spin
    against busy workers, while ``OMP_WAIT_POLICY=PASSIVE`` made every step 2× slower (thread wake-ups). OpenMP
    reads the variable when torch loads, which has already happened here, so this needs a fresh process.
    """
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
        os.execv(sys.executable, [sys.executable, "-m", "p4lightning.cli", *sys.argv[1:]])


def sample_main(argv: list[str]) -> dict[str, object]:
    """``p4lightning sample``: draw samples from a checkpoint; write trajectory, arrays and figures."""
    parser = argparse.ArgumentParser(prog="p4lightning sample", description=sample_main.__doc__)
    parser.add_argument("--ckpt", type=Path, required=True, help="BoltzmannGenerator checkpoint")
    parser.add_argument("--n", type=int, default=5000, help="number of samples")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--chunk", type=int, default=1000, help="samples per energy batch")
    parser.add_argument("--workers", type=int, default=None, help="OpenMM worker processes")
    parser.add_argument("--platform", default="CPU", help="OpenMM platform")
    parser.add_argument(
        "--trajectory", nargs="*", default=None, help="reference MD trajectory for the figures"
    )
    parser.add_argument("--topology", default=None, help="topology (PDB) of the reference trajectory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.ckpt.is_file():
        parser.error(f"checkpoint not found: {args.ckpt}")
    if args.n < 1:
        parser.error(f"--n must be >= 1; got {args.n}")
    import mdtraj
    from tqdm.auto import tqdm

    from p4lightning._io import atomic_path
    from p4lightning.models.boltzmann import BoltzmannGenerator
    from p4lightning.systems.alanine import N_ATOMS, alanine_dipeptide
    from p4lightning.systems.energy import OpenMMEnergy

    model = BoltzmannGenerator.load_from_checkpoint(args.ckpt, map_location="cpu")
    model.eval()
    torch.manual_seed(args.seed)
    ala2 = alanine_dipeptide(model.hparams.temperature)
    xs, us, lqs = [], [], []
    with (
        OpenMMEnergy(ala2.system, model.hparams.temperature, args.workers, args.platform) as energy,
        torch.no_grad(),
    ):
        model.energy = energy
        for start in tqdm(range(0, args.n, args.chunk), desc="sampling", unit="batch"):
            out = model.evaluate_samples(min(args.chunk, args.n - start))
            xs.append(out["x"])
            us.append(out["u"])
            lqs.append(out["log_q"])
        model.energy = None
    x, u, log_q = torch.cat(xs), torch.cat(us).double(), torch.cat(lqs).double()
    args.out.mkdir(parents=True, exist_ok=True)
    traj = mdtraj.Trajectory(x.reshape(-1, N_ATOMS, 3).float().numpy(), ala2.mdtraj_topology())
    with atomic_path(args.out / "samples.dcd") as tmp:
        traj.save_dcd(str(tmp))
    ala2.write_pdb(args.out / "topology.pdb")
    with atomic_path(args.out / "samples.npz") as tmp:
        np.savez(tmp, energies_kT=u.numpy(), log_q=log_q.numpy(), log_weights=(-u - log_q).numpy())
    from p4lightning.metrics.sampling import EnergyStatistics

    stats = EnergyStatistics(float(model.data_energy_max), sync_on_compute=False)
    stats.update(u)
    energy = stats.compute()
    summary: dict[str, object] = {
        "n": args.n,
        "energy_mean_kT": float(energy["mean"]),
        "low_energy_fraction": float(energy["low_energy_fraction"]),
        "low_energy_threshold_kT": float(model.data_energy_max),
    }
    if args.trajectory:
        if not args.topology:
            parser.error("--trajectory needs --topology")
        from p4lightning.data.md_datamodule import load_positions
        from p4lightning.plots.molecules import plot_energy_violins, plot_ramachandran
        from p4lightning.systems.observables import phi_psi

        ref = torch.from_numpy(load_positions(args.trajectory, args.topology, N_ATOMS))
        with OpenMMEnergy(ala2.system, model.hparams.temperature, args.workers, args.platform) as energy:
            u_ref = energy(ref.double()).numpy()
        plot_energy_violins(
            {"MD data": u_ref, "BG samples": u.numpy()},
            float(model.data_energy_max),
            args.out / "energy_violins.png",
        )
        phi_r, psi_r = phi_psi(ref)
        phi_s, psi_s = phi_psi(x)
        plot_ramachandran(
            {"MD data": (phi_r.numpy(), psi_r.numpy()), "BG samples": (phi_s.numpy(), psi_s.numpy())},
            args.out / "ramachandran.png",
        )
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(
        f"wrote {args.n} samples to {args.out / 'samples.dcd'} (+ topology.pdb, samples.npz, summary.json): {summary}"
    )
    return summary


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``p4lightning`` console script (``argv=None``) or of an in-process call (tests)."""
    if argv is None:  # the console script: one OpenMP thread first; explicit calls are left as they are
        _ensure_single_openmp_thread()
    args = sys.argv[1:] if argv is None else argv
    _quiet()
    if args and args[0] == "sample":
        sample_main(args[1:])
        return
    LightningCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=argv,  # None: LightningCLI reads sys.argv itself
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    main()
