"""Shared fixtures: float64 by default (zuko's convention), one torch thread, seeded RNG."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _float64_and_seed():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(1234)
    yield
    torch.set_default_dtype(previous)


def pytest_configure(config):
    torch.set_num_threads(1)
