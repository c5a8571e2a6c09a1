"""Independent MD replicas written into one folder, run in parallel worker processes.

Each replica has its own seed (:func:`replica_seeds`) and its own start (a frame of ``starts``, a trajectory,
taken at equal spacing so the starts spread over the basins in proportion to their weights), is minimised,
equilibrated and then sampled; one float32 DCD per replica, ``topology.pdb`` and ``replicas.json`` (every
replica's seed, start, φ > 0 fraction; the command; the wall time). The ``openmm`` engine runs each replica in
its own process (one per core, pinned, ``Threads=1``); ``torch`` integrates all replicas of a process as one batch
(:mod:`p4lightning.simulation.engines`).

Every input (platform, time step, starts file, output folder) is checked before the output folder is created or
any MD runs. A worker process that dies or fails costs only its replicas: the others run to the end and are kept,
and :class:`~p4lightning.simulation.processes.ReplicaError` names the replicas not written.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from p4lightning._io import atomic_path, c_stdout_silenced, check_output_dir
from p4lightning._validation import InputFileError, check_literal, check_positive_int
from p4lightning.simulation.config import MDConfig, Platform
from p4lightning.simulation.engines import _openmm_replica, _torch_replicas
from p4lightning.simulation.layout import (
    METADATA_NAME,
    REPLICA_NAME,
    TOPOLOGY_NAME,
    ReplicaSpec,
    _start_topology,
)
from p4lightning.simulation.processes import _Job, _replica_error, _run_jobs
from p4lightning.simulation.progress import _progress
from p4lightning.systems.alanine import alanine_dipeptide, check_topology

__all__ = ["ENGINES", "METADATA_NAME", "REPLICA_NAME", "TOPOLOGY_NAME", "Engine", "ReplicaSpec", "replica_seeds",
           "simulate_replicas"]  # fmt: skip

#: The replicas' MD engine.
Engine = Literal["openmm", "torch"]
ENGINES: tuple[str, ...] = get_args(Engine)


def replica_seeds(seed: int, n: int) -> list[int]:
    """``n`` distinct 31-bit seeds derived from ``seed`` (``numpy.random.SeedSequence(seed).spawn(n)``)."""
    seeds = [int(s.generate_state(1)[0] & 0x7FFFFFFF) for s in np.random.SeedSequence(seed).spawn(n)]
    if len(set(seeds)) != n:  # astronomically unlikely; never silently reuse a noise stream
        raise RuntimeError(f"seed {seed} gave repeated replica seeds")
    return seeds


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


def _replica_outputs(out: Path, n: int) -> list[Path]:
    """Every file a run of ``n`` replicas writes into ``out``: the replicas, the topology, the metadata."""
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
    engine: Engine = "openmm",
    workers: int | None = None,
    platform: Platform = "CPU",
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
    check_literal(engine, Engine, "engine")
    config = MDConfig(
        frames, save_every, temperature, timestep_fs, friction_per_ps, equilibration_steps, platform, compile
    ).check()
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
    if engine == "openmm":
        jobs = [_Job([s.index], _openmm_replica, (s, config)) for s in specs]
    else:
        groups = [specs[w::workers] for w in range(workers) if specs[w::workers]]
        jobs = [_Job([s.index for s in g], _torch_replicas, (g, config)) for g in groups]
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
    ala2 = alanine_dipeptide(config.temperature)
    failed = [job for job in jobs if job.failure is not None]
    if failed:
        written = [s.index for s in specs if all(s.index not in job.replicas for job in failed)]
        if written:  # the kept replicas can be read
            ala2.write_pdb(out / TOPOLOGY_NAME)
        raise _replica_error(out, failed, written)
    ala2.write_pdb(out / TOPOLOGY_NAME)
    meta = _metadata(specs, config, engine, workers, seed, starts, seconds, command, out)
    with atomic_path(out / METADATA_NAME) as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    return meta


def _metadata(
    specs: list[ReplicaSpec],
    config: MDConfig,
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
        **config.as_dict(),
        "frame_interval_ps": config.frame_interval_ps,
        "total_ns": frames * config.save_every * config.timestep_fs * 1e-6,
        "total_frames": frames,
        "phi_positive_fraction": float(sum(r["phi_positive_fraction"] * r["frames"] for r in rows) / frames),
        "wall_seconds": seconds,
        "replicas": rows,
    }
