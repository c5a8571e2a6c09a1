"""Train a small BoltzmannGenerator with 2 CPU processes; every rank dumps its P4 state and counters.

Run as a script through ``helpers.run_ddp_script`` (spawned children re-import ``__main__`` by path); by hand:
``PYTHONPATH=tests python tests/models/bg_ddp_run.py OUT_DIR``.
"""

import os
import sys
import warnings

import pytorch_lightning as pl
import torch
from helpers import ddp_trainer

from p4lightning import P4MergeCallback, find_p4_modules
from p4lightning.callbacks import BoltzmannFigures
from p4lightning.data.md_datamodule import MDTrajectoryDataModule
from p4lightning.models.boltzmann import BoltzmannGenerator

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


class Dump(pl.Callback):
    def __init__(self, out_dir):
        self.out_dir = out_dir

    def on_train_end(self, trainer, pl_module):
        state = {
            n: {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
            for n, m in find_p4_modules(pl_module)
        }
        torch.save(
            {
                "p4": state,
                "global_step": trainer.global_step,
                "world_size": trainer.world_size,
                "energy_evaluated": int(pl_module.energy.num_evaluated),
            },
            os.path.join(self.out_dir, f"rank{trainer.global_rank}.pt"),
        )


def main():
    out_dir = sys.argv[1]
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    pl.seed_everything(0, workers=True)
    model = BoltzmannGenerator(
        n_blocks=1,
        hidden=[16],
        energy_phase_start=3,
        energy_batch_size=8,
        energy_workers=1,
        n_eval_samples=16,
    )
    data = MDTrajectoryDataModule(
        [os.path.join(ROOT, "data", "ala2_600K.dcd")],
        os.path.join(ROOT, "data", "ala2.pdb"),
        stride=40,
        batch_size=32,
    )
    trainer = ddp_trainer(
        [
            P4MergeCallback(every_n_steps=2, force_every_n_merges=2),
            Dump(out_dir),
            BoltzmannFigures(out_dir=os.path.join(out_dir, "figures"), n_samples=32),
        ],
        max_steps=6,
        num_sanity_val_steps=0,
        limit_val_batches=1,
    )
    trainer.fit(model, datamodule=data)


if __name__ == "__main__":
    main()
