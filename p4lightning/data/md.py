r"""Langevin MD of alanine dipeptide with OpenMM, written losslessly (float32 DCD) and atomically.

Why unconstrained, 1 fs: with ``HBonds`` constraints every X–H bond length in the data is a constant, so
their density is degenerate (a delta) and a flow cannot fit it; the energy model has no constraints either.
Why DCD: it stores float32 coordinates; XTC would round to 0.001 nm, and 0.004 nm of noise already raises
the mean energy by 13 k_BT (Krämer et al. 2020, Fig. 6).

Run (the shipped ``data/`` trajectory was made by the command in ``data/README.md``)::

    python -m p4lightning.data.md --out data/ala2_600K.dcd --frames 2000 --save-every 500 --seed 1
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p4lightning._io import atomic_path
from p4lightning._validation import check_choice, check_positive_int
from p4lightning.systems.alanine import alanine_dipeptide

__all__ = ["MDResult", "main", "simulate"]


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
    platform: str = "CPU",
    topology: str | Path | None = None,
    progress: bool = True,
) -> MDResult:
    """Run Langevin MD and write ``frames`` frames (every ``save_every`` steps) to ``out`` (``.dcd``).

    Args:
        out: trajectory path; the format is DCD (float32, lossless for our purposes). Written atomically.
        frames: number of saved frames.
        save_every: MD steps between saved frames.
        temperature: K (the paper's data: 600 K, to visit all metastable states).
        timestep_fs: integration step in fs (1 fs: no constraints).
        friction_per_ps: Langevin friction in 1/ps.
        equilibration_steps: steps run (and discarded) before the first saved frame.
        seed: Langevin integrator seed (and velocity seed).
        platform: OpenMM platform name.
        topology: where to write the PDB topology (default: ``out`` with suffix ``.pdb``).
        progress: show a progress bar.
    """
    import mdtraj
    import openmm
    from openmm import unit

    out = Path(out)
    if out.suffix.lower() != ".dcd":
        raise ValueError(f"out must be a .dcd path (float32, lossless); got {out}")
    check_positive_int(frames, "frames")
    check_positive_int(save_every, "save_every")
    check_positive_int(equilibration_steps, "equilibration_steps", minimum=0)
    check_choice(platform, ("CPU", "CUDA", "OpenCL", "Reference"), "platform")
    if not timestep_fs > 0 or not friction_per_ps > 0:
        raise ValueError(f"timestep_fs and friction_per_ps must be > 0; got {timestep_fs}, {friction_per_ps}")
    ala2 = alanine_dipeptide(temperature)
    integrator = openmm.LangevinMiddleIntegrator(
        temperature * unit.kelvin, friction_per_ps / unit.picosecond, timestep_fs * unit.femtosecond
    )
    integrator.setRandomNumberSeed(seed)
    plat = openmm.Platform.getPlatformByName(platform)
    props = {"Threads": "1"} if platform == "CPU" else {}
    context = openmm.Context(ala2.system, integrator, plat, props)
    context.setPositions(ala2.positions)
    openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(temperature * unit.kelvin, seed)
    start = time.perf_counter()
    integrator.step(equilibration_steps)
    xyz = np.empty((frames, ala2.positions.shape[0], 3), dtype=np.float32)
    bar = _progress(frames, "MD frames", progress)
    for f in range(frames):
        integrator.step(save_every)
        state = context.getState(getPositions=True)
        xyz[f] = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - start
    top = ala2.mdtraj_topology()
    traj = mdtraj.Trajectory(xyz, top, time=np.arange(frames) * save_every * timestep_fs * 1e-3)  # ps
    with atomic_path(out) as tmp:
        traj.save_dcd(str(tmp))
    topology = Path(topology) if topology is not None else out.with_suffix(".pdb")
    ala2.write_pdb(topology)
    return MDResult(out, topology, frames, seconds)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool) -> object:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="frame")


def main(argv: list[str] | None = None) -> MDResult:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="trajectory path (.dcd)")
    parser.add_argument("--topology", type=Path, default=None, help="PDB path (default: OUT with .pdb)")
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--save-every", type=int, default=500, help="MD steps between frames")
    parser.add_argument("--temperature", type=float, default=600.0, help="K")
    parser.add_argument("--timestep-fs", type=float, default=1.0)
    parser.add_argument("--friction", type=float, default=1.0, help="1/ps")
    parser.add_argument("--equilibration-steps", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--platform", default="CPU")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    result = simulate(
        args.out,
        args.frames,
        args.save_every,
        args.temperature,
        args.timestep_fs,
        args.friction,
        args.equilibration_steps,
        args.seed,
        args.platform,
        args.topology,
        not args.no_progress,
    )
    print(
        f"wrote {result.frames} frames to {result.trajectory} and topology {result.topology} in {result.seconds:.1f} s"
    )
    return result


if __name__ == "__main__":
    main()
