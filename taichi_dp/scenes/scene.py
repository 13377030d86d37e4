"""The one type every scene factory returns: :class:`Scene`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..solvers.base import Stepper


@dataclass(frozen=True, eq=False)
class Scene:
    """A ready-to-run problem: ``rollout(scene.stepper, scene.state0, n)``.

    Attributes:
        stepper: the time stepper (:class:`~taichi_dp.solvers.Burgers`, :class:`~taichi_dp.solvers.NavierStokes`,
            :class:`~taichi_dp.solvers.SmokePlume`, ...).
        state0: the initial state the stepper accepts: a centred velocity ``(B, ndim, *shape)`` (Burgers),
            a staggered velocity ``(B, 2, H+1, W+1)`` (flows), a packed smoke state ``(B, 3, H+1, W+1)``
            (:func:`~taichi_dp.solvers.pack_smoke`).
        steps: the preset's number of steps (e.g. 32 for :func:`~taichi_dp.scenes.pbdl_burgers`), or
            ``None`` where the scene has no natural length (flows run as long as you like).
    """

    stepper: Stepper
    state0: torch.Tensor
    steps: int | None = None
