r"""Boltzmann-generator step time with the OpenMM workers and the training process running together.

Each configuration runs in a fresh process (OpenMP reads ``OMP_*`` variables when torch loads), training the
demo-sized P⁴Inv Boltzmann generator (8 blocks, batch 256) on the shipped data with 2 energy workers:

* ``ML step``: density estimation only (the workers idle);
* ``energy step``: ML on 256 frames + the energy term on 128 generated samples (workers busy while torch waits).

Configurations: torch's defaults; ``OMP_WAIT_POLICY=PASSIVE``; one torch thread (what ``make`` and the
``p4lightning`` command set, because of this benchmark); and one torch thread with unpinned workers. Rounds alternate configurations; medians over rounds, ratios
to the defaults. Run: ``python -m benchmarks.bg.thread_policy --out docs/benchmarks/thread_policy``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {
    "torch defaults (2 threads), pinned workers": ({}, True),
    "OMP_WAIT_POLICY=PASSIVE, pinned workers": ({"OMP_WAIT_POLICY": "PASSIVE"}, True),
    "torch 1 thread, pinned workers": ({"OMP_NUM_THREADS": "1"}, True),
    "torch 1 thread, unpinned workers": ({"OMP_NUM_THREADS": "1"}, False),
}


def child(pin: bool, steps: int) -> dict[str, float]:
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    from p4lightning.data.md_datamodule import MDTrajectoryDataModule
    from p4lightning.models.boltzmann import BoltzmannGenerator
    from p4lightning.systems.alanine import alanine_dipeptide
    from p4lightning.systems.energy import OpenMMEnergy, regularize_energy

    root = Path(__file__).parents[2]
    dm = MDTrajectoryDataModule(
        [str(root / "data/ala2_600K.dcd")], str(root / "data/ala2.pdb"), batch_size=256
    )
    dm.setup()
    torch.manual_seed(0)
    model = BoltzmannGenerator(n_blocks=8)
    model.transform.fit_(dm.train.reshape(-1, 22, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    times: dict[str, list[float]] = {"ml": [], "energy": []}
    with OpenMMEnergy(alanine_dipeptide().system, 600.0, n_workers=2, pin=pin) as energy:
        for i in range(steps + 3):
            for kind in ("ml", "energy"):
                x = dm.train[torch.randint(0, len(dm.train), (256,))]
                t = time.perf_counter()
                loss = -model.log_density(x).mean()
                if kind == "energy":
                    xg, log_q = model.sample(128)
                    u = energy(xg.reshape(-1, 22, 3)).to(xg.dtype)
                    loss = loss + 0.05 * (regularize_energy(u)[0] + log_q).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if i >= 3:
                    times[kind].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()} | {"torch_threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/thread_policy"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child == "pin", args.steps)))
        return
    results: dict[str, list[dict[str, float]]] = {k: [] for k in CONFIGS}
    for _ in range(args.rounds):
        for name, (env, pin) in CONFIGS.items():
            clean = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
            out = subprocess.run(
                [sys.executable, "-m", __spec__.name, "--child", "pin" if pin else "nopin", "--steps", str(args.steps)],
                env={**clean, **env},
                capture_output=True,
                text=True,
                check=True,
            )
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {
        name: {k: statistics.median(r[k] for r in runs) for k in ("ml", "energy")}
        for name, runs in results.items()
    }
    base = med[next(iter(CONFIGS))]
    lines = [
        "# Boltzmann-generator step time with energy workers running",
        "",
        f"Command: `python -m benchmarks.bg.thread_policy --rounds {args.rounds} --steps {args.steps}`  ",
        "Demo-sized P⁴Inv BG (8 blocks), batch 256, energy term on 128 samples, 2 OpenMM workers; "
        f"median of {args.steps} steps per process, median over {args.rounds} alternating rounds.",
        "",
        "| configuration | ML step (ms) | ratio | energy step (ms) | ratio |",
        "|---|---|---|---|---|",
    ]
    for name, m in med.items():
        lines.append(
            f"| {name} | {m['ml'] * 1e3:.1f} | {m['ml'] / base['ml']:.2f} | {m['energy'] * 1e3:.1f} | {m['energy'] / base['energy']:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"median_s": med, "raw": results}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
