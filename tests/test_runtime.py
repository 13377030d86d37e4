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


def test_f64_precision_reaches_kernel_locals():
    """precision="f64" must make Taichi's float literals and locals float64 too (``default_fp``), not just
    the arrays: a multigrid solve to rtol 1e-12 accumulates its dot products in kernel locals."""
    import taichi as ti

    from taichi_dp.grid import DIRICHLET
    from taichi_dp.ops import linear_solve
    from taichi_dp.ops.multigrid import PoissonSolver

    rt = tdp.init(tdp.current().arch, "f64")
    assert ti.lang.impl.current_cfg().default_fp == ti.f64
    grid = tdp.Grid.rect((32, 32), (1.0, 1.0))
    fluid = torch.ones(1, 1, 32, 32, dtype=rt.dtype)
    solver = PoissonSolver(grid, fluid, (DIRICHLET,) * 4)  # outflow on every side: non-singular
    b = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x = solver.solve(b, rtol=1e-12)
    assert linear_solve.last_solve.converged
    assert float((b - solver.apply(x)).norm() / b.norm()) < 1e-11
