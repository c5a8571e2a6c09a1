"""Work in worker processes, one per core: run each job in its own spawned process, report its progress, and
name the replicas of a worker that failed or died (:class:`ReplicaError`) while the others run to the end.

A worker that dies (killed, out of memory) or fails costs only its replicas. The workers end with the command,
even when it is killed (Note [workers die with the parent]).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from p4lightning.simulation.layout import REPLICA_NAME, TOPOLOGY_NAME

__all__ = ["ReplicaError"]


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
