"""Two CPU processes (gloo) train a small density model three times: 25 steps uninterrupted, 13 steps with a
checkpoint, and 25 steps resumed from it (mid-epoch: 10 batches an epoch a rank). Every rank saves, per run, the
batches it saw (by global step) and its final parameters to ``OUT_DIR/rank{r}.pt``.

Run as a script through ``helpers.run_ddp_script``; by hand: ``PYTHONPATH=tests python tests/data/ddp_resume_run.py OUT``.
"""

import os
import sys
import warnings

import pytorch_lightning as pl
import torch
from helpers import ddp_trainer

from p4lightning.callbacks import FinalStepCheckpoint
from p4lightning.data.toy2d import Toy2DDataModule
from p4lightning.models.density import DensityEstimator


class Record(pl.Callback):
    def __init__(self, out_dir: str, run: str) -> None:
        self.out_dir, self.run, self.batches = out_dir, run, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append((trainer.global_step, batch[0].clone()))

    def on_train_end(self, trainer, pl_module):
        path = os.path.join(self.out_dir, f"rank{trainer.global_rank}.pt")
        saved = torch.load(path, weights_only=False) if os.path.exists(path) else {}
        state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        saved[self.run] = {"batches": self.batches, "state": state, "world_size": trainer.world_size}
        torch.save(saved, path)


def run(out_dir: str, name: str, max_steps: int, ckpt_path: str | None = None) -> None:
    pl.seed_everything(0)
    data = Toy2DDataModule("8gaussians", n_train=160, n_test=40, batch_size=8, seed=0)
    callbacks = [Record(out_dir, name)]
    if name == "cut":
        callbacks.append(FinalStepCheckpoint(dirpath=os.path.join(out_dir, "ckpt"), every_n_train_steps=13,
                                             save_top_k=0, save_last=True))  # fmt: skip
    trainer = ddp_trainer(callbacks, max_steps=max_steps, max_epochs=-1, enable_checkpointing=name == "cut")
    trainer.fit(DensityEstimator(flow="realnvp", lr=1e-3), datamodule=data, ckpt_path=ckpt_path)


if __name__ == "__main__":
    out = sys.argv[1]
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    run(out, "full", 25)
    run(out, "cut", 13)
    run(out, "resumed", 25, os.path.join(out, "ckpt", "last.ckpt"))
