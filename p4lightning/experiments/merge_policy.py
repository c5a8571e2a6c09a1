r"""What a merge should do to the optimizer state: the reference implementation's two-layer test problem.

Rebuilt from its description (bgflow's scheduler test): two P⁴Inv layers of size 3 (identity start, with bias)
in sequence map a batch of ones to :math:`10^{-6}` times ones; mean-squared error plus the P⁴ penalty
(:math:`C_p = 0.1`); Adam, lr 0.1; 100 steps on batches of 8; a merge round after optimizer steps 1, 11, 21, …,
91, forced every 5th round, corrected every 5th. The run is repeated for each ``reset_optimizer_state`` policy
(:class:`~p4lightning.p4.schedule.MergeSchedule`) and seed; the final-step MSE goes to ``results.json`` and a
table to ``results.md``.

Run: ``python -m p4lightning.experiments.merge_policy --out docs/merge_policy``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from p4lightning._io import atomic_path
from p4lightning.flows.sequential import SequentialFlow
from p4lightning.p4.inv import P4Inv
from p4lightning.p4.protocol import find_p4_modules
from p4lightning.p4.schedule import OPTIMIZER_STATE_POLICIES, MergeSchedule

__all__ = ["main", "two_layer_problem"]


def two_layer_problem(policy: str, seed: int, steps: int = 100, merge_every: int = 10) -> float:
    """Final-step MSE of the two-layer problem (see the module docstring) under ``policy``."""
    torch.manual_seed(seed)
    model = SequentialFlow([P4Inv(3, penalty_weight=0.1), P4Inv(3, penalty_weight=0.1)])
    layers = find_p4_modules(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    schedule = MergeSchedule(
        every_n_steps=1, force_every_n_merges=5, correct_every_n_merges=5, seed=seed, reset_optimizer_state=policy
    )  # type: ignore[arg-type]
    data = torch.ones(800, 3)
    target = 1e-6 * data
    mse = torch.zeros(())
    for i in range(steps):
        batch = data[8 * i : 8 * (i + 1)]
        y, _ = model(batch)
        mse = torch.nn.functional.mse_loss(y, target[8 * i : 8 * (i + 1)])
        penalty = sum((m.penalty() for _, m in layers), start=torch.zeros(()))
        opt.zero_grad()
        (mse + penalty).backward()
        opt.step()
        if i % merge_every == 0:  # after optimizer steps 1, 11, 21, ...
            schedule.merge_now(layers, i + 1, opt)
    return float(mse)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(prog="python -m p4lightning.experiments.merge_policy", description=__doc__)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    results = {p: {str(s): two_layer_problem(p, s) for s in args.seeds} for p in OPTIMIZER_STATE_POLICIES}
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "results.json") as tmp:
        tmp.write_text(json.dumps({"problem": "two P4Inv(3) layers, ones -> 1e-6 ones, Adam lr 0.1, 100 steps, "
                                   "merge after steps 1, 11, ..., 91", "final_mse": results}, indent=1))  # fmt: skip
    lines = ["| policy | " + " | ".join(f"seed {s}" for s in args.seeds) + " | worst |",
             "|---|" + "---|" * (len(args.seeds) + 1)]  # fmt: skip
    for p, r in results.items():
        lines.append(f"| `{p}` | " + " | ".join(f"{v:.2e}" for v in r.values()) + f" | {max(r.values()):.2e} |")
    text = "\n".join(lines) + "\n"
    with atomic_path(args.out / "results.md") as tmp:
        tmp.write_text("Command: `python -m p4lightning.experiments.merge_policy --out " + str(args.out) + "`\n\n"
                       "Final-step MSE of the two-layer problem (target 1e-6 · ones):\n\n" + text)  # fmt: skip
    print(text)
    return results


if __name__ == "__main__":
    main()
