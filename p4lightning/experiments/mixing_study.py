r"""The mixing-layer study: ``p4inv`` vs ``mask`` vs ``lu`` between the couplings of one spline Boltzmann generator.

Every run uses the same base config (flow, data, protocol, budget: ``--config``), with only ``model.mixing``, the
seed (``seed_everything`` and ``model.seed``) and the output folder changed; with ``--energy-config`` every run has
a second stage from that config, started from the first stage's ``best.ckpt`` (``model.init_checkpoint``), as the
shipped two-stage models are trained. Each run (stage) is a ``p4lightning fit`` in a
subprocess (its own config file and log under ``--runs``; a run whose ``last.ckpt`` exists is not repeated, so an
interrupted study resumes where it stopped), timed by wall clock. All final checkpoints are then scored in one
``p4lightning evaluate`` (one table, the same held-out MD and floor set), and ``study.json`` gives each run's
mixing, seed, steps, wall time and the headline metrics with their intervals.

Run: ``python -m p4lightning.experiments.mixing_study --config configs/bg/mixing_study.yaml --out docs/reproduction/mixing``
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from p4lightning._io import atomic_path
from p4lightning.cli.configs import compose_config
from p4lightning.flows.blocks import SPLINE_MIXINGS

__all__ = ["fit_in_subprocess", "main", "run_config"]

REPLICAS = "data/ala2_600K_replicas"
#: held-out MD (test replicas) and the independent floor set (validation replicas), as in ``make demo``
EVAL_MD = [
    "--trajectory", f"{REPLICAS}/replica_03[6-9].dcd", "--floor-trajectory", f"{REPLICAS}/replica_03[2-5].dcd",
    "--topology", f"{REPLICAS}/topology.pdb",
]  # fmt: skip


def run_config(base: dict[str, Any], mixing: str, seed: int, root: Path) -> dict[str, Any]:
    """``base`` with ``mixing``, ``seed`` and every output path under ``root`` (figure callbacks dropped, and the
    merge callback where the mixing has no P⁴ layer to merge)."""
    cfg = json.loads(json.dumps(base))  # a deep copy of plain YAML data
    cfg["seed_everything"] = seed
    cfg["model"]["init_args"].update({"mixing": mixing, "seed": seed})
    trainer = cfg["trainer"]
    trainer["default_root_dir"] = str(root)
    trainer["logger"]["init_args"]["save_dir"] = str(root)
    kept = []
    for cb in trainer.get("callbacks", []):
        if cb["class_path"].endswith("BoltzmannFigures"):
            continue
        if cb["class_path"].endswith("P4MergeCallback") and mixing != "p4inv":
            continue
        if "dirpath" in cb.get("init_args", {}):
            cb["init_args"]["dirpath"] = str(root / "checkpoints")
        kept.append(cb)
    trainer["callbacks"] = kept
    return cfg


def fit_in_subprocess(cfg: dict[str, Any], root: Path) -> float:
    """Run ``p4lightning fit`` on ``cfg`` (written to ``root/config.yaml``); wall seconds."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "config.yaml"
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    start = time.perf_counter()
    with open(root / "fit.log", "w") as log:
        done = subprocess.run(
            [sys.executable, "-m", "p4lightning.cli", "fit", "--config", str(path)], stdout=log, stderr=subprocess.STDOUT
        )
    if done.returncode != 0:
        raise RuntimeError(f"p4lightning fit failed for {root} (exit {done.returncode}); see {root / 'fit.log'}")
    return time.perf_counter() - start


