r"""Langevin MD of alanine dipeptide with OpenMM, written losslessly (float32 DCD) and atomically.

Why unconstrained, 1 fs: with ``HBonds`` constraints every X–H bond length in the data is a constant, so
their density is degenerate (a delta) and a flow cannot fit it; the energy model has no constraints either.
Why DCD: it stores float32 coordinates; XTC would round to 0.001 nm, and 0.004 nm of noise already raises
the mean energy by 13 k_BT (Krämer et al. 2020, Fig. 6).

Independent replicas (``--replicas R``, ``--out`` a folder): each replica has its own seed and its own start
(a frame of ``--starts``, a trajectory, taken at equal spacing so the starts spread over the basins in
proportion to their weights), is minimised, equilibrated and then sampled; one float32 DCD per replica,
``topology.pdb`` and ``replicas.json`` (every replica's seed, start, φ > 0 fraction; the command; the wall time).
Two engines: ``openmm`` runs each replica in its own process (one per core, pinned, ``Threads=1``);
``torch`` integrates all replicas of a process as one batch with :class:`~p4lightning.systems.torch_energy.TorchEnergy`
(the same energy as OpenMM to ~1e-14, compiled) and :class:`~p4lightning.systems.langevin.BatchedLangevin`
(OpenMM's LangevinMiddle scheme). The shipped data were made by the command in ``data/README.md``.

Every input (platform, time step, starts file, output folder) is checked before the output folder is created or
any MD runs, and a refused input is one line (``p4lightning-md: error: ...``, exit status 2). A worker process
that dies (killed, out of memory) or fails costs only its replicas: the others run to the end and are kept, and
:class:`ReplicaError` names the replicas not written (exit status 1). The workers end with the command, even
when it is killed (Note [workers die with the parent]).

Run::

    p4lightning-md --out data/ala2_600K.dcd --frames 2000 --save-every 500 --seed 1
    p4lightning-md --out data/replicas --replicas 32 --frames 2500 --save-every 500 --starts data/ala2_600K.dcd
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import shlex
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from p4lightning._io import atomic_path, c_stdout_silenced, check_output_dir
from p4lightning._validation import InputFileError, check_choice, check_nonnegative_int, check_positive_int
from p4lightning.systems.alanine import alanine_dipeptide, check_topology

__all__ = [
    "MAX_TIMESTEP_FS",
    "MDResult",
    "ReplicaError",
    "ReplicaSpec",
    "main",
    "simulate",
    "simulate_replicas",
]

PLATFORMS = ("CPU", "CUDA", "OpenCL", "Reference")

# Note [time step without constraints]
# LangevinMiddle is velocity Verlet with a friction-and-noise step in the middle; on a harmonic mode of angular
# frequency ω = sqrt(k/μ) it is stable only for Δt < 2/ω. Without constraints the stiffest mode of this system
# is the N–H bond stretch (Amber ff96: ω ≈ 621 ps⁻¹, period 10.1 fs), so Δt < 3.2 fs; at 600 K, 3.5 fs and 4 fs
# give NaN coordinates within 1,000 steps. 3 fs is the largest step accepted; the data use 1 fs.

#: The largest integration step accepted, fs (Note [time step without constraints]).
MAX_TIMESTEP_FS = 3.0


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

    out, topology = _check_simulate(
        out, topology, frames, save_every, temperature, timestep_fs, friction_per_ps, equilibration_steps, platform
    )  # fmt: skip
    ala2 = alanine_dipeptide(temperature)
    cfg = {"temperature": float(temperature), "friction_per_ps": float(friction_per_ps), "timestep_fs": float(timestep_fs),
           "platform": platform, "equilibration_steps": equilibration_steps, "frames": frames, "save_every": save_every}  # fmt: skip
    bar = _progress(frames, "MD frames", progress)
    xyz, seconds = _openmm_frames(
        ala2, ala2.positions, seed, cfg, minimise_in_context=True, tick=lambda: bar.update(1)
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
) -> tuple[Path, Path]:  # fmt: skip
    """:func:`simulate`'s checks, made before any work and before ``main`` looks for existing outputs; the
    trajectory and topology paths."""
    out = Path(out)
    if out.suffix.lower() != ".dcd":
        raise ValueError(f"out must be a .dcd path (float32, lossless); got {out}")
    topology = Path(topology) if topology is not None else out.with_suffix(".pdb")
    _check_md_settings(
        frames, save_every, temperature, timestep_fs, friction_per_ps, equilibration_steps, platform
    )
    for path, what in ((out, "trajectory"), (topology, "topology")):
        if path.is_dir():
            raise ValueError(f"{what} path {path} is a folder")
        check_output_dir(path.parent, f"{what} folder")
    return out, topology


def _check_md_settings(
    frames: int, save_every: int, temperature: float, timestep_fs: float, friction_per_ps: float,
    equilibration_steps: int, platform: str,
) -> None:  # fmt: skip
    """The MD settings shared by :func:`simulate` and :func:`simulate_replicas`, checked without running MD."""
    check_positive_int(frames, "frames")
    check_positive_int(save_every, "save_every")
    check_nonnegative_int(equilibration_steps, "equilibration_steps")
    for value, name, unit in (
        (temperature, "temperature", "K"),
        (friction_per_ps, "friction_per_ps", "1/ps"),
    ):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0 ({unit}); got {value}")
    if not timestep_fs > 0:
        raise ValueError(f"timestep_fs must be > 0 (fs); got {timestep_fs}")
    if timestep_fs > MAX_TIMESTEP_FS:
        raise ValueError(
            f"timestep_fs must be at most {MAX_TIMESTEP_FS:g} fs: without constraints the N–H stretch (period 10 fs) "
            f"makes the integrator unstable above 2/ω = 3.2 fs (NaN coordinates); got {timestep_fs}"
        )
    _check_platform(platform)


def _check_platform(platform: str) -> None:
    """Require OpenMM's platform ``platform`` to exist here and to open a context (a one-particle system: a
    registered CUDA or OpenCL platform without a usable device fails there)."""
    import openmm

    check_choice(platform, PLATFORMS, "platform")
    try:
        system = openmm.System()
        system.addParticle(1.0)
        openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName(platform))
    except Exception as err:  # openmm.OpenMMException; its text may span lines
        usable = ", ".join(
            openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())
        )
        reason = " ".join(str(err).split())
        raise ValueError(
            f"OpenMM platform {platform} is not usable here ({reason}); this OpenMM has: {usable}"
        ) from None


@dataclass(frozen=True)
class ReplicaSpec:
    """One replica: its index, seed, output file and start (``start_frame`` of ``start_file``, or the PDB)."""

    index: int
    seed: int
    trajectory: str
    start_file: str | None
    start_frame: int | None


REPLICA_NAME = "replica_{:03d}.dcd"
METADATA_NAME = "replicas.json"
TOPOLOGY_NAME = "topology.pdb"


def replica_seeds(seed: int, n: int) -> list[int]:
    """``n`` distinct 31-bit seeds derived from ``seed`` (``numpy.random.SeedSequence(seed).spawn(n)``)."""
    seeds = [int(s.generate_state(1)[0] & 0x7FFFFFFF) for s in np.random.SeedSequence(seed).spawn(n)]
    if len(set(seeds)) != n:  # astronomically unlikely; never silently reuse a noise stream
        raise RuntimeError(f"seed {seed} gave repeated replica seeds")
    return seeds


def _start_positions(spec: ReplicaSpec, default: np.ndarray) -> np.ndarray:
    if spec.start_file is None:
        return default
    import mdtraj

    with c_stdout_silenced():  # the DCD plugin's C-level chatter
        frame = mdtraj.load_frame(spec.start_file, spec.start_frame, top=_start_topology(spec.start_file))
    return frame.xyz[0].astype(np.float64)


def _start_topology(start_file: str) -> str:
    path = Path(start_file)
    for candidate in (path.with_suffix(".pdb"), path.parent / "ala2.pdb", path.parent / TOPOLOGY_NAME):
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"no topology next to the starts file {start_file} (looked for {path.with_suffix('.pdb').name}, "
        f"ala2.pdb, {TOPOLOGY_NAME})"
    )


def _check_starts(starts: Path) -> int:
    """Require ``starts`` to be a trajectory of this system that mdtraj reads with the PDB beside it, every
    coordinate finite; its number of frames."""
    import mdtraj

    if not starts.is_file():
        raise FileNotFoundError(f"starts file not found: {starts}")
    if starts.suffix.lower() == ".dcd":  # refused here, before mdtraj's DCD reader prints its complaints
        with open(starts, "rb") as f:
            if b"CORD" not in f.read(12)[4:]:
                raise InputFileError(f"starts file {starts} is not a DCD file (no DCD header)")
    top = _start_topology(str(starts))
    try:
        check_topology(top, where=f"the starts topology {top}")
        with c_stdout_silenced():  # the DCD plugin's C-level chatter
            traj = mdtraj.load(str(starts), top=top)
    except InputFileError:
        raise
    except Exception as err:  # mdtraj raises OSError, ValueError, struct.error ... on garbage
        reason = " ".join(str(err).split()) or type(err).__name__
        raise InputFileError(
            f"starts file {starts} is not a trajectory readable with {top}: {reason}"
        ) from None
    if traj.n_frames == 0:
        raise InputFileError(f"starts file {starts} has no frames")
    if not np.isfinite(traj.xyz).all():
        raise InputFileError(f"starts file {starts} has NaN or infinite coordinates")
    return traj.n_frames


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
    if core is not None and hasattr(os, "sched_setaffinity"):
        usable = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {usable[core % len(usable)]})


def _save(xyz: np.ndarray, top: object, path: Path, dt_ps: float) -> None:
    import mdtraj

    traj = mdtraj.Trajectory(xyz, top, time=np.arange(len(xyz)) * dt_ps)
    with atomic_path(path) as tmp:
        traj.save_dcd(str(tmp))


def _openmm_replica(spec: ReplicaSpec, cfg: dict, core: int | None, progress: Callable[[int], None]) -> float:
    """Worker: one replica with OpenMM (``Threads=1``), ``progress(1)`` after each frame; returns its wall time (s)."""

    _pin(core)
    ala2 = alanine_dipeptide(cfg["temperature"])
    start = _minimised(ala2, _start_positions(spec, ala2.positions))
    xyz, seconds = _openmm_frames(
        ala2, start, spec.seed, cfg, minimise_in_context=False, tick=lambda: progress(1)
    )
    _save(xyz, ala2.mdtraj_topology(), Path(spec.trajectory), cfg["save_every"] * cfg["timestep_fs"] * 1e-3)
    return seconds


def _openmm_frames(
    ala2: object,
    positions: np.ndarray,
    seed: int,
    cfg: dict,
    minimise_in_context: bool,
    tick: Callable[[], None],
) -> tuple[np.ndarray, float]:
    """LangevinMiddle MD with OpenMM from ``positions`` (nm): velocities at ``cfg["temperature"]`` from ``seed``,
    ``equilibration_steps`` discarded, then ``frames`` frames ``(frames, N, 3)`` float32 nm every ``save_every``
    steps (``tick()`` after each). Returns the frames and the wall time (s) after set-up."""
    import openmm
    from openmm import unit

    integrator = openmm.LangevinMiddleIntegrator(
        cfg["temperature"] * unit.kelvin,
        cfg["friction_per_ps"] / unit.picosecond,
        cfg["timestep_fs"] * unit.femtosecond,
    )
    integrator.setRandomNumberSeed(seed)
    plat = openmm.Platform.getPlatformByName(cfg["platform"])
    context = openmm.Context(
        ala2.system, integrator, plat, {"Threads": "1"} if cfg["platform"] == "CPU" else {}
    )
    context.setPositions(positions)
    if minimise_in_context:
        openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(cfg["temperature"] * unit.kelvin, seed)
    start = time.perf_counter()
    integrator.step(cfg["equilibration_steps"])
    xyz = np.empty((cfg["frames"], positions.shape[0], 3), dtype=np.float32)
    for f in range(cfg["frames"]):
        integrator.step(cfg["save_every"])
        xyz[f] = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        tick()
    return xyz, time.perf_counter() - start


def _torch_replicas(
    specs: list[ReplicaSpec], cfg: dict, core: int | None, progress: Callable[[int], None]
) -> float:
    """Worker: a batch of replicas integrated together in torch (float64, compiled energy), ``progress(len(specs))``
    after each frame; returns wall time (s)."""
    import torch

    from p4lightning.systems.langevin import BatchedLangevin
    from p4lightning.systems.torch_energy import TorchEnergy

    _pin(core)
    torch.set_num_threads(1)
    ala2 = alanine_dipeptide(cfg["temperature"])
    energy = TorchEnergy(ala2.system, cfg["temperature"])

    def force(x: torch.Tensor) -> torch.Tensor:
        return energy.potential_and_forces(x)[1]

    force_fn = torch.compile(force) if cfg["compile"] else force
    masses = torch.tensor(
        [ala2.system.getParticleMass(i)._value for i in range(ala2.system.getNumParticles())]
    )
    md = BatchedLangevin(
        force_fn,
        masses,
        cfg["temperature"],
        cfg["timestep_fs"] * 1e-3,
        cfg["friction_per_ps"],
        [s.seed for s in specs],
    )
    starts = np.stack([_minimised(ala2, _start_positions(s, ala2.positions)) for s in specs])
    md.set_state(torch.from_numpy(starts))
    start = time.perf_counter()
    md.step(cfg["equilibration_steps"])
    xyz = np.empty((len(specs), cfg["frames"], ala2.positions.shape[0], 3), dtype=np.float32)
    for f in range(cfg["frames"]):
        md.step(cfg["save_every"])
        if not bool(torch.isfinite(md.x).all()):
            raise FloatingPointError(
                f"replicas {[s.index for s in specs]}: non-finite positions at frame {f}"
            )
        xyz[:, f] = md.x.numpy()
        progress(len(specs))
    top = ala2.mdtraj_topology()
    for s, traj in zip(specs, xyz, strict=True):
        _save(traj, top, Path(s.trajectory), cfg["save_every"] * cfg["timestep_fs"] * 1e-3)
    return time.perf_counter() - start


def _replica_outputs(out: Path, n: int) -> list[Path]:
    return [out / REPLICA_NAME.format(r) for r in range(n)] + [out / TOPOLOGY_NAME, out / METADATA_NAME]


def simulate_replicas(
    out: str | Path,
    replicas: int,
    frames: int,
    save_every: int = 500,
    temperature: float = 600.0,
    timestep_fs: float = 1.0,
    friction_per_ps: float = 1.0,
    equilibration_steps: int = 20_000,
    seed: int = 0,
    starts: str | Path | None = None,
    engine: str = "openmm",
    workers: int | None = None,
    platform: str = "CPU",
    compile: bool = True,
    force: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> dict:
    """Run ``replicas`` independent MD replicas in parallel processes; write one DCD each into folder ``out``.

    Args:
        out: output folder (created); holds ``replica_000.dcd`` ..., ``topology.pdb`` and ``replicas.json``.
        replicas: number of replicas (each with its own seed and start).
        frames: frames saved per replica, one every ``save_every`` steps.
        starts: a trajectory (DCD with a PDB of the same stem, or ``ala2.pdb``, beside it) whose frames at
            equal spacing start the replicas; ``None``: every replica starts from the reference structure.
        engine: ``"openmm"`` (a process per replica, ``workers`` at a time) or ``"torch"`` (the replicas split
            into ``workers`` batches, each integrated in one process).
        workers: processes, each pinned to one core (default: the usable cores).
        compile: torch engine only: ``torch.compile`` the energy and forces.
        force: overwrite existing outputs (removed once every input is checked, before the MD starts).
        command: the command line recorded in ``replicas.json``.

    Returns:
        the metadata written to ``replicas.json``.

    Raises:
        ValueError: a bad argument, an OpenMM platform not usable here, ``timestep_fs`` above
            :data:`MAX_TIMESTEP_FS`, an output folder that cannot be written, or (:class:`InputFileError`) a
            starts file that is not a trajectory of this system.
        FileNotFoundError: ``starts`` or the topology beside it does not exist.
        FileExistsError: an output exists and ``force`` is false (naming the files).
        ReplicaError: a worker died or failed; the replicas written are kept, the error names the others.

    The errors before :class:`ReplicaError` are raised before ``out`` is created or any MD runs.
    """
    out = Path(out)
    check_positive_int(replicas, "replicas")
    check_choice(engine, ("openmm", "torch"), "engine")
    _check_md_settings(
        frames, save_every, temperature, timestep_fs, friction_per_ps, equilibration_steps, platform
    )
    if out.suffix.lower() == ".dcd" or out.is_file():
        raise ValueError(f"with replicas, out must be a folder; got {out}")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = check_positive_int(workers if workers is not None else usable, "workers")
    n_start_frames = None if starts is None else _check_starts(Path(starts))
    check_output_dir(out)
    existing = [p for p in _replica_outputs(out, replicas) if p.exists()]
    if existing and not force:
        names = ", ".join(p.name for p in existing[:6]) + (" ..." if len(existing) > 6 else "")
        raise FileExistsError(
            f"{out} already holds {len(existing)} of the outputs ({names}); pass --force to overwrite"
        )
    seeds = replica_seeds(seed, replicas)
    specs = [
        ReplicaSpec(
            r,
            seeds[r],
            str(out / REPLICA_NAME.format(r)),
            None if starts is None else str(starts),
            None if starts is None else int(round(r * (n_start_frames - 1) / max(replicas - 1, 1))),
        )
        for r in range(replicas)
    ]
    cfg = {
        "frames": frames, "save_every": save_every, "temperature": float(temperature), "timestep_fs": float(timestep_fs),
        "friction_per_ps": float(friction_per_ps), "equilibration_steps": equilibration_steps,
        "platform": platform, "compile": bool(compile),
    }  # fmt: skip
    if engine == "openmm":
        jobs = [_Job([s.index], _openmm_replica, (s, cfg)) for s in specs]
    else:
        groups = [specs[w::workers] for w in range(workers) if specs[w::workers]]
        jobs = [_Job([s.index for s in g], _torch_replicas, (g, cfg)) for g in groups]
    out.mkdir(parents=True, exist_ok=True)
    for path in existing:  # --force: no file of an earlier run left under the name of a replica lost now
        path.unlink()
    bar = _progress(replicas * frames, f"MD frames ({replicas} replicas, {engine})", progress)
    t0 = time.perf_counter()
    try:
        _run_jobs(jobs, workers, bar.update)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    ala2 = alanine_dipeptide(temperature)
    failed = [job for job in jobs if job.failure is not None]
    if failed:
        written = [s.index for s in specs if all(s.index not in job.replicas for job in failed)]
        if written:  # the kept replicas can be read
            ala2.write_pdb(out / TOPOLOGY_NAME)
        raise _replica_error(out, failed, written)
    ala2.write_pdb(out / TOPOLOGY_NAME)
    meta = _metadata(specs, cfg, engine, workers, seed, starts, seconds, command, out)
    with atomic_path(out / METADATA_NAME) as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    return meta


@dataclass
class _Job:
    """Work for one worker process: ``target(*args, core, progress)`` writes the files of ``replicas``."""

    replicas: list[int]
    target: Callable[..., float]
    args: tuple
    failure: str | None = field(default=None)  # why its replicas were not written


class ReplicaError(RuntimeError):
    """Replicas not written because their worker process died (killed, out of memory) or failed; the other
    replicas ran to the end and their files (and ``topology.pdb``) are kept. ``failed`` and ``written`` hold the
    replica indices."""

    def __init__(self, message: str, failed: list[int], written: list[int]) -> None:
        super().__init__(message, failed, written)  # all of them in args: the error pickles
        self.failed = failed
        self.written = written

    def __str__(self) -> str:
        return self.args[0]


def _replica_error(out: Path, jobs: list[_Job], written: list[int], shown: int = 3) -> ReplicaError:
    """The error for the failed ``jobs``, naming their replicas and why (the first ``shown`` jobs) and the kept."""
    failed = sorted(r for job in jobs for r in job.replicas)
    why = "; ".join(f"{_names(job.replicas)} ({job.failure})" for job in jobs[:shown])
    rest = sorted(r for job in jobs[shown:] for r in job.replicas)
    why += f"; also {_names(rest)}" if rest else ""
    kept = f"kept in {out}: {_names(written)}, {TOPOLOGY_NAME}" if written else "none kept"
    message = (
        f"{len(failed)} of {len(failed) + len(written)} replicas not written: {why}; {kept}; "
        "rerun with --force to redo them all"
    )
    return ReplicaError(message, failed, written)


def _names(replicas: list[int], shown: int = 6) -> str:
    names = [REPLICA_NAME.format(r) for r in replicas]
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _run_jobs(jobs: list[_Job], workers: int, progress: Callable[[int], None]) -> None:
    """Run each job in its own spawned process, ``workers`` at a time, each pinned to a free core slot; set
    ``job.failure`` for a job whose process raised or died without reporting success.

    A process per job, watched through its sentinel and a pipe, rather than a ``multiprocessing.Pool``: a pool
    waits forever for the result of a worker killed by a signal, and its surviving workers keep taking tasks. Here
    the other jobs run on, and a ``KeyboardInterrupt`` or error in this process kills the running workers.
    """
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")
    pending = list(jobs)
    running: dict[int, tuple[_Job, object, object]] = {}  # core slot -> (job, process, reader)
    final: dict[int, str] = {}  # core slot -> the final report of its worker: "done" or its error
    try:
        while pending or running:
            for core in range(workers):
                if core not in running and pending:
                    job = pending.pop(0)
                    reader, writer = ctx.Pipe(duplex=False)
                    process = ctx.Process(
                        target=_worker_main,
                        args=(writer, os.getpid(), job.target, (*job.args, core)),
                        daemon=True,
                    )
                    process.start()
                    writer.close()  # this process keeps only the reading end: EOF when the worker ends
                    running[core] = (job, process, reader)
            wait(
                [r for _, _, r in running.values()] + [p.sentinel for _, p, _ in running.values()],
                timeout=1.0,
            )
            for core, (job, process, reader) in list(running.items()):
                # whether it ended, asked before reading: all it sent before ending is then in the pipe
                ended = process.exitcode is not None
                report = _read_reports(reader, progress)
                if report is not None:
                    final[core] = report
                if ended:
                    process.join()
                    reader.close()
                    del running[core]
                    report = final.pop(core, None)
                    if report != "done":
                        job.failure = report or _death(process)
    finally:
        for _, process, _ in running.values():
            process.kill()
            process.join()


def _read_reports(reader: object, progress: Callable[[int], None]) -> str | None:
    """Apply the progress a worker reported so far; its final report (``"done"`` or its error), if sent."""
    final = None
    try:
        while reader.poll():
            kind, value = reader.recv()
            if kind == "frames":
                progress(value)
            else:
                final = value
    except (EOFError, OSError):  # the worker ended (its last reports were read above)
        pass
    return final


def _death(process: object) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        return f"its worker, pid {process.pid}, was killed by {signal.Signals(-code).name}"
    return f"its worker, pid {process.pid}, exited with status {code} without finishing"


def _worker_main(writer: object, parent: int, target: Callable[..., float], args: tuple) -> None:
    """A worker process: run ``target(*args, progress)``; report frames, then ``"done"`` or the error, on ``writer``."""
    _die_with_parent(parent)

    def progress(n: int) -> None:
        writer.send(("frames", n))

    try:
        target(*args, progress)
    except BaseException as err:  # KeyboardInterrupt too: report it, then end
        if os.environ.get("P4LIGHTNING_DEBUG"):
            traceback.print_exc()
        reason = " ".join(str(err).split())
        writer.send(("final", f"failed in its worker, pid {os.getpid()}: {type(err).__name__}: {reason}"))
        raise SystemExit(1) from None
    writer.send(("final", "done"))


# Note [workers die with the parent]
# A worker must not outlive the command: killed by SIGKILL, the command runs no clean-up code, and its orphaned
# workers would run on and write replica files into a folder nobody watches. On Linux the worker asks the kernel
# to send it SIGKILL when its parent dies (prctl PR_SET_PDEATHSIG; the parent is the thread that started it,
# which waits in _run_jobs until the worker ends), then checks that the parent is still its parent, in case it
# died before the request. Elsewhere a daemon thread polls os.getppid() every second and ends the process.
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent(parent: int) -> None:
    """End this process when process ``parent`` ends (Note [workers die with the parent])."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
        if armed:
            if os.getppid() != parent:
                os._exit(1)
            return
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _metadata(
    specs: list[ReplicaSpec],
    cfg: dict,
    engine: str,
    workers: int,
    seed: int,
    starts: object,
    seconds: float,
    command: str | None,
    out: Path,
) -> dict:
    import mdtraj

    top = str(out / TOPOLOGY_NAME)
    rows = []
    for s in specs:
        with c_stdout_silenced():  # the DCD plugin's C-level chatter
            traj = mdtraj.load(s.trajectory, top=top)
        phi = mdtraj.compute_phi(traj)[1][:, 0]
        start = {"file": s.start_file, "frame": s.start_frame}
        if s.start_file is not None:
            with c_stdout_silenced():  # the DCD plugin's C-level chatter
                first = mdtraj.load_frame(s.start_file, s.start_frame, top=_start_topology(s.start_file))
            start["phi_deg"] = float(np.degrees(mdtraj.compute_phi(first)[1][0, 0]))
            start["psi_deg"] = float(np.degrees(mdtraj.compute_psi(first)[1][0, 0]))
        row = asdict(s)
        row.update(
            trajectory=Path(s.trajectory).name,
            frames=traj.n_frames,
            phi_positive_fraction=float((phi > 0).mean()),
        )
        row["start"] = start
        rows.append(row)
    frames = sum(r["frames"] for r in rows)
    return {
        "command": command,
        "engine": engine,
        "workers": workers,
        "seed": seed,
        "starts": None if starts is None else str(starts),
        **cfg,
        "frame_interval_ps": cfg["save_every"] * cfg["timestep_fs"] * 1e-3,
        "total_ns": frames * cfg["save_every"] * cfg["timestep_fs"] * 1e-6,
        "total_frames": frames,
        "phi_positive_fraction": float(sum(r["phi_positive_fraction"] * r["frames"] for r in rows) / frames),
        "wall_seconds": seconds,
        "replicas": rows,
    }


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


