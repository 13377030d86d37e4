"""No arch can hand back an unverified gradient: the known-answer check, the routes it selects, and what
happens when it fails (forward keeps working, backward raises; ``arch="auto"`` skips the arch).

The Vulkan tests run on any Vulkan device, including Mesa's software one (llvmpipe) that CI installs,
where Taichi 1.7.4's ndarray ``kernel.grad`` really does return zeros (taichi-dev/taichi#8524).
"""

import dataclasses

import pytest
import torch
from cases import BOUNDARIES, GRIDS
from conftest import ARCH

import taichi_dp as tdp
from taichi_dp import _vulkan, grad_routes, runtime
from taichi_dp.ops import advect
from taichi_dp.runtime import GradientUnavailableError
from taichi_dp.solvers import Burgers

VULKAN = runtime._arch_available("vulkan")
needs_vulkan = pytest.mark.skipif(not VULKAN, reason="no Vulkan device (CI installs mesa-vulkan-drivers)")


@pytest.fixture
def fresh_runtime(monkeypatch):
    """Forget which routes this process has verified, and restart Taichi on the suite's arch afterwards
    (the test may leave a runtime whose check was made to fail)."""
    precision = tdp.current().precision  # the suite's, restored afterwards
    monkeypatch.setattr(runtime, "_routes_seen", {})
    monkeypatch.setattr(runtime, "_ti_key", None)  # the next init restarts Taichi and checks again
    yield
    monkeypatch.undo()
    runtime._ti_key = None  # force a restart: the current runtime was built under the patch
    tdp.init(ARCH, precision)


def _break_ndarray_route(monkeypatch):
    """Simulate the Vulkan bug on any arch: the ndarray route returns all-zero gradients."""

    def zero_grads(kernel, inputs, grad_outputs, rest, launch):
        return [torch.zeros_like(t) for t in inputs]

    monkeypatch.setitem(grad_routes._ROUTE_RUNNERS, "ndarray", zero_grads)
    monkeypatch.setattr(grad_routes, "ROUTES", ("ndarray",))


def _burgers_loss(requires_grad: bool) -> torch.Tensor:
    grid = tdp.Grid.line(16)
    u0 = torch.sin(torch.linspace(0, 6.28, 16, dtype=torch.float64)).view(1, 1, 16).repeat(2, 1, 1)
    u0.requires_grad_(requires_grad)
    u = Burgers(grid, tdp.Boundary.periodic(1), 0.01, 0.05)(u0)
    return u.square().mean(), u0


def test_the_suite_arch_has_a_verified_route():
    rt = tdp.current()
    assert rt.grad_route in grad_routes.ROUTES, rt.grad_failures
    assert grad_routes.probe(rt.grad_route, rt.dtype, rt.device) is None


@pytest.mark.skipif(ARCH != "cpu", reason="the route each arch gets is checked in its own tests")
def test_cpu_uses_the_zero_copy_route_and_both_routes_pass_there():
    rt = tdp.current()
    assert (rt.arch, rt.grad_route, rt.grad_failures) == ("cpu", "ndarray", ())
    for route in grad_routes.ROUTES:
        assert grad_routes.probe(route, torch.float64, rt.device) is None


def test_probe_detects_zero_and_wrong_gradients(monkeypatch):
    rt = tdp.current()
    working = grad_routes._ROUTE_RUNNERS[rt.grad_route]  # the route this arch verified
    _break_ndarray_route(monkeypatch)
    err = grad_routes.probe("ndarray", rt.dtype, rt.device)
    assert err is not None and "input gradient wrong" in err and "all zero: True" in err

    def off_by_a_bit(kernel, inputs, grad_outputs, rest, launch):
        return [t * 1.001 for t in working(kernel, inputs, grad_outputs, rest, launch)]

    monkeypatch.setitem(grad_routes._ROUTE_RUNNERS, "ndarray", off_by_a_bit)
    err = grad_routes.probe("ndarray", rt.dtype, rt.device)
    assert err is not None and "all zero: False" in err


