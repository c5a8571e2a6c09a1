r"""A pool of OpenMM worker processes, each holding its own ``Context``, started once and reused.

Why processes, pinned, one thread each: on a small machine OpenMM's CPU threads and torch's OpenMP
threads contend for the same cores, and a ``Context`` evaluates energy + forces of a 22-atom system about
5× slower unpinned than in a process pinned to one core with ``Threads=1``. Each worker therefore pins
itself to one core (``os.sched_setaffinity``, round-robin over the cores this process may use) and runs
the CPU platform with one thread; a batch is split into contiguous chunks, one per worker.

Failure handling: a conformation whose evaluation raises (e.g. NaN positions) yields a NaN energy and
zero forces and is counted; a worker that dies is reported with :class:`WorkerDiedError` naming its exit
code, and one that does not answer within ``timeout_s`` (hung, or stopped by a signal) with
:class:`WorkerTimeoutError` naming it: never a silent hang. Workers are closed by
:meth:`EnergyWorkerPool.close` (also at interpreter exit), escalating from a polite request to ``terminate()``
and ``kill()`` within a few seconds, so no worker outlives its pool.

Workers are *spawned*: each re-imports the parent's ``__main__`` module. A script that builds a pool (or an
``OpenMMEnergy``, or a ``BoltzmannGenerator(energy="openmm")``) at top level must do so under
``if __name__ == "__main__":``; without it the workers die at start-up and the error says so.

Units: positions in nm, energies in kJ/mol, forces in kJ/(mol nm).
"""

from __future__ import annotations

import atexit
import functools
import multiprocessing as mp
import os
import time
import weakref
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from p4lightning._validation import check_choice, check_positive_int

__all__ = ["EnergyWorkerPool", "WorkerDiedError", "WorkerTimeoutError", "evaluate_serially"]

#: Seconds between liveness checks while waiting for a worker's answer.
POLL_INTERVAL_S = 1.0
#: Default seconds a worker may take to start or to answer one batch (a 22-atom conformation takes ~1 ms).
DEFAULT_TIMEOUT_S = 300.0
#: Seconds :func:`_shutdown` waits at each step (polite request, ``terminate()``) before escalating.
SHUTDOWN_GRACE_S = 2.0

GUARD_HINT = (
    "worker processes are spawned and re-import the main module: a script that creates OpenMM workers "
    "(EnergyWorkerPool, OpenMMEnergy, BoltzmannGenerator(energy='openmm')) at top level must do so under "
    "'if __name__ == \"__main__\":'"
)


class WorkerDiedError(RuntimeError):
    """An energy worker process exited while it owed an answer."""


class WorkerTimeoutError(WorkerDiedError):
    """An energy worker did not answer within the pool's ``timeout_s`` (hung or stopped); the pool is closed."""


def _make_context(system_xml: str, platform_name: str, threads: int) -> Any:
    import openmm

    system = openmm.XmlSerializer.deserialize(system_xml)
    integrator = openmm.VerletIntegrator(0.001)
    platform = openmm.Platform.getPlatformByName(platform_name)
    properties = {"Threads": str(threads)} if platform_name == "CPU" else {}
    return openmm.Context(system, integrator, platform, properties)


def _swig_entry_points() -> tuple[Any, ...] | None:
    """OpenMM's compiled entry points behind ``Context.setPositions``/``getState``, or ``None``.

    Note [lean OpenMM calls]: the public Python wrappers add, per conformation, a unit check on the
    positions, keyword handling in ``getState``, a ``dir(state)`` scan in ``getForces`` and two ``Quantity``
    constructions: about 15-20 us of a ~200 us evaluation of this 22-atom system. The compiled functions
    they wrap take the same arguments without that, and write the forces straight into our array. Tests
    check both paths give bit-identical energies and forces; if a future OpenMM renames them, the public
    path is used.
    """
    try:
        from openmm import State, _openmm

        return (
            _openmm.Context_setPositions,
            _openmm.Context_getState,
            _openmm.State_getPotentialEnergy,
            _openmm.State__getVectorAsNumpy,
            int(State.Energy) | int(State.Forces),
            int(State.Forces),
        )
    except (ImportError, AttributeError):
        return None


def _evaluate_public(context: Any, position: np.ndarray, out_forces: np.ndarray) -> float:
    context.setPositions(position)
    state = context.getState(getEnergy=True, getForces=True)
    # OpenMM returns Quantities in its MD units (kJ/mol, kJ/(mol nm)): take the values without conversion.
    out_forces[...] = state.getForces(asNumpy=True)._value
    return state.getPotentialEnergy()._value


