r"""``BoltzmannFigures``: the figures and summary of a Boltzmann-generator run, written at the end of ``fit``.

* ``energy_violins.png`` — reduced energies of held-out MD data, of the same data with 0.004 nm Gaussian
  noise, and of the generator's samples, with low-energy fractions (paper Fig. 6, left);
* ``ramachandran.png`` — (φ, ψ) histograms of held-out data and of samples (Fig. 6, right);
* ``training_curves.png`` — training NLL (and KL) and the validation metrics against the optimizer step;
* ``summary.json`` — the numbers behind them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from typing_extensions import override

from p4lightning._validation import check_positive_int
from p4lightning.plots.molecules import plot_energy_violins, plot_ramachandran, plot_training_curves
from p4lightning.systems.alanine import N_ATOMS
from p4lightning.systems.observables import phi_psi

__all__ = ["BoltzmannFigures"]

_TRAIN_KEYS = ("train/nll", "train/kl")
_VAL_KEYS = ("val/nll", "val/energy_mean", "val/low_energy_fraction", "val/ess", "val/torsion_kl")


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
        """Sample, evaluate and write all figures and ``summary.json``; return the summary."""
        reference = (
            datamodule.test if datamodule.test is not None and len(datamodule.test) else datamodule.val
        )
        reference = reference.to(model.device)
        g = torch.Generator().manual_seed(self.seed)
        noisy = reference + self.noise_nm * torch.randn(reference.shape, generator=g).to(reference)
        energy = model.energy
        u_data = energy(reference.reshape(-1, N_ATOMS, 3).double()).cpu().numpy()
        u_noisy = energy(noisy.reshape(-1, N_ATOMS, 3).double()).cpu().numpy()
        torch.manual_seed(self.seed)
        out = model.evaluate_samples(self.n_samples)
        u_bg = out["u"].double().cpu().numpy()
        threshold = float(model.data_energy_max)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        violins = plot_energy_violins(
            {"MD data": u_data, f"MD + {self.noise_nm:g} nm noise": u_noisy, "BG samples": u_bg},
            threshold,
            self.out_dir / "energy_violins.png",
        )
        phi_d, psi_d = phi_psi(reference.cpu())
        phi_s, psi_s = phi_psi(out["x"].cpu())
        rama = plot_ramachandran(
            {
                "MD data (held out)": (phi_d.numpy(), psi_d.numpy()),
                "BG samples": (phi_s.numpy(), psi_s.numpy()),
            },
            self.out_dir / "ramachandran.png",
        )
        curves = plot_training_curves(self.history, self.out_dir / "training_curves.png")
        from p4lightning.metrics.sampling import EffectiveSampleSize, EnergyStatistics, TorsionKL

        # rank-zero-only code: these metrics must not try to synchronise with the other ranks (deadlock)
        ess, kl = EffectiveSampleSize(sync_on_compute=False), TorsionKL(sync_on_compute=False)
        stats = EnergyStatistics(threshold, sync_on_compute=False)
        stats.update(out["u"].cpu())
        energy = stats.compute()
        ess.update(out["log_w"].cpu())
        kl.update(phi_d, psi_d, reference=True)
        kl.update(phi_s, psi_s, reference=False)
        summary = {
            "n_samples": self.n_samples,
            "low_energy_threshold": threshold,
            "energy_mean_samples": float(energy["mean"]),
            "energy_median_samples": float(out["u"].double().nanmedian()),
            "low_energy_fraction_samples": float(energy["low_energy_fraction"]),
            "energy_mean_data": float(u_data.mean()),
            "energy_mean_data_noise": float(u_noisy.mean()),
            "low_energy_fraction_data_noise": float((u_noisy < threshold).mean()),
            "ess": float(ess.compute()),
            "torsion_kl": float(kl.compute()),
            "val_nll_last": self.history["val/nll"][-1][1] if self.history["val/nll"] else float("nan"),
            "files": [p.name for p in (violins, rama, curves)] + ["summary.json"],
        }
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {k: [tuple(p) for p in v] for k, v in state_dict["history"].items()}
