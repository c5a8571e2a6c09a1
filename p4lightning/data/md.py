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

Run::

    p4lightning-md --out data/ala2_600K.dcd --frames 2000 --save-every 500 --seed 1
    p4lightning-md --out data/replicas --replicas 32 --frames 2500 --save-every 500 --starts data/ala2_600K.dcd
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from p4lightning._io import atomic_path
from p4lightning._validation import check_choice, check_positive_int
from p4lightning.systems.alanine import alanine_dipeptide

__all__ = ["MDResult", "ReplicaSpec", "main", "simulate", "simulate_replicas"]


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
    cfg = {"temperature": float(temperature), "friction_per_ps": float(friction_per_ps), "timestep_fs": float(timestep_fs),
           "platform": platform, "equilibration_steps": equilibration_steps, "frames": frames, "save_every": save_every}  # fmt: skip
    bar = _progress(frames, "MD frames", progress)
    xyz, seconds = _openmm_frames(ala2, ala2.positions, seed, cfg, minimise_in_context=True, tick=lambda: bar.update(1))
    bar.close()
    top = ala2.mdtraj_topology()
    traj = mdtraj.Trajectory(xyz, top, time=np.arange(frames) * save_every * timestep_fs * 1e-3)  # ps
    with atomic_path(out) as tmp:
        traj.save_dcd(str(tmp))
    topology = Path(topology) if topology is not None else out.with_suffix(".pdb")
    ala2.write_pdb(topology)
    return MDResult(out, topology, frames, seconds)


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

    frame = mdtraj.load_frame(spec.start_file, spec.start_frame, top=_start_topology(spec.start_file))
    return frame.xyz[0].astype(np.float64)


def _start_topology(start_file: str) -> str:
    path = Path(start_file)
    for candidate in (path.with_suffix(".pdb"), path.parent / "ala2.pdb", path.parent / TOPOLOGY_NAME):
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(f"no topology (PDB) next to the starts file {start_file}")


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


def _openmm_replica(spec: ReplicaSpec, cfg: dict, counter: object, core: int | None) -> float:
    """Worker: one replica with OpenMM (``Threads=1``); returns its wall time (s)."""

    _pin(core)
    ala2 = alanine_dipeptide(cfg["temperature"])

    def tick() -> None:
        with counter.get_lock():
            counter.value += 1

    start = _minimised(ala2, _start_positions(spec, ala2.positions))
    xyz, seconds = _openmm_frames(ala2, start, spec.seed, cfg, minimise_in_context=False, tick=tick)
    _save(xyz, ala2.mdtraj_topology(), Path(spec.trajectory), cfg["save_every"] * cfg["timestep_fs"] * 1e-3)
    return seconds


def _openmm_frames(
    ala2: object, positions: np.ndarray, seed: int, cfg: dict, minimise_in_context: bool, tick: Callable[[], None]
) -> tuple[np.ndarray, float]:
    """LangevinMiddle MD with OpenMM from ``positions`` (nm): velocities at ``cfg["temperature"]`` from ``seed``,
    ``equilibration_steps`` discarded, then ``frames`` frames ``(frames, N, 3)`` float32 nm every ``save_every``
    steps (``tick()`` after each). Returns the frames and the wall time (s) after set-up."""
    import openmm
    from openmm import unit

    integrator = openmm.LangevinMiddleIntegrator(
        cfg["temperature"] * unit.kelvin, cfg["friction_per_ps"] / unit.picosecond, cfg["timestep_fs"] * unit.femtosecond
    )
    integrator.setRandomNumberSeed(seed)
    plat = openmm.Platform.getPlatformByName(cfg["platform"])
    context = openmm.Context(ala2.system, integrator, plat, {"Threads": "1"} if cfg["platform"] == "CPU" else {})
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


