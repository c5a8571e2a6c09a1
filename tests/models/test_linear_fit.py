"""LinearFit: modes, effective matrix, argument errors."""

import pytest
import torch

from p4lightning.models.linear import LinearFit


@pytest.mark.parametrize("mode", ["linear", "p4inv", "inverse-p4inv"])
def test_starts_at_identity_and_applies_effective_matrix(mode):
    model = LinearFit(4, mode=mode)
    torch.testing.assert_close(model.effective_matrix(), torch.eye(4))
    x = torch.randn(3, 4)
    torch.testing.assert_close(model(x), x @ model.effective_matrix().T)


def test_training_step_rejects_wrong_feature_count():
    with pytest.raises(ValueError, match=r"batch x must have shape \(\*, 4\); got shape \(2, 5\)"):
        LinearFit(4).training_step((torch.randn(2, 5), torch.randn(2, 5)), 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "dense"}, "mode must be one of"),
        ({"optimizer": "lbfgs"}, "optimizer must be one of"),
        ({"lr": 0.0}, "lr must be > 0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LinearFit(4, **kwargs)
