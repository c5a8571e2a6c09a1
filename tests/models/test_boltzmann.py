"""BoltzmannGenerator: ML training decreases the NLL, the energy phase switches on time, energy gradients reach
the flow, P4 merges run through the callback, checkpoints restore the fitted transform."""

import warnings

import pytest
import pytorch_lightning as pl
import torch
from helpers import make_trainer, run_ddp_script

from p4lightning import P4Inv, P4MergeCallback
from p4lightning.data.md_datamodule import MDTrajectoryDataModule
from p4lightning.models.boltzmann import BoltzmannGenerator
from p4lightning.simulation import simulate


@pytest.fixture(scope="module")
def md(tmp_path_factory):
    return simulate(
        tmp_path_factory.mktemp("bg") / "t.dcd",
        frames=300,
        save_every=50,
        equilibration_steps=500,
        seed=2,
        progress=False,
    )


@pytest.fixture(autouse=True)
def _float32():
    torch.set_default_dtype(torch.float32)  # restored by the package conftest
    warnings.filterwarnings("ignore", ".*does not have many workers.*")


def _dm(md):
    return MDTrajectoryDataModule(
        [str(md.trajectory)], str(md.topology), batch_size=64, val_fraction=0.1, test_fraction=0.1
    )


def _trainer(max_steps, callbacks=(), **kw):
    return make_trainer(callbacks, **{"max_steps": max_steps, "num_sanity_val_steps": 0, "limit_val_batches": 1, **kw})


def test_ml_training_decreases_nll_and_merges_p4(md):
    pl.seed_everything(0)
    model = BoltzmannGenerator(n_blocks=2, hidden=[32, 32], lr=1e-3, energy_workers=1)
    dm = _dm(md)
    dm.setup()
    trainer = _trainer(60, callbacks=[P4MergeCallback(every_n_steps=15)], check_val_every_n_epoch=100)
    trainer.fit(model, datamodule=dm)
    x = dm.train  # 240 frames overfit quickly, so the training fit is what a handful of steps can show
    with torch.no_grad():
        nll_end = -model.log_density(x).mean()
        fresh = BoltzmannGenerator(n_blocks=2, hidden=[32, 32])
        fresh.transform.load_state_dict(model.transform.state_dict())
        nll_start = -fresh.log_density(x).mean()
    assert nll_end < nll_start - 2.0  # nats per conformation
    layers = [m for m in model.flow.modules() if isinstance(m, P4Inv)]
    assert len(layers) == 4 and all(int(m.merges_accepted) + int(m.merges_refused) == 4 for m in layers)


