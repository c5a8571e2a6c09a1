"""2D density estimation: toy data, the two flows' sizes, a short fit through Trainer.fit with merges."""

import pytest
import pytorch_lightning as pl
import torch
from helpers import make_trainer

from p4lightning import P4Inv, P4MergeCallback
from p4lightning.data.toy2d import TOY_DENSITIES, Toy2DDataModule, sample_toy
from p4lightning.models.density import DensityEstimator


@pytest.mark.parametrize("name", sorted(TOY_DENSITIES))
def test_toy_samplers_are_seeded_and_two_dimensional(name):
    a, b = sample_toy(name, 500, seed=3), sample_toy(name, 500, seed=3)
    assert a.shape == (500, 2) and a.dtype == torch.float32 and torch.equal(a, b)
    assert bool(torch.isfinite(a).all()) and float(a.abs().max()) < 6.0


def test_paper_sizes():
    p4 = DensityEstimator("p4inv")
    assert sum(p.numel() for p in p4.parameters()) == 1200
    assert sum(isinstance(m, P4Inv) for m in p4.modules()) == 200
    assert sum(p.numel() for p in DensityEstimator("realnvp").parameters()) == 1220


@pytest.mark.parametrize("flow", ["p4inv", "realnvp"])
def test_short_fit_improves_test_likelihood(flow):
    torch.set_default_dtype(torch.float32)
    pl.seed_everything(0)
    data = Toy2DDataModule("8gaussians", n_train=4000, n_test=2000, batch_size=200)
    data.setup()
    model = DensityEstimator(flow, n_blocks=10 if flow == "p4inv" else 2, lr=1e-2)
    with torch.no_grad():
        before = float(model.log_prob(data.test).mean())
    callbacks = [P4MergeCallback(every_n_steps=10)] if flow == "p4inv" else []
    trainer = make_trainer(callbacks, max_steps=60)
    trainer.fit(model, datamodule=data)
    after = trainer.test(model, datamodule=data, verbose=False)[0]["test/log_likelihood"]
    assert after > before + 0.3
    assert model.sample(7).shape == (7, 2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="flow must be one of"):
        DensityEstimator("glow")
    with pytest.raises(ValueError, match="density must be one of"):
        Toy2DDataModule("moons")
