"""Plain-PyTorch versions of the benchmark workloads (no Taichi), eager or under ``torch.compile``.

Advection and explicit diffusion are the test suite's plain-PyTorch references, imported from
``tests/reference.py`` (Burgers: 1D explicit diffusion + semi-Lagrangian) and ``tests/reference_mac.py``
(staggered velocity diffusion/advection, density advection by a staggered velocity; 2D: its 2D
functions, 3D: its ``*_nd`` ones): the same discretizations the library is tested against, not copies.
Boundary imposition uses the library's torch-only helpers (:func:`taichi_dp.grid.staggered.face_constraints`,
``open_faces``, ``pack_smoke``). The staggered layout is the library's in 2D and 3D (``(B, nd, *(N+1))``,
component ``c`` along axis ``c``); every function here takes either, and the 2D results are the ones of the
2D-only version this module started as (bit for bit: the same operations in the same order).

The pressure projection is written here, because the references cannot be reused for it:
``tests/reference.py::ref_project`` assembles dense ``D``, ``G`` and ``A`` matrices with Python loops
and solves densely (fine at 32×64, impossible at 256×512: ``A`` alone would be 131072² entries). Here
it is matrix-free with the same operator (:mod:`taichi_dp.ops.poisson`: −D G on fluid cells, identity
on solid cells, ghost pressure −p at outflows and +p at walls/inflows) and solved by plain conjugate
gradients (no preconditioner: there is no plain-PyTorch multigrid; PhiFlow and the anchors' reference
solver use plain CG too), differentiated implicitly (backward = one more CG solve with a tolerance
relative to the incoming gradient, like :mod:`taichi_dp.ops.linear_solve`). CG runs in chunks of
:data:`CG_CHUNK` iterations without a host sync, checking convergence between chunks (so up to
``CG_CHUNK − 1`` extra iterations); under ``torch.compile`` a chunk is one compiled graph.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from taichi_dp.grid import Boundary, Grid, Periodic
from taichi_dp.grid.staggered import FlowBoundary, Outflow, face_constraints, open_faces
from taichi_dp.ops.flux_advection import flux_substeps
from taichi_dp.solvers import Burgers, NavierStokes, SmokePlume, pack_smoke, unpack_smoke

_TESTS = str(Path(__file__).resolve().parents[1] / "tests")
if _TESTS not in sys.path:  # the references live in tests/ (reference_mac imports `reference` top-level)
    sys.path.insert(0, _TESTS)
import reference as ref  # noqa: E402
import reference_mac as ref_mac  # noqa: E402

CG_CHUNK = 8
"""CG iterations between convergence checks (one compiled graph under ``torch.compile``)."""


def maybe_compile(fn: Callable, compile: bool) -> Callable:
    """``torch.compile(fn)`` with static shapes when ``compile``, else ``fn``."""
    return torch.compile(fn, dynamic=False) if compile else fn


def configure_compile() -> None:
    """Allow many compiled shapes per function (one per grid size and per grad mode), so that Dynamo
    never silently falls back to eager after its default limit of 8."""
    cfg = torch._dynamo.config
    for name in ("cache_size_limit", "recompile_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, 256)
    if hasattr(cfg, "accumulated_cache_size_limit"):
        cfg.accumulated_cache_size_limit = 4096
    if hasattr(cfg, "accumulated_recompile_limit"):
        cfg.accumulated_recompile_limit = 4096


# --------------------------------------------------------------------------- staggered pressure operators
def _ghost_pad(p: torch.Tensor, dim: int, sides: tuple[Any, Any]) -> torch.Tensor:
    """``p`` with one ghost cell on each end of ``dim``: wrapped (periodic), ``−p`` (outflow: p = 0 on
    the face) or ``+p`` (walls and inflows: zero gradient)."""
    n = p.shape[dim]
    first, last = p.narrow(dim, 0, 1), p.narrow(dim, n - 1, 1)
    lo, hi = sides
    if isinstance(lo, Periodic):
        return torch.cat([last, p, first], dim)
    return torch.cat([-first if isinstance(lo, Outflow) else first, p, -last if isinstance(hi, Outflow) else last], dim)


def _pad_faces(x: torch.Tensor, c: int) -> torch.Tensor:
    """Real-face values of component ``c`` ``(B, C, *M_c)`` (``N_c + 1`` along axis ``c``, ``N_a`` along the
    others) → the staggered extent ``(B, C, *(N+1))``: one zero padding layer at the end of every other axis."""
    pad: list[int] = []
    for a in reversed(range(x.ndim - 2)):  # F.pad lists the last axis first
        pad += [0, 0] if a == c else [0, 1]
    return F.pad(x, pad)


def divergence(v: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Cell-centred divergence ``(B, 1, *N)`` of a staggered ``v`` ``(B, nd, *(N+1))``."""
    cells = [slice(0, n) for n in grid.shape]
    out = None
    for c, h in enumerate(grid.spacing):
        hi = [slice(1, None) if a == c else s for a, s in enumerate(cells)]
        lo = [slice(None, -1) if a == c else s for a, s in enumerate(cells)]
        term = (v[(slice(None), slice(c, c + 1), *hi)] - v[(slice(None), slice(c, c + 1), *lo)]) / h
        out = term if out is None else out + term
    return out


