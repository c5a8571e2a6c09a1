"""The typed MD config: checked when made (each bad value named), frozen, numbers normalised, one source for the
platform names."""

import dataclasses
import math

import pytest

from p4lightning.simulation import MAX_TIMESTEP_FS, MDConfig
from p4lightning.simulation.config import PLATFORMS


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"frames": 0}, "frames"),
        ({"save_every": -1}, "save_every"),
        ({"equilibration_steps": -5}, "equilibration_steps"),
        ({"temperature": math.nan}, "temperature must be a finite number > 0"),
        ({"friction_per_ps": 0.0}, "friction_per_ps must be a finite number > 0"),
        ({"timestep_fs": 0.0}, "timestep_fs must be > 0"),
        ({"timestep_fs": MAX_TIMESTEP_FS + 0.5}, "unstable above 2/ω"),
        ({"platform": "Metal"}, "platform"),
    ],
)
def test_a_bad_setting_is_named_when_the_config_is_made(change, message):
    with pytest.raises(ValueError, match=message):
        MDConfig(**change)


def test_the_config_is_frozen_normalised_and_reports_its_settings():
    cfg = MDConfig(frames=3, save_every=10, temperature=300, timestep_fs=2, equilibration_steps=0, compile=0)
    assert isinstance(cfg.temperature, float) and cfg.timestep_fs == 2.0 and cfg.compile is False
    assert cfg.frame_interval_ps == pytest.approx(0.02)
    assert list(cfg.as_dict()) == [f.name for f in dataclasses.fields(MDConfig)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.frames = 4  # type: ignore[misc]
    assert PLATFORMS == ("CPU", "CUDA", "OpenCL", "Reference")
    assert MDConfig(platform="Reference").check().platform == "Reference"  # usable everywhere OpenMM is
