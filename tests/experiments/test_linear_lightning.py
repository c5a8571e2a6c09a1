"""The Lightning linear experiments: every shipped config runs through Trainer.fit and the figures are written."""

import json
from pathlib import Path

import pytest
import torch

from p4lightning.experiments.linear_lightning import main

CONFIGS = sorted(Path(__file__).parents[2].joinpath("configs", "linear").glob("*.yaml"))


def test_all_linear_configs_are_shipped():
    names = {p.stem for p in CONFIGS}
    assert {"pd32_p4inv_n1", "pd32_p4inv_n10", "pd32_p4inv_n50", "so128_p4inv", "negid101_p4inv"} <= names
    assert {"pd32_linear", "so128_inverse_p4inv", "negid101_linear"} <= names


def test_every_config_trains_a_few_steps_and_writes_figures(tmp_path):
    torch.set_default_dtype(torch.float32)  # the configs describe float32 runs (restored by conftest)
    results = main([*map(str, CONFIGS), "--max-steps", "20", "--record-every", "10", "--out", str(tmp_path)])
    assert len(results) == len(CONFIGS)
    for problem in ("positive_definite", "special_orthogonal", "negative_identity"):
        assert (tmp_path / f"{problem}.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "linear_experiments.json").read_text())
    for run in saved:
        assert run["step"] == [10, 20]
        assert len(run["eig_real"][0]) == {"positive_definite": 32, "special_orthogonal": 128}.get(
            run["problem"], 101
        )
        if run["label"] != "linear":
            assert max(run["inverse_error"]) < 1e-4
    p4 = next(r for r in saved if r["label"] == "p4inv N=1" and r["problem"] == "positive_definite")
    assert p4["merges"]["accepted"] + p4["merges"]["forced"] == 20  # N = 1: a merge after every step
    assert "steps to loss" in (tmp_path / "summary.md").read_text()


def test_missing_config_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nope.yaml")])
    assert "config file not found" in capsys.readouterr().err


def test_lr_override_reaches_the_model():
    from p4lightning.experiments.linear_lightning import run_config

    torch.set_default_dtype(torch.float32)
    config = next(c for c in CONFIGS if c.name == "pd32_linear.yaml")
    slow = run_config(config, record_every=5, max_steps=5, lr=1e-9)  # (almost) no step: the loss stays where it was
    fast = run_config(config, record_every=5, max_steps=5)
    assert slow["loss"][-1] > fast["loss"][-1]
