"""The MD command's worker processes: a killed worker is reported by name and the other replicas are kept; a
killed command takes its workers with it. Every process of the command is gone when it ends, and no file under
a final name is partial. Linux only (reads the process table from /proc)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mdtraj
import pytest

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists() or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux /proc and two usable cores (a worker pinned to one core is a worker running a replica)",
)

REPLICAS = ("replica_000.dcd", "replica_001.dcd")


def _processes() -> dict[int, tuple[int, str, str]]:
    """``pid -> (parent pid, state, start time)`` of every process, from ``/proc/<pid>/stat``."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:  # ended meanwhile
                continue
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
            table[int(entry)] = (int(fields[1]), fields[0], fields[19])
    return table


def _descendants(pid: int) -> set[tuple[int, str]]:
    """``(pid, start time)`` of every live descendant of ``pid`` (the start time tells a reused pid apart)."""
    table = _processes()
    found, frontier = set(), [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, state, start) in table.items():
            if ppid == parent and state not in "ZX":
                found.add((child, start))
                frontier.append(child)
    return found


def _alive(procs: set[tuple[int, str]]) -> set[tuple[int, str]]:
    table = _processes()
    return {
        (pid, start)
        for pid, start in procs
        if pid in table and table[pid][2] == start and table[pid][1] not in "ZX"
    }


def _is_running_a_replica(pid: int) -> bool:
    """Whether ``pid`` is a spawned worker (not the resource tracker) that has started a replica: a worker pins
    itself to one core first thing, so its CPU affinity is narrower than ours."""
    try:
        spawned = b"--multiprocessing-fork" in Path(f"/proc/{pid}/cmdline").read_bytes()
        return spawned and os.sched_getaffinity(pid) < os.sched_getaffinity(0)
    except OSError:  # ended meanwhile
        return False


def _start(out: Path, frames: int, save_every: int) -> subprocess.Popen:
    argv = [sys.executable, "-m", "p4lightning.cli.md", "--out", str(out), "--replicas", "2", "--workers", "2",
            "--frames", str(frames), "--save-every", str(save_every), "--equilibration-steps", "0", "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _workers(proc: subprocess.Popen, n: int, timeout: float = 60.0) -> list[tuple[int, str]]:
    """The command's ``n`` replica workers, as soon as each has started its replica (lowest pid first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        workers = sorted(p for p in _descendants(proc.pid) if _is_running_a_replica(p[0]))
        if len(workers) >= n:
            return workers
        time.sleep(0.02)
    raise AssertionError(
        f"the command did not start {n} replicas within {timeout} s (exit status {proc.poll()})"
    )


def _wait_gone(procs: set[tuple[int, str]], timeout: float = 10.0) -> set[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    while _alive(procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _alive(procs)


def _cleanup(proc: subprocess.Popen, family: set[tuple[int, str]]) -> None:
    """End what this test started and left running (after a failure), by pid."""
    for pid, _ in _alive(family):
        os.kill(pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def _visible_files(out: Path) -> set[str]:
    return {p.name for p in out.iterdir() if not p.name.startswith(".")} if out.exists() else set()


def test_a_killed_worker_is_named_the_other_replica_kept_and_nothing_outlives_the_command(tmp_path):
    out = tmp_path / "reps"
    proc = _start(out, frames=4, save_every=200)
    family: set[tuple[int, str]] = set()
    try:
        workers = _workers(proc, 2)
        family = _descendants(proc.pid)
        victim = workers[0][0]
        os.kill(victim, signal.SIGKILL)
        try:
            _, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail("the command hangs after one of its workers was killed")
        assert proc.returncode == 1, err
        line = err.strip().splitlines()[-1]
        assert line.startswith("p4lightning-md: error: ") and "Traceback" not in err, err
        assert f"pid {victim}" in line and "SIGKILL" in line, line
        assert not _wait_gone(family), "processes of the command outlived it"
        files = _visible_files(out)
        (kept,) = [name for name in REPLICAS if name in files]  # exactly one replica written ...
        (lost,) = [name for name in REPLICAS if name not in files]
        assert f"not written: {lost}" in line and kept in line, line  # ... and the message says which
        assert files == {kept, "topology.pdb"}  # no replicas.json, nothing partial under a final name
        assert mdtraj.load(str(out / kept), top=str(out / "topology.pdb")).n_frames == 4
    finally:
        _cleanup(proc, family)


def test_killing_the_command_ends_its_workers_before_they_write(tmp_path):
    out = tmp_path / "reps"
    proc = _start(out, frames=20, save_every=25_000)  # 5e5 steps a replica: far longer than this test waits
    family: set[tuple[int, str]] = set()
    try:
        _workers(proc, 2)
        family = _descendants(proc.pid)
        proc.kill()
        proc.wait()  # not communicate(): orphaned workers would hold its output pipes open
        assert not _wait_gone(family), "workers outlived the killed command"
        assert not any(out.glob("replica_*.dcd")) and not (out / "replicas.json").exists()
    finally:
        _cleanup(proc, family)


def test_a_replica_that_raises_is_named_with_its_error_and_the_others_run_on(tmp_path):
    from p4lightning.simulation.config import MDConfig
    from p4lightning.simulation.engines import _openmm_replica
    from p4lightning.simulation.layout import ReplicaSpec
    from p4lightning.simulation.processes import _Job, _run_jobs

    config = MDConfig(frames=2, save_every=10, equilibration_steps=0, compile=False)
    good = ReplicaSpec(0, 1, str(tmp_path / REPLICAS[0]), None, None)
    bad = ReplicaSpec(
        1, 2, str(tmp_path / REPLICAS[1]), str(tmp_path / "gone.dcd"), 0
    )  # its start is missing
    jobs = [_Job([0], _openmm_replica, (good, config)), _Job([1], _openmm_replica, (bad, config))]
    frames: list[int] = []
    _run_jobs(jobs, 2, frames.append)
    assert jobs[0].failure is None and sum(frames) == 2 and (tmp_path / REPLICAS[0]).is_file()
    assert jobs[1].failure.startswith("failed in its worker, pid ") and "FileNotFoundError" in jobs[1].failure
    assert "gone.dcd" in jobs[1].failure and not (tmp_path / REPLICAS[1]).exists()
