r"""Throughput of alanine-dipeptide energy + force evaluation: plain OpenMM loop vs the worker pool.

In one run, on batches of 256 MD-like conformations (reference structure + 0.01 nm noise), in turn:

* ``plain loop``: one CPU ``Context`` in this process, OpenMM's default thread count, unpinned;
* ``plain loop, Threads=1``: the same with one OpenMM thread;
* ``pool, 1 worker`` and ``pool, 2 workers``: :class:`~p4lightning.systems.workers.EnergyWorkerPool`, each
  worker pinned to one core with ``Threads=1``;
* ``pool, 2 workers + torch busy``: the 2-worker pool while this process runs torch matrix products on its
  default threads in a background thread (what training does), to expose thread contention.

Rounds are interleaved; medians are reported as conformations/s and as ratios to the plain loop.

Run: ``python benchmarks/energy_throughput.py --out docs/benchmarks/energy_throughput``
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import openmm
import torch

from p4lightning.systems.alanine import alanine_dipeptide
from p4lightning.systems.workers import EnergyWorkerPool, evaluate_serially


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/energy_throughput"))
    args = parser.parse_args()
    ala2 = alanine_dipeptide(600.0)
    rng = np.random.default_rng(0)
    xyz = ala2.positions[None] + 0.01 * rng.standard_normal((args.batch, 22, 3))

    def context(threads: int | None) -> openmm.Context:
        props = {"Threads": str(threads)} if threads else {}
        return openmm.Context(
            ala2.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"), props
        )

    plain, plain1 = context(None), context(1)
    pool1, pool2 = EnergyWorkerPool(ala2.system, n_workers=1), EnergyWorkerPool(ala2.system, n_workers=2)
    e_ref = evaluate_serially(plain, xyz)[0]
    assert np.allclose(pool2.evaluate(xyz)[0], e_ref, rtol=1e-6, atol=1e-3), "pool and plain loop disagree"

    stop = threading.Event()

    def torch_busy() -> None:
        a = torch.randn(256, 256)
        while not stop.is_set():
            a = torch.tanh(a @ a.T / 256)

    def pool2_with_torch() -> None:
        stop.clear()
        worker = threading.Thread(target=torch_busy)
        worker.start()
        try:
            pool2.evaluate(xyz)
        finally:
            stop.set()
            worker.join()

    methods = {
        "plain loop": lambda: evaluate_serially(plain, xyz),
        "plain loop, Threads=1": lambda: evaluate_serially(plain1, xyz),
        "pool, 1 worker": lambda: pool1.evaluate(xyz),
        "pool, 2 workers": lambda: pool2.evaluate(xyz),
        "pool, 2 workers + torch busy": pool2_with_torch,
    }
    times: dict[str, list[float]] = {k: [] for k in methods}
    for fn in methods.values():
        fn()
    for _ in range(args.rounds):
        for name, fn in methods.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    pool1.close()
    pool2.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["plain loop"]
    lines = [
        "# Energy + force throughput, alanine dipeptide (22 atoms, OBC implicit solvent, no constraints)",
        "",
        f"Command: `python benchmarks/energy_throughput.py --batch {args.batch} --rounds {args.rounds}`  ",
        f"OpenMM {openmm.__version__}, CPU platform, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"batch {args.batch}, median of {args.rounds} interleaved rounds.",
        "",
        "| method | ms per batch | conformations/s | speed-up vs plain loop |",
        "|---|---|---|---|",
    ]
    for name, t in med.items():
        lines.append(f"| {name} | {t * 1e3:.1f} | {args.batch / t:.0f} | {base / t:.2f} |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"median_s": med, "batch": args.batch}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