def _evaluate_lean(
    entry: tuple[Any, ...], context: Any, position: np.ndarray, out_forces: np.ndarray
) -> float:
    set_positions, get_state, get_energy, get_vector, mask, forces_kind = entry
    set_positions(context, position)
    state = get_state(context, mask, False, -1)
    get_vector(state, forces_kind, out_forces)
    return get_energy(state)


def evaluate_serially(
    context: Any, positions: np.ndarray, lean: bool = True
) -> tuple[np.ndarray, np.ndarray, int]:
    """Energies ``(k,)`` in kJ/mol and forces ``(k, N, 3)`` in kJ/(mol nm) of ``positions`` ``(k, N, 3)`` nm.

    A conformation OpenMM cannot evaluate (non-finite input or result) gets energy NaN and zero forces.

    Args:
        context: an ``openmm.Context`` of the system.
        positions: ``(k, N, 3)`` in nm.
        lean: call OpenMM's compiled entry points directly (see Note [lean OpenMM calls]); ``False`` uses
            the public wrappers (same numbers, ~7 % slower).

    Returns:
        ``(energies, forces, n_failed)``.
    """
    import openmm

    positions = np.ascontiguousarray(positions, dtype=np.float64)
    k = positions.shape[0]
    energies = np.full(k, np.nan)
    forces = np.zeros_like(positions)
    finite_input = np.isfinite(positions).all(axis=(1, 2))
    failed = int((~finite_input).sum())
    entry = _swig_entry_points() if lean else None
    evaluate = _evaluate_public if entry is None else functools.partial(_evaluate_lean, entry)
    for i in np.flatnonzero(finite_input):
        try:
            e = evaluate(context, positions[i], forces[i])
        except (openmm.OpenMMException, ValueError):
            failed += 1
            forces[i] = 0.0
            continue
        if not np.isfinite(e) or not np.isfinite(forces[i]).all():
            failed += 1
            forces[i] = 0.0
            continue
        energies[i] = e
    return energies, forces, failed


def _worker_main(
    conn: Connection, system_xml: str, platform_name: str, threads: int, core: int | None, lean: bool
) -> None:
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        context = _make_context(system_xml, platform_name, threads)
        conn.send(("ready", None))
    except Exception as err:  # report, then exit: the parent raises with this message
        conn.send(("error", f"{type(err).__name__}: {err}"))
        return
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        conn.send(("ok", evaluate_serially(context, message, lean=lean)))


def _join_all(processes: list[Any], seconds: float) -> list[Any]:
    """Join ``processes`` within ``seconds`` in all; the ones still alive."""
    deadline = time.monotonic() + seconds
    for p in processes:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    return [p for p in processes if p.is_alive()]


def _shutdown(processes: list[Any], connections: list[Connection]) -> None:
    """Stop the workers: ask (``None``), then ``terminate()`` (SIGTERM), then ``kill()`` (SIGKILL, which also ends
    a stopped process), waiting :data:`SHUTDOWN_GRACE_S` between steps: at most ~4 s, and nothing outlives it."""
    for conn in connections:
        try:
            conn.send(None)
        except (BrokenPipeError, OSError):
            pass
    alive = _join_all([p for p in processes if p.pid is not None], SHUTDOWN_GRACE_S)
    for p in alive:
        p.terminate()
    alive = _join_all(alive, SHUTDOWN_GRACE_S)
    for p in alive:
        p.kill()
    for p in alive:
        p.join()
    for conn in connections:
        conn.close()


