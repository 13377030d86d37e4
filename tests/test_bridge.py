"""The Taichi -> torch autograd bridge, exercised through the public ops."""

import pytest
import torch
import torch.nn.functional as F
from reference import advect as ref_advect
from reference import diffuse as ref_diffuse

from taichi_dp import Boundary, Dirichlet, Grid, Periodic, ZeroGradient
from taichi_dp.bridge import KernelOp
from taichi_dp.ops import advect, diffuse
from taichi_dp.ops.advection import _SL

F64 = torch.float64
GRID1 = Grid.line(7)
GRID2 = Grid.rect((5, 6), (1.0, 1.5))
BD1 = Boundary(((Dirichlet(0.5), ZeroGradient()),))
BD2 = Boundary(((Periodic(), Periodic()), (Dirichlet(0.3), ZeroGradient())))


def data(seed: int = 0, ndim: int = 1, channels: int = 2):
    gen = torch.Generator().manual_seed(seed)
    grid = GRID1 if ndim == 1 else GRID2
    q = torch.randn(2, channels, *grid.shape, generator=gen, dtype=F64)
    v = (torch.rand(2, ndim, *grid.shape, generator=gen, dtype=F64) * 2 - 1) * 1.5
    dt = torch.tensor([0.1, 0.13], dtype=F64)
    nu = torch.tensor([0.05, 0.06], dtype=F64)
    cot = torch.randn(q.shape, generator=gen, dtype=F64)
    return q, v, dt, nu, cot


# Each op as a function of (q, v, dt, nu) in both implementations; v/nu are ignored where unused.
OPS = {
    "semi_lagrangian": (
        lambda q, v, dt, nu: advect(q, v, dt, GRID1, BD1),
        lambda q, v, dt, nu: ref_advect(q, v, dt, GRID1, BD1),
    ),
    "maccormack": (
        lambda q, v, dt, nu: advect(q, v, dt, GRID1, BD1, "maccormack"),
        lambda q, v, dt, nu: ref_advect(q, v, dt, GRID1, BD1, "maccormack"),
    ),
    "explicit": (
        lambda q, v, dt, nu: diffuse(q, nu, dt, GRID1, BD1),
        lambda q, v, dt, nu: ref_diffuse(q, nu, dt, GRID1, BD1),
    ),
    "implicit": (
        lambda q, v, dt, nu: diffuse(q, nu * 4, dt, GRID1, BD1, "implicit", rtol=1e-13),
        lambda q, v, dt, nu: ref_diffuse(q, nu * 4, dt, GRID1, BD1, "implicit"),
    ),
}


@pytest.mark.parametrize("which", [0, 1, 2, 3])
@pytest.mark.parametrize("name", list(OPS))
def test_gradients_when_only_some_inputs_require_grad(name, which):
    """Exactly one of (q, v, dt, nu) requires grad; its gradient matches the reference, and the
    output is detached when the op does not depend on it."""
    fn, ref_fn = OPS[name]
    args = list(data(1)[:4])
    args[which] = args[which].clone().requires_grad_()
    out = fn(*args)
    uses = {"semi_lagrangian": (0, 1, 2), "maccormack": (0, 1, 2), "explicit": (0, 2, 3), "implicit": (0, 2, 3)}[name]
    if which not in uses:
        assert not out.requires_grad
        return
    (g,) = torch.autograd.grad(out.square().sum(), args[which])
    (w,) = torch.autograd.grad(ref_fn(*args).square().sum(), args[which])
    torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("scheme", ["semi_lagrangian", "maccormack"])
def test_self_advection_same_tensor_twice(scheme):
    """advect(u, u, ...): the one tensor is both quantity and velocity; gradients of both uses add up."""
    torch.manual_seed(21)
    u = data(2)[1][:, :1].contiguous().requires_grad_()  # (B, 1, N) velocity field
    cot = torch.randn(u.shape, dtype=F64)
    out = advect(u, u, 0.12, GRID1, BD1, scheme)
    ref = ref_advect(u, u, 0.12, GRID1, BD1, scheme)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    (g,) = torch.autograd.grad(out, u, cot)
    (w,) = torch.autograd.grad(ref, u, cot)
    torch.testing.assert_close(g, w, rtol=0, atol=1e-10)
    assert torch.autograd.gradcheck(lambda x: advect(x, x, 0.12, GRID1, BD1, scheme), (u,))


