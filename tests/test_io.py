"""File helpers: atomic writes leave the old file or none under a name, a sample folder is written as a unit,
output folders are checked before any work, checkpoints are written atomically."""

import errno
import os

import pytest
import torch

from p4lightning._io import atomic_path, check_output_dir, save_figure, staged_folder, write_text


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "result.json"
    write_text(target, "old")
    with pytest.raises(OSError, match="No space"):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            _disk_full()
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["result.json"]


def test_a_failing_figure_leaves_no_file(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure()
    fig.add_subplot().plot([0, 1])
    real = Figure.savefig

    def half_then_full(self, path, **kw):
        real(self, path, **kw)
        _disk_full()

    monkeypatch.setattr(Figure, "savefig", half_then_full)
    with pytest.raises(OSError):
        save_figure(fig, tmp_path / "plot.png")
    assert os.listdir(tmp_path) == []


def test_staged_folder_writes_all_files_or_none_and_never_mixes_two_runs(tmp_path):
    out = tmp_path / "samples"
    names = ["a.txt", "b.txt", "c.png"]
    with staged_folder(out, names) as stage:  # a new folder appears whole
        for n in names:
            (stage / n).write_text("run 1")
    assert sorted(os.listdir(out)) == names
    (out / "user_notes.txt").write_text("mine")
    with pytest.raises(OSError):  # the second run fails after writing some files: nothing changes
        with staged_folder(out, names) as stage:
            (stage / "a.txt").write_text("run 2")
            _disk_full()
    assert all((out / n).read_text() == "run 1" for n in names)
    with staged_folder(out, names) as stage:  # a run that writes fewer files removes the stale ones it owns
        (stage / "a.txt").write_text("run 3")
        (stage / "b.txt").write_text("run 3")
    assert sorted(os.listdir(out)) == ["a.txt", "b.txt", "user_notes.txt"]
    assert [p for p in os.listdir(tmp_path) if p != "samples"] == []  # no staging folder left


def test_output_folders_are_checked_without_creating_them(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="--out .* is a file, not a folder"):
        check_output_dir(tmp_path / "file", "--out")
    with pytest.raises(ValueError, match="cannot be created: .* is a file"):
        check_output_dir(tmp_path / "file" / "sub" / "deeper", "--out")
    assert check_output_dir(tmp_path / "new" / "deeper", "--out") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checked, not created
    with pytest.raises(ValueError, match="not writable"):
        check_output_dir("/proc/p4lightning-out", "--out")  # procfs refuses new files, even for root


def test_checkpoints_are_written_atomically_by_the_trainer(tmp_path, monkeypatch):
    from helpers import make_trainer

    from p4lightning.callbacks import AtomicCheckpointIO, FinalStepCheckpoint
    from p4lightning.callbacks import checkpoint as module

    callbacks = [FinalStepCheckpoint(dirpath=tmp_path, save_last=True)]
    trainer = make_trainer(callbacks, max_steps=1, enable_checkpointing=True)
    from pytorch_lightning.demos.boring_classes import BoringModel

    model = BoringModel()
    trainer.fit(model)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    path = tmp_path / "last.ckpt"
    before = path.read_bytes()
    real = torch.save

    def full_disk_midway(obj, f, *a, **k):
        real(obj, f, *a, **k)
        with open(f, "r+b") as fh:
            fh.truncate(100)  # what a full disk leaves
        _disk_full()

    monkeypatch.setattr(module.torch, "save", full_disk_midway)
    with pytest.raises(OSError, match="No space"):
        trainer.save_checkpoint(path)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["last.ckpt"]


def test_folder_lock_is_exclusive_across_processes_and_dies_with_its_holder(tmp_path):
    import subprocess
    import sys

    from p4lightning._io import folder_lock

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from p4lightning._io import folder_lock\n"
         f"with folder_lock({str(tmp_path / 'run')!r}) as held:\n print(held, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "True"
        with folder_lock(tmp_path / "run") as held:
            assert held is False
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(tmp_path / "run") as held:  # the killed holder left no stale lock
        assert held is True
