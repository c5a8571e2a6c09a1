r"""``p4lightning-md``: Langevin MD of alanine dipeptide with OpenMM (unconstrained, 1 fs), written losslessly
(float32 DCD) and atomically: one trajectory (``--out`` a ``.dcd``), or independent replicas (``--replicas R``,
``--out`` a folder).

Replicas: each has its own seed and its own start (a frame of ``--starts``, a trajectory, taken at equal spacing
so the starts spread over the basins in proportion to their weights), is minimised, equilibrated and then
sampled; one float32 DCD per replica, ``topology.pdb`` and ``replicas.json`` (every replica's seed, start, φ > 0
fraction; the command; the wall time). Two engines: ``openmm`` runs each replica in its own process (one per core,
pinned, ``Threads=1``); ``torch`` integrates all replicas of a process as one batch (the same energy as OpenMM to
~1e-14, compiled, and OpenMM's LangevinMiddle scheme). The shipped data were made by the command in
``data/README.md``.

Every input (platform, time step, starts file, output folder) is checked before the output folder is created or
any MD runs, and a refused input is one line (``p4lightning-md: error: ...``, exit status 2). A worker process
that dies (killed, out of memory) or fails costs only its replicas: the others run to the end and are kept, and
the error names the replicas not written (exit status 1). The workers end with the command, even when it is
killed.

Run::

    p4lightning-md --out data/ala2_600K.dcd --frames 2000 --save-every 500 --seed 1
    p4lightning-md --out data/replicas --replicas 32 --frames 2500 --save-every 500 --starts data/ala2_600K.dcd
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from p4lightning.simulation.processes import ReplicaError
from p4lightning.simulation.replicas import ENGINES, simulate_replicas
from p4lightning.simulation.trajectory import _check_simulate, simulate

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """The ``p4lightning-md`` command; returns the exit status: 0 on success; 2 for a refused input (one line
    ``p4lightning-md: error: ...`` on stderr, before any output is written); 1 for replicas not written
    (:class:`~p4lightning.simulation.ReplicaError`, one line). With ``P4LIGHTNING_DEBUG=1`` in the environment errors keep their
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
    parser.add_argument("--engine", default="openmm", choices=ENGINES, help="replicas' MD engine")
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
        *paths, _ = _check_simulate(
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
