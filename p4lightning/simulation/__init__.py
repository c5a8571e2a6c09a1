r"""Simulation: Langevin MD of alanine dipeptide, the training and reference data of the Boltzmann generators.

One trajectory (:func:`simulate`) or independent replicas in parallel processes (:func:`simulate_replicas`), with
the settings as one checked value (:class:`MDConfig`); the ``p4lightning-md`` command
(:mod:`p4lightning.cli.md`) runs them. The modules, each owning one idea:

* :mod:`.config`: :class:`MDConfig`, the OpenMM platforms and the largest time step (:data:`MAX_TIMESTEP_FS`:
  the MD is unconstrained, so that no bond length is a constant a flow cannot fit);
* :mod:`.trajectory`: one trajectory, :func:`simulate`;
* :mod:`.replicas`: replicas into one folder, :func:`simulate_replicas`, their seeds and starts, ``replicas.json``;
* :mod:`.engines`: OpenMM (a context per replica) and torch (a batch of replicas per process);
* :mod:`.langevin`: :class:`BatchedLangevin`, OpenMM's LangevinMiddle scheme for a batch of replicas in torch;
* :mod:`.processes`: the worker processes, and :class:`ReplicaError` for the replicas a failed worker lost;
* :mod:`.layout`: the names of a replica folder's files and :class:`ReplicaSpec`;
* :mod:`.progress`: the progress bar.

OpenMM and mdtraj are imported only when MD runs or a trajectory is read: importing this package needs neither.
"""

from p4lightning.simulation.config import MAX_TIMESTEP_FS, MDConfig
from p4lightning.simulation.langevin import BatchedLangevin
from p4lightning.simulation.layout import ReplicaSpec
from p4lightning.simulation.processes import ReplicaError
from p4lightning.simulation.replicas import replica_seeds, simulate_replicas
from p4lightning.simulation.trajectory import MDResult, simulate

__all__ = [
    "MAX_TIMESTEP_FS",
    "BatchedLangevin",
    "MDConfig",
    "MDResult",
    "ReplicaError",
    "ReplicaSpec",
    "replica_seeds",
    "simulate",
    "simulate_replicas",
]