def main(argv: list[str] | None = None) -> int:
    """The ``p4lightning-md`` command; returns the exit status: 0 on success; 2 for a refused input (one line
    ``p4lightning-md: error: ...`` on stderr, before any output is written); 1 for replicas not written
    (:class:`ReplicaError`, one line). With ``P4LIGHTNING_DEBUG=1`` in the environment errors keep their
    tracebacks."""
    parser = argparse.ArgumentParser(
        prog="p4lightning-md", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="trajectory path (.dcd); with --replicas a folder"
    )
    parser.add_argument("--topology", type=Path, default=None, help="PDB path (default: OUT with .pdb)")
    parser.add_argument("--replicas", type=int, default=None, help="independent replicas (OUT is a folder)")
    parser.add_argument("--frames", type=int, default=2000, help="frames (per replica)")
    parser.add_argument("--save-every", type=int, default=500, help="MD steps between frames")
    parser.add_argument("--temperature", type=float, default=600.0, help="K")
    parser.add_argument("--timestep-fs", type=float, default=1.0)
    parser.add_argument("--friction", type=float, default=1.0, help="1/ps")
    parser.add_argument(
        "--equilibration-steps", type=int, default=None, help="default 10,000 (20,000 with replicas)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--starts", type=Path, default=None, help="trajectory whose frames start the replicas"
    )
    parser.add_argument("--engine", default="openmm", choices=("openmm", "torch"), help="replicas' MD engine")
    parser.add_argument(
        "--workers", type=int, default=None, help="processes, one per core (default: all cores)"
    )
    parser.add_argument("--platform", default="CPU")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    command = "p4lightning-md " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    try:
        if args.replicas is not None:
            meta = simulate_replicas(
                args.out, args.replicas, args.frames, args.save_every, args.temperature, args.timestep_fs,
                args.friction, 20_000 if args.equilibration_steps is None else args.equilibration_steps, args.seed,
                args.starts, args.engine, args.workers, args.platform, force=args.force,
                progress=not args.no_progress, command=command,
            )  # fmt: skip
            print(
                f"wrote {args.replicas} replicas, {meta['total_frames']} frames ({meta['total_ns']:.2f} ns) to "
                f"{args.out} in {meta['wall_seconds']:.1f} s; phi > 0 in {100 * meta['phi_positive_fraction']:.2f} %"
            )
            return 0
        equilibration_steps = 10_000 if args.equilibration_steps is None else args.equilibration_steps
        paths = _check_simulate(
            args.out, args.topology, args.frames, args.save_every, args.temperature, args.timestep_fs,
            args.friction, equilibration_steps, args.platform,
        )  # fmt: skip
        for path in paths:
            if path.exists() and not args.force:
                raise FileExistsError(f"{path} exists; pass --force to overwrite")
        result = simulate(
            args.out, args.frames, args.save_every, args.temperature, args.timestep_fs, args.friction,
            equilibration_steps, args.seed, args.platform, args.topology, not args.no_progress,
        )  # fmt: skip
    except (ValueError, FileExistsError, FileNotFoundError, PermissionError, NotADirectoryError) as err:
        return _fail(err, 2)  # InputFileError is a ValueError
    except ReplicaError as err:
        return _fail(err, 1)
    print(
        f"wrote {result.frames} frames to {result.trajectory} and topology {result.topology} in {result.seconds:.1f} s"
    )
    return 0


def _fail(err: Exception, status: int) -> int:
    """Print ``err`` as one line ``p4lightning-md: error: ...`` on stderr; ``status`` (re-raise it with
    ``P4LIGHTNING_DEBUG=1``)."""
    if os.environ.get("P4LIGHTNING_DEBUG"):
        raise err
    print(f"p4lightning-md: error: {' '.join(str(err).split()) or type(err).__name__}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
