"""Test-suite set-up: float64 by default (gradient checks); f32 tests use the ``f32`` fixture.

The arch is the CPU one unless ``pytest --arch vulkan|cuda`` (or ``TAICHI_DP_TEST_ARCH``) names another:
the same tests then run there, tensors on the arch's torch device. Tests that only make sense on the CPU
arch (or need float64 kernels the arch lacks) skip themselves with a reason.
"""

import os

import pytest
import torch

import taichi_dp as tdp
from taichi_dp import bridge


def pytest_addoption(parser):
    parser.addoption(
        "--arch",
        default=os.environ.get("TAICHI_DP_TEST_ARCH", "cpu"),
        choices=("cpu", "vulkan", "cuda"),
        help="Taichi arch the suite runs on (default cpu; env TAICHI_DP_TEST_ARCH)",
    )


ARCH = "cpu"


def pytest_configure(config):
    global ARCH
    ARCH = config.getoption("--arch")
    os.environ["TAICHI_DP_TEST_ARCH"] = ARCH  # subprocesses read it
    if ARCH != "cpu" or bridge.FORCE_PARALLEL:
        # Parallel arches add the adjoints' scatter with atomics in thread-arrival order, so running a
        # backward twice may differ in the last bits (measured on llvmpipe: 1 run in 30 of a moving-body
        # rollout, 2e-15 relative); gradcheck's reentrancy check allows that much, no more.
        tolerant = torch.autograd.gradcheck

        def gradcheck(*args, **kwargs):
            kwargs.setdefault("nondet_tol", 1e-12)
            return tolerant(*args, **kwargs)

        torch.autograd.gradcheck = gradcheck
    if ARCH != "cpu":
        # Off the CPU arch every launch on CPU-resident test tensors round-trips through the device, and a
        # full float64 gradcheck makes 2 launches per input element. Fast mode compares vᵀJu for random
        # u, v instead (a wrong or zero Jacobian still fails); the plain-PyTorch reference tests compare
        # whole gradients on every arch.
        full = torch.autograd.gradcheck

        def gradcheck(*args, **kwargs):
            kwargs.setdefault("fast_mode", True)
            return full(*args, **kwargs)

        torch.autograd.gradcheck = gradcheck


@pytest.fixture(autouse=True, scope="session")
def _runtime():
    torch.manual_seed(0)
    rt = tdp.init(ARCH, "f64")
    if rt.device.type == "cuda":  # tensors the tests create land where the arch computes
        torch.set_default_device(rt.device)
    yield


@pytest.fixture(autouse=True)
def _back_on_the_test_arch():
    """A test that switched arch or precision (e.g. to test ``init`` itself, or the CLI in-process) does not
    move the rest of the suite."""
    before = tdp.current()
    precision = before.precision if before is not None else "f64"
    yield
    rt = tdp.current()
    if rt is not None and (rt.arch, rt.precision) != (ARCH, precision):
        tdp.init(ARCH, precision)


@pytest.fixture(scope="module")
def f32():
    """Run a whole module with ``precision="f32"`` (``pytestmark = pytest.mark.usefixtures("f32")``),
    then return to f64 for the rest of the suite (re-initialising Taichi once each way)."""
    tdp.init(ARCH, "f32")
    try:
        yield torch.float32
    finally:
        tdp.init(ARCH, "f64")
