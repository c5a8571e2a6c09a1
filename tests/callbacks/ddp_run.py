"""Train LinearFit with P4MergeCallback under a multi-process strategy; every rank dumps its P4 state.

Run as a script through ``helpers.run_ddp_script`` (spawned children re-import ``__main__`` by path, so
everything here is picklable); by hand: ``PYTHONPATH=tests python tests/callbacks/ddp_run.py OUT_DIR``.
"""

import os
import sys
import warnings

import pytorch_lightning as pl
import torch
from helpers import ddp_trainer

from p4lightning import P4MergeCallback, find_p4_modules
from p4lightning.data.linear_datamodule import LinearDataModule
from p4lightning.models.linear import LinearFit


class DumpP4State(pl.Callback):
    def __init__(self, out_dir):
        self.out_dir = out_dir

    def on_train_end(self, trainer, pl_module):
        merge_cb = next(cb for cb in trainer.callbacks if isinstance(cb, P4MergeCallback))
        state = {
            name: {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
            for name, m in find_p4_modules(pl_module)
        }
        torch.save(
            {"p4": state, "schedule": merge_cb.schedule.state_dict(), "global_step": trainer.global_step},
            os.path.join(self.out_dir, f"rank{trainer.global_rank}.pt"),
        )


def main():
    out_dir = sys.argv[1]
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    pl.seed_everything(0, workers=True)
    model = LinearFit(dim=6, mode="p4inv", lr=5e-3, optimizer="adam")
    data = LinearDataModule(
        "positive_definite", dim=6, batch_size=8, steps_per_epoch=12, shuffle=True, seed=0
    )
    trainer = ddp_trainer(
        [P4MergeCallback(every_n_steps=3, force_every_n_merges=2, correct_every_n_merges=3), DumpP4State(out_dir)],
        max_epochs=2,
        deterministic=True,
    )
    trainer.fit(model, datamodule=data)


if __name__ == "__main__":
    main()
