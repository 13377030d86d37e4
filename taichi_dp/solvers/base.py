"""The stepper contract: an immutable callable ``state_next = stepper(state)``, :class:`Repeated`,
:func:`rollout`, and the constructor checks the steppers share."""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from ..grid import Grid, check_grid_boundary
from ..grid.staggered import check_staggered
from ..ops.advection import SCHEMES as ADVECTION_SCHEMES
from ..ops.diffusion import SCHEMES as DIFFUSION_SCHEMES
from ..ops.diffusion import check_explicit_stability
from ..runtime import as_batch_param, check_param, check_state


class Stepper(ABC):
    """Base of all time steppers: ``stepper(state)`` validates the state once (:meth:`check`), then
    advances it by one step of size ``dt`` (:meth:`step`).

    What every stepper has, and nothing more: a ``grid`` and a time step ``dt`` (dataclass fields or
    properties), :attr:`channels`, :meth:`check`, :meth:`step` and :meth:`param`. Subclasses are frozen
    dataclasses validated in ``__post_init__`` (with the helpers of this module) that fill
    :meth:`step` (composed from the operators in :mod:`taichi_dp.ops`) and, if their state is not a
    cell-centred ``(B, channels, *grid.shape)`` tensor, :meth:`check`. A stepper holds no mutable state:
    two rollouts or two backward passes never interfere.
    """

    grid: Grid
    dt: float | torch.Tensor

    @property
    def channels(self) -> int | None:
        """Number of channels of the state, or ``None`` if any number is accepted."""
        return None

    def __call__(self, state: torch.Tensor) -> torch.Tensor:
        """Advance ``state`` by one step of size ``dt`` (validated first by :meth:`check`)."""
        self.check(state)
        return self.step(state)

    def check(self, state: torch.Tensor) -> None:
        """Validate a state (shape, dtype, device, finite); the default: cell-centred
        ``(B, channels, *grid.shape)``. ``ValueError``/``TypeError`` naming what is wrong."""
        check_state("u", state, self.grid.shape, channels=self.channels)

    @abstractmethod
    def step(self, state: torch.Tensor) -> torch.Tensor:
        """One step on a validated state (no checks here)."""

    def param(self, name: str, batch: int) -> torch.Tensor:
        """Field ``name`` (a float or tensor) as a ``(B,)`` tensor of the runtime dtype."""
        return as_batch_param(name, getattr(self, name), batch)

    def _check_fields(self, diffusivity: str) -> None:
        """Kept for :class:`~taichi_dp.solvers.Burgers` and :class:`~taichi_dp.solvers.AdvectionDiffusion`:
        :func:`check_transport_fields` of ``self``."""
        check_transport_fields(self, diffusivity)


@dataclass(frozen=True, eq=False)
class Repeated(Stepper):
    """``n`` steps of ``stepper`` per call: a stepper ``n`` times finer in time seen at the coarse step
    ``n · dt`` (e.g. a reference solution recorded every ``n`` fine steps). The state is validated once
    per call, not once per inner step.

    Args:
        stepper: any :class:`Stepper`.
        n: inner steps per call, an integer ≥ 1.
    """

    stepper: Stepper
    n: int

    def __post_init__(self) -> None:
        if not isinstance(self.stepper, Stepper):
            raise TypeError(f"stepper must be a Stepper, got {type(self.stepper).__name__}")
        check_count("n", self.n)

    @property
    def grid(self) -> Grid:
        """The inner stepper's grid."""
        return self.stepper.grid

    @property
    def dt(self) -> float | torch.Tensor:
        """The time advanced per call: ``n ·`` the inner stepper's ``dt``."""
        return self.n * self.stepper.dt

    @property
    def channels(self) -> int | None:
        return self.stepper.channels

    def check(self, state: torch.Tensor) -> None:
        self.stepper.check(state)

    def step(self, state: torch.Tensor) -> torch.Tensor:
        for _ in range(self.n):
            state = self.stepper.step(state)
        return state


def check_count(name: str, x: object, least: int = 1) -> int:
    """``x`` as an ``int`` if it is an integer ≥ ``least`` (not a bool); else ``TypeError``/``ValueError``
    naming ``name``."""
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {least}, got {type(x).__name__} {x!r}")
    if x < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {x!r}")
    return int(x)


