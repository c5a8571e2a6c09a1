"""``p4lightning evaluate``: score checkpoints or a ``sample`` folder against held-out MD."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from p4lightning.cli.common import (
    UsageError,
    load_bg,
    load_reference,
    load_reference_replicas,
    positive,
    refuse_overwrite,
)
from p4lightning.metrics.table import format_table

__all__ = ["EVALUATE_DESCRIPTION", "evaluate_main"]

EVALUATE_DESCRIPTION = (
    "Score checkpoints (or a folder written by 'p4lightning sample') against held-out MD: one table for all "
    "models (metrics.json, table.md) and one set of figures (energy violins: MD, MD + noise, each model; "
    "Ramachandran histograms), each metric with its floor from --floor-trajectory (an independent MD set). "
    "The outputs are written to --out as one unit."
)




def evaluate_main(argv: list[str]) -> dict[str, dict[str, object]]:
    """``p4lightning evaluate``: score checkpoints (or a ``sample`` folder) against held-out MD → JSON + figures.

    One table for all models (``metrics.json``), one set of figures (energy violins: MD, MD + noise, each model;
    Ramachandran histograms), each metric with its floor from ``--floor-trajectory`` (an independent MD set).
    """
    parser = argparse.ArgumentParser(
        prog="p4lightning evaluate", description=EVALUATE_DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--ckpt", type=Path, nargs="*", default=[], help="BoltzmannGenerator checkpoint(s)")
    parser.add_argument("--name", nargs="*", default=None, help="a label per checkpoint (default: file stems)")
    parser.add_argument("--samples", type=Path, default=None, help="a folder written by 'p4lightning sample'")
    parser.add_argument("--trajectory", nargs="+", required=True, help="held-out MD (files or globs)")
    parser.add_argument("--floor-trajectory", nargs="*", default=None, help="independent MD for the floors")
    parser.add_argument("--topology", required=True, help="topology (PDB) of the MD trajectories")
    parser.add_argument("--n", type=int, default=10_000, help="samples per model")
    parser.add_argument("--noise-nm", type=float, default=0.004, help="Gaussian noise (nm) of the noisy-MD set")
    parser.add_argument("--energy", choices=("torch", "openmm"), default=None, help="energy op (default: the model's)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples and of the noise")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs in --out")
    args = parser.parse_args(argv)
    positive(args.n, "--n")
    if not args.ckpt and args.samples is None:
        raise UsageError("give --ckpt (one or more) or --samples")
    if not args.noise_nm >= 0:
        raise UsageError(f"--noise-nm must be >= 0; got {args.noise_nm}")
    names = args.name or [p.stem for p in args.ckpt]
    if len(names) != len(args.ckpt):
        raise UsageError(f"--name needs one label per --ckpt; got {len(names)} for {len(args.ckpt)}")
    for p in args.ckpt:
        if not p.is_file():
            raise UsageError(f"checkpoint not found: {p}")
    outputs = ["metrics.json", "table.md", "energy_violins.png", "ramachandran.png"]
    refuse_overwrite(args.out, outputs, args.force)
    reference, replica = load_reference_replicas(args.trajectory, args.topology, "--trajectory")  # type: ignore[misc]
    floor = load_reference(args.floor_trajectory, args.topology, "--floor-trajectory")
    from p4lightning._io import staged_folder
    from p4lightning.metrics.evaluation import evaluate_model, write_json
    from p4lightning.plots.molecules import plot_evaluations

    sample_folder = _check_sample_folder(args.samples) if args.samples is not None else None
    evaluations = {}
    for name, path in zip(names, args.ckpt, strict=True):
        model = load_bg(path, args.energy)
        evaluations[name] = evaluate_model(
            model, reference, args.n, args.noise_nm, args.seed, floor_x=floor, md_replica=replica
        )
    if args.samples is not None:
        evaluations[args.samples.name] = _evaluate_sample_folder(args, sample_folder, reference, floor, replica)
    command = "p4lightning evaluate " + " ".join(shlex.quote(a) for a in argv)
    table = {name: {**ev.metrics, "source": str(src), "command": command}
             for (name, ev), src in zip(evaluations.items(), [*args.ckpt, args.samples], strict=False)}  # fmt: skip
    text = format_table(table)
    with staged_folder(args.out, outputs) as stage:
        plot_evaluations(evaluations, stage, args.noise_nm)
        write_json(table, stage / "metrics.json")
        (stage / "table.md").write_text(f"Command: `{command}`\n\n{text}\n")
    print(text)
    print(f"wrote metrics.json, table.md, energy_violins.png, ramachandran.png to {args.out}")
    return table


def _evaluate_sample_folder(
    args: argparse.Namespace, sample_folder: Any, reference: torch.Tensor, floor: torch.Tensor | None,
    replica: torch.Tensor | None = None,
) -> Any:
    """Score a ``sample`` folder (positions, energies and log q as written) with a TorchEnergy for the MD sets."""
    from p4lightning.metrics.evaluation import Evaluation, score
    from p4lightning.systems.alanine import alanine_dipeptide
    from p4lightning.systems.protocol import energies, make_energy

    arrays, x = sample_folder
    temperature = float(arrays["temperature_K"])
    energy = make_energy("torch", alanine_dipeptide(temperature).system, temperature)

    def u(pos: torch.Tensor) -> torch.Tensor:
        return energies(energy, pos.double(), 4096)

    g = torch.Generator().manual_seed(args.seed)
    noisy = reference + args.noise_nm * torch.randn(reference.shape, generator=g)
    ev = Evaluation(
        samples_x=x, samples_u=torch.from_numpy(arrays["energies_kT"]).double(),
        samples_log_q=torch.from_numpy(arrays["log_q"]).double(), md_x=reference, md_u=u(reference),
        md_log_q=None, noisy_u=u(noisy), threshold=float(arrays["low_energy_threshold_kT"]), md_replica=replica,
    )  # fmt: skip
    if floor is not None:
        from p4lightning.metrics.evaluation import floor_subset

        ev.floor_x = floor_subset(floor, len(ev.samples_u), g)
        ev.floor_u = u(ev.floor_x)
    score(ev, temperature, args.noise_nm)
    return ev


def _check_sample_folder(folder: Path) -> tuple[Any, torch.Tensor]:
    """The arrays and positions ``(n, 66)`` nm of a ``sample`` folder, refused (one line) if a file is missing or
    unreadable, or if its trajectory and arrays disagree in length (files of two runs)."""
    for name in ("samples.npz", "samples.dcd", "topology.pdb"):
        if not (folder / name).is_file():
            raise UsageError(f"--samples {folder} has no {name} (write it with 'p4lightning sample')")
    try:
        arrays = dict(np.load(folder / "samples.npz"))
    except Exception as err:  # numpy/zip errors of truncated or garbage files
        raise UsageError(f"--samples {folder}/samples.npz is not readable: {err}".split("\n")[0]) from err
    missing = [k for k in ("energies_kT", "log_q", "temperature_K", "low_energy_threshold_kT") if k not in arrays]
    if missing:
        raise UsageError(f"--samples {folder}/samples.npz lacks {', '.join(missing)} (not written by 'p4lightning sample')")
    x = cast(torch.Tensor, load_reference([str(folder / "samples.dcd")], str(folder / "topology.pdb"), "--samples"))
    lengths = {len(x), len(arrays["energies_kT"]), len(arrays["log_q"])}
    if len(lengths) != 1:
        raise UsageError(
            f"--samples {folder}: samples.dcd has {len(x)} frames but samples.npz {len(arrays['energies_kT'])} "
            "energies: the files are of different runs"
        )
    return arrays, x