def test_failed_check_keeps_forward_and_refuses_backward(monkeypatch, fresh_runtime):
    _break_ndarray_route(monkeypatch)
    rt = tdp.init(ARCH, "f64")
    assert rt.grad_route is None and rt.grad_failures[0][0] == "ndarray"
    with torch.no_grad():
        loss, _ = _burgers_loss(False)
    assert torch.isfinite(loss)
    loss, _ = _burgers_loss(True)  # the forward with autograd recording also works
    with pytest.raises(GradientUnavailableError) as e:
        loss.backward()
    msg = str(e.value)
    assert f"arch={ARCH!r}" in msg and "taichi-dev/taichi#8524" in msg and "arch='cpu'" in msg and "ndarray:" in msg


def test_field_route_gives_the_ndarray_routes_gradients(monkeypatch):
    """The field twin differentiates the same kernel: both routes agree on a bridged operator."""
    rt = tdp.current()
    if rt.grad_route != "ndarray":
        pytest.skip("this arch has only the field route (the comparison is made where both pass)")
    grid, bc = GRIDS[2], BOUNDARIES[2]["walls_y_periodic_x"]
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 2, *grid.shape, generator=gen, dtype=torch.float64, requires_grad=True)
    vel = torch.randn(2, 2, *grid.shape, generator=gen, dtype=torch.float64, requires_grad=True)
    dt = torch.tensor([0.3, 0.2], dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, *grid.shape, generator=gen, dtype=torch.float64)

    def grads():
        for scheme in ("semi_lagrangian", "maccormack"):
            yield torch.autograd.grad((advect(q, vel, dt, grid, bc, scheme=scheme) * w).sum(), (q, vel, dt))

    via_ndarray = list(grads())
    monkeypatch.setattr(runtime, "_current", dataclasses.replace(rt, grad_route="fields"))
    via_fields = list(grads())
    for a, b in zip(via_ndarray, via_fields):
        for ga, gb in zip(a, b):
            torch.testing.assert_close(gb, ga, rtol=1e-12, atol=1e-12)


def test_auto_candidates_never_include_a_software_vulkan_device(monkeypatch):
    soft = (_vulkan.VulkanDevice("llvmpipe (LLVM 15.0.6, 256 bits)", "cpu"),)
    hard = (*soft, _vulkan.VulkanDevice("NVIDIA H200", "discrete-gpu"))
    monkeypatch.setattr(runtime, "_arch_available", lambda a: a in ("cpu", "vulkan"))
    monkeypatch.setattr(_vulkan, "devices", lambda: soft)
    assert runtime.auto_candidates() == ["cpu"]
    monkeypatch.setattr(_vulkan, "devices", lambda: hard)
    assert runtime.auto_candidates() == ["vulkan", "cpu"]


@needs_vulkan
def test_vulkan_device_listing_reads_the_loader():
    devs = _vulkan.devices()
    assert devs and all(d.name and d.kind in ("discrete-gpu", "integrated-gpu", "virtual-gpu", "cpu", "other") for d in devs)


@needs_vulkan
def test_vulkan_ndarray_gradients_fail_the_check_and_the_field_route_is_used(fresh_runtime):
    """The real upstream bug, caught by the check on the device itself."""
    rt = tdp.init("vulkan", "f32")
    failures = dict(rt.grad_failures)
    if "ndarray" not in failures:
        pytest.skip("this Taichi's Vulkan ndarray gradients are correct (the upstream bug is fixed)")
    assert "all zero: True" in failures["ndarray"]
    assert rt.grad_route == "fields"
    u0 = torch.sin(torch.linspace(0, 6.28, 16)).view(1, 1, 16).repeat(2, 1, 1).requires_grad_()
    Burgers(tdp.Grid.line(16), tdp.Boundary.periodic(1), 0.01, 0.05)(u0).square().mean().backward()
    assert u0.grad.abs().mean() > 1e-4  # not the silent zero of the ndarray route


@needs_vulkan
def test_auto_skips_an_arch_whose_gradients_fail(monkeypatch, fresh_runtime):
    """With only the ndarray route allowed, the software Vulkan device fails the check for real and
    ``auto`` moves on to the CPU arch."""
    monkeypatch.setattr(grad_routes, "ROUTES", ("ndarray",))
    monkeypatch.setattr(runtime, "auto_candidates", lambda: ["vulkan", "cpu"])
    rt = tdp.init("auto", "f32")
    assert (rt.arch, rt.grad_route) == ("cpu", "ndarray")
    assert runtime._routes_seen[("vulkan", "f32")][0] is None  # vulkan was started, checked and skipped
