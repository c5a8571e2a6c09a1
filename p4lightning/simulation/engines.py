r"""The two MD engines, both OpenMM's LangevinMiddle scheme on alanine dipeptide, and what they share.

``openmm``: one trajectory per OpenMM context (``Threads=1`` on the CPU platform): :func:`_openmm_frames` (one
run, used by :func:`~p4lightning.simulation.simulate`) and :func:`_openmm_replica` (a worker's replica).
``torch``: :func:`_torch_replicas` integrates a batch of replicas in one process with
:class:`~p4lightning.systems.torch_energy.TorchEnergy` (the same energy as OpenMM to ~1e-14, compiled) and
:class:`~p4lightning.simulation.langevin.BatchedLangevin`.

Frames are written as DCD: it stores float32 coordinates; XTC would round to 0.001 nm, and 0.004 nm of noise
already raises the mean energy by 13 k_BT (Krämer et al. 2020, Fig. 6). Positions are in nm, times in ps.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from p4lightning._io import atomic_path, c_stdout_silenced
from p4lightning.simulation.config import MDConfig
from p4lightning.simulation.layout import ReplicaSpec, _start_topology
from p4lightning.systems.alanine import alanine_dipeptide

__all__: list[str] = []


def _start_positions(spec: ReplicaSpec, default: np.ndarray) -> np.ndarray:
    """The start of replica ``spec`` (nm, float64): frame ``start_frame`` of its starts file, else ``default``."""
    if spec.start_file is None:
        return default
    import mdtraj

    with c_stdout_silenced():  # the DCD plugin's C-level chatter
        frame = mdtraj.load_frame(spec.start_file, spec.start_frame, top=_start_topology(spec.start_file))
    return frame.xyz[0].astype(np.float64)


def _minimised(ala2: object, xyz: np.ndarray) -> np.ndarray:
    """Positions after OpenMM's local energy minimisation (Reference platform, float64)."""
    import openmm
    from openmm import unit

    context = openmm.Context(
        ala2.system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(xyz)
    openmm.LocalEnergyMinimizer.minimize(context)
    return context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)


def _pin(core: int | None) -> None:
    """Pin this process to the ``core``-th usable core (modulo their number); ``None``: leave it."""
    if core is not None and hasattr(os, "sched_setaffinity"):
        usable = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {usable[core % len(usable)]})


def _save(xyz: np.ndarray, top: object, path: Path, dt_ps: float) -> None:
    """Write frames ``xyz`` (nm), ``dt_ps`` apart, as a DCD at ``path``, atomically."""
    import mdtraj

    traj = mdtraj.Trajectory(xyz, top, time=np.arange(len(xyz)) * dt_ps)
    with atomic_path(path) as tmp:
        traj.save_dcd(str(tmp))


def _openmm_replica(
    spec: ReplicaSpec, config: MDConfig, core: int | None, progress: Callable[[int], None]
) -> float:
    """Worker: one replica with OpenMM (``Threads=1``), ``progress(1)`` after each frame; returns its wall time (s)."""

    _pin(core)
    ala2 = alanine_dipeptide(config.temperature)
    start = _minimised(ala2, _start_positions(spec, ala2.positions))
    xyz, seconds = _openmm_frames(
        ala2, start, spec.seed, config, minimise_in_context=False, tick=lambda: progress(1)
    )
    _save(xyz, ala2.mdtraj_topology(), Path(spec.trajectory), config.frame_interval_ps)
    return seconds


def _openmm_frames(
    ala2: object,
    positions: np.ndarray,
    seed: int,
    config: MDConfig,
    minimise_in_context: bool,
    tick: Callable[[], None],
) -> tuple[np.ndarray, float]:
    """LangevinMiddle MD with OpenMM from ``positions`` (nm): velocities at ``config.temperature`` from ``seed``,
    ``equilibration_steps`` discarded, then ``frames`` frames ``(frames, N, 3)`` float32 nm every ``save_every``
    steps (``tick()`` after each). Returns the frames and the wall time (s) after set-up."""
    import openmm
    from openmm import unit

    integrator = openmm.LangevinMiddleIntegrator(
        config.temperature * unit.kelvin,
        config.friction_per_ps / unit.picosecond,
        config.timestep_fs * unit.femtosecond,
    )
    integrator.setRandomNumberSeed(seed)
    plat = openmm.Platform.getPlatformByName(config.platform)
    context = openmm.Context(
        ala2.system, integrator, plat, {"Threads": "1"} if config.platform == "CPU" else {}
    )
    context.setPositions(positions)
    if minimise_in_context:
        openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(config.temperature * unit.kelvin, seed)
    start = time.perf_counter()
    integrator.step(config.equilibration_steps)
    xyz = np.empty((config.frames, positions.shape[0], 3), dtype=np.float32)
    for f in range(config.frames):
        integrator.step(config.save_every)
        xyz[f] = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        tick()
    return xyz, time.perf_counter() - start


def _torch_replicas(
    specs: list[ReplicaSpec], config: MDConfig, core: int | None, progress: Callable[[int], None]
) -> float:
    """Worker: a batch of replicas integrated together in torch (float64, compiled energy), ``progress(len(specs))``
    after each frame; returns wall time (s)."""
    import torch

    from p4lightning.simulation.langevin import BatchedLangevin
    from p4lightning.systems.torch_energy import TorchEnergy

    _pin(core)
    torch.set_num_threads(1)
    ala2 = alanine_dipeptide(config.temperature)
    energy = TorchEnergy(ala2.system, config.temperature)

    def force(x: torch.Tensor) -> torch.Tensor:
        return energy.potential_and_forces(x)[1]

    force_fn = torch.compile(force) if config.compile else force
    masses = torch.tensor(
        [ala2.system.getParticleMass(i)._value for i in range(ala2.system.getNumParticles())]
    )
    md = BatchedLangevin(
        force_fn,
        masses,
        config.temperature,
        config.timestep_fs * 1e-3,
        config.friction_per_ps,
        [s.seed for s in specs],
    )
    starts = np.stack([_minimised(ala2, _start_positions(s, ala2.positions)) for s in specs])
    md.set_state(torch.from_numpy(starts))
    start = time.perf_counter()
    md.step(config.equilibration_steps)
    xyz = np.empty((len(specs), config.frames, ala2.positions.shape[0], 3), dtype=np.float32)
    for f in range(config.frames):
        md.step(config.save_every)
        if not bool(torch.isfinite(md.x).all()):
            raise FloatingPointError(
                f"replicas {[s.index for s in specs]}: non-finite positions at frame {f}"
            )
        xyz[:, f] = md.x.numpy()
        progress(len(specs))
    top = ala2.mdtraj_topology()
    for s, traj in zip(specs, xyz, strict=True):
        _save(traj, top, Path(s.trajectory), config.frame_interval_ps)
    return time.perf_counter() - start
