r"""Throughput of alanine-dipeptide energy + force evaluation: plain OpenMM loops vs the worker pool.

In one run, on batches of 256 MD-like conformations (reference structure + 0.01 nm noise), rounds
interleaved, in turn:

* ``plain loop``: one CPU ``Context`` with OpenMM's default thread count, unpinned, the public Python API
  (``setPositions`` / ``getState(getEnergy=True, getForces=True)``) — what a user writes first;
* ``plain loop, Threads=1``: the same with one OpenMM thread;
* ``pool, 2 workers, public API calls``: the pool with ``lean=False``, i.e. the workers call OpenMM's
  public wrappers instead of the compiled entry points (Note [lean OpenMM calls] in
  :mod:`p4lightning.systems.workers`);
* ``pool, 1 worker`` / ``pool, 2 workers``: :class:`~p4lightning.systems.workers.EnergyWorkerPool`, each
  worker pinned to one core with ``Threads=1``, timed from the parent (IPC included);
* ``pool, 2 workers + torch busy (k threads)``: the 2-worker pool while the parent runs torch matrix
  products in a background thread with k = 1 (the training policy, ``OMP_NUM_THREADS=1``) or 2 (torch's
  default) intra-op threads, to expose thread contention.

The plain loops run in a separate process (a plain loop is a single process; here it is timed inside that
process): with their multi-threaded ``Context`` living in the parent, OpenMM's and OpenMP's idle-spinning
threads there slowed the pool's next batch by 25-60 %, which is a property of this benchmark's set-up, not
of training, whose process runs torch on one thread and holds no OpenMM context. The parent runs torch on
one thread except in the last row.

With ``--torch-energy``: :class:`~p4lightning.systems.torch_energy.TorchEnergy` energy + forces in the parent,
one torch thread (compiled also with two threads — both cores, as the pool uses) for batches of 256, 1,024 and
4,096, float32 and float64, eager and compiled: ``potential_and_forces`` (the analytic gradient, Note [analytic
gradient]) and, compiled, the same energy expressions differentiated by autograd (``terms_kj`` +
``torch.autograd.grad``: the method before the analytic gradient), against the 2-worker pool and a one-context loop (``Threads=1``, timed in the parent, OpenMM's compiled entry points) on
the same batches, rounds interleaved, each method timed over ``--block`` consecutive calls per round (steady
state, as a training loop calls it; ``--block 1`` times single calls right after the other methods ran);
every ratio is the median of per-round ratios to the pool.

Run: ``python -m benchmarks.energy.energy_throughput --out docs/benchmarks/energy_throughput``
and ``python -m benchmarks.energy.energy_throughput --torch-energy --rounds 7 --block 5 --out docs/benchmarks/torch_energy``
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import openmm
import torch

from benchmarks._common import autograd_energy_and_forces, write_report
from p4lightning.systems.alanine import alanine_dipeptide
from p4lightning.systems.workers import EnergyWorkerPool, evaluate_serially

PLAIN = ("plain loop", "plain loop, Threads=1")


def _plain_loop_server(conn: Connection, xyz: np.ndarray) -> None:
    """Holds the plain-loop contexts; answers a method name with (seconds, energies) of one batch."""
    ala2 = alanine_dipeptide(600.0)

    def context(threads: int | None) -> openmm.Context:
        props = {"Threads": str(threads)} if threads else {}
        return openmm.Context(
            ala2.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"), props
        )

    default, single = context(None), context(1)
    calls = {
        PLAIN[0]: lambda: evaluate_serially(default, xyz, lean=False),
        PLAIN[1]: lambda: evaluate_serially(single, xyz, lean=False),
    }
    conn.send("ready")
    while (name := conn.recv()) is not None:
        t = time.perf_counter()
        energies = calls[name]()[0]
        conn.send((time.perf_counter() - t, energies))


def pool_only(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    ala2 = alanine_dipeptide(600.0)
    xyz = ala2.positions[None] + 0.01 * np.random.default_rng(0).standard_normal((args.batch, 22, 3))
    pools = {
        "pool, 1 worker": EnergyWorkerPool(ala2.system, n_workers=1),
        "pool, 2 workers": EnergyWorkerPool(ala2.system, n_workers=2),
        "pool, 2 workers, public API calls": EnergyWorkerPool(ala2.system, n_workers=2, lean=False),
    }
    times: dict[str, list[float]] = {k: [] for k in pools}
    for pool in pools.values():
        pool.evaluate(xyz)
    for _ in range(args.rounds):
        for name, pool in pools.items():
            for _ in range(5):  # consecutive batches, as consecutive training steps
                t = time.perf_counter()
                pool.evaluate(xyz)
                times[name].append(time.perf_counter() - t)
    for pool in pools.values():
        pool.close()
    lines = [
        "| method (pool only) | ms per batch | conformations/s | range (ms) |",
        "|---|---|---|---|",
    ]
    for name, ts in times.items():
        t = statistics.median(ts)
        lines.append(
            f"| {name} | {t * 1e3:.1f} | {args.batch / t:.0f} | {min(ts) * 1e3:.1f}–{max(ts) * 1e3:.1f} |"
        )
    head = [
        f"Command: `python -m benchmarks.energy.energy_throughput --pool-only --rounds {args.rounds} --out {args.out}`  ",
        f"batch {args.batch}, {args.rounds} rounds × 5 consecutive batches per pool, interleaved; median.",
        "",
    ]
    write_report(args.out, head + lines, {"all_s": times, "batch": args.batch, "rounds": args.rounds})


def torch_energy(args: argparse.Namespace) -> None:
    """TorchEnergy variants against the 2-worker pool and a one-context loop, batches 256 / 1,024 / 4,096."""
    from p4lightning.systems.torch_energy import TorchEnergy

    torch.set_num_threads(1)
    ala2 = alanine_dipeptide(600.0)
    energy = TorchEnergy(ala2.system, 600.0)
    rng = np.random.default_rng(0)
    pool = EnergyWorkerPool(ala2.system, n_workers=2)
    context = openmm.Context(
        ala2.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"}
    )

    energy_and_forces = energy.potential_and_forces

    def by_autograd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return autograd_energy_and_forces(energy, x)

    # one compiled graph per batch size, dtype and thread count (the thread count is a guard): 12 entries, more
    # than Dynamo's default limit of 8, past which it silently runs the function eagerly
    torch._dynamo.config.recompile_limit = 32
    compiled = torch.compile(energy_and_forces, dynamic=False)
    compiled_autograd = torch.compile(by_autograd, dynamic=False)

    def two_threads(fn: object, x: torch.Tensor) -> object:
        """Run ``fn(x)`` with two intra-op threads (both cores, as the 2-worker pool uses)."""
        torch.set_num_threads(2)
        try:
            return fn(x)
        finally:
            torch.set_num_threads(1)
    rows: list[dict[str, object]] = []
    compile_s: dict[str, float] = {}
    for batch in (256, 1024, 4096):
        xyz = ala2.positions[None] + 0.01 * rng.standard_normal((batch, 22, 3))
        e_ref, f_ref = pool.evaluate(xyz)[:2]
        methods = {
            "pool, 2 workers": lambda xyz=xyz: pool.evaluate(xyz),
            "one context, Threads=1": lambda xyz=xyz: evaluate_serially(context, xyz),
        }
        for dtype in (torch.float32, torch.float64):
            x = torch.tensor(xyz, dtype=dtype)
            tag = "float32" if dtype == torch.float32 else "float64"
            methods[f"torch {tag}, eager"] = lambda x=x: energy_and_forces(x)
            t = time.perf_counter()
            u, f = compiled(x)
            compile_s[f"{batch} {tag}"] = time.perf_counter() - t
            u_auto, f_auto = compiled_autograd(x)
            # the pool runs OpenMM's CPU platform (mixed precision, ~1e-7); float64 vs Reference: 1e-14 (tests)
            for name, (e, force) in {"analytic": (u, f), "autograd": (u_auto, f_auto)}.items():
                err = np.abs(e.double().numpy() - e_ref).max() / np.abs(e_ref).max()
                f_err = np.abs(force.double().numpy() - f_ref).max() / np.abs(f_ref).max()
                assert err < 1e-4 and f_err < 1e-4, f"torch {tag} {name} disagrees with OpenMM: {err}, {f_err}"
            methods[f"torch {tag}, compiled"] = lambda x=x: compiled(x)
            methods[f"torch {tag}, compiled, 2 threads"] = lambda x=x: two_threads(compiled, x)
            methods[f"torch {tag}, compiled, autograd"] = lambda x=x: compiled_autograd(x)
        times: dict[str, list[float]] = {k: [] for k in methods}
        for fn in methods.values():
            fn()
        for _ in range(args.rounds):
            for name, fn in methods.items():
                t = time.perf_counter()
                for _ in range(args.block):
                    fn()
                times[name].append((time.perf_counter() - t) / args.block)
        for name, ts in times.items():
            ratios = [p / t for p, t in zip(times["pool, 2 workers"], ts, strict=True)]
            rows.append({
                "batch": batch, "method": name, "ms": 1e3 * statistics.median(ts),
                "per_s": batch / statistics.median(ts), "speedup_vs_pool": statistics.median(ratios),
            })  # fmt: skip
    pool.close()
    lines = [
        "# TorchEnergy throughput: energy + forces of alanine dipeptide (OBC1, no constraints), one torch thread",
        "",
        f"Command: `python -m benchmarks.energy.energy_throughput --torch-energy --rounds {args.rounds} --block {args.block}`  ",
        f"OpenMM {openmm.__version__}, torch {torch.__version__}; median of {args.rounds} interleaved rounds of "
        f"{args.block} consecutive calls per method; "
        "speed-up = median of per-round ratios (pool time / method time). Compilation (first call): "
        + ", ".join(f"{k}: {v:.0f} s" for k, v in compile_s.items()),
        "",
        "| batch | method | ms per batch | conformations/s | speed-up vs 2-worker pool |",
        "|---|---|---|---|---|",
        *[
            f"| {r['batch']} | {r['method']} | {r['ms']:.1f} | {r['per_s']:.0f} | {r['speedup_vs_pool']:.2f} |"
            for r in rows
        ],
    ]
    write_report(args.out, lines, {"rows": rows, "compile_s": compile_s})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--block", type=int, default=5, help="--torch-energy: consecutive calls per method and round")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/energy_throughput"))
    parser.add_argument(
        "--pool-only",
        action="store_true",
        help="time only the pool (1 and 2 workers, lean and public calls): no plain-loop process and no "
        "torch threads beside it, the situation of a training step waiting for its energies "
        "(give it its own --out, e.g. docs/benchmarks/energy_throughput_pool_only)",
    )
    parser.add_argument("--torch-energy", action="store_true", help="TorchEnergy against the pool and one context")
    args = parser.parse_args()
    if args.torch_energy:
        torch_energy(args)
        return
    if args.pool_only:
        pool_only(args)
        return
    torch.set_num_threads(1)  # the training policy (make and the p4lightning command set OMP_NUM_THREADS=1)
    ala2 = alanine_dipeptide(600.0)
    rng = np.random.default_rng(0)
    xyz = ala2.positions[None] + 0.01 * rng.standard_normal((args.batch, 22, 3))

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_plain_loop_server, args=(child, xyz), daemon=True)
    server.start()
    assert parent.recv() == "ready"
    pool1, pool2 = EnergyWorkerPool(ala2.system, n_workers=1), EnergyWorkerPool(ala2.system, n_workers=2)
    pool2_public = EnergyWorkerPool(ala2.system, n_workers=2, lean=False)

    def plain(name: str) -> float:
        parent.send(name)
        seconds, energies = parent.recv()
        assert np.allclose(energies, e_ref, rtol=1e-6, atol=1e-3), f"{name} and the pool disagree"
        return seconds

    e_ref = pool2.evaluate(xyz)[0]
    stop = threading.Event()

    def torch_busy() -> None:
        a = torch.randn(256, 256)
        while not stop.is_set():
            a = torch.tanh(a @ a.T / 256)

    def pool2_with_torch(threads: int) -> float:
        torch.set_num_threads(threads)
        stop.clear()
        worker = threading.Thread(target=torch_busy)
        worker.start()
        try:
            t = time.perf_counter()
            pool2.evaluate(xyz)
            return time.perf_counter() - t
        finally:
            stop.set()
            worker.join()
            torch.set_num_threads(1)
            time.sleep(0.05)  # let idle OpenMP threads stop spinning before the next row

    def timed(fn: object) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    methods = {
        **{name: (lambda name=name: plain(name)) for name in PLAIN},
        "pool, 1 worker": lambda: timed(lambda: pool1.evaluate(xyz)),
        "pool, 2 workers": lambda: timed(lambda: pool2.evaluate(xyz)),
        "pool, 2 workers, public API calls": lambda: timed(lambda: pool2_public.evaluate(xyz)),
        "pool, 2 workers + torch busy (1 thread)": lambda: pool2_with_torch(1),
        "pool, 2 workers + torch busy (2 threads)": lambda: pool2_with_torch(2),
    }
    times: dict[str, list[float]] = {k: [] for k in methods}
    for fn in methods.values():
        fn()
    for _ in range(args.rounds):
        for name, fn in methods.items():
            times[name].append(fn())
    pool1.close()
    pool2.close()
    pool2_public.close()
    parent.send(None)
    server.join(timeout=10)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["plain loop"]
    lines = [
        "# Energy + force throughput, alanine dipeptide (22 atoms, OBC implicit solvent, no constraints)",
        "",
        f"Command: `python -m benchmarks.energy.energy_throughput --batch {args.batch} --rounds {args.rounds}`  ",
        f"OpenMM {openmm.__version__}, CPU platform, torch {torch.__version__}, batch {args.batch}, median of "
        f"{args.rounds} interleaved rounds. Plain loops timed in their own process; pool rows timed from the "
        "parent (IPC included), which runs torch on one thread except in the last row.",
        "",
        "| method | ms per batch | conformations/s | speed-up vs plain loop | range over rounds (ms) |",
        "|---|---|---|---|---|",
    ]
    for name, t in med.items():
        lo, hi = min(times[name]) * 1e3, max(times[name]) * 1e3
        lines.append(
            f"| {name} | {t * 1e3:.1f} | {args.batch / t:.0f} | {base / t:.2f} | {lo:.1f}–{hi:.1f} |"
        )
    write_report(args.out, lines, {"median_s": med, "all_s": times, "batch": args.batch})


if __name__ == "__main__":
    main()