def gradient(p: torch.Tensor, grid: Grid, boundary: FlowBoundary, open_: torch.Tensor) -> torch.Tensor:
    """Staggered pressure gradient ``G p`` ``(B, nd, *(N+1))`` on open faces (``open_``), 0 elsewhere."""
    comps = []
    for c, (n, h) in enumerate(zip(grid.shape, grid.spacing, strict=True)):
        pc = _ghost_pad(p, 2 + c, boundary.sides[c])
        g = (pc.narrow(2 + c, 1, n + 1) - pc.narrow(2 + c, 0, n + 1)) / h  # N_c + 1 faces along axis c
        comps.append(_pad_faces(g, c))
    return open_ * torch.cat(comps, dim=1)


def poisson(p: torch.Tensor, grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor, open_: torch.Tensor) -> torch.Tensor:
    """The masked pressure operator ``A p``: ``−D G p`` on fluid cells, ``p`` on solid cells."""
    return fluid * -divergence(gradient(p, grid, boundary, open_), grid) + (1.0 - fluid) * p


def _per_batch(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A ``(B,)`` tensor viewed to broadcast against ``like`` ``(B, ...)``."""
    return x.view(-1, *([1] * (like.ndim - 1)))


def _bdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _per_batch((a * b).flatten(1).sum(1), a)


def _fluid_mean(x: torch.Tensor, fluid: torch.Tensor) -> torch.Tensor:
    f = fluid.expand_as(x)
    return _per_batch((x * f).flatten(1).sum(1) / f.flatten(1).sum(1), x)


class PressureSolver:
    """Plain (unpreconditioned) CG for ``A p = rhs`` in chunks of :data:`CG_CHUNK` iterations, with an
    implicit-adjoint backward (:meth:`solve`). ``iterations``: iterations of the most recent solve."""

    def __init__(self, grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor, rtol: float, *, compile: bool = False,
                 max_iter: int = 20000) -> None:
        self.grid, self.boundary, self.fluid = grid, boundary, fluid
        self.open = open_faces(fluid, boundary).contiguous()
        self.rtol, self.max_iter = rtol, max_iter
        self.iterations = 0
        self._chunk = maybe_compile(self._cg_chunk, compile)

    def apply_a(self, p: torch.Tensor) -> torch.Tensor:
        """``A p``."""
        return poisson(p, self.grid, self.boundary, self.fluid, self.open)

    def _cg_chunk(self, x: torch.Tensor, r: torch.Tensor, d: torch.Tensor, rr: torch.Tensor) -> tuple[torch.Tensor, ...]:
        for _ in range(CG_CHUNK):
            ad = self.apply_a(d)
            alpha = rr / _bdot(d, ad).clamp_min(1e-30)
            x = x + alpha * d
            r = r - alpha * ad
            rr_new = _bdot(r, r)
            d = r + (rr_new / rr.clamp_min(1e-30)) * d
            rr = rr_new
        return x, r, d, rr

    def cg(self, b: torch.Tensor) -> torch.Tensor:
        """Solve ``A x = b`` per batch element to ``‖r‖ ≤ rtol ‖b‖`` (no autograd)."""
        with torch.no_grad():
            target = self.rtol * _bdot(b, b).sqrt()
            x, r, d = torch.zeros_like(b), b.clone(), b.clone()
            rr = _bdot(r, r)
            its = 0
            while its < self.max_iter and not bool((rr.sqrt() <= target).all()):
                x, r, d, rr = self._chunk(x, r, d, rr)
                its += CG_CHUNK
            self.iterations = its
            return x

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        """Differentiable solve (implicit adjoint: ``∂L/∂b = A⁻¹ ∂L/∂x``, ``A`` symmetric)."""
        if torch.is_grad_enabled() and b.requires_grad:
            return _ImplicitCG.apply(b, self)
        return self.cg(b)


class _ImplicitCG(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, b: torch.Tensor, solver: PressureSolver) -> torch.Tensor:
        ctx.solver = solver
        return solver.cg(b.detach())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return ctx.solver.cg(grad.contiguous()), None


class TorchProjection:
    """Plain-PyTorch :func:`taichi_dp.ops.pressure.project` of an already boundary-imposed staggered
    velocity: ``v − G p`` with ``A p = −D v`` on fluid cells (singular all-wall domains: mean-free
    right-hand side and pressure)."""

    def __init__(self, grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor, rtol: float, *, compile: bool = False) -> None:
        self.grid, self.boundary, self.fluid = grid, boundary, fluid
        self.singular = not boundary.has_outflow
        self.solver = PressureSolver(grid, boundary, fluid, rtol, compile=compile)
        self._rhs = maybe_compile(self.rhs, compile)
        self._subtract = maybe_compile(self.subtract, compile)

    def rhs(self, v: torch.Tensor) -> torch.Tensor:
        """``−D v`` on fluid cells (fluid mean removed when singular)."""
        b = -divergence(v, self.grid) * self.fluid
        return b - _fluid_mean(b, self.fluid) * self.fluid if self.singular else b

    def subtract(self, v: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """``v − G p`` (pressure made fluid-mean-free first when singular)."""
        if self.singular:
            p = (p - _fluid_mean(p, self.fluid)) * self.fluid
        return v - gradient(p, self.grid, self.boundary, self.solver.open)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return self._subtract(v, self.solver.solve(self._rhs(v)))

    @property
    def iterations(self) -> int:
        return self.solver.iterations


# ----------------------------------------------------------------------------------------------- steps
class TorchNavierStokes:
    """One :class:`taichi_dp.solvers.NavierStokes` step (explicit viscosity sub-steps, boundary and
    inflow imposed, self-advection, projection) in plain PyTorch, from the stepper's own parameters."""

    def __init__(self, st: NavierStokes, batch: int, *, compile: bool = False) -> None:
        if st.diffusion != "explicit" or st.forcing is not None:
            raise ValueError("the plain-PyTorch step covers explicit viscosity without forcing")
        self.st = st
        self.dt = st.param("dt", batch)
        self.nu = None if isinstance(st.nu, float | int) and st.nu == 0 else st.param("nu", batch)
        self.keep, self.fixed = face_constraints(st.grid, st.boundary, st.fluid, st.fluid.dtype, st.fluid.device)
        self.projection = TorchProjection(st.grid, st.boundary, st.fluid, st.pressure.rtol, compile=compile)
        self._pre = maybe_compile(self.pre, compile)

    def impose(self, v: torch.Tensor) -> torch.Tensor:
        """Boundary faces, obstacle faces and the inflow region."""
        v = v * self.keep + self.fixed
        if self.st.inflow_mask is not None:
            v = v * (1 - self.st.inflow_mask) + self.st.inflow_mask * self.st.inflow_velocity
        return v

    def pre(self, v: torch.Tensor) -> torch.Tensor:
        """Everything before the projection."""
        st = self.st
        if self.nu is not None:
            n = st.viscosity_substeps
            for _ in range(n):
                v = velocity_diffusion(v, self.nu, self.dt / n, st.grid, st.boundary)
        v = self.impose(v)
        return self.impose(velocity_advection(v, self.dt, st.grid, st.boundary, st.advection))

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return self.projection(self._pre(v))


class TorchSmoke:
    """One :class:`taichi_dp.solvers.SmokePlume` step in plain PyTorch (density advection by the
    current velocity, source, buoyancy on the ``v_y`` faces, then the flow step)."""

    def __init__(self, st: SmokePlume, batch: int, *, compile: bool = False) -> None:
        if st.source is None:
            raise ValueError("the plain-PyTorch smoke step expects a source")
        self.st = st
        self.flow = TorchNavierStokes(st.flow, batch, compile=compile)
        nd = st.flow.grid.ndim
        beta = torch.as_tensor(st.buoyancy, dtype=self.flow.dt.dtype).reshape(-1).expand(batch)
        self.beta = beta.reshape(-1, *([1] * (nd + 1)))
        self._density = maybe_compile(self.density, compile)

    def density(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Advected density (+ source, masked) and the velocity with the buoyancy added (on the faces of
        the +y component: axis ``nd − 2``, the rows in 2D, the middle axis in 3D)."""
        st, flow = self.st, self.st.flow
        v, rho = unpack_smoke(state)
        nd = flow.grid.ndim
        dt = self.flow.dt
        if st.density_advection == "flux":  # conservative flux form, sub-stepped as the operator does
            n = flux_substeps(v, dt, flow.grid)
            rho = flux_advection(rho, v, dt, flow.grid, st.density_boundary, flow.boundary, flow.fluid, substeps=n)
        else:
            rho = scalar_advection(rho, v, dt, flow.grid, st.density_boundary, flow.boundary, st.density_advection)
        rho = (rho + _per_batch(dt, rho) * st.source) * flow.fluid
        y = nd - 2
        lo, hi = [0] * (2 * nd), [0] * (2 * nd)
        lo[2 * (nd - 1 - y)] = 1  # one zero layer below along y (F.pad lists the last axis first) ...
        hi[2 * (nd - 1 - y) + 1] = 1  # ... or above
        face_rho = 0.5 * (F.pad(rho, lo) + F.pad(rho, hi))  # N_y + 1 faces along y, zero outside the domain
        lift = _pad_faces(_per_batch(dt, rho) * self.beta * face_rho, y)
        return torch.cat([v[:, :y], v[:, y : y + 1] + lift, v[:, y + 1 :]], dim=1), rho

    def __call__(self, state: torch.Tensor) -> torch.Tensor:
        v, rho = self._density(state)
        return pack_smoke(self.flow(v), rho)

    @property
    def projection(self) -> TorchProjection:
        return self.flow.projection


class TorchBurgers:
    """One :class:`taichi_dp.solvers.Burgers` step (explicit diffusion, then semi-Lagrangian
    self-advection) with ``tests/reference.py``."""

    def __init__(self, st: Burgers, batch: int, *, compile: bool = False) -> None:
        if st.diffusion != "explicit" or st.forcing is not None:
            raise ValueError("the plain-PyTorch Burgers step covers explicit diffusion without forcing")
        self.st = st
        self.nu, self.dt = st.param("nu", batch), st.param("dt", batch)
        self._step = maybe_compile(self.step, compile)

    def step(self, u: torch.Tensor) -> torch.Tensor:
        st = self.st
        u = ref.diffuse_explicit(u, self.nu, self.dt, st.grid, st.boundary)
        return ref.advect(u, u, self.dt, st.grid, st.boundary, st.advection)

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        return self._step(u)


def torch_stepper(st: Any, batch: int, *, compile: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """The plain-PyTorch counterpart of a taichi_dp stepper (Burgers, NavierStokes or SmokePlume)."""
    if isinstance(st, SmokePlume):
        return TorchSmoke(st, batch, compile=compile)
    if isinstance(st, NavierStokes):
        return TorchNavierStokes(st, batch, compile=compile)
    if isinstance(st, Burgers):
        return TorchBurgers(st, batch, compile=compile)
    raise TypeError(f"no plain-PyTorch version of {type(st).__name__}")


# ------------------------------------------------------------------------------- single kernels
def velocity_advection(v: torch.Tensor, dt: torch.Tensor, grid: Grid, boundary: FlowBoundary, scheme: str) -> torch.Tensor:
    """Self-advection of a staggered velocity (``tests/reference_mac.py``: 2D or n-D)."""
    if grid.ndim == 2:
        return ref_mac.velocity_advection(v, v, dt, grid, boundary, scheme)
    return ref_mac.velocity_advection_nd(v, v, dt, grid, boundary, scheme)


def velocity_diffusion(v: torch.Tensor, nu: torch.Tensor, dt: torch.Tensor, grid: Grid, boundary: FlowBoundary) -> torch.Tensor:
    """Explicit viscosity step of a staggered velocity (``tests/reference_mac.py``: 2D or n-D)."""
    if grid.ndim == 2:
        return ref_mac.velocity_diffusion(v, nu, dt, grid, boundary)
    return ref_mac.velocity_diffusion_nd(v, nu, dt, grid, boundary)


def scalar_advection(q: torch.Tensor, velocity: torch.Tensor, dt: torch.Tensor, grid: Grid, scalar_boundary: Boundary,
                     boundary: FlowBoundary, scheme: str) -> torch.Tensor:
    """Semi-Lagrangian / MacCormack advection of a cell-centred ``q`` by a staggered velocity
    (``tests/reference_mac.py``: 2D or n-D)."""
    if grid.ndim == 2:
        return ref_mac.scalar_advection(q, velocity, dt, grid, scalar_boundary, boundary, scheme)
    return ref_mac.scalar_advection_nd(q, velocity, dt, grid, scalar_boundary, boundary, scheme)


def flux_advection(q: torch.Tensor, velocity: torch.Tensor, dt: torch.Tensor, grid: Grid, scalar_boundary: Boundary,
                   boundary: FlowBoundary, fluid: torch.Tensor | None = None, substeps: int = 1) -> torch.Tensor:
    """Conservative MC-limited flux-form advection (``tests/reference_mac.py``: 2D or n-D)."""
    if grid.ndim == 2:
        return ref_mac.flux_advection(q, velocity, dt, grid, scalar_boundary, boundary, fluid, substeps=substeps)
    return ref_mac.flux_advection_nd(q, velocity, dt, grid, scalar_boundary, boundary, fluid, substeps=substeps)
