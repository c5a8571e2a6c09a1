"""P4MergeCallback under Trainer.fit: schedule with gradient accumulation, resume, DDP, bookkeeping, errors."""

import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from helpers import make_trainer, run_ddp_script
from pytorch_lightning.loggers import CSVLogger

from p4lightning import P4Inv, P4MergeCallback
from p4lightning.data.linear_datamodule import LinearDataModule
from p4lightning.models.linear import LinearFit


@pytest.fixture(autouse=True)
def _quiet():
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*GPU available but not used.*")


def _trainer(tmp_path=None, callbacks=(), **kwargs):
    return make_trainer(callbacks, **{"max_epochs": 1, "deterministic": True, "default_root_dir": tmp_path, **kwargs})


def _data(**kwargs):
    kwargs = {
        "target": "positive_definite",
        "dim": 5,
        "batch_size": 8,
        "steps_per_epoch": 12,
        "seed": 0,
        **kwargs,
    }
    return LinearDataModule(**kwargs)


class _Spy(P4MergeCallback):
    """Records (batch index, global step) of every merge round and the optimizer state right after it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.rounds_at = []
        self.state_after = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        before = self.schedule.rounds
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.schedule.rounds > before:
            self.rounds_at.append((batch_idx, trainer.global_step))
            layer = pl_module.layer
            opt = trainer.optimizers[0]
            self.state_after.append((layer.u in opt.state, layer.v in opt.state))


def test_merges_at_optimizer_steps_under_gradient_accumulation():
    pl.seed_everything(0)
    spy = _Spy(every_n_steps=2, force_every_n_merges=0, correct_every_n_merges=0)
    _trainer(callbacks=[spy], accumulate_grad_batches=2, max_epochs=1).fit(
        LinearFit(5, lr=1e-2), datamodule=_data()
    )
    # 12 batches, 2 per optimizer step -> 6 optimizer steps; a round every 2 steps, each once
    assert spy.rounds_at == [(3, 2), (7, 4), (11, 6)]
    assert spy.schedule.rounds == 3 and spy.schedule.last_merged_step == 6


def test_optimizer_state_of_merged_perturbation_is_reset_and_parameters_keep_identity():
    pl.seed_everything(0)
    model = LinearFit(5, lr=1e-3, optimizer="adam")
    ids = (id(model.layer.u), id(model.layer.v))
    spy = _Spy(every_n_steps=3, force_every_n_merges=1)
    trainer = _trainer(callbacks=[spy])
    trainer.fit(model, datamodule=_data())
    assert (id(model.layer.u), id(model.layer.v)) == ids
    opt = trainer.optimizers[0]
    assert all(p is q for p, q in zip(opt.param_groups[0]["params"], model.parameters(), strict=True))
    # forced every round -> always reset; the default drops the state of the re-drawn v only (u keeps its moments)
    assert spy.state_after == [(True, False)] * 4
    for policy, after in (("all", (False, False)), ("none", (True, True))):
        pl.seed_everything(0)
        other = _Spy(every_n_steps=3, force_every_n_merges=1, reset_optimizer_state=policy)
        _trainer(callbacks=[other]).fit(LinearFit(5, lr=1e-3, optimizer="adam"), datamodule=_data())
        assert other.state_after == [after] * 4, policy


def _fit_linear(max_epochs, ckpt_path=None, save_to=None, tmp_path=None):
    pl.seed_everything(0)
    model = LinearFit(5, lr=2e-2, optimizer="adam")
    cb = P4MergeCallback(every_n_steps=5, force_every_n_merges=2, correct_every_n_merges=3, seed=3)
    trainer = _trainer(tmp_path, callbacks=[cb], max_epochs=max_epochs)
    trainer.fit(model, datamodule=_data(shuffle=False), ckpt_path=ckpt_path)
    if save_to is not None:
        trainer.save_checkpoint(save_to)
    return model, cb


def test_resume_between_merges_reproduces_the_uninterrupted_run(tmp_path):
    full, full_cb = _fit_linear(max_epochs=3, tmp_path=tmp_path)
    ckpt = tmp_path / "between_merges.ckpt"
    _, first_cb = _fit_linear(max_epochs=1, save_to=ckpt, tmp_path=tmp_path)  # stops at step 12
    assert first_cb.schedule.last_merged_step == 10  # the checkpoint lies between merges 10 and 15
    resumed, resumed_cb = _fit_linear(max_epochs=3, ckpt_path=str(ckpt), tmp_path=tmp_path)
    assert resumed_cb.schedule.rounds == full_cb.schedule.rounds == 7
    assert resumed_cb.schedule.totals == full_cb.schedule.totals
    for key, value in full.layer.state_dict().items():
        torch.testing.assert_close(resumed.layer.state_dict()[key], value, rtol=1e-6, atol=1e-7, msg=key)


def test_ddp_spawn_two_processes_keep_identical_p4_state(tmp_path):
    r0, r1 = run_ddp_script(Path(__file__).with_name("ddp_run.py"), tmp_path)
    # 12 samples-batches of 8 split over 2 ranks -> 6 steps per epoch, 2 epochs -> 12 steps, a round every 3
    assert r0["global_step"] == r1["global_step"] == 12
    assert r0["schedule"]["rounds"] == r1["schedule"]["rounds"] == 4
    assert r0["schedule"]["totals"] == r1["schedule"]["totals"]
    assert torch.equal(r0["schedule"]["generator_state"], r1["schedule"]["generator_state"])
    for name, state in r0["p4"].items():
        for key, value in state.items():
            assert torch.equal(r1["p4"][name][key], value), (name, key)
    assert int(r0["p4"]["layer"]["merges_accepted"]) + int(r0["p4"]["layer"]["merges_refused"]) == 4


def test_logs_merge_statistics(tmp_path):
    pl.seed_everything(0)
    logger = CSVLogger(tmp_path, name="run")
    cb = P4MergeCallback(every_n_steps=4)
    _trainer(tmp_path, callbacks=[cb], logger=logger, log_every_n_steps=1).fit(
        LinearFit(5), datamodule=_data()
    )
    text = Path(logger.log_dir, "metrics.csv").read_text()
    header = text.splitlines()[0]
    for key in ("p4/merges_accepted", "p4/merges_refused", "p4/log_abs_g_min", "p4/inverse_error_probe"):
        assert key in header
    column = header.split(",").index("p4/merges_accepted")
    counts = {float(r.split(",")[column]) for r in text.splitlines()[1:] if r.split(",")[column]}
    assert counts == {1.0, 2.0, 3.0}  # 12 steps, a round every 4, cumulative accepted count


def test_warns_when_refusals_pile_up():
    class AlwaysRefused(LinearFit):
        def __init__(self):
            super().__init__(4, lr=5e-2)
            self.layer = P4Inv(4, bias=False, log_det_bounds=(-1e-9, 1e-9))

    pl.seed_everything(0)
    cb = P4MergeCallback(every_n_steps=1, force_every_n_merges=0, warn_window=5)
    with pytest.warns(RuntimeWarning, match="of merges refused over the last 5 rounds"):
        _trainer(callbacks=[cb]).fit(AlwaysRefused(), datamodule=_data(dim=4))


def test_state_dict_round_trip():
    cb = P4MergeCallback(every_n_steps=2, seed=5)
    cb.schedule.rounds = 7
    other = P4MergeCallback(every_n_steps=2, seed=1)
    other.load_state_dict(cb.state_dict())
    assert other.schedule.rounds == 7
    assert torch.equal(other.schedule.generator.get_state(), cb.schedule.generator.get_state())
    assert cb.state_key == P4MergeCallback(every_n_steps=3).state_key  # found again whatever the settings


def test_resume_with_changed_settings_is_refused_not_silently_restarted(tmp_path):
    pl.seed_everything(0)
    trainer = _trainer(callbacks=[P4MergeCallback(every_n_steps=2)])
    trainer.fit(LinearFit(5), datamodule=_data())
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    resumed = _trainer(callbacks=[P4MergeCallback(every_n_steps=3)], max_epochs=2)
    with pytest.raises(ValueError, match="checkpointed every_n_steps=2 differs from this schedule's every_n_steps=3"):
        resumed.fit(LinearFit(5), datamodule=_data(), ckpt_path=str(tmp_path / "run.ckpt"))
    # validate/test never merge: Lightning restores callback state there too (after setup), and the checkpoint's
    # schedule is neither checked nor restored
    saved = torch.load(tmp_path / "run.ckpt", weights_only=False)["callbacks"]["P4MergeCallback"]
    stub = SimpleNamespace(strategy=object())
    for stage in ("validate", "test"):
        other = P4MergeCallback(every_n_steps=3)
        other.setup(stub, LinearFit(5), stage)
        other.load_state_dict(saved)
        assert other.schedule.rounds == 0
    other.setup(stub, LinearFit(5), "fit")
    with pytest.raises(ValueError, match="checkpointed every_n_steps=2 differs"):
        other.load_state_dict(saved)


def test_resume_with_another_optimizer_state_policy_is_refused(tmp_path):
    pl.seed_everything(0)
    trainer = _trainer(callbacks=[P4MergeCallback(every_n_steps=2, reset_optimizer_state="all")])
    trainer.fit(LinearFit(5), datamodule=_data())
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    saved = torch.load(tmp_path / "run.ckpt", weights_only=False)["callbacks"]["P4MergeCallback"]
    assert saved["schedule"]["reset_optimizer_state"] == "all"
    resumed = _trainer(callbacks=[P4MergeCallback(every_n_steps=2)], max_epochs=2)
    with pytest.raises(ValueError, match="reset_optimizer_state='all' differs from this schedule's 'redrawn'"):
        resumed.fit(LinearFit(5), datamodule=_data(), ckpt_path=str(tmp_path / "run.ckpt"))


def test_model_without_p4_module_is_rejected():
    with pytest.raises(ValueError, match="contains no P4Module"):
        _trainer(callbacks=[P4MergeCallback()]).fit(LinearFit(5, mode="linear"), datamodule=_data())


@pytest.mark.parametrize("name", ["FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy"])
def test_sharding_strategy_is_rejected_by_type(name):
    """Detected with isinstance (as Lightning's own callbacks do): subclasses too, look-alike names not."""
    from pytorch_lightning import strategies

    sharded = type(f"My{name}", (getattr(strategies, name),), {})
    strategy = object.__new__(sharded)  # no __init__: FSDP/DeepSpeed need their packages to construct
    with pytest.raises(ValueError, match=f"does not support strategy My{name}: it shards"):
        P4MergeCallback().setup(SimpleNamespace(strategy=strategy), LinearFit(3), "fit")
    look_alike = object.__new__(type(f"Not{name}", (strategies.DDPStrategy,), {}))
    P4MergeCallback().setup(SimpleNamespace(strategy=look_alike), LinearFit(3), "fit")  # data-parallel: fine


def test_callback_logs_every_module_diagnostics_without_knowing_its_type():
    """P4Inv reports its inverse probe, P4Orth its orthogonality probe; the callback logs the max of each."""
    import torch

    from p4lightning import P4Inv, P4Orth

    net = torch.nn.Sequential(P4Inv(4, dtype=torch.float64), P4Orth(4, dtype=torch.float64), P4Inv(3, dtype=torch.float64))
    logged = {}
    module = SimpleNamespace(log_dict=lambda metrics, **kw: logged.update(metrics))
    cb = P4MergeCallback(every_n_steps=1)
    cb._modules = [(n, m) for n, m in net.named_children()]
    cb._log(module, cb.schedule.merge_now(cb._modules, 1, None))
    assert 0 <= logged["p4/inverse_error_probe"] < 1e-12
    assert 0 <= logged["p4/orthogonality_error_probe"] < 1e-12
    assert logged["p4/inverse_error_probe"] == max(float(m.inverse_error_probe()) for m in (net[0], net[2]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"every_n_steps": 0}, "every_n_steps must be an int >= 1; got 0"),
        ({"force_every_n_merges": -1}, "force_every_n_merges must be an int >= 0"),
        ({"correct_every_n_merges": 1.5}, "correct_every_n_merges must be an int"),
        ({"warn_refused_fraction": 0.0}, "warn_refused_fraction must be in"),
        ({"warn_refused_fraction": math.nan}, "warn_refused_fraction must be in"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        P4MergeCallback(**kwargs)


def _fit_linear_compiled(compiled: bool):
    pl.seed_everything(0)
    model = LinearFit(5, lr=2e-2, optimizer="adam", bookkeeping_dtype="float64")
    cb = P4MergeCallback(every_n_steps=3, force_every_n_merges=2, correct_every_n_merges=3, seed=3)
    # aot_eager: Dynamo's trace and AOTAutograd's joint graph (what a merge could invalidate), no C++ build
    fitted = torch.compile(model, backend="aot_eager") if compiled else model
    _trainer(callbacks=[cb], max_epochs=2).fit(fitted, datamodule=_data(shuffle=False))
    return model, cb


def test_compiled_lightning_module_trains_like_the_eager_one_across_merges():
    """``trainer.fit(torch.compile(model))``: Lightning compiles the training step, merges rewrite A, A⁻¹ and
    ln|det A| in place between steps, and the compiled run must follow the eager one merge for merge."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    try:
        compiled, compiled_cb = _fit_linear_compiled(compiled=True)
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # the step really ran compiled
    finally:
        torch._dynamo.reset()
    eager, eager_cb = _fit_linear_compiled(compiled=False)
    assert compiled_cb.schedule.rounds == eager_cb.schedule.rounds == 8
    assert compiled_cb.schedule.totals == eager_cb.schedule.totals
    assert int(compiled.layer.merges_accepted) > 0
    for key, value in eager.layer.state_dict().items():
        torch.testing.assert_close(compiled.layer.state_dict()[key], value, rtol=1e-6, atol=1e-7, msg=key)
