"""Shared fixtures: float64 by default (zuko's convention), one torch thread, seeded RNG, and ``--device``."""

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where tests taking the `device` fixture run (default cpu); cuda without a CUDA device skips them",
    )


@pytest.fixture
def device(request) -> torch.device:
    """The ``--device`` of this run; a test that takes it runs its device-specific path there."""
    name = request.config.getoption("--device")
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda given, but torch.cuda.is_available() is False on this machine")
    return torch.device(name)


@pytest.fixture(autouse=True)
def _float64_and_seed():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(1234)
    yield
    torch.set_default_dtype(previous)


def pytest_configure(config):
    torch.set_num_threads(1)
