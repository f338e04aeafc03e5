"""Fixtures of the core's tests."""

import pytest
import torch


@pytest.fixture
def float64():
    """The test runs in float64; the default dtype is restored for other modules."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
