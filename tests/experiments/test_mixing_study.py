"""The mixing study's per-run configs differ from the base only in mixing, seeds and output paths."""

from pathlib import Path

from p4lightning.cli.configs import compose_config
from p4lightning.experiments.mixing_study import run_config

ROOT = Path(__file__).parents[2]


def test_run_config_changes_only_mixing_seed_and_outputs():
    base = compose_config(ROOT / "configs/bg/demo.yaml")
    cfg = run_config(base, "lu", 3, Path("runs/x/lu_seed3"))
    assert cfg["seed_everything"] == 3
    assert cfg["model"]["init_args"]["mixing"] == "lu" and cfg["model"]["init_args"]["seed"] == 3
    assert cfg["trainer"]["default_root_dir"] == "runs/x/lu_seed3"
    paths = [cb["init_args"]["dirpath"] for cb in cfg["trainer"]["callbacks"] if "dirpath" in cb["init_args"]]
    assert paths == ["runs/x/lu_seed3/checkpoints"]
    names = [cb["class_path"].rsplit(".", 1)[-1] for cb in cfg["trainer"]["callbacks"]]
    assert names == ["FinalStepCheckpoint"]  # no figures; no merge callback without P4 layers
    p4 = run_config(base, "p4inv", 0, Path("runs/x/p4inv_seed0"))
    assert [cb["class_path"].rsplit(".", 1)[-1] for cb in p4["trainer"]["callbacks"]] == [
        "P4MergeCallback", "FinalStepCheckpoint"]
    # everything else is the base's, and the base is untouched
    for key in ("flow", "n_couplings", "hidden", "lr", "energy_phase_start", "energy_batch_size"):
        assert cfg["model"]["init_args"][key] == base["model"]["init_args"][key]
    assert cfg["data"] == base["data"] and cfg["trainer"]["max_steps"] == base["trainer"]["max_steps"]
    assert base["model"]["init_args"]["mixing"] == "p4inv" and base["trainer"]["default_root_dir"] == "runs/bg_demo"
