"""One draw: draw() is the model's samples chunk by chunk with their energies; evaluate_samples and evaluate_model
score the draw they are given."""

import warnings
from pathlib import Path

import pytest
import torch

from p4lightning.metrics.draw import Draw, draw
from p4lightning.metrics.evaluation import evaluate_model
from p4lightning.systems.protocol import energies

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def model():
    from p4lightning.models.boltzmann import BoltzmannGenerator

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bg = BoltzmannGenerator.load_from_checkpoint(
            ROOT / "checkpoints" / "spline_p4inv.ckpt", map_location="cpu", weights_only=False
        ).eval()
    bg.hparams.energy = "torch"
    bg.energy = bg.make_energy()
    yield bg
    torch.set_default_dtype(previous)


def test_draw_is_the_models_samples_with_their_energies(model):
    d = draw(model, 10, torch.Generator().manual_seed(0), chunk=4, energy_chunk=3)
    assert (
        d.x.shape == (10, 66)
        and d.log_q.shape == d.u.shape == d.out_of_branch.shape == (10,)
        and len(d) == 10
    )
    assert d.log_q.dtype == d.u.dtype == torch.float64 and d.out_of_branch.dtype == torch.bool
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        parts = [model.sample_with_coordinates(k, g) for k in (4, 4, 2)]
    assert torch.equal(d.x, torch.cat([p[0] for p in parts]))
    assert torch.equal(d.log_q, torch.cat([p[1] for p in parts]).double())
    assert torch.equal(d.u, energies(model.energy, d.x.double(), 3))
    out = model.evaluate_samples(10, chunk=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out["x"], d.x) and torch.equal(out["log_q"], d.log_q)  # the same draw
    torch.testing.assert_close(
        out["u"], d.u, rtol=1e-12, atol=1e-9
    )  # energy chunks of 4, not 3: the last bits
    torch.testing.assert_close(out["log_w"], -out["u"] - out["log_q"])


def test_draw_refuses_a_model_without_energy_and_bad_sizes(model):
    class NoEnergy:
        energy = None

    with pytest.raises(RuntimeError, match="energy op"):
        draw(NoEnergy(), 3)
    with pytest.raises(ValueError, match="n must be >= 1"):
        draw(model, 0)


def test_evaluate_model_scores_the_draw_it_is_given(model):
    md = model.sample(8, torch.Generator().manual_seed(1))[0].detach()  # any positions stand in for MD here
    d = draw(model, 6, torch.Generator().manual_seed(2))
    ev = evaluate_model(model, md, 6, samples=d)
    assert (
        torch.equal(ev.samples_x, d.x)
        and torch.equal(ev.samples_u, d.u)
        and torch.equal(ev.samples_log_q, d.log_q)
    )
    assert ev.metrics["n_samples"] == 6
    with pytest.raises(ValueError, match="holds 6 samples but n_samples is 5"):
        evaluate_model(model, md, 5, samples=d)
    assert isinstance(d, Draw)
