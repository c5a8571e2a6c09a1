r"""``BoltzmannFigures``: the figures and summary of a Boltzmann-generator run, written at the end of ``fit``.

* ``energy_violins.png`` — reduced energies of held-out MD data, of the same data with 0.004 nm Gaussian
  noise, and of the generator's samples, with low-energy fractions (paper Fig. 6, left);
* ``ramachandran.png`` — (φ, ψ) histograms of held-out data and of samples (Fig. 6, right);
* ``training_curves.png`` — training NLL (and KL) and the validation metrics against the optimizer step;
* ``summary.json`` — the numbers behind them: the full metric table of
  :func:`p4lightning.metrics.evaluation.score` (energy statistics and shifts, reverse/forward ESS, NLL of
  held-out MD, Ramachandran KL/TV, energy W2, with their floors), plus the last validation NLL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from typing_extensions import override

from p4lightning._io import check_output_dir
from p4lightning._validation import ConfigurationError, check_positive_int
from p4lightning.metrics.evaluation import evaluate_model, write_json
from p4lightning.plots.molecules import plot_evaluations, plot_training_curves

__all__ = ["BoltzmannFigures"]

_TRAIN_KEYS = ("train/nll", "train/kl")
_VAL_KEYS = ("val/nll", "val/energy_mean", "val/low_energy_fraction", "val/ess", "val/ramachandran_kl")


class BoltzmannFigures(pl.Callback):
    """Record curves during training; at the end of ``fit`` sample, evaluate and write figures (rank zero).

    Args:
        out_dir: output folder (created).
        n_samples: generated samples for the final figures and metrics.
        noise_nm: standard deviation (nm) of the Gaussian noise added to data for the comparison violin.
        record_every_n_steps: optimizer steps between recorded training-curve points.
        seed: seed of the noise and of the final samples.
    """

    def __init__(
        self,
        out_dir: str = "figures",
        n_samples: int = 2000,
        noise_nm: float = 0.004,
        record_every_n_steps: int = 10,
        seed: int = 0,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.n_samples = check_positive_int(n_samples, "n_samples")
        if not noise_nm >= 0:
            raise ValueError(f"noise_nm must be >= 0; got {noise_nm}")
        self.noise_nm = float(noise_nm)
        self.record_every_n_steps = check_positive_int(record_every_n_steps, "record_every_n_steps")
        self.seed = seed
        self.history: dict[str, list[tuple[int, float]]] = {k: [] for k in (*_TRAIN_KEYS, *_VAL_KEYS)}
        self.summary: dict[str, Any] = {}

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Refuse, before training, an output folder that cannot be written and a datamodule without held-out
        frames (the figures compare against them)."""
        if stage == "fit" and trainer.is_global_zero:
            try:
                check_output_dir(self.out_dir, "BoltzmannFigures out_dir")
            except ValueError as err:
                raise ConfigurationError(str(err)) from None
        dm = trainer.datamodule
        if stage == "fit" and dm is not None and getattr(dm, "train", None) is not None:
            held_out = [getattr(dm, name, None) for name in ("val", "test")]
            if not any(h is not None and len(h) for h in held_out):
                raise ConfigurationError(
                    "BoltzmannFigures compares samples with held-out MD, but the datamodule's validation and test "
                    "splits are empty: set val_fraction or test_fraction > 0, or remove the callback"
                )

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step % self.record_every_n_steps:
            return
        for key in _TRAIN_KEYS:
            value = trainer.callback_metrics.get(key)
            if value is not None and (not self.history[key] or self.history[key][-1][0] != step):
                self.history[key].append((step, float(value)))

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for key in _VAL_KEYS:
            value = trainer.callback_metrics.get(key)
            if value is not None:
                self.history[key].append((trainer.global_step, float(value)))

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.summary = self.write(pl_module, trainer.datamodule)
        rank_zero_info(
            f"BoltzmannFigures: wrote {', '.join(self.summary['files'])} to {self.out_dir.resolve()}"
        )

    @torch.no_grad()
    def write(self, model: Any, datamodule: Any) -> dict[str, Any]:
        """Sample, evaluate (:func:`~p4lightning.metrics.evaluation.evaluate_model`) and write all figures and
        ``summary.json``; return the summary. The reference is the test split (else validation); the other
        held-out split, when there is one, gives the metrics' floor."""
        test, val = datamodule.test, datamodule.val
        if test is not None and len(test):
            reference, floor, split = test, (val if val is not None and len(val) else None), "test"
        elif val is not None and len(val):
            reference, floor, split = val, None, "val"
        else:
            raise ValueError("BoltzmannFigures needs held-out frames: the datamodule has empty val and test splits")
        replica = getattr(datamodule, "replica_ids", {}).get(split)  # whole replicas: MD's bootstrap interval
        ev = evaluate_model(
            model, reference, self.n_samples, self.noise_nm, self.seed, floor_x=floor, md_replica=replica
        )
        files = plot_evaluations({"BG samples": ev}, self.out_dir, self.noise_nm)
        files.append(plot_training_curves(self.history, self.out_dir / "training_curves.png"))
        summary = dict(ev.metrics)
        summary["val_nll_last"] = self.history["val/nll"][-1][1] if self.history["val/nll"] else None
        summary["files"] = [p.name for p in files] + ["summary.json"]
        write_json(summary, self.out_dir / "summary.json")
        return summary

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {k: [tuple(p) for p in v] for k, v in state_dict["history"].items()}