def _torch_replicas(specs: list[ReplicaSpec], cfg: dict, counter: object, core: int | None) -> float:
    """Worker: a batch of replicas integrated together in torch (float64, compiled energy); returns wall time (s)."""
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
    masses = torch.tensor([ala2.system.getParticleMass(i)._value for i in range(ala2.system.getNumParticles())])
    md = BatchedLangevin(
        force_fn, masses, cfg["temperature"], cfg["timestep_fs"] * 1e-3, cfg["friction_per_ps"], [s.seed for s in specs]
    )
    starts = np.stack([_minimised(ala2, _start_positions(s, ala2.positions)) for s in specs])
    md.set_state(torch.from_numpy(starts))
    start = time.perf_counter()
    md.step(cfg["equilibration_steps"])
    xyz = np.empty((len(specs), cfg["frames"], ala2.positions.shape[0], 3), dtype=np.float32)
    for f in range(cfg["frames"]):
        md.step(cfg["save_every"])
        if not bool(torch.isfinite(md.x).all()):
            raise FloatingPointError(f"replicas {[s.index for s in specs]}: non-finite positions at frame {f}")
        xyz[:, f] = md.x.numpy()
        with counter.get_lock():
            counter.value += len(specs)
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
        force: overwrite existing outputs.
        command: the command line recorded in ``replicas.json``.

    Returns:
        the metadata written to ``replicas.json``.

    Raises:
        FileExistsError: an output exists and ``force`` is false (naming the files).
    """
    import multiprocessing as mp

    out = Path(out)
    check_positive_int(replicas, "replicas")
    check_positive_int(frames, "frames")
    check_positive_int(save_every, "save_every")
    check_positive_int(equilibration_steps, "equilibration_steps", minimum=0)
    check_choice(engine, ("openmm", "torch"), "engine")
    check_choice(platform, ("CPU", "CUDA", "OpenCL", "Reference"), "platform")
    if not timestep_fs > 0 or not friction_per_ps > 0:
        raise ValueError(f"timestep_fs and friction_per_ps must be > 0; got {timestep_fs}, {friction_per_ps}")
    if out.suffix.lower() == ".dcd" or out.is_file():
        raise ValueError(f"with replicas, out must be a folder; got {out}")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = check_positive_int(workers if workers is not None else usable, "workers")
    existing = [p for p in _replica_outputs(out, replicas) if p.exists()]
    if existing and not force:
        names = ", ".join(p.name for p in existing[:6]) + (" ..." if len(existing) > 6 else "")
        raise FileExistsError(f"{out} already holds {len(existing)} of the outputs ({names}); pass --force to overwrite")
    n_start_frames = None
    if starts is not None:
        import mdtraj

        starts = Path(starts)
        if not starts.is_file():
            raise FileNotFoundError(f"starts file not found: {starts}")
        n_start_frames = len(mdtraj.open(str(starts)))
        if n_start_frames < 1:
            raise ValueError(f"starts file {starts} has no frames")
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
    out.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    counter = ctx.Value("q", 0)
    total = replicas * frames
    bar = _progress(total, f"MD frames ({replicas} replicas, {engine})", progress)
    t0 = time.perf_counter()
    with ctx.Pool(workers, initializer=_init_worker, initargs=(counter,)) as pool:
        if engine == "openmm":
            jobs = [pool.apply_async(_openmm_job, (s, cfg, r % workers)) for r, s in enumerate(specs)]
        else:
            groups = [specs[w::workers] for w in range(workers) if specs[w::workers]]
            jobs = [pool.apply_async(_torch_job, (g, cfg, w)) for w, g in enumerate(groups)]
        done = 0
        while not all(j.ready() for j in jobs):
            time.sleep(0.5)
            bar.update(counter.value - done)
            done = counter.value
        for j in jobs:
            j.get()  # re-raises a worker's error
        bar.update(counter.value - done)
    bar.close()
    seconds = time.perf_counter() - t0
    ala2 = alanine_dipeptide(temperature)
    ala2.write_pdb(out / TOPOLOGY_NAME)
    meta = _metadata(specs, cfg, engine, workers, seed, starts, seconds, command, out)
    with atomic_path(out / METADATA_NAME) as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    return meta


_COUNTER = None


def _init_worker(counter: object) -> None:
    global _COUNTER  # the pool's shared progress counter, one per worker process
    _COUNTER = counter


def _openmm_job(spec: ReplicaSpec, cfg: dict, core: int) -> float:
    return _openmm_replica(spec, cfg, _COUNTER, core)


def _torch_job(specs: list[ReplicaSpec], cfg: dict, core: int) -> float:
    return _torch_replicas(specs, cfg, _COUNTER, core)


def _metadata(
    specs: list[ReplicaSpec], cfg: dict, engine: str, workers: int, seed: int, starts: object, seconds: float,
    command: str | None, out: Path,
) -> dict:
    import mdtraj

    top = str(out / TOPOLOGY_NAME)
    rows = []
    for s in specs:
        traj = mdtraj.load(s.trajectory, top=top)
        phi = mdtraj.compute_phi(traj)[1][:, 0]
        start = {"file": s.start_file, "frame": s.start_frame}
        if s.start_file is not None:
            first = mdtraj.load_frame(s.start_file, s.start_frame, top=_start_topology(s.start_file))
            start["phi_deg"] = float(np.degrees(mdtraj.compute_phi(first)[1][0, 0]))
            start["psi_deg"] = float(np.degrees(mdtraj.compute_psi(first)[1][0, 0]))
        row = asdict(s)
        row.update(trajectory=Path(s.trajectory).name, frames=traj.n_frames, phi_positive_fraction=float((phi > 0).mean()))
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
    """The ``p4lightning-md`` command; returns the exit status (0 on success)."""
    parser = argparse.ArgumentParser(
        prog="p4lightning-md", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="trajectory path (.dcd); with --replicas a folder")
    parser.add_argument("--topology", type=Path, default=None, help="PDB path (default: OUT with .pdb)")
    parser.add_argument("--replicas", type=int, default=None, help="independent replicas (OUT is a folder)")
    parser.add_argument("--frames", type=int, default=2000, help="frames (per replica)")
    parser.add_argument("--save-every", type=int, default=500, help="MD steps between frames")
    parser.add_argument("--temperature", type=float, default=600.0, help="K")
    parser.add_argument("--timestep-fs", type=float, default=1.0)
    parser.add_argument("--friction", type=float, default=1.0, help="1/ps")
    parser.add_argument("--equilibration-steps", type=int, default=None, help="default 10,000 (20,000 with replicas)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--starts", type=Path, default=None, help="trajectory whose frames start the replicas")
    parser.add_argument("--engine", default="openmm", choices=("openmm", "torch"), help="replicas' MD engine")
    parser.add_argument("--workers", type=int, default=None, help="processes, one per core (default: all cores)")
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
        for path in (args.out, args.topology or args.out.with_suffix(".pdb")):
            if Path(path).exists() and not args.force:
                raise FileExistsError(f"{path} exists; pass --force to overwrite")
        result = simulate(
            args.out, args.frames, args.save_every, args.temperature, args.timestep_fs, args.friction,
            10_000 if args.equilibration_steps is None else args.equilibration_steps, args.seed, args.platform,
            args.topology, not args.no_progress,
        )  # fmt: skip
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        print(f"p4lightning-md: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {result.frames} frames to {result.trajectory} and topology {result.topology} in {result.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
