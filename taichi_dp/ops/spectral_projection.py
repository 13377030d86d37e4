r"""Exact pressure projection of a staggered (MAC) velocity on a fully periodic box, by real FFTs.

When every side of the domain is :class:`~taichi_dp.grid.Periodic` and there is no obstacle, the MAC
divergence ``D`` (faces → cells) and pressure gradient ``G`` (cells → faces) are circulant, one per axis:

    (D u)_i   = Σ_a (u_a[i + e_a] − u_a[i]) / h_a          (indices modulo N_a)
    (G p)_a,i = (p[i] − p[i − e_a]) / h_a                  (face i of axis a lies between cells i − e_a and i)

so ``L = D G`` (the 5-/7-point Laplacian of :mod:`taichi_dp.ops.pressure`, ``A = −L``) is diagonalised by
the discrete Fourier transform, with symbol

    λ(k) = −Σ_a (4 / h_a²) sin²(π k_a / N_a)               (k_a = 0 … N_a − 1)

``λ`` vanishes only at ``k = 0``: the constant pressure is the null space. :mod:`taichi_dp.ops.pressure`
fixes it by projecting the right-hand side onto the range and returning the pressure with zero mean;
here the same gauge is zeroing the ``k = 0`` coefficient (``L⁺ = Π L⁻¹ Π`` with ``Π`` the removal of the
mean, the pseudo-inverse). The projection is

    p  = L⁺ D u          (the multigrid path's ``A p = −D u`` with zero mean)
    u⁺ = u − G p = P u,  P = I − G L⁺ D

exact up to round-off (no iteration: ``rtol``, ``max_iter`` and the warm start do not apply), so
``D u⁺ = 0`` to round-off and ``p`` agrees with :func:`taichi_dp.ops.pressure.project` to that solve's
tolerance. One forward real FFT (``torch.fft.rfftn``) of the divergence, a division by ``λ``, one inverse
(``irfftn``): ``O(n log n)`` for any ``N_a`` (odd and even, different per axis) and per-axis spacings.

Adjoint (the explicit backward of :class:`_SpectralProject`). On a periodic grid with uniform cells
``Dᵀ = −G``: ``(Dᵀ q)_a,i = (q[i − e_a] − q[i]) / h_a = −(G q)_a,i``. Hence ``Lᵀ = GᵀDᵀ = (−D)(−G) = L``,
``(L⁺)ᵀ = L⁺`` (``Π`` is an orthogonal projection), and ``Pᵀ = I − Dᵀ L⁺ Gᵀ = I − G L⁺ D = P``: the
projection is self-adjoint. For incoming gradients ``(ḡ_u, ḡ_p)`` of ``(u⁺, p)`` the vector–Jacobian
product of the linear map ``u ↦ (P u, L⁺ D u)`` is

    ḡ_u ↦ Pᵀ ḡ_u + Dᵀ L⁺ᵀ ḡ_p = ḡ_u − G L⁺ (D ḡ_u + ḡ_p)

i.e. the forward routine itself applied to ``ḡ_u`` with ``ḡ_p`` added to its right-hand side
(:func:`_solve`): one FFT pair again, and nothing saved from the forward pass (the map is linear). The
backward is written in differentiable torch ops, so double backward (``create_graph=True``) works too.

Layout. The staggered tensor is ``(B, nd, *(N + 1))`` (:mod:`taichi_dp.grid.staggered`); on a periodic
axis face ``N`` duplicates face ``0``, and index ``N`` across the other axes is padding. The periodic
unknowns are therefore exactly the *core* ``v[..., :N_0, :N_1(, :N_2)]`` for every component. The
autograd function maps a staggered input to a staggered output through the core: it reads only the
core (face ``N`` and padding of the input get zero gradient), writes ``u⁺`` to the core, copies face
``0`` onto face ``N`` and leaves padding zero; its backward folds the face-``N`` gradient onto face ``0``
(the adjoint of that copy) before applying ``P``. :func:`taichi_dp.ops.pressure.apply_projection` imposes
the boundary conditions (face ``N := `` face ``0``) first, through autograd, as on the multigrid path.

Why torch and not the Taichi kernels of :mod:`taichi_dp.ops.pressure` for ``D`` and ``G``: the FFT is a
torch operation on every arch anyway, and with the periodic wrap ``D`` and ``G`` are one ``torch.roll``
and a subtraction per axis, on the tensors' own device with no kernel launch, no device round trip and
no per-shape compilation; written in torch, the backward is differentiable again for free. Measured
agreement with the Taichi divergence and the multigrid projection is in ``tests/test_spectral_projection.py``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from ..grid import Grid, Periodic
from ..grid.staggered import FlowBoundary

__all__ = ["apply_spectral_projection", "check_spectral", "laplacian_symbol", "spectral_applicable"]


def _inapplicable(grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor | None) -> str | None:
    """Why the spectral projection does not apply (a sentence), or ``None`` when it does."""
    if not isinstance(grid, Grid) or grid.ndim not in (2, 3):
        return f"it needs a 2D or 3D taichi_dp.Grid, got {grid!r}"
    if not isinstance(boundary, FlowBoundary) or boundary.ndim != grid.ndim:
        return f"it needs a FlowBoundary with {grid.ndim} axes, got {boundary!r}"
    others = [
        f"sides[{axis}][{i}] = {type(side).__name__}"
        for axis, pair in enumerate(boundary.sides)
        for i, side in enumerate(pair)
        if not isinstance(side, Periodic)
    ]
    if others:
        return f"every boundary side must be Periodic, got {', '.join(others)}"
    if fluid is not None:
        if not isinstance(fluid, torch.Tensor):
            return f"fluid must be None or a torch.Tensor mask, got {type(fluid).__name__}"
        if bool((fluid.detach() <= 0.5).any()):
            solid = int((fluid.detach() <= 0.5).sum())
            return f"it takes no obstacle, but the fluid mask has {solid} solid cell(s)"
    return None


def spectral_applicable(grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor | None = None) -> bool:
    """Whether the FFT projection applies: a 2D or 3D ``grid`` whose ``boundary`` is :class:`Periodic`
    on every side, and no obstacle (``fluid`` is ``None`` or a mask with every cell fluid, e.g. the
    all-ones mask :func:`taichi_dp.ops.pressure.fluid_mask` makes of ``None``).

    Args:
        grid: the grid of the flow.
        boundary: its flow boundary conditions.
        fluid: ``None`` or a ``(B or 1, 1, *spatial)`` fluid mask (1 = fluid, 0 = solid).

    Returns:
        ``True`` when ``method="fft"`` may be used (and is the exact, fastest pressure solve).
    """
    return _inapplicable(grid, boundary, fluid) is None


def check_spectral(grid: Grid, boundary: FlowBoundary, fluid: torch.Tensor | None = None) -> None:
    """Raise ``ValueError`` saying why when :func:`spectral_applicable` is ``False``.

    Args:
        grid: the grid of the flow.
        boundary: its flow boundary conditions.
        fluid: ``None`` or a fluid mask.
    """
    why = _inapplicable(grid, boundary, fluid)
    if why is not None:
        raise ValueError(
            f"method='fft' (the spectral pressure projection) needs a fully periodic box without obstacles: {why}; "
            "use method='mgpcg' or 'cg'"
        )


@functools.lru_cache(maxsize=32)
def _inverse_symbol(shape: tuple[int, ...], spacing: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``1 / λ(k)`` on the ``rfftn`` half-spectrum ``(*N[:-1], N[-1] // 2 + 1)``, 0 at ``k = 0`` (the gauge)."""
    lam = laplacian_symbol(shape, spacing)
    inv = torch.where(lam == 0, torch.zeros_like(lam), 1.0 / torch.where(lam == 0, torch.ones_like(lam), lam))
    return inv.to(dtype=dtype, device=device)


