"""Single-trajectory MD: :func:`simulate` runs one Langevin trajectory of alanine dipeptide with OpenMM and writes
it as a float32 DCD (atomically) with its PDB topology."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p4lightning._io import atomic_path, check_output_dir
from p4lightning.simulation.config import MDConfig, Platform
from p4lightning.simulation.engines import _openmm_frames
from p4lightning.simulation.progress import _progress
from p4lightning.systems.alanine import alanine_dipeptide

__all__ = ["MDResult", "simulate"]


@dataclass(frozen=True)
class MDResult:
    """Where the trajectory went and what it took."""

    trajectory: Path
    topology: Path
    frames: int
    seconds: float


def simulate(
    out: str | Path,
    frames: int = 2000,
    save_every: int = 500,
    temperature: float = 600.0,
    timestep_fs: float = 1.0,
    friction_per_ps: float = 1.0,
    equilibration_steps: int = 10_000,
    seed: int = 0,
    platform: Platform = "CPU",
    topology: str | Path | None = None,
    progress: bool = True,
) -> MDResult:
    """Run Langevin MD and write ``frames`` frames (every ``save_every`` steps) to ``out`` (``.dcd``).

    Args:
        out: trajectory path; the format is DCD (float32, lossless for our purposes). Written atomically.
        frames: number of saved frames.
        save_every: MD steps between saved frames.
        temperature: K (the paper's data: 600 K, to visit all metastable states).
        timestep_fs: integration step in fs, at most :data:`MAX_TIMESTEP_FS` (1 fs: no constraints).
        friction_per_ps: Langevin friction in 1/ps.
        equilibration_steps: steps run (and discarded) before the first saved frame.
        seed: Langevin integrator seed (and velocity seed).
        platform: OpenMM platform name.
        topology: where to write the PDB topology (default: ``out`` with suffix ``.pdb``).
        progress: show a progress bar.

    Raises:
        ValueError: a bad argument, an OpenMM platform not usable here, ``timestep_fs`` above
            :data:`MAX_TIMESTEP_FS`, or a folder of ``out`` or ``topology`` that cannot be written; all checked
            before any MD.
    """
    import mdtraj

    out, topology, config = _check_simulate(
        out, topology, frames, save_every, temperature, timestep_fs, friction_per_ps, equilibration_steps, platform
    )  # fmt: skip
    ala2 = alanine_dipeptide(config.temperature)
    bar = _progress(frames, "MD frames", progress)
    xyz, seconds = _openmm_frames(
        ala2, ala2.positions, seed, config, minimise_in_context=True, tick=lambda: bar.update(1)
    )
    bar.close()
    top = ala2.mdtraj_topology()
    traj = mdtraj.Trajectory(xyz, top, time=np.arange(frames) * save_every * timestep_fs * 1e-3)  # ps
    with atomic_path(out) as tmp:
        traj.save_dcd(str(tmp))
    ala2.write_pdb(topology)
    return MDResult(out, topology, frames, seconds)


def _check_simulate(
    out: str | Path, topology: str | Path | None, frames: int, save_every: int, temperature: float,
    timestep_fs: float, friction_per_ps: float, equilibration_steps: int, platform: str,
) -> tuple[Path, Path, MDConfig]:  # fmt: skip
    """:func:`simulate`'s checks, made before any work and before the command looks for existing outputs; the
    trajectory and topology paths and the settings."""
    out = Path(out)
    if out.suffix.lower() != ".dcd":
        raise ValueError(f"out must be a .dcd path (float32, lossless); got {out}")
    topology = Path(topology) if topology is not None else out.with_suffix(".pdb")
    config = MDConfig(
        frames, save_every, temperature, timestep_fs, friction_per_ps, equilibration_steps, platform
    ).check()
    for path, what in ((out, "trajectory"), (topology, "topology")):
        if path.is_dir():
            raise ValueError(f"{what} path {path} is a folder")
        check_output_dir(path.parent, f"{what} folder")
    return out, topology, config
