r"""2D density estimation: P⁴Inv + Bent identity against RealNVP of about the same size (paper Sect. 4.2, Fig. 5).

For each density, both models are trained through ``Trainer.fit`` (P⁴Inv with ``P4MergeCallback``, N = 10,
N_force = 10, N_correct = 50, no penalty), evaluated on 20,000 held-out points, and sampled. Writes
``samples.png`` (rows: densities; columns: data, RealNVP, P⁴Inv), ``results.json`` and ``results.md``.

Paper: 8 epochs of 20,000 steps, batch 200, lr 5e-3 halved every epoch. The default here is shorter
(``--steps``, lr halved every quarter of the run) so it finishes on 2 CPU cores.

Run: ``python -m p4lightning.experiments.toy2d --out docs/toy2d``
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure  # no pyplot: the user's backend is never touched

from p4lightning.callbacks.merge import P4MergeCallback
from p4lightning.data.toy2d import TOY_DENSITIES, Toy2DDataModule
from p4lightning.models.density import DensityEstimator

__all__ = ["main", "train_density"]


def train_density(
    density: str, flow: str, steps: int, seed: int = 0, n_test: int = 20_000
) -> dict[str, object]:
    pl.seed_everything(seed)
    data = Toy2DDataModule(density, n_train=max(50_000, 200 * min(steps, 250)), n_test=n_test, seed=seed)
    model = DensityEstimator(flow=flow, lr=5e-3, lr_halving_steps=max(1, steps // 4))
    callbacks = (
        [P4MergeCallback(every_n_steps=10, force_every_n_merges=10, correct_every_n_merges=50, seed=seed)]
        if flow == "p4inv"
        else []
    )
    trainer = pl.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    seconds = time.perf_counter() - start
    test_ll = float(trainer.test(model, datamodule=data, verbose=False)[0]["test/log_likelihood"])
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "density": density,
        "flow": flow,
        "test_log_likelihood": test_ll,
        "parameters": n_params,
        "seconds": seconds,
        "samples": model.sample(20_000).numpy(),
        "data": data.test.numpy(),
    }


def plot_samples(results: list[dict[str, object]], densities: list[str], path: Path) -> Path:
    fig = Figure(figsize=(9, 3 * len(densities)))
    axes = fig.subplots(len(densities), 3, squeeze=False)
    for row, density in zip(axes, densities, strict=True):
        runs = {r["flow"]: r for r in results if r["density"] == density}
        panels = [
            ("data", runs["p4inv"]["data"], None),
            ("RealNVP", runs["realnvp"]["samples"], runs["realnvp"]),
            ("P4Inv", runs["p4inv"]["samples"], runs["p4inv"]),
        ]
        for ax, (title, pts, run) in zip(row, panels, strict=True):
            ax.hist2d(pts[:, 0], pts[:, 1], bins=120, range=[[-4, 4], [-4, 4]], cmap="magma")
            label = f"{title}" if run is None else f"{title}: test LL {run['test_log_likelihood']:.3f}"
            ax.set_title(f"{density} — {label}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--densities", nargs="+", default=list(TOY_DENSITIES), choices=list(TOY_DENSITIES))
    parser.add_argument("--steps", type=int, default=4000, help="optimizer steps per model (paper: 160,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-test", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=Path("docs/toy2d"))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    torch.set_num_threads(1)
    results = []
    for density in args.densities:
        for flow in ("realnvp", "p4inv"):
            r = train_density(density, flow, args.steps, args.seed, args.n_test)
            print(
                f"{density:12s} {flow:8s} test log-likelihood {r['test_log_likelihood']:.4f} ({r['parameters']} parameters, {r['seconds']:.0f} s)",
                flush=True,
            )
            results.append(r)
    args.out.mkdir(parents=True, exist_ok=True)
    figure = plot_samples(results, args.densities, args.out / "samples.png")
    table = [
        f"Command: `python -m p4lightning.experiments.toy2d --steps {args.steps} --seed {args.seed}`",
        "",
        "| density | RealNVP test LL (nats) | P⁴Inv test LL (nats) | parameters (RNVP / P⁴Inv) |",
        "|---|---|---|---|",
    ]
    for density in args.densities:
        runs = {r["flow"]: r for r in results if r["density"] == density}
        table.append(
            f"| {density} | {runs['realnvp']['test_log_likelihood']:.4f} | {runs['p4inv']['test_log_likelihood']:.4f} | "
            f"{runs['realnvp']['parameters']} / {runs['p4inv']['parameters']} |"
        )
    (args.out / "results.md").write_text("\n".join(table) + "\n")
    (args.out / "results.json").write_text(
        json.dumps([{k: v for k, v in r.items() if not isinstance(v, np.ndarray)} for r in results], indent=1)
    )
    print("\n".join(table))
    print(f"wrote {figure}, results.md, results.json")
    return results


if __name__ == "__main__":
    main()