def _final_step(ckpt: Path) -> int:
    """The optimizer step of a Lightning checkpoint (stage 1 may stop early)."""
    import torch

    return int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m p4lightning.experiments.mixing_study", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="base BG config (a spline flow)")
    parser.add_argument("--energy-config", type=Path, default=None,
                        help="second-stage config, started from the first stage's best.ckpt")  # fmt: skip
    parser.add_argument("--mixings", nargs="+", default=list(SPLINE_MIXINGS), choices=SPLINE_MIXINGS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--runs", type=Path, default=Path("runs/mixing"), help="folder of the training runs")
    parser.add_argument("--n", type=int, default=100_000, help="samples per model for the evaluation")
    parser.add_argument("--out", type=Path, required=True, help="folder of the evaluation and study.json")
    parser.add_argument("--force", action="store_true", help="overwrite the evaluation in --out")
    args = parser.parse_args(argv)
    if not args.config.is_file():
        parser.error(f"--config {args.config} does not exist")
    base = compose_config(args.config)
    second = None
    if args.energy_config is not None:
        if not args.energy_config.is_file():
            parser.error(f"--energy-config {args.energy_config} does not exist")
        second = compose_config(args.energy_config)
    if base["model"]["init_args"].get("flow") != "spline":
        parser.error(f"--config {args.config} must configure flow: spline")
    if (args.out / "study.json").exists() and not args.force:
        parser.error(f"--out {args.out} already holds study.json; pass --force to overwrite")
    runs: list[dict[str, Any]] = []
    for seed in args.seeds:
        for mixing in args.mixings:
            root = args.runs / f"{mixing}_seed{seed}"
            stages = [(root, run_config(base, mixing, seed, root))]
            if second is not None:
                cfg = run_config(second, mixing, seed, root / "energy")
                cfg["model"]["init_args"]["init_checkpoint"] = str(root / "checkpoints" / "best.ckpt")
                stages.append((root / "energy", cfg))
            wall, steps = 0.0, 0
            for folder, cfg in stages:
                timing = folder / "wall_seconds.json"
                if not ((folder / "checkpoints" / "last.ckpt").is_file() and timing.is_file()):
                    print(f"fitting {mixing}, seed {seed} -> {folder}", flush=True)
                    seconds = fit_in_subprocess(cfg, folder)
                    with atomic_path(timing) as tmp:
                        tmp.write_text(json.dumps({"wall_seconds": seconds}))
                wall += json.loads(timing.read_text())["wall_seconds"]
                steps += _final_step(folder / "checkpoints" / "last.ckpt")
            ckpt = stages[-1][0] / "checkpoints" / "last.ckpt"
            runs.append({"mixing": mixing, "seed": seed, "ckpt": str(ckpt), "wall_seconds": wall, "steps": steps})
    names = [f"{r['mixing']}_s{r['seed']}" for r in runs]
    command = [sys.executable, "-m", "p4lightning.cli", "evaluate", "--ckpt", *[r["ckpt"] for r in runs],
               "--name", *names, *EVAL_MD, "--n", str(args.n), "--out", str(args.out), "--force"]  # fmt: skip
    print("evaluating:", shlex.join(command[2:]), flush=True)
    subprocess.run(command, check=True)
    metrics = json.loads((args.out / "metrics.json").read_text())
    for run, name in zip(runs, names, strict=True):
        m = metrics[name]
        run.update({
            "reverse_ess_labeled": m["reverse_ess_labeled"],
            "reverse_ess_labeled_interval95": m["reverse_ess_labeled_interval95"],
            "other_labeling_fraction": m["other_labeling_fraction"],
            "reverse_ess": m["reverse_ess"], "reverse_ess_interval95": m["reverse_ess_interval95"],
            "reverse_ess_clipped": m["reverse_ess_clipped"], "nll_md": m["nll_md"],
            "log_weight_robust_std": m["log_weight_robust_std"],
            "phi_positive_reweighted": m["phi_positive_reweighted"], "phi_positive_md": m["phi_positive_md"],
            "median_shift_kT": m["shift_vs_md_kT"]["median"], "n_samples": m["n_samples"],
        })  # fmt: skip
    study = {"config": str(args.config), "command": "python -m p4lightning.experiments.mixing_study "
             + shlex.join(argv if argv is not None else sys.argv[1:]), "runs": runs}  # fmt: skip
    with atomic_path(args.out / "study.json") as tmp:
        tmp.write_text(json.dumps(study, indent=1))
    print(f"wrote {args.out / 'study.json'}")
    return study


if __name__ == "__main__":
    main()
