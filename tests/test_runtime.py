"""taichi_dp.init: idempotent, records the chosen arch, never phones home."""

import os

import torch

import taichi_dp as tdp
from taichi_dp.solvers import Burgers


def test_init_is_idempotent_and_reports_the_runtime():
    rt = tdp.init("cpu", "f64")
    assert tdp.init("cpu", "f64") is rt  # same arguments: nothing re-initialised
    assert tdp.current() is rt
    assert (rt.arch, rt.precision, rt.dtype, rt.device.type) == ("cpu", "f64", torch.float64, "cpu")
    assert os.environ["TI_SKIP_VERSION_CHECK"] == "ON"


def test_auto_arch_picks_an_available_arch_and_reinit_switches_precision():
    try:
        rt = tdp.init("auto", "f32")
        assert rt.arch in ("cuda", "vulkan", "cpu")
        if not torch.cuda.is_available():
            assert rt.arch != "cuda"
        assert rt.dtype == torch.float32
    finally:
        rt = tdp.init("cpu", "f64")
    assert rt.dtype == torch.float64


def test_check_inputs_toggles_without_reinitialising_taichi():
    import taichi as ti

    rt = tdp.init("cpu", "f64")
    prog = ti.lang.impl.get_runtime().prog
    try:
        grid = tdp.Grid.line(8)
        u = torch.randn(2, 1, 8, dtype=torch.float64)
        expected = Burgers(grid, tdp.Boundary.periodic(1), 0.01, 0.05)(u)
        off = tdp.init("cpu", "f64", check_inputs=False)
        assert not off.check_inputs and ti.lang.impl.get_runtime().prog is prog
        assert torch.equal(Burgers(grid, tdp.Boundary.periodic(1), 0.01, 0.05)(u), expected)
    finally:
        assert tdp.init("cpu", "f64").check_inputs
    assert tdp.current() == rt
