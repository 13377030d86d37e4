"""Test-suite set-up: CPU, float64 by default (gradient checks); f32 tests use the ``f32`` fixture."""

import pytest
import torch

import taichi_dp as tdp


@pytest.fixture(autouse=True, scope="session")
def _runtime():
    torch.manual_seed(0)
    tdp.init("cpu", "f64")
    yield


@pytest.fixture(scope="module")
def f32():
    """Run a whole module with ``precision="f32"`` (``pytestmark = pytest.mark.usefixtures("f32")``),
    then return to f64 for the rest of the suite (re-initialising Taichi once each way)."""
    tdp.init("cpu", "f32")
    try:
        yield torch.float32
    finally:
        tdp.init("cpu", "f64")
