"""Configs composed with ``extends:``: the chain's order, the merge rule, refusals, and the command-line expansion."""

import pytest
import yaml

from p4lightning._validation import ConfigurationError, InputFileError
from p4lightning.cli.configs import compose_config, config_chain, expand_config_args, merge_configs


def _write(folder, name, data):
    (folder / name).write_text(yaml.safe_dump(data))
    return folder / name


def test_chain_is_bases_first_and_mappings_merge_while_lists_are_replaced(tmp_path):
    _write(tmp_path, "a.yaml", {"model": {"lr": 1, "hidden": [1, 2]}, "trainer": {"callbacks": [{"x": 1}]}})
    _write(tmp_path, "b.yaml", {"extends": "a.yaml", "model": {"lr": 2}})
    sub = tmp_path / "sub"
    sub.mkdir()
    top = _write(sub, "c.yaml", {"extends": ["../b.yaml"], "model": {"hidden": [3]}, "trainer": {"callbacks": []}})
    assert [p.name for p, _ in config_chain(top)] == ["a.yaml", "b.yaml", "c.yaml"]
    assert compose_config(top) == {"model": {"lr": 2, "hidden": [3]}, "trainer": {"callbacks": []}}
    base = {"m": {"k": 1}}
    assert merge_configs(base, {"m": {"j": 2}}) == {"m": {"k": 1, "j": 2}} and base == {"m": {"k": 1}}
    args = expand_config_args(["fit", "--config", str(top), "--trainer.max_steps", "3"])
    texts = [yaml.safe_load(args[i + 1]) for i, a in enumerate(args) if a == "--config"]
    assert [t.get("model") for t in texts] == [{"lr": 1, "hidden": [1, 2]}, {"lr": 2}, {"hidden": [3]}]
    assert all("extends" not in t for t in texts) and args[-2:] == ["--trainer.max_steps", "3"]
    assert expand_config_args(["fit", "-c", str(top)]) == expand_config_args(["fit", "--config", str(top)])
    plain = _write(tmp_path, "plain.yaml", {"model": {}})
    assert expand_config_args(["fit", f"--config={plain}"]) == ["fit", "--config", str(plain)]


def test_cycles_bad_extends_and_missing_or_broken_files_are_refused(tmp_path):
    _write(tmp_path, "x.yaml", {"extends": "y.yaml"})
    _write(tmp_path, "y.yaml", {"extends": "x.yaml"})
    with pytest.raises(ConfigurationError, match="extends itself"):
        compose_config(tmp_path / "x.yaml")
    _write(tmp_path, "bad.yaml", {"extends": 3})
    with pytest.raises(ConfigurationError, match="path or a list"):
        compose_config(tmp_path / "bad.yaml")
    _write(tmp_path, "gone.yaml", {"extends": "nothere.yaml"})
    with pytest.raises(InputFileError, match="not found"):
        compose_config(tmp_path / "gone.yaml")
    (tmp_path / "broken.yaml").write_text("a: [1, 2\n")
    with pytest.raises(InputFileError, match="not valid YAML"):
        compose_config(tmp_path / "broken.yaml")


def test_the_command_names_a_broken_chain_in_one_line(tmp_path, capsys):
    from p4lightning.cli import main

    _write(tmp_path, "gone.yaml", {"extends": "nothere.yaml"})
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(tmp_path / "gone.yaml")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "config file not found" in err and "nothere.yaml" in err
