r"""What a merge should do to the optimizer state: the reference implementation's two-layer test problem.

Rebuilt from its description (bgflow's scheduler test): two P⁴Inv layers of size 3 (identity start, with bias)
in sequence map a batch of ones to :math:`10^{-6}` times ones; mean-squared error plus the P⁴ penalty
(:math:`C_p = 0.1`); Adam, lr 0.1; 100 steps on batches of 8; a merge round after optimizer steps 1, 11, 21, …,
91, forced every 5th round, corrected every 5th. The run is repeated for each ``reset_optimizer_state`` policy
(:class:`~p4lightning.p4.schedule.MergeSchedule`) and seed; the final-step MSE goes to ``results.json`` and a
table to ``results.md``.

With ``--bg-config`` (a Boltzmann-generator config, e.g. ``configs/bg/paper_p4inv.yaml``) it also trains that BG by
maximum likelihood only for ``--bg-steps`` steps per policy and seed (``p4lightning fit`` in a subprocess, its
config and log under ``--runs``; finished runs are not repeated), validating every ``--bg-val-every`` steps, and
writes the held-out (validation-replica) NLL at equal steps per policy to ``bg_results.json`` / ``bg_results.md``.

Run: ``python -m p4lightning.experiments.merge_policy --out docs/merge_policy``
(``--bg-config configs/bg/paper_p4inv.yaml --bg-seeds 0 1 2`` for the BG)
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import torch

from p4lightning._io import atomic_path
from p4lightning.cli.configs import compose_config
from p4lightning.experiments.mixing_study import fit_in_subprocess
from p4lightning.flows.sequential import SequentialFlow
from p4lightning.p4.inv import P4Inv
from p4lightning.p4.protocol import find_p4_modules
from p4lightning.p4.schedule import OPTIMIZER_STATE_POLICIES, MergeSchedule

__all__ = ["bg_config", "main", "two_layer_problem"]


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


def bg_config(base: dict[str, Any], policy: str, seed: int, steps: int, val_every: int, root: Path) -> dict[str, Any]:
    """``base`` as a maximum-likelihood-only run of ``steps`` steps with the merge policy ``policy``, seed ``seed``,
    validation every ``val_every`` steps and all outputs under ``root`` (figure and checkpoint callbacks but the
    final one dropped)."""
    cfg = json.loads(json.dumps(base))
    cfg["seed_everything"] = seed
    cfg["model"]["init_args"].update({"energy_phase_start": None, "seed": seed})
    t = cfg["trainer"]
    t.update({"max_steps": steps, "val_check_interval": val_every, "check_val_every_n_epoch": None,
              "default_root_dir": str(root)})  # fmt: skip
    t["logger"]["init_args"]["save_dir"] = str(root)
    callbacks = []
    for cb in t["callbacks"]:
        name = cb["class_path"].rsplit(".", 1)[-1]
        if name == "P4MergeCallback":
            cb["init_args"]["reset_optimizer_state"] = policy
            callbacks.append(cb)
        elif name == "FinalStepCheckpoint":
            cb["init_args"] = {"dirpath": str(root / "checkpoints"), "save_last": True, "save_top_k": 0,
                               "enable_version_counter": False}  # fmt: skip
            callbacks.append(cb)
    t["callbacks"] = callbacks
    return cfg


def _bg_runs(args: argparse.Namespace) -> dict[str, Any]:

    base = compose_config(args.bg_config)
    curves: dict[str, dict[str, dict[str, float]]] = {}
    for seed in args.bg_seeds:
        for policy in args.bg_policies:
            root = args.runs / f"{policy}_seed{seed}"
            if not (root / "checkpoints" / "last.ckpt").is_file():
                print(f"fitting {policy}, seed {seed} -> {root}", flush=True)
                fit_in_subprocess(bg_config(base, policy, seed, args.bg_steps, args.bg_val_every, root), root)
            (metrics,) = sorted(root.glob("logs/version_*/metrics.csv"))[-1:]
            rows = [r for r in csv.DictReader(metrics.open()) if r.get("val/nll")]
            curves.setdefault(policy, {})[str(seed)] = {str(int(r["step"]) + 1): float(r["val/nll"]) for r in rows}
    return {"config": str(args.bg_config), "steps": args.bg_steps, "val_nll": curves}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(prog="python -m p4lightning.experiments.merge_policy", description=__doc__)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bg-config", type=Path, default=None, help="also train this BG per policy (ML only)")
    parser.add_argument("--bg-seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--bg-steps", type=int, default=5000)
    parser.add_argument("--bg-policies", nargs="+", default=list(OPTIMIZER_STATE_POLICIES), choices=OPTIMIZER_STATE_POLICIES)
    parser.add_argument("--bg-val-every", type=int, default=1000)
    parser.add_argument("--runs", type=Path, default=Path("runs/merge_policy"))
    args = parser.parse_args(argv)
    if args.bg_config is not None and not args.bg_config.is_file():
        parser.error(f"--bg-config {args.bg_config} does not exist")
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
    if args.bg_config is not None:
        bg = _bg_runs(args)
        with atomic_path(args.out / "bg_results.json") as tmp:
            tmp.write_text(json.dumps(bg, indent=1))
        steps = sorted({int(k) for c in bg["val_nll"].values() for r in c.values() for k in r})
        rows = ["| policy | seed | " + " | ".join(f"step {k}" for k in steps) + " |",
                "|---|---|" + "---|" * len(steps)]  # fmt: skip
        for policy, by_seed in bg["val_nll"].items():
            for seed, curve in by_seed.items():
                rows.append(f"| `{policy}` | {seed} | " + " | ".join(f"{curve.get(str(k), float('nan')):.2f}" for k in steps) + " |")
        with atomic_path(args.out / "bg_results.md") as tmp:
            tmp.write_text(f"Validation NLL (nats; validation replicas 32-35) of `{args.bg_config}` trained by maximum "
                           f"likelihood only, {args.bg_steps} steps:\n\n" + "\n".join(rows) + "\n")  # fmt: skip
    return results


if __name__ == "__main__":
    main()
