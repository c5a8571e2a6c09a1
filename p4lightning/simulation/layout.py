"""What a replica folder holds and where a replica starts: the file names, :class:`ReplicaSpec` and the topology
beside a starts file (shared by the engines, the worker processes and :func:`~.replicas.simulate_replicas`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["METADATA_NAME", "REPLICA_NAME", "TOPOLOGY_NAME", "ReplicaSpec"]

REPLICA_NAME = "replica_{:03d}.dcd"
METADATA_NAME = "replicas.json"
TOPOLOGY_NAME = "topology.pdb"


@dataclass(frozen=True)
class ReplicaSpec:
    """One replica: its index, seed, output file and start (``start_frame`` of ``start_file``, or the PDB)."""

    index: int
    seed: int
    trajectory: str
    start_file: str | None
    start_frame: int | None


def _start_topology(start_file: str) -> str:
    """The PDB beside ``start_file``: its stem's ``.pdb``, ``ala2.pdb`` or ``topology.pdb``, the first found."""
    path = Path(start_file)
    for candidate in (path.with_suffix(".pdb"), path.parent / "ala2.pdb", path.parent / TOPOLOGY_NAME):
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"no topology next to the starts file {start_file} (looked for {path.with_suffix('.pdb').name}, "
        f"ala2.pdb, {TOPOLOGY_NAME})"
    )
