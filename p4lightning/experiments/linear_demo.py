r"""Linear problems of the paper (Sect. 4.1, App. F) trained in a plain PyTorch loop.

A layer initialised at :math:`\mathbf{I}` is fit to :math:`\mathbf{y} = \mathbf{T}\mathbf{x}` by SGD on
:math:`J = \mathbb{E}\|\tilde{\mathbf{A}}\mathbf{x} - \mathbf{y}\|^2` in three ways: a plain linear layer,
P⁴Inv, and the inverse P⁴Inv. Curves of the loss and of :math:`\max|\mathbf{A}\mathbf{A}^{-1} - \mathbf{I}|`
are written as JSON and PNG.

Learning rates: with :math:`\mathbf{u} = 0` after a merge, one SGD step gives the rank-one update
:math:`-2\eta\,\mathbf{E}\mathbf{v}\mathbf{v}^\top`, whose size along :math:`\mathbf{v}` is
:math:`2\eta\|\mathbf{v}\|^2 \approx 2\eta n`; it must stay below 2, so :math:`\eta` scales as :math:`1/n`
here (the paper's :math:`\eta = 10^{-2}` belongs to a loss normalised differently).

Run: ``python -m p4lightning.experiments.linear_demo --out docs/linear_demo``
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from p4lightning._io import check_output_dir, write_text
from p4lightning.data.linear import linear_target
from p4lightning.p4.inv import P4Inv
from p4lightning.p4.schedule import MergeSchedule
from p4lightning.plots.curves import plot_linear_curves

__all__ = ["LinearRun", "PAPER_RUNS", "main", "train_linear"]


@dataclass(frozen=True)
class LinearRun:
    """One training run: target problem, training mode and the P⁴ hyper-parameters of App. F, Table 1."""

    problem: str
    mode: str  # "linear" | "p4inv" | "inverse-p4inv"
    steps: int
    lr: float
    every_n_steps: int = 1
    force_every_n_merges: int = 10
    correct_every_n_merges: int = 50
    penalty_weight: float = 0.0
    batch_size: int = 64
    log_every: int = 20

    @property
    def label(self) -> str:
        return self.mode if self.mode == "linear" else f"{self.mode} N={self.every_n_steps}"


PAPER_RUNS: tuple[LinearRun, ...] = (
    LinearRun("positive_definite", "linear", 3000, 5e-3),
    *(
        LinearRun("positive_definite", "p4inv", 3000, 5e-3, every_n_steps=n, penalty_weight=0.1)
        for n in (1, 10, 50)
    ),
    LinearRun("positive_definite", "inverse-p4inv", 3000, 5e-3, penalty_weight=0.1),
    LinearRun("special_orthogonal", "linear", 10000, 1.5e-3),
    LinearRun("special_orthogonal", "p4inv", 10000, 1.5e-3, penalty_weight=0.1),
    LinearRun("special_orthogonal", "inverse-p4inv", 10000, 1.5e-3, penalty_weight=0.1),
    LinearRun("negative_identity", "linear", 8000, 2e-3),
    LinearRun("negative_identity", "p4inv", 8000, 2e-3),
    LinearRun("negative_identity", "inverse-p4inv", 8000, 2e-3),
)


def train_linear(run: LinearRun, seed: int = 0, dim: int | None = None) -> dict[str, list[float]]:
    """Train one run in float32; return the logged curves and final state summary."""
    torch.manual_seed(seed)
    dtype = torch.float32
    target = linear_target(run.problem, dim).to(dtype)
    n = target.shape[0]
    layer: nn.Module
    if run.mode == "linear":
        layer = nn.Linear(n, n, bias=False, dtype=dtype)
        with torch.no_grad():
            layer.weight.copy_(torch.eye(n))
    else:
        parametrization = "matrix" if run.mode == "p4inv" else "inverse"
        layer = P4Inv(
            n, bias=False, parametrization=parametrization, penalty_weight=run.penalty_weight, dtype=dtype
        )
    optimizer = torch.optim.SGD(layer.parameters(), lr=run.lr)
    schedule = MergeSchedule(
        run.every_n_steps, run.force_every_n_merges, run.correct_every_n_merges, seed=seed
    )
    curves: dict[str, list[float]] = {"step": [], "loss": [], "inverse_error": [], "det_sign": []}
    eye = torch.eye(n, dtype=dtype)
    for step in range(1, run.steps + 1):
        x = torch.randn(run.batch_size, n, dtype=dtype)
        y = x @ target.T
        if isinstance(layer, P4Inv):
            pred = layer(x)[0]
            loss = (pred - y).square().sum(-1).mean()
            total = loss + layer.penalty()
        else:
            loss = total = (layer(x) - y).square().sum(-1).mean()
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        if isinstance(layer, P4Inv):
            schedule.step(layer, step, optimizer)
        if step % run.log_every == 0 or step == run.steps:
            curves["step"].append(step)
            curves["loss"].append(float(loss.detach()))
            if isinstance(layer, P4Inv):
                with torch.no_grad():
                    err = (layer.matrix @ layer.inverse_matrix - eye).abs().max()
                curves["inverse_error"].append(float(err))
                curves["det_sign"].append(float(layer.det_sign))
    if isinstance(layer, P4Inv):
        curves["merges"] = [float(v) for v in schedule.totals.values()]
    return curves


def main(argv: list[str] | None = None) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Train every run of :data:`PAPER_RUNS` (or the ``--quick`` subset) and write JSON + PNG to ``--out``."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("docs/linear_demo"), help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="short runs at small sizes (a smoke test)")
    args = parser.parse_args(argv)
    try:
        check_output_dir(args.out, "--out")
    except ValueError as err:
        parser.error(str(err))
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    for run in PAPER_RUNS:
        dim = None
        if args.quick:
            run = LinearRun(**{**run.__dict__, "steps": 60, "log_every": 10})
            dim = 8
        start = time.perf_counter()
        curves = train_linear(run, seed=args.seed, dim=dim)
        results.setdefault(run.problem, {})[run.label] = curves
        print(
            f"{run.problem:20s} {run.label:22s} final loss {curves['loss'][-1]:.3e}"
            + (f"  max|AA^-1 - I| {curves['inverse_error'][-1]:.2e}" if curves["inverse_error"] else "")
            + f"  ({time.perf_counter() - start:.1f} s)",
            flush=True,
        )
    write_text(args.out / "linear_results.json", json.dumps(results))
    figure = plot_linear_curves(results, args.out / "linear_curves.png")
    print(f"wrote {args.out / 'linear_results.json'} and {figure}")
    return results


def console() -> int:
    """The ``p4lightning-linear-demo`` console script: run :func:`main`; exit status 0 on success."""
    main()
    return 0


if __name__ == "__main__":
    raise SystemExit(console())