@pytest.mark.parametrize("name", list(OPS))
def test_no_grad_returns_plain_tensors(name):
    fn, ref_fn = OPS[name]
    q, v, dt, nu, _ = data(3)
    args = [t.requires_grad_() for t in (q, v, dt, nu)]
    with torch.no_grad():
        out = fn(*args)
    assert out.grad_fn is None and not out.requires_grad
    torch.testing.assert_close(out, ref_fn(*args).detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("name", list(OPS))
def test_backward_twice_on_independent_graphs_is_identical(name, ndim):
    """No state leaks between calls (e.g. Taichi accumulating into kernel gradients)."""
    grid, boundary = (GRID1, BD1) if ndim == 1 else (GRID2, BD2)
    q0, v0, dt0, nu0, cot = data(4, ndim)
    fn = {
        "semi_lagrangian": lambda q, v, dt, nu: advect(q, v, dt, grid, boundary),
        "maccormack": lambda q, v, dt, nu: advect(q, v, dt, grid, boundary, "maccormack"),
        "explicit": lambda q, v, dt, nu: diffuse(q, nu * 0.5, dt, grid, boundary),
        "implicit": lambda q, v, dt, nu: diffuse(q, nu, dt, grid, boundary, "implicit", rtol=1e-12),
    }[name]
    grads = []
    for _ in range(2):
        leaves = [t.clone().requires_grad_() for t in (q0, v0, dt0, nu0)]
        fn(*leaves).backward(cot)
        grads.append([leaf.grad for leaf in leaves])
    for a, b in zip(*grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.equal(a, b)


def test_grad_accumulates_like_torch_across_backward_calls():
    q, v, dt, _, cot = data(5)
    q.requires_grad_()
    out = advect(q, v, dt, GRID1, BD1, "maccormack")
    out.backward(cot, retain_graph=True)
    first = q.grad.clone()
    out.backward(cot)
    torch.testing.assert_close(q.grad, 2 * first, rtol=0, atol=1e-14)


def test_inside_a_longer_torch_graph_gradchecks():
    """conv -> advect -> conv -> diffuse (implicit): gradients through Taichi and torch ops combined."""
    q, v, dt, _, _ = data(6)
    gen = torch.Generator().manual_seed(6)
    w1 = (0.5 * torch.randn(2, 2, 3, generator=gen, dtype=F64)).requires_grad_()
    w2 = (0.5 * torch.randn(2, 2, 3, generator=gen, dtype=F64)).requires_grad_()

    def model(x, vel, w1_, w2_, dt_):
        h = torch.tanh(F.conv1d(x, w1_, padding=1))
        h = advect(h, vel, dt_, GRID1, BD1, "maccormack")
        h = F.conv1d(h, w2_, padding=1)
        return diffuse(h, 0.2, dt_, GRID1, BD1, "implicit", rtol=1e-13)

    args = (q.requires_grad_(), v.requires_grad_(), w1, w2, dt.requires_grad_())
    assert torch.autograd.gradcheck(model, args)


@pytest.mark.parametrize("name", list(OPS))
def test_inputs_are_not_modified(name):
    """Neither the inputs nor the caller's incoming gradient change, on a first launch (Taichi's own call
    path, whose ``kernel.grad`` zeroes the outputs' gradients) and on a replayed cached plan."""
    from taichi_dp import bridge

    torch.manual_seed(22)
    fn, _ = OPS[name]
    bridge._plans.clear()  # the first backward goes through Taichi's own call path
    for _ in range(2):
        args = [t.requires_grad_() for t in data(7)[:4]]
        before = [t.detach().clone() for t in args]
        cot = torch.randn(args[0].shape, dtype=F64)
        cot_before = cot.clone()
        out = fn(*args)
        out.backward(cot)
        for t, b in zip(args, before, strict=True):
            assert torch.equal(t.detach(), b)
        assert torch.equal(cot, cot_before)


def test_non_contiguous_incoming_gradient():
    """Gradients arriving with odd strides (expand from .sum(), slicing) are handled."""
    q, v, dt, _, _ = data(8)
    q.requires_grad_()
    out = advect(q, v, dt, GRID1, BD1, "maccormack")
    (g,) = torch.autograd.grad(out[..., ::2].sum() + out.sum(), q)
    ref = ref_advect(q, v, dt, GRID1, BD1, "maccormack")
    (w,) = torch.autograd.grad(ref[..., ::2].sum() + ref.sum(), q)
    torch.testing.assert_close(g, w, rtol=0, atol=1e-10)


def test_kernel_op_rejects_wrong_argument_counts():
    op = _SL  # one dimension-generic kernel for 1D/2D/3D
    assert isinstance(op, KernelOp) and "semi_lagrangian" in repr(op)
    q = torch.zeros(1, 1, 7, dtype=F64)
    with pytest.raises(TypeError, match="expected 3 inputs and 1 outputs"):
        op((q, q), (q.shape,))


def test_cached_launch_plan_matches_taichis_own_call_forward_and_backward():
    """``bridge.launch`` replays a cached argument plan after the first call; the replay must give
    bit-identical outputs and gradients to Taichi's own call path, for new tensors of the same signature,
    and a changed template value (boundary code) must get its own plan."""
    from taichi_dp import bridge
    from taichi_dp.bridge import launch

    q, v, dt = data(3)[:3]
    bridge._plans.clear()
    out1 = advect(q, v, dt, GRID1, BD1)  # first call: Taichi's path, plan recorded
    n_plans = len(bridge._plans)
    q2, v2, dt2, _, cot2 = data(4)
    out2 = advect(q2, v2, dt2, GRID1, BD1)  # same signature: replayed plan
    assert len(bridge._plans) == n_plans
    bridge._plans.clear()
    ref2 = advect(q2, v2, dt2, GRID1, BD1)  # Taichi's own path again
    assert torch.equal(out2, ref2) and not torch.equal(out1, out2)
    for _ in range(2):  # backward: first call records the .grad kernel's plan, second replays it
        leaves = [t.clone().requires_grad_() for t in (q2, v2, dt2)]
        (advect(*leaves, GRID1, BD1) * cot2).sum().backward()
        grads = [t.grad for t in leaves]
        if _ == 0:
            first = grads
    assert all(torch.equal(a, b) for a, b in zip(first, grads))
    before, n_plans = bridge.launches, len(bridge._plans)  # counted after backward recorded its plans
    other = Boundary(((Dirichlet(0.5), Dirichlet(0.5)),))  # another template value
    out3 = advect(q, v, dt, GRID1, other)
    assert bridge.launches == before + 1 and len(bridge._plans) == n_plans + 1  # exactly one new plan
    torch.testing.assert_close(out3, ref_advect(q, v, dt, GRID1, other), rtol=0, atol=1e-12)  # not BD1's kernel
    assert torch.equal(advect(q, v, dt, GRID1, other), out3) and len(bridge._plans) == n_plans + 1  # replayed
    with pytest.raises(ValueError, match="contiguous"):
        launch(_SL.kernel, q.transpose(1, 2))  # rejected before Taichi sees it