class EnergyWorkerPool:
    r"""Worker processes that evaluate OpenMM energies and forces for batches of conformations.

    Args:
        system: an ``openmm.System`` (serialised once and sent to every worker).
        n_workers: number of processes (default: the number of cores this process may use).
        platform: OpenMM platform name (``"CPU"``, ``"CUDA"``, ``"OpenCL"``, ``"Reference"``).
        pin: pin worker ``i`` to core ``i mod #cores`` (CPU platform).
        threads: OpenMM CPU threads per worker.
        lean: call OpenMM's compiled entry points (Note [lean OpenMM calls]); ``False``: its public API.
        timeout_s: seconds a worker may take to answer one batch before :class:`WorkerTimeoutError` (the pool
            is then closed); ``None`` waits forever.
        start_timeout_s: the same for starting (importing OpenMM, building the ``Context``; CUDA may compile
            kernels).

    Example:
        >>> from p4lightning.systems.alanine import alanine_dipeptide
        >>> ala2 = alanine_dipeptide()
        >>> with EnergyWorkerPool(ala2.system, n_workers=1) as pool:
        ...     energies, forces, failed = pool.evaluate(ala2.positions[None])
        >>> energies.shape, forces.shape, failed
        ((1,), (1, 22, 3), 0)
    """

    def __init__(
        self,
        system: Any,
        n_workers: int | None = None,
        platform: str = "CPU",
        pin: bool = True,
        threads: int = 1,
        lean: bool = True,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        start_timeout_s: float | None = DEFAULT_TIMEOUT_S,
    ) -> None:
        import openmm

        for name, value in (("timeout_s", timeout_s), ("start_timeout_s", start_timeout_s)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 seconds or None; got {value}")
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.start_timeout_s = None if start_timeout_s is None else float(start_timeout_s)
        cores = (
            sorted(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else list(range(os.cpu_count() or 1))
        )
        self.n_workers = check_positive_int(n_workers if n_workers is not None else len(cores), "n_workers")
        self.platform = check_choice(platform, ("CPU", "CUDA", "OpenCL", "Reference"), "platform")
        self.n_atoms = system.getNumParticles()
        system_xml = openmm.XmlSerializer.serialize(system)
        ctx = mp.get_context("spawn")  # no fork of a process that may hold CUDA or OpenMP state
        self._processes: list[Any] = []
        self._connections: list[Connection] = []
        for i in range(self.n_workers):
            parent, child = ctx.Pipe()
            core = cores[i % len(cores)] if (pin and platform == "CPU") else None
            proc = ctx.Process(
                target=_worker_main,
                args=(child, system_xml, platform, threads, core, bool(lean)),
                daemon=True,
                name=f"openmm-{i}",
            )
            proc.start()
            child.close()
            self._processes.append(proc)
            self._connections.append(parent)
        self._finalizer = weakref.finalize(self, _shutdown, self._processes, self._connections)
        atexit.register(self._finalizer)
        for i in range(self.n_workers):
            try:
                status, payload = self._receive(i, "to start", self.start_timeout_s)
            except WorkerTimeoutError:
                raise
            except WorkerDiedError as err:  # typically: the main module re-imported without a __main__ guard
                raise WorkerDiedError(f"{err} during start-up; {GUARD_HINT}") from None
            if status != "ready":
                self.close()
                raise RuntimeError(f"OpenMM worker {i} failed to start: {payload}")

    def _receive(self, i: int, what: str, timeout_s: float | None) -> tuple[str, Any]:
        """Worker ``i``'s next message; raises if it dies, or if it is silent for ``timeout_s`` (closing the pool)."""
        conn, proc = self._connections[i], self._processes[i]
        start = time.monotonic()
        while not conn.poll(POLL_INTERVAL_S):
            if not proc.is_alive():
                self.close()
                raise WorkerDiedError(
                    f"OpenMM worker {i} (pid {proc.pid}) died with exit code {proc.exitcode}"
                )
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                self.close()
                raise WorkerTimeoutError(
                    f"OpenMM worker {i} (pid {proc.pid}) took more than {timeout_s:g} s {what} "
                    "(hung or stopped); the pool is closed"
                )
        try:
            return conn.recv()
        except (EOFError, ConnectionResetError, BrokenPipeError):
            proc.join(timeout=1)
            self.close()
            raise WorkerDiedError(
                f"OpenMM worker {i} (pid {proc.pid}) closed its pipe; exit code {proc.exitcode}"
            ) from None

    def evaluate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Energies ``(B,)`` kJ/mol, forces ``(B, N, 3)`` kJ/(mol nm) and failure count of ``(B, N, 3)`` nm.

        The positions are evaluated as given (no centring). ``B = 0`` returns empty float64 arrays ``(0,)``
        and ``(0, N, 3)`` and 0 failures without sending the workers anything.
        """
        if self.closed:
            raise RuntimeError("EnergyWorkerPool is closed")
        positions = np.ascontiguousarray(positions, dtype=np.float64)
        if positions.ndim != 3 or positions.shape[1:] != (self.n_atoms, 3):
            raise ValueError(f"positions must have shape (B, {self.n_atoms}, 3) in nm; got {positions.shape}")
        if positions.shape[0] == 0:
            return np.zeros(0), np.zeros((0, self.n_atoms, 3)), 0
        chunks = [c for c in np.array_split(positions, self.n_workers) if len(c)]
        for i, chunk in enumerate(chunks):
            try:
                self._connections[i].send(chunk)
            except (BrokenPipeError, ConnectionResetError):
                proc = self._processes[i]
                proc.join(timeout=1)
                self.close()
                raise WorkerDiedError(
                    f"OpenMM worker {i} (pid {proc.pid}) is gone; exit code {proc.exitcode}"
                ) from None
        energies, forces, failed = [], [], 0
        for i in range(len(chunks)):
            status, payload = self._receive(i, "to answer", self.timeout_s)
            e, f, n = payload
            energies.append(e)
            forces.append(f)
            failed += n
        return np.concatenate(energies), np.concatenate(forces), failed

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        self._finalizer()

    def __enter__(self) -> EnergyWorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
