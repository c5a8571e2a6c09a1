"""The 2-D density study's runs: an interrupted run resumes exactly, finished runs are reused, a folder of another
configuration is refused, and the outputs list every finished run."""

import json
import shutil
import warnings

import pytest
import pytorch_lightning as pl
import torch

from p4lightning._io import folder_lock
from p4lightning._validation import ConfigurationError
from p4lightning.experiments.toy2d import Schedule, main, merge_record, train_density

SCHEDULE = Schedule(epochs=2, steps_per_epoch=15, n_train=1000)


class Crash(Exception):
    pass


class StopAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise Crash  # a process that dies mid-run: only the checkpoints written so far survive


def _state(ckpt):
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture(autouse=True)
def _float32():
    torch.set_default_dtype(torch.float32)  # the toy data's dtype (the suite's float64 is restored after)


def test_an_interrupted_run_resumes_exactly_and_a_finished_run_is_reused(tmp_path):
    kw = {"n_test": 200, "checkpoint_every": 10, "n_blocks": 3}
    full = train_density("8gaussians", "p4inv", SCHEDULE, tmp_path / "full", **kw)
    with pytest.raises(Crash):
        train_density("8gaussians", "p4inv", SCHEDULE, tmp_path / "cut", callbacks=[StopAt(25)], **kw)
    shutil.copytree(tmp_path / "cut", tmp_path / "no_clock")  # as written by a version without the clock's state
    ckpt = tmp_path / "no_clock" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    del saved["callbacks"]["TrainClock"]
    torch.save(saved, ckpt)
    assert train_density("8gaussians", "p4inv", SCHEDULE, tmp_path / "no_clock", **kw)["train_seconds_from_step"] == 20
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = train_density("8gaussians", "p4inv", SCHEDULE, tmp_path / "cut", **kw)
    assert not [w for w in caught if "not resumable" in str(w.message)]  # the loader's state is in the checkpoint
    assert resumed["steps"] == full["steps"] == 30
    a, b = _state(full["ckpt"]), _state(resumed["ckpt"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # merges, Adam, data order, lr
    assert resumed["test_log_likelihood"] == full["test_log_likelihood"]
    saved = torch.load(resumed["ckpt"], map_location="cpu", weights_only=False)["callbacks"]["TrainClock"]
    # the time before the crash counted once, from its ckpt (train_seconds is rounded to 0.1 s: within 0.05 of it)
    assert 0 < saved["seconds"] <= resumed["train_seconds"] + 0.05
    assert resumed["train_seconds_from_step"] == full["train_seconds_from_step"] == 0
    # 3 rounds (every 10 steps) of the 6 P⁴Inv layers of 3 blocks, all accepted; no correction before round 50
    assert merge_record(resumed["ckpt"]) == {"rounds": 3, "accepted": 18, "forced": 0, "refused": 0, "corrections": 0}
    again = train_density("8gaussians", "p4inv", SCHEDULE, tmp_path / "cut", **kw)
    assert again == resumed  # reused, not retrained
    with pytest.raises(ConfigurationError, match="another configuration"):
        train_density("8gaussians", "p4inv", Schedule(epochs=1, steps_per_epoch=30), tmp_path / "cut", **kw)


def test_outputs_list_the_finished_runs_and_bad_arguments_are_refused(tmp_path, capsys):
    args = ["--densities", "pinwheel", "--epochs", "1", "--steps-per-epoch", "5", "--n-train", "400",
            "--n-test", "100", "--compile-region", "0", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]  # fmt: skip
    with folder_lock(tmp_path / "runs" / "pinwheel_p4inv"):  # as if another process were training it
        main(args)
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["density"], r["flow"]) for r in rows] == [("pinwheel", "realnvp")]
    assert "not finished" in (tmp_path / "out" / "results.md").read_text()
    assert not (tmp_path / "out" / "samples.png").exists()
    main(args)
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {(r["density"], r["flow"], r["steps"]) for r in rows} == {("pinwheel", "realnvp", 5), ("pinwheel", "p4inv", 5)}
    assert [r["merges"]["rounds"] for r in rows if r["flow"] == "p4inv"] == [0]  # 5 steps: no merge round yet
    assert (tmp_path / "out" / "samples.png").stat().st_size > 0
    assert "| pinwheel | 5 |" in (tmp_path / "out" / "results.md").read_text()
    with pytest.raises(SystemExit):
        main([*args[:-2], "--out", str(tmp_path / "out" / "results.md")])  # a file, not a folder
    assert "is a file" in capsys.readouterr().err