def check_time_step(dt: object) -> None:
    """``dt`` a finite float or ``(B,)`` tensor, every value > 0 (a zero step does nothing)."""
    check_param("dt", dt, positive=True)
    if not bool((torch.as_tensor(dt).detach() > 0).all()):
        raise ValueError(f"dt must be > 0 (a zero time step does nothing), got {dt!r}")


def max_abs(x: float | torch.Tensor) -> float:
    """``max |x|`` of a float or tensor parameter, as a float (for stability checks)."""
    return float(torch.as_tensor(x).detach().abs().max())


def check_transport_fields(stepper: Stepper, diffusivity: str) -> None:
    """Constructor checks of the advection–diffusion-type steppers (fields ``grid``, ``boundary``, ``dt``,
    the diffusivity field named ``diffusivity``, ``diffusion``, ``advection``): grid/boundary match; ``dt``
    and the diffusivity finite and ≥ 0; known ``diffusion`` and ``advection`` schemes; explicit
    diffusion stable."""
    check_grid_boundary(stepper.grid, stepper.boundary)
    for name in ("dt", diffusivity):
        check_param(name, getattr(stepper, name), positive=True)
    check_schemes(stepper.diffusion, stepper.advection)
    if stepper.diffusion == "explicit":
        check_explicit_stability(getattr(stepper, diffusivity), stepper.dt, stepper.grid)


def check_schemes(diffusion: str, advection: str) -> None:
    """``diffusion`` among :data:`taichi_dp.ops.diffusion.SCHEMES`, ``advection`` among
    :data:`taichi_dp.ops.advection.SCHEMES`."""
    if diffusion not in DIFFUSION_SCHEMES:
        raise ValueError(f"diffusion must be one of {DIFFUSION_SCHEMES}, got {diffusion!r}")
    if advection not in ADVECTION_SCHEMES:
        raise ValueError(f"advection must be one of {ADVECTION_SCHEMES}, got {advection!r}")


def check_staggered_fields(stepper: Stepper, names: Sequence[str]) -> None:
    """Each field of ``stepper`` named in ``names`` is ``None`` or a staggered tensor on its grid
    ``(B or 1, 2, H+1, W+1)``; an ``inflow_mask`` and an ``inflow_velocity`` come together."""
    for name in names:
        if getattr(stepper, name) is not None:
            check_staggered(name, getattr(stepper, name), stepper.grid)
    if "inflow_mask" in names and (stepper.inflow_mask is None) != (stepper.inflow_velocity is None):
        raise ValueError("inflow_mask and inflow_velocity must be given together")


def check_batches(stepper: Stepper, names: Sequence[str], state_name: str, batch: int) -> None:
    """Each tensor field of ``stepper`` named in ``names`` has batch size 1 or ``batch`` (the state's)."""
    for name in names:
        m = getattr(stepper, name)
        if m is not None and m.shape[0] not in (1, batch):
            raise ValueError(f"{name} has batch size {m.shape[0]} but {state_name} has {batch}")


def rollout(
    stepper: Callable[[torch.Tensor], torch.Tensor],
    u0: torch.Tensor,
    steps: int,
    *,
    include_initial: bool = True,
    checkpoint_every: int = 0,
) -> torch.Tensor:
    """Apply ``stepper`` ``steps`` times from ``u0``.

    Args:
        stepper: any callable ``u_next = stepper(u)`` (a :class:`Stepper`, a hybrid step, ...).
        u0: ``(B, C, *spatial)`` initial state.
        steps: number of steps ≥ 0.
        include_initial: whether the trajectory starts with ``u0``.
        checkpoint_every: if > 0, recompute the steps in chunks of this length during backward instead
            of storing every intermediate state (trades compute for memory on long unrolls).

    Returns:
        ``(B, T, C, *spatial)`` trajectory with ``T = steps + include_initial``.
    """
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    states = [u0] if include_initial else []
    u = u0
    if checkpoint_every > 0 and torch.is_grad_enabled():

        def chunk(x: torch.Tensor, n: int) -> torch.Tensor:
            outs = []
            for _ in range(n):
                x = stepper(x)
                outs.append(x)
            return torch.stack(outs, dim=1)

        done = 0
        while done < steps:
            n = min(checkpoint_every, steps - done)
            block = checkpoint(chunk, u, n, use_reentrant=False)
            states.extend(block.unbind(1))
            u = block[:, -1].contiguous()
            done += n
    else:
        for _ in range(steps):
            u = stepper(u)
            states.append(u)
    if not states:
        return u0.new_empty((u0.shape[0], 0, *u0.shape[1:]))
    return torch.stack(states, dim=1)
