r"""The paper's linear experiments (Sect. 4.1, App. F, Figs. 2–4) through ``Trainer.fit``.

Every config in ``configs/linear/`` is a LightningCLI config (model ``LinearFit``, data
``LinearDataModule``, trainer with ``P4MergeCallback``). This command trains each, records the loss,
the eigenvalues of :math:`\tilde{\mathbf{A}}`, :math:`\max|\mathbf{A}\mathbf{A}^{-1} - \mathbf{I}|` and the
sign of the tracked determinant, and writes per problem a figure, plus ``linear_experiments.json`` and
``summary.md`` (final losses; steps to reach a loss threshold, as a ratio to the plain linear layer).

Run: ``python -m p4lightning.experiments.linear_lightning configs/linear/*.yaml --out docs/linear_experiments``
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LightningCLI

from p4lightning._io import check_output_dir, write_text
from p4lightning._validation import check_positive
from p4lightning.callbacks.merge import P4MergeCallback
from p4lightning.data.linear_datamodule import LinearDataModule
from p4lightning.models.linear import LinearFit
from p4lightning.p4.inv import P4Inv
from p4lightning.plots.linear import plot_linear_experiment

__all__ = ["MatrixTrajectory", "main", "run_config"]

#: A run "converged" when its training loss first falls below this (for the steps-to-threshold ratio).
LOSS_THRESHOLD = 1e-3


class MatrixTrajectory(pl.Callback):
    """Record loss, eigenvalues of the effective matrix, and (for P⁴Inv) inverse error and det sign."""

    def __init__(self, every_n_steps: int = 50) -> None:
        self.every_n_steps = every_n_steps
        self.history: dict[str, list[Any]] = {
            "step": [],
            "loss": [],
            "eig_real": [],
            "eig_imag": [],
            "inverse_error": [],
            "det_sign": [],
        }
        self._last = -1

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step == self._last or not (step % self.every_n_steps == 0 or step == trainer.max_steps):
            return
        self._last = step
        if not isinstance(pl_module, LinearFit):
            raise TypeError(f"MatrixTrajectory records LinearFit models; got {type(pl_module).__name__}")
        eig = torch.linalg.eigvals(pl_module.effective_matrix().double().cpu())
        h = self.history
        h["step"].append(step)
        h["loss"].append(float(trainer.callback_metrics["train/loss"]))
        h["eig_real"].append(eig.real.tolist())
        h["eig_imag"].append(eig.imag.tolist())
        layer = pl_module.layer
        if isinstance(layer, P4Inv):
            with torch.no_grad():
                a, a_inv = layer.matrix.double(), layer.inverse_matrix.double()
                h["inverse_error"].append(
                    float((a @ a_inv - torch.eye(a.shape[0], dtype=a.dtype, device=a.device)).abs().max())
                )
            h["det_sign"].append(float(layer.det_sign))


def run_config(
    path: str | Path, record_every: int = 50, max_steps: int | None = None, lr: float | None = None
) -> dict[str, Any]:
    """Train the LightningCLI config at ``path`` (``lr``: override the model's learning rate); return its recorded
    history and a description."""
    args = ["--config", str(path)]
    if max_steps is not None:
        args += ["--trainer.max_steps", str(max_steps)]
    if lr is not None:
        args += ["--model.init_args.lr", str(lr)]
    cli = LightningCLI(
        LinearFit,
        LinearDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=False,
        save_config_callback=None,
    )
    recorder = MatrixTrajectory(record_every)
    cli.trainer.callbacks.append(recorder)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = time.perf_counter() - start
    merge = next((cb for cb in cli.trainer.callbacks if isinstance(cb, P4MergeCallback)), None)
    model: LinearFit = cli.model
    label = model.mode if merge is None else f"{model.mode} N={merge.schedule.every_n_steps}"
    target = cli.datamodule.target
    return {
        "config": str(path),
        "problem": cli.datamodule.target_name,
        "label": label,
        "seconds": seconds,
        "merges": dict(merge.schedule.totals) if merge is not None else {},
        "target_eigenvalues": [[z.real, z.imag] for z in torch.linalg.eigvals(target.double()).tolist()],
        **recorder.history,
    }


def _steps_to(history: dict[str, Any], threshold: float) -> int | None:
    return next(
        (s for s, loss in zip(history["step"], history["loss"], strict=True) if loss < threshold), None
    )


def write_summary(results: list[dict[str, Any]], out: Path) -> str:
    """A markdown table of every run: final loss, steps to the loss threshold and ratio to linear."""
    lines = [
        f"| problem | run | final loss | steps to loss < {LOSS_THRESHOLD:g} | ratio to linear | "
        "max\\|AA⁻¹−I\\| end (worst) | det sign end | merges accepted / forced / refused | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for problem in dict.fromkeys(r["problem"] for r in results):
        runs = [r for r in results if r["problem"] == problem]
        base = next((_steps_to(r, LOSS_THRESHOLD) for r in runs if r["label"] == "linear"), None)
        for r in runs:
            steps = _steps_to(r, LOSS_THRESHOLD)
            ratio = f"{steps / base:.2f}" if steps and base else "–"
            inv = (
                f"{r['inverse_error'][-1]:.1e} ({max(r['inverse_error']):.1e})" if r["inverse_error"] else "–"
            )
            sign = f"{r['det_sign'][-1]:+.0f}" if r["det_sign"] else "–"
            m = r["merges"]
            merges = (
                f"{m['accepted']} / {m['forced']} / {sum(v for k, v in m.items() if k not in ('accepted', 'forced'))}"
                if m
                else "–"
            )
            lines.append(
                f"| {problem} | {r['label']} | {r['loss'][-1]:.2e} | {steps if steps else 'not reached'} | {ratio} | "
                f"{inv} | {sign} | {merges} | {r['seconds']:.0f} |"
            )
    text = "\n".join(lines) + "\n"
    write_text(out / "summary.md", text)
    return text


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("configs", nargs="+", type=Path, help="LightningCLI configs (configs/linear/*.yaml)")
    parser.add_argument("--out", type=Path, default=Path("docs/linear_experiments"))
    parser.add_argument("--record-every", type=int, default=50, help="optimizer steps between records")
    parser.add_argument(
        "--max-steps", type=int, default=None, help="override trainer.max_steps (smoke tests)"
    )
    parser.add_argument("--lr", type=float, default=None, help="override every config's learning rate (paper: 1e-2)")
    args = parser.parse_args(argv)
    if args.lr is not None:
        try:
            check_positive(args.lr, "--lr")
        except ValueError as err:
            parser.error(str(err))
    for path in args.configs:
        if not path.is_file():
            parser.error(f"config file not found: {path}")
    try:
        check_output_dir(args.out, "--out")
    except ValueError as err:
        parser.error(str(err))
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    results = []
    for path in args.configs:
        result = run_config(path, args.record_every, args.max_steps, args.lr)
        print(
            f"{result['problem']:20s} {result['label']:20s} final loss {result['loss'][-1]:.3e} ({result['seconds']:.0f} s)"
        )
        results.append(result)
    write_text(args.out / "linear_experiments.json", json.dumps(results))
    for problem in dict.fromkeys(r["problem"] for r in results):
        runs = {r["label"]: r for r in results if r["problem"] == problem}
        target = [complex(*z) for z in next(iter(runs.values()))["target_eigenvalues"]]
        figure = plot_linear_experiment(problem, runs, target, args.out / f"{problem}.png")
        print(f"wrote {figure}")
    print(write_summary(results, args.out))
    return results


if __name__ == "__main__":
    main()
