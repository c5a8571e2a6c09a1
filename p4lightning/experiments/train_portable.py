r"""A Boltzmann generator's whole training — maximum likelihood, then the energy stage — on a machine without
openmmtools or mdtraj (a GPU machine), timed stage by stage.

The two stages come from the same two configs as ``p4lightning fit`` (``--ml-config``, ``--energy-config``, composed
with their bases: :func:`~p4lightning.cli.configs.compose_config`): the model's arguments, ``max_steps``, the
validation interval, gradient clipping and the callbacks (the merge callback, early stopping, the best checkpoint
the energy stage starts from; folders moved under ``--out``). What the machine lacks comes from files written
where openmmtools and mdtraj are (``python -m p4lightning.experiments.energy_stage_portable --write-inputs DIR
--n-frames 64000``): the OpenMM ``System`` (``system.xml``, for :class:`~p4lightning.systems.torch_energy.TorchEnergy`),
the training frames (``frames.npy``) and the validation replicas (``val_frames.npy``).

Each stage appends ``step seconds`` to ``<stage>/progress.txt`` every 100 steps. ``--eager`` trains uncompiled whatever the configs say (torch.compile of P⁴Inv is refused before torch 2.13:
``p4lightning/p4/rank_one.py``). ``run.json`` in ``--out`` holds each stage's steps, wall time (``Trainer.fit``,
validation included) and step time, the device and torch version.

Run: ``python -m p4lightning.experiments.train_portable --ml-config configs/bg/spline_p4inv_ml.yaml
--energy-config configs/bg/spline_p4inv.yaml --inputs DIR --device cuda --eager --out OUT``
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from p4lightning.cli.configs import compose_config
from p4lightning.experiments.energy_stage_portable import FramesDataModule

__all__ = ["main", "stage_trainer"]

#: Callbacks that only write figures: left out of a timing run.
FIGURE_CALLBACKS = ("p4lightning.callbacks.BoltzmannFigures", "p4lightning.callbacks.bg_figures.BoltzmannFigures")


class _Progress(pl.Callback):
    """Appends ``step seconds`` to ``path`` every ``every`` steps: what a run cut by a time limit leaves behind."""

    def __init__(self, path: Path, every: int = 100) -> None:
        self.path, self.every, self.start = path, every, time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step % self.every == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(f"{trainer.global_step} {time.perf_counter() - self.start:.1f}\n")


def _instantiate(spec: dict[str, Any], folder: Path) -> pl.Callback:
    """A callback from its ``class_path`` / ``init_args``, any ``dirpath`` moved to ``folder``/checkpoints."""
    module, name = spec["class_path"].rsplit(".", 1)
    kwargs = dict(spec.get("init_args", {}))
    if "dirpath" in kwargs:
        kwargs["dirpath"] = str(folder / "checkpoints")
    return getattr(importlib.import_module(module), name)(**kwargs)


def stage_trainer(config: dict[str, Any], folder: Path, device: str, max_steps: int | None) -> pl.Trainer:
    """The ``Trainer`` of one stage from its composed config (``max_steps`` overrides the config's)."""
    trainer_cfg = config.get("trainer", {})
    callbacks: list[pl.Callback] = [
        _instantiate(c, folder) for c in trainer_cfg.get("callbacks", []) if c["class_path"] not in FIGURE_CALLBACKS
    ]
    callbacks.append(_Progress(folder / "progress.txt"))
    return pl.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        max_steps=max_steps if max_steps is not None else trainer_cfg.get("max_steps", -1),
        check_val_every_n_epoch=trainer_cfg.get("check_val_every_n_epoch", 1),
        gradient_clip_val=trainer_cfg.get("gradient_clip_val"),
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(folder),
        callbacks=callbacks,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ml-config", type=Path, required=True)
    parser.add_argument("--energy-config", type=Path, required=True)
    parser.add_argument("--inputs", type=Path, required=True, help="folder with system.xml, frames.npy, val_frames.npy")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--eager", action="store_true", help="train uncompiled (compile: false in both stages)")
    parser.add_argument("--ml-steps", type=int, default=None, help="override stage 1's max_steps (smoke runs)")
    parser.add_argument("--energy-steps", type=int, default=None, help="override stage 2's max_steps")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    missing = [f for f in ("system.xml", "frames.npy", "val_frames.npy") if not (args.inputs / f).is_file()]
    if missing:
        parser.error(f"--inputs {args.inputs} lacks {', '.join(missing)} (write them with energy_stage_portable --write-inputs)")
    import openmm

    from p4lightning.models.boltzmann import BoltzmannGenerator
    from p4lightning.systems.torch_energy import TorchEnergy

    system = openmm.XmlSerializer.deserialize((args.inputs / "system.xml").read_text())
    train = torch.from_numpy(np.load(args.inputs / "frames.npy"))
    val = torch.from_numpy(np.load(args.inputs / "val_frames.npy"))
    run: dict[str, Any] = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                           "torch": torch.__version__, "train_frames": len(train), "val_frames": len(val),
                           "args": {k: str(v) for k, v in vars(args).items()}, "stages": {}}  # fmt: skip
    init: str | None = None
    for stage, path, steps in (("ml", args.ml_config, args.ml_steps), ("energy", args.energy_config, args.energy_steps)):
        config = compose_config(path)
        folder = args.out / stage
        hp = dict(config["model"]["init_args"])
        hp["init_checkpoint"] = init  # stage 2 starts from stage 1's best checkpoint, made here
        if args.eager:
            hp["compile"] = False
        pl.seed_everything(config.get("seed_everything", 0), verbose=False)
        model = BoltzmannGenerator(**hp)
        energy = TorchEnergy(system, hp.get("temperature", 600.0))
        model.energy = energy  # set before setup: the model does not build one from openmmtools
        trainer = stage_trainer(config, folder, args.device, steps)
        data = FramesDataModule(train, config.get("data", {}).get("init_args", {}).get("batch_size", 256),
                                config.get("seed_everything", 0), val)  # fmt: skip
        start = time.perf_counter()
        trainer.fit(model, datamodule=data)
        seconds = time.perf_counter() - start
        best = folder / "checkpoints" / "best.ckpt"
        init = str(best) if best.is_file() else None
        run["stages"][stage] = {"config": str(path), "steps": trainer.global_step, "seconds": round(seconds, 1),
                                "step_s": seconds / max(trainer.global_step, 1),
                                "energy_evaluations": int(energy.num_evaluated),
                                "stopped_early": trainer.global_step < trainer.max_steps}  # fmt: skip
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "run.json").write_text(json.dumps(run, indent=1))  # after each stage: a cut run keeps stage 1
        print(stage, json.dumps(run["stages"][stage]), flush=True)
    run["seconds"] = sum(s["seconds"] for s in run["stages"].values())
    (args.out / "run.json").write_text(json.dumps(run, indent=1))
    print(json.dumps({k: run[k] for k in ("device", "seconds")}), flush=True)
    return run


if __name__ == "__main__":
    main()