def laplacian_symbol(shape: tuple[int, ...], spacing: tuple[float, ...]) -> torch.Tensor:
    """The DFT symbol ``λ(k) = −Σ_a (4 / h_a²) sin²(π k_a / N_a)`` of the periodic MAC Laplacian ``L = D G``
    on the ``rfftn`` half-spectrum (last axis ``k = 0 … N // 2``), in float64 on the CPU.

    Args:
        shape: cells per axis ``N``.
        spacing: cell size per axis ``h``.
    """
    nd = len(shape)
    lam = torch.zeros(*shape[:-1], shape[-1] // 2 + 1, dtype=torch.float64)
    for a, (n, h) in enumerate(zip(shape, spacing, strict=True)):
        k = torch.arange(n // 2 + 1 if a == nd - 1 else n, dtype=torch.float64)
        term = -4.0 / (h * h) * torch.sin(math.pi * k / n) ** 2
        lam = lam + term.view(*([1] * a), -1, *([1] * (nd - 1 - a)))
    return lam


def _divergence(u: torch.Tensor, spacing: tuple[float, ...]) -> torch.Tensor:
    """``D u`` ``(B, 1, *N)`` of a periodic core ``u`` ``(B, nd, *N)``."""
    out = None
    for a, h in enumerate(spacing):
        ua = u[:, a : a + 1]
        term = (torch.roll(ua, -1, dims=2 + a) - ua) / h
        out = term if out is None else out + term
    return out


def _gradient(p: torch.Tensor, spacing: tuple[float, ...]) -> torch.Tensor:
    """``G p`` ``(B, nd, *N)`` of a periodic pressure ``p`` ``(B, 1, *N)``."""
    return torch.cat([(p - torch.roll(p, 1, dims=2 + a)) / h for a, h in enumerate(spacing)], dim=1)


def _solve(u: torch.Tensor, extra: torch.Tensor | None, spacing: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``ψ = L⁺ (D u + extra)``, ``(u − G ψ, ψ)``: the forward projection (``extra = None``) and its adjoint
    (``extra = ḡ_p``) in one routine."""
    shape = tuple(u.shape[2:])
    dims = tuple(range(2, u.ndim))
    rhs = _divergence(u, spacing)
    if extra is not None:
        rhs = rhs + extra
    inv = _inverse_symbol(shape, spacing, u.dtype, u.device)
    psi = torch.fft.irfftn(torch.fft.rfftn(rhs, dim=dims) * inv, s=shape, dim=dims)
    return u - _gradient(psi, spacing), psi


def _core(w: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The periodic unknowns ``w[..., :N_0, :N_1(, :N_2)]`` of a staggered tensor."""
    return w[(..., *(slice(0, n) for n in shape))]


def _unfold(u: torch.Tensor) -> torch.Tensor:
    """Staggered ``(B, nd, *(N + 1))`` from a core ``u``: face ``N`` of each component's own axis copies face
    ``0``; padding zero."""
    shape = tuple(u.shape[2:])
    out = u.new_zeros(*u.shape[:2], *(n + 1 for n in shape))
    out[(..., *(slice(0, n) for n in shape))] = u
    for c, n in enumerate(shape):
        dst = [slice(None), c] + [slice(0, m) for m in shape]
        src = list(dst)
        dst[2 + c], src[2 + c] = n, 0
        out[tuple(dst)] = u[tuple(src)]
    return out


def _fold(g: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The adjoint of :func:`_unfold`: the core of ``g`` plus each component's face-``N`` entries added onto
    face ``0`` (padding dropped)."""
    out = _core(g, shape).clone()
    for c, n in enumerate(shape):
        dst = [slice(None), c] + [slice(0, m) for m in shape]
        src = list(dst)
        dst[2 + c], src[2 + c] = 0, n
        out[tuple(dst)] = out[tuple(dst)] + g[tuple(src)]
    return out


def _embed(u: torch.Tensor) -> torch.Tensor:
    """The adjoint of :func:`_core`: ``u`` in the core of a zero staggered tensor."""
    shape = tuple(u.shape[2:])
    out = u.new_zeros(*u.shape[:2], *(n + 1 for n in shape))
    out[(..., *(slice(0, n) for n in shape))] = u
    return out


class _SpectralProject(torch.autograd.Function):
    """``w ↦ (unfold(P core(w)), L⁺ D core(w))`` with the explicit adjoint derived in the module docstring."""

    @staticmethod
    def forward(ctx: Any, v: torch.Tensor, spacing: tuple[float, ...]) -> Any:
        ctx.spacing = spacing
        shape = tuple(n - 1 for n in v.shape[2:])
        out, p = _solve(_core(v, shape), None, spacing)
        return _unfold(out), p

    @staticmethod
    def backward(ctx: Any, g_out: torch.Tensor | None, g_p: torch.Tensor | None) -> Any:
        ref = g_out if g_out is not None else g_p
        nd = len(ctx.spacing)
        shape = tuple(ref.shape[2:]) if g_out is None else tuple(n - 1 for n in g_out.shape[2:])
        g_u = torch.zeros(ref.shape[0], nd, *shape, dtype=ref.dtype, device=ref.device) if g_out is None else _fold(g_out, shape)
        g_v, _ = _solve(g_u, g_p, ctx.spacing)
        return _embed(g_v), None


def apply_spectral_projection(v: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact projection of a staggered velocity on a fully periodic ``grid`` without obstacles
    (no validation: the caller checked :func:`spectral_applicable` and the tensor).

    Args:
        v: ``(B, nd, *(N + 1))`` staggered velocity with the periodic conditions imposed (face ``N`` equal to
            face ``0``; :func:`taichi_dp.grid.staggered.apply_boundary`), float32 or float64, any device.
            Only the core ``v[..., :N_0, :N_1(, :N_2)]`` is read.

    Returns:
        ``(v⁺, p)``: the divergence-free velocity (face ``N`` copies face ``0``, padding 0) and the pressure
        ``(B, 1, *N)`` with zero mean (scaled by ``Δt/ρ``, as in :mod:`taichi_dp.ops.pressure`). Both
        differentiable w.r.t. ``v`` (backward: the same FFT projection, see the module docstring).
    """
    spacing = tuple(float(h) for h in grid.spacing)
    if torch.is_grad_enabled() and v.requires_grad:
        return _SpectralProject.apply(v, spacing)
    shape = tuple(grid.shape)
    out, p = _solve(_core(v, shape), None, spacing)
    return _unfold(out), p