def test_energy_phase_switches_at_the_configured_step_and_gradients_reach_the_flow(md):
    pl.seed_everything(0)
    model = BoltzmannGenerator(
        n_blocks=1,
        hidden=[16],
        lr=1e-3,
        energy_phase_start=3,
        energy_lr=1e-5,
        energy_weight_ratio=0.05,
        energy_batch_size=16,
        energy_workers=1,
    )
    seen = []

    class Watch(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(
                (trainer.global_step, pl_module.weights()[1], trainer.optimizers[0].param_groups[0]["lr"])
            )

    _trainer(5, callbacks=[Watch()]).fit(model, datamodule=_dm(md))
    assert torch.isfinite(model.data_energy_max)  # the low-energy threshold: max energy of the training data
    w_e = 0.05 / 1.05
    assert [(s, round(w, 6), lr) for s, w, lr in seen] == [
        (1, 0.0, 1e-3),
        (2, 0.0, 1e-3),
        (3, round(w_e, 6), 1e-3),
        (4, round(w_e, 6), 1e-5),
        (5, round(w_e, 6), 1e-5),
    ]


def test_ml_and_energy_phase_steps_train_on_the_device(md, device):
    """``Trainer.fit`` with ``energy="torch"`` on ``--device`` (cpu by default): ML steps, then energy-phase
    steps; model, P4 state and energy live there, every parameter stays finite and the energy was evaluated."""
    pl.seed_everything(0)
    model = BoltzmannGenerator(n_blocks=1, hidden=[16], energy_phase_start=2, energy_batch_size=8,
                               n_eval_samples=16, energy="torch")  # fmt: skip
    seen, evaluated = set(), []

    class Where(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.update({pl_module.device.type, pl_module.energy.device.type, batch[0].device.type})
            evaluated.append(int(pl_module.energy.num_evaluated))

    accelerator = "gpu" if device.type == "cuda" else "cpu"
    _trainer(4, callbacks=[P4MergeCallback(every_n_steps=2), Where()], accelerator=accelerator,
             limit_val_batches=0).fit(model, datamodule=_dm(md))  # fmt: skip
    assert seen == {device.type}
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert evaluated[-1] - evaluated[1] >= 2 * 8  # steps 3 and 4 drew energy batches of 8
    assert all(int(m.merges_accepted) + int(m.merges_refused) == 2 for m in model._p4_modules)


def test_energy_gradients_reach_flow_parameters_and_positions_are_nm(md):
    pl.seed_everything(0)
    model = BoltzmannGenerator(n_blocks=1, hidden=[16], energy_workers=1)
    dm = _dm(md)
    dm.setup()
    model.transform.fit_(dm.train.reshape(-1, 22, 3))
    from p4lightning.systems.alanine import alanine_dipeptide
    from p4lightning.systems.energy import OpenMMEnergy

    with OpenMMEnergy(alanine_dipeptide().system, 600.0, n_workers=1) as energy:
        x, log_q = model.sample(8)
        assert x.shape == (8, 66) and log_q.shape == (8,)
        bonds = (x.reshape(8, 22, 3)[:, 6] - x.reshape(8, 22, 3)[:, 8]).norm(dim=-1)  # N-CA ~ 0.146 nm
        assert bool(((bonds > 0.12) & (bonds < 0.17)).all())
        u = energy(x.reshape(8, 22, 3)).to(x.dtype)
        (u + log_q).mean().backward()
    grads = [p.grad for p in model.flow.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_checkpoint_restores_the_fitted_transform(md, tmp_path):
    pl.seed_everything(0)
    model = BoltzmannGenerator(n_blocks=1, hidden=[16], energy_workers=1)
    trainer = _trainer(2)
    trainer.fit(model, datamodule=_dm(md))
    trainer.save_checkpoint(tmp_path / "bg.ckpt")
    loaded = BoltzmannGenerator.load_from_checkpoint(tmp_path / "bg.ckpt")
    assert bool(loaded.transform.fitted) and loaded.energy is None
    x = _dm(md)
    x.setup()
    with torch.no_grad():
        torch.testing.assert_close(loaded.log_density(x.val), model.log_density(x.val))


def test_bad_arguments():
    with pytest.raises(ValueError, match="mixing of flow='realnvp' must be one of"):
        BoltzmannGenerator(mixing="glow")
    with pytest.raises(ValueError, match="energy_weight_ratio must be >= 0"):
        BoltzmannGenerator(energy_weight_ratio=-1.0)
    with pytest.raises(ValueError, match="needs training positions"):
        BoltzmannGenerator(n_blocks=1).setup("fit")


def test_ddp_spawn_two_processes_train_the_bg_with_identical_p4_state(tmp_path):
    from pathlib import Path

    r0, r1 = run_ddp_script(Path(__file__).with_name("bg_ddp_run.py"), tmp_path, timeout=400)
    assert r0["world_size"] == 2 and r0["global_step"] == r1["global_step"] == 6
    # each rank evaluated its own energies (training data for the threshold, energy phase, validation samples)
    assert r0["energy_evaluated"] > 0 and r1["energy_evaluated"] > 0
    for name, state in r0["p4"].items():
        assert int(state["merges_accepted"]) + int(state["merges_refused"]) == 3
        for key, value in state.items():
            assert torch.equal(r1["p4"][name][key], value), (name, key)
    assert (tmp_path / "figures" / "summary.json").is_file()  # rank zero wrote the figures without a deadlock


def test_resume_from_checkpoint_reproduces_the_uninterrupted_run(md, tmp_path):
    """Stop after one epoch (4 steps; merges every 3 steps, so between merges 3 and 6), resume, compare.

    (Stopping with ``max_epochs``: a checkpoint written after ``max_steps`` ended exactly at an epoch end makes
    Lightning replay one batch on resume, a property of its loop bookkeeping, not of this model.)"""

    def run(max_epochs, ckpt_path=None, save=None):
        pl.seed_everything(0)
        model = BoltzmannGenerator(n_blocks=1, hidden=[16], energy_workers=1)
        trainer = _trainer(
            -1,
            callbacks=[P4MergeCallback(every_n_steps=3, seed=1)],
            max_epochs=max_epochs,
            check_val_every_n_epoch=100,
        )
        trainer.fit(model, datamodule=_dm(md), ckpt_path=ckpt_path)
        if save:
            trainer.save_checkpoint(save)
        return model, trainer.global_step

    full, steps = run(3)
    run(1, save=tmp_path / "mid.ckpt")
    resumed, resumed_steps = run(3, ckpt_path=str(tmp_path / "mid.ckpt"))
    assert steps == resumed_steps == 12
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


def test_p4_penalty_enters_the_loss_only_when_enabled(md):
    dm = _dm(md)
    dm.setup()
    x = dm.train[:32]
    losses = {}
    for weight in (0.0, 10.0):
        torch.manual_seed(0)
        model = BoltzmannGenerator(n_blocks=1, hidden=[16], p4_penalty_weight=weight)
        model.transform.fit_(dm.train.reshape(-1, 22, 3))
        for (
            m
        ) in model._p4_modules:  # u = -0.95 A v / |v|^2: G = 1 + v^T A^-1 u = 0.05, ln|G| = -3 < C_min = -2
            with torch.no_grad():
                m.u.copy_(-0.95 * (m.matrix @ m.v) / (m.v @ m.v))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            losses[weight] = float(model.training_step((x,), 0))
    assert losses[10.0] > losses[0.0] + 1.0


def test_resume_from_a_validation_time_checkpoint_between_merges_is_exact_and_last_ckpt_is_final(md, tmp_path):
    """Energy phase from step 6, merges every 4 steps, validation every epoch (4 batches of 64 of 240 frames).

    The uninterrupted run is compared with runs resumed from (a) the checkpoint written after validation at the
    end of epoch 1 (step 8, between merges 8 and 12... taken at 10 via the step checkpoint) and (b) the final
    ``last.ckpt`` of a shorter run stopped mid-epoch at step 10 (between merges 8 and 12). Parameters, P4 state
    and the data order must be bit-identical; ``last.ckpt`` must hold the final step.
    """
    from p4lightning.callbacks import FinalStepCheckpoint

    batches = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            batches.append((trainer.global_step, batch[0][:, 0].clone()))

    def run(max_steps, ckpt_path=None, dirpath=None):
        pl.seed_everything(0)
        batches.clear()
        model = BoltzmannGenerator(n_blocks=1, hidden=[16], energy_phase_start=6, energy_batch_size=8,
                                   n_eval_samples=16, energy="torch")  # fmt: skip
        callbacks = [P4MergeCallback(every_n_steps=4, seed=1), Record()]
        if dirpath is not None:
            callbacks.append(FinalStepCheckpoint(dirpath=dirpath, save_last=True, save_top_k=-1))
        trainer = _trainer(max_steps, callbacks, check_val_every_n_epoch=1, enable_checkpointing=dirpath is not None)
        trainer.fit(model, datamodule=_dm(md), ckpt_path=ckpt_path)
        return model, list(batches)

    full, full_batches = run(16)
    run(10, dirpath=tmp_path)
    last = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert last["global_step"] == 10  # the final step, not the step of the last validation
    val_time = tmp_path / "epoch=1-step=8.ckpt"
    assert torch.load(val_time, weights_only=False)["global_step"] == 8
    for ckpt, step in ((val_time, 8), (tmp_path / "last.ckpt", 10)):
        resumed, resumed_batches = run(16, ckpt_path=str(ckpt))
        assert [s for s, _ in resumed_batches] == [s for s, _ in full_batches[step:]]
        for (_, a), (_, b) in zip(resumed_batches, full_batches[step:], strict=True):
            assert torch.equal(a, b)  # the same data order
        for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
            assert torch.equal(a, b), name  # bit-identical: parameters, A, A^-1, log|det A|, counters
        layers = [m for m in resumed.flow.modules() if isinstance(m, P4Inv)]
        assert all(int(m.merges_accepted) + int(m.merges_refused) == 4 for m in layers)


def test_torch_and_openmm_energies_agree_inside_the_model(md):
    dm = _dm(md)
    dm.setup()
    energies = {}
    for kind in ("torch", "openmm"):
        model = BoltzmannGenerator(n_blocks=1, hidden=[16], energy=kind, energy_workers=1)
        model.transform.fit_(dm.train.reshape(-1, 22, 3))
        model.energy = model.make_energy()
        energies[kind] = model.energies(dm.val.double())
        model.teardown("fit")
    # OpenMM's CPU platform (the workers') computes in mixed precision: ~1e-6 relative
    torch.testing.assert_close(energies["torch"], energies["openmm"], rtol=2e-5, atol=1e-4)


def test_trainer_test_reports_nll_and_sample_metrics_on_the_test_split(md):
    pl.seed_everything(0)
    model = BoltzmannGenerator(n_blocks=1, hidden=[16], n_eval_samples=32)
    dm = _dm(md)
    trainer = _trainer(2)
    trainer.fit(model, datamodule=dm)
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    keys = ("test/nll", "test/energy_mean", "test/low_energy_fraction", "test/ess", "test/ramachandran_kl",
            "test/phi_positive_fraction", "test/phi_positive_reweighted")
    assert 0 <= result["test/phi_positive_reweighted"] <= 1
    for key in keys:
        assert key in result and result[key] == result[key]  # present, not NaN


def test_figures_callback_refuses_a_datamodule_without_held_out_frames_before_training(md, tmp_path):
    from p4lightning.callbacks import BoltzmannFigures

    dm = MDTrajectoryDataModule([str(md.trajectory)], str(md.topology), val_fraction=0.0, test_fraction=0.0)
    steps = []

    class Count(pl.Callback):
        def on_train_batch_end(self, *args):
            steps.append(1)

    trainer = _trainer(2, callbacks=[BoltzmannFigures(out_dir=str(tmp_path)), Count()])
    with pytest.raises(ValueError, match="validation and test splits are empty"):
        trainer.fit(BoltzmannGenerator(n_blocks=1, hidden=[16]), datamodule=dm)
    assert steps == []
    # an output folder that cannot be created (under a file) is refused before training, not after it
    from p4lightning._validation import ConfigurationError

    (tmp_path / "a_file").write_text("x")
    trainer = _trainer(2, callbacks=[BoltzmannFigures(out_dir=str(tmp_path / "a_file" / "figures")), Count()])
    with pytest.raises(ConfigurationError, match="BoltzmannFigures out_dir .* cannot be created"):
        trainer.fit(BoltzmannGenerator(n_blocks=1, hidden=[16]), datamodule=_dm(md))
    assert steps == []


def test_figures_callback_leaves_the_global_rng_untouched_and_is_reproducible(md, tmp_path):
    """Its samples and noise come from generators seeded by its own `seed`, never the global torch stream."""
    from p4lightning.callbacks import BoltzmannFigures

    pl.seed_everything(0)
    model = BoltzmannGenerator(n_blocks=1, hidden=[16], n_eval_samples=32)
    dm = _dm(md)
    _trainer(2).fit(model, datamodule=dm)
    model.energy = model.make_energy()
    summaries = []
    for run in range(2):
        torch.manual_seed(123)
        before = torch.get_rng_state()
        cb = BoltzmannFigures(out_dir=str(tmp_path / str(run)), n_samples=64, seed=5)
        summaries.append(cb.write(model, dm))
        assert torch.equal(torch.get_rng_state(), before)
    assert summaries[0]["shift_vs_md_kT"] == summaries[1]["shift_vs_md_kT"]


def test_compiled_model_compiles_the_torch_energy_and_trains_like_the_eager_one(md):
    """compile=True with energy="torch": the energy phase's energy is torch.compile-d (not a submodule, so not
    in the checkpoint) and three energy-phase steps end where the eager model's do, to float32 round-off."""
    params = {}
    for compiled in (False, True):
        pl.seed_everything(0)
        model = BoltzmannGenerator(
            n_blocks=1, hidden=[16], lr=1e-3, energy="torch", energy_phase_start=0, energy_batch_size=32,
            compile=compiled,
        )  # fmt: skip
        class Watch(pl.Callback):
            def __init__(self):
                self.energy_fns = []

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                self.energy_fns.append(pl_module._energy_fn)
                assert not any("_energy_fn" in k for k in pl_module.state_dict())

        watch = Watch()
        _trainer(3, callbacks=[watch]).fit(model, datamodule=_dm(md))
        assert len(watch.energy_fns) == 3 and all((fn is not None) == compiled for fn in watch.energy_fns)
        assert model._energy_fn is None  # released at teardown with the energy
        params[compiled] = torch.cat([p.detach().flatten() for p in model.flow.parameters()])
    torch.testing.assert_close(params[True], params[False], rtol=1e-4, atol=1e-5)


def test_energies_evaluate_on_the_torch_energys_device_and_return_on_the_inputs():
    """In setup() the datamodule's frames (CPU) meet a TorchEnergy that Lightning has moved to the accelerator
    (found on an H200: an index error). energies() moves each chunk to the energy's device and back."""
    from p4lightning.systems.alanine import alanine_dipeptide
    from p4lightning.systems.torch_energy import TorchEnergy

    seen = []

    class Elsewhere(TorchEnergy):
        @property
        def device(self):
            return torch.device("meta")

        def forward(self, x):
            seen.append(x.device)
            return torch.zeros(len(x), dtype=x.dtype)  # (a meta tensor has no values to copy back)

    model = BoltzmannGenerator(n_blocks=1, hidden=[16])
    model.energy = Elsewhere(alanine_dipeptide().system, 600.0)
    u = model.energies(torch.zeros(5, 22, 3, dtype=torch.float64), chunk=2)
    assert seen == [torch.device("meta")] * 3 and u.device == torch.device("cpu") and u.shape == (5,)


# --- the spline Boltzmann generator ------------------------------------------------------------------------------
from p4lightning.models.boltzmann import keep_lowest  # noqa: E402


def _spline_bg(**kw):
    args = {"flow": "spline", "mixing": "p4inv", "n_couplings": 2, "hidden": [16], "bins": 4,
            "z_matrix": "standard", "circular_torsions": "proper", "n_eval_samples": 64}  # fmt: skip
    return BoltzmannGenerator(**{**args, **kw})


def test_spline_bg_trains_merges_and_its_log_q_is_the_density_of_its_samples(md, tmp_path):
    pl.seed_everything(0)
    model = _spline_bg(energy_phase_start=4, energy_batch_size=32, energy_drop_fraction=0.1, lr_schedule="cosine",
                       iw_forward_weight=0.5, iw_clip_fraction=0.05)  # fmt: skip
    trainer = _trainer(8, callbacks=[P4MergeCallback(every_n_steps=3)], check_val_every_n_epoch=100)
    trainer.fit(model, datamodule=_dm(md))
    layers = [m for m in model.flow.modules() if isinstance(m, P4Inv)]
    assert len(layers) == 1 and int(layers[0].merges_accepted) == 2
    assert bool(torch.isfinite(torch.stack([p.sum() for p in model.parameters()])).all())
    with torch.no_grad():
        x, log_q, y = model.sample_with_coordinates(256, torch.Generator().manual_seed(0))
        assert not bool(model.transform.out_of_branch(y).any())
        assert model.transform.circular_indices == tuple(range(51, 60))  # 9 proper torsions, last
        assert float(y[:, 51:].min()) >= -torch.pi and float(y[:, 51:].max()) < torch.pi
        # ln q of a sample is the density of that conformation: evaluating it again gives the same number
        torch.testing.assert_close(model.log_density(x), log_q, atol=2e-3, rtol=1e-5)
    trainer.save_checkpoint(tmp_path / "spline.ckpt")
    loaded = BoltzmannGenerator.load_from_checkpoint(tmp_path / "spline.ckpt", map_location="cpu")
    with torch.no_grad():
        torch.testing.assert_close(loaded.log_density(x), model.log_density(x))


def test_spline_bg_starts_from_an_init_checkpoint_and_refuses_another_architecture(md, tmp_path):
    pl.seed_everything(0)
    first = _spline_bg(mixing="lu")
    trainer = _trainer(3, check_val_every_n_epoch=100)
    trainer.fit(first, datamodule=_dm(md))
    trainer.save_checkpoint(tmp_path / "ml.ckpt")
    second = _spline_bg(mixing="lu", init_checkpoint=str(tmp_path / "ml.ckpt"))
    second.trainer = None
    second._load_init_checkpoint(str(tmp_path / "ml.ckpt"))
    x = _dm(md)
    x.setup()
    with torch.no_grad():
        torch.testing.assert_close(second.log_density(x.train[:16]), first.log_density(x.train[:16]))
    other = _spline_bg(mixing="mask")
    with pytest.raises(ValueError, match="another architecture"):
        other._load_init_checkpoint(str(tmp_path / "ml.ckpt"))
    from p4lightning._validation import InputFileError

    (tmp_path / "garbage.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputFileError, match="not a readable torch checkpoint"):
        other._load_init_checkpoint(str(tmp_path / "garbage.ckpt"))


def test_iw_forward_kl_is_the_self_normalised_weighted_nll_of_the_valid_samples(md):
    from p4lightning.systems.observables import labeling_signs

    pl.seed_everything(0)
    model = _spline_bg(iw_forward_weight=1.0)
    dm = _dm(md)
    dm.setup()
    model.transform.fit_(dm.train.reshape(len(dm.train), 22, 3))
    model._labeling = labeling_signs(dm.train.reshape(len(dm.train), 22, 3)).double().mean(0) > 0.5
    with torch.no_grad():
        x, log_q = model.sample(64, torch.Generator().manual_seed(1))
    x = torch.cat([-x[:8], x[8:]])  # mirror images: every labeling torsion flips sign
    labeled = (labeling_signs(x) == model._labeling).all(-1)
    assert not bool(labeled[:8].any()) and int(labeled.sum()) > 40
    keep = torch.ones(64, dtype=torch.bool)
    keep[:5] = False
    valid = keep & labeled
    # q = p up to a constant (u = -ln q + 3): every weight equal, J_iw = mean NLL over the valid samples
    iw = model.iw_forward_kl(x, -log_q + 3.0, log_q, keep)
    nll = -model.log_density(x)
    torch.testing.assert_close(iw, nll[valid].mean(), rtol=1e-5, atol=1e-4)
    # general weights: softmax of -u - ln q over the valid samples
    u = torch.randn(64, generator=torch.Generator().manual_seed(2)) * 3 - log_q
    w = torch.softmax(torch.where(valid, -u - log_q, -torch.inf), 0)
    torch.testing.assert_close(model.iw_forward_kl(x, u, log_q, keep), (w * nll).sum(), rtol=1e-5, atol=1e-4)
    # the gradient flows only through ln q_θ of the valid samples
    params = [p for p in model.flow.parameters() if p.requires_grad]
    g = torch.autograd.grad(model.iw_forward_kl(x, u, log_q, keep), params, allow_unused=True)
    g_ref = torch.autograd.grad((w[valid] * -model.log_density(x[valid])).sum(), params, allow_unused=True)
    for a, b in zip(g, g_ref, strict=True):
        if a is not None or b is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # clipping: the largest weight is cut to the next one, so the two largest carry the same weight
    model.hparams.iw_clip_fraction = 1.5 / int(valid.sum())
    log_w = torch.where(valid, -u - log_q, -torch.inf)
    top = torch.topk(log_w, 2).values
    w_clip = torch.softmax(log_w.clamp(max=float(top[1])), 0)
    torch.testing.assert_close(model.iw_forward_kl(x, u, log_q, keep), (w_clip * nll).sum(), rtol=1e-5, atol=1e-4)


def test_realnvp_bg_with_circular_torsions_keeps_every_sample_in_the_branch_and_its_log_q_is_exact(md):
    """The paper's flow on the standard Z-matrix without aliasing: AngleSquash puts the torsions in (-π, π)."""
    pl.seed_everything(0)
    model = BoltzmannGenerator(n_blocks=1, hidden=[16], z_matrix="standard", circular_torsions="proper")
    dm = _dm(md)
    dm.setup()
    model.transform.fit_(dm.train.reshape(len(dm.train), 22, 3))
    with torch.no_grad():
        for p in model.flow.parameters():  # away from the identity start
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
        x, log_q, y = model.sample_with_coordinates(512, torch.Generator().manual_seed(0))
        assert not bool(model.transform.out_of_branch(y).any())
        assert float(y[:, 51:].abs().max()) < torch.pi
        torch.testing.assert_close(model.log_density(x), log_q, atol=2e-3, rtol=1e-5)  # one preimage: the same q


def test_spline_options_are_checked():
    with pytest.raises(ValueError, match="circular_torsions"):
        _spline_bg(circular_torsions="some")
    with pytest.raises(ValueError, match="mixing of flow='realnvp'"):
        BoltzmannGenerator(mixing="lu")
    with pytest.raises(ValueError, match="mixing of flow='spline'"):
        BoltzmannGenerator(flow="spline", mixing="swap")
    with pytest.raises(ValueError, match="energy_drop_fraction"):
        _spline_bg(energy_drop_fraction=1.0)
    with pytest.raises(ValueError, match="z_matrix"):
        _spline_bg(z_matrix="fab")
    with pytest.raises(ValueError, match="iw_forward_weight"):
        _spline_bg(iw_forward_weight=-1.0)
    with pytest.raises(ValueError, match="iw_clip_fraction"):
        _spline_bg(iw_clip_fraction=1.0)


def test_keep_lowest_drops_the_highest_and_non_finite_energies():
    u = torch.tensor([3.0, float("nan"), -1.0, 10.0, 2.0])
    assert keep_lowest(u, 0.0).tolist() == [True] * 5
    assert keep_lowest(u, 0.4).tolist() == [True, False, True, False, True]


def test_cosine_learning_rate_decays_each_phase_to_zero():
    model = _spline_bg(lr=1e-3, energy_lr=1e-4, energy_phase_start=100, lr_schedule="cosine")
    model.trainer = make_trainer(max_steps=300)
    assert model.learning_rate(0) == pytest.approx(1e-3)
    assert model.learning_rate(50) == pytest.approx(5e-4)
    assert model.learning_rate(100) == pytest.approx(1e-4)
    assert model.learning_rate(200) == pytest.approx(5e-5)
    assert model.learning_rate(300) == pytest.approx(0.0, abs=1e-12)


def test_weight_outliers_lists_the_largest_log_weights_in_order(md):
    from p4lightning.experiments.weight_outliers import outliers

    pl.seed_everything(0)
    model = _spline_bg()
    dm = _dm(md)
    _trainer(2, check_val_every_n_epoch=100).fit(model, datamodule=dm)
    model.energy = model.make_energy()  # as p4lightning's CLI does for a loaded model
    result = outliers(model, dm.test, n=64, top=5)
    lw = [r["log_w_minus_median"] for r in result["top"]]
    assert len(lw) == 5 and lw == sorted(lw, reverse=True) and lw[0] > 0
    assert 0 < sum(r["weight_share"] for r in result["top"]) <= 1 + 1e-9
    assert 0 <= result["transition_weight_share"] <= 1 and 0 < result["reverse_ess_labeled"] <= 1
